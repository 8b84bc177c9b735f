"""Measures over the ranks of torch.distributed's default group: sums and gathered rows.

- ``sum_over_ranks(parts, like)``: several tensors summed over the ranks in one collective.
- ``gather_rows(rows)``: every rank's rows [n_r, ...] concatenated in rank order.
- ``gather_windows(mine, counts)``: every rank's per-window values in rank order (the
  ``SparsityAccumulator``'s densities).

Every rank must call each of them, in the same order.
"""

from __future__ import annotations

import torch


def sum_over_ranks(parts: list[torch.Tensor], like: torch.Tensor) -> list[torch.Tensor]:
    """Sum tensors over torch.distributed's default group in one collective: flattened into one
    buffer of ``like``'s dtype (float64: exact for counts below 2**53) on its device."""
    import torch.distributed as dist

    flat = torch.cat([p.to(like.device, like.dtype).reshape(-1) for p in parts])
    dist.all_reduce(flat)
    out, start = [], 0
    for p in parts:
        out.append(flat[start : start + p.numel()].reshape(p.shape))
        start += p.numel()
    return out


def gather_windows(mine: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every rank's windows in rank order: padded to the longest and all_gathered (one collective)."""
    import torch.distributed as dist

    longest = max(counts)
    if longest == 0:  # every rank knows the counts, so all skip the collective together
        return mine
    padded = torch.zeros(longest, dtype=mine.dtype, device=mine.device)
    padded[: mine.numel()] = mine
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts)])


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``rows`` [n_r, ...] in rank order (n_r may differ between ranks;
    two collectives: the counts, then the rows padded to the largest). Bool rows travel as uint8."""
    import torch.distributed as dist

    world = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    wire = rows.to(torch.uint8) if rows.dtype == torch.bool else rows
    padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=wire.dtype, device=rows.device)
    padded[: rows.shape[0]] = wire
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.cat([part[:n] for part, n in zip(parts, counts)])
    return out.bool() if rows.dtype == torch.bool else out


__all__ = ["gather_rows", "gather_windows", "sum_over_ranks"]
