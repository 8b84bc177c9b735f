"""Activation measures: sparsity statistics and co-activation of MLP units, one-shot and streamed.

For acts ``a`` of shape ``[n, d]`` (leading dims are flattened into tokens), active = ``|a| > eps``,
or ``gate > eps`` (signed) when a ``gate`` shaped like acts is given (the ``sign`` rule: the MLP
pre-activation with eps = 0); eps is a float or a per-unit tensor [d] (the ``cett`` rule's
thresholds, +inf for a unit that never counts). Each runs a Triton kernel when the tensor is on
CUDA, or anywhere when the kernels were imported under ``TRITON_INTERPRET=1``, and the plain
PyTorch reference otherwise; ``impl="kernel"`` or ``impl="reference"`` forces one.

- ``sparsity_stats(acts, eps, gate=None)``: dict of ``frac_active``, ``l1``, ``l2``, ``hoyer``,
  ``dead_frac``, ``top10_l1_share`` (Python floats), ``firing_rate`` (float32 tensor [d] on the
  acts' device) and ``tokens`` (int). Definitions in ``lamina.kernels.sparsity_stats``.
- ``coactivation(acts, eps, gate=None)``: float32 [d, d] = B^T B / n, B = active as 0/1.
- ``SparsityAccumulator`` and ``CoactivationAccumulator`` stream many batches through the same
  kernels with O(d) (resp. O(d^2)) state on the device; ``compute()`` equals the one-shot
  function on the concatenated batches. ``SparsityAccumulator`` also keeps each window's
  density (``window_frac_active()``) for the standard errors of density gaps.
- ``active_mask`` (the kernels' own): the 0/1 activity under a rule.

The counts run under ``full_precision``: an outer bf16 autocast does not round them.
"""

from __future__ import annotations

import torch

from lamina.kernels import (
    EXACT_COUNT_LIMIT,
    SparsitySums,
    active_mask,
    coactivation_reference,
    coactivation_update_,
    coactivation_update_reference_,
    eps_arg,
    kernels_can_run,
    sparsity_stats_reference,
    sparsity_sums,
    sparsity_sums_reference,
    stats_from_sums,
)
from lamina.measures.distributed import gather_windows, sum_over_ranks
from lamina.measures.numeric import full_precision, wide_dtype


_IMPLS = ("auto", "kernel", "reference")


# ------------------------------------------------------------------------------------------
# Dispatch and input checks
# ------------------------------------------------------------------------------------------


def _check_impl(impl: str) -> None:
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")


def _use_kernel(acts: torch.Tensor, impl: str) -> bool:
    """Whether to run the Triton kernel for ``acts`` under ``impl``."""
    _check_impl(impl)
    if impl == "reference":
        return False
    if impl == "kernel" and not kernels_can_run(acts):
        raise RuntimeError(
            "impl='kernel' needs triton and a CUDA tensor, or TRITON_INTERPRET=1 set before "
            "lamina.kernels is first imported")
    return kernels_can_run(acts)


def as_tokens(acts: torch.Tensor, d: int | None = None) -> torch.Tensor:
    """``acts`` as [tokens, d]: leading dimensions are flattened (a view when possible)."""
    if not isinstance(acts, torch.Tensor) or acts.dim() < 2:
        raise ValueError("acts must be a tensor of shape [tokens, d] (or [..., d])")
    if acts.dim() > 2:
        acts = acts.reshape(-1, acts.shape[-1])
    if d is not None and acts.shape[1] != d:
        raise ValueError(f"expected {d} units, got acts of shape {tuple(acts.shape)}")
    if acts.shape[1] < 2:
        raise ValueError(f"activation measures need d >= 2 units, got {acts.shape[1]}")
    return acts.detach()


def _acts_and_gate(acts: torch.Tensor, gate: torch.Tensor | None, d: int | None = None):
    """``acts`` and its gate as [tokens, d]; the gate must have acts' shape and is flattened alike."""
    flat = as_tokens(acts, d)
    if gate is None:
        return flat, None
    if not isinstance(gate, torch.Tensor) or gate.shape != acts.shape:
        raise ValueError(f"gate must have the shape of acts {tuple(acts.shape)}, got "
                         f"{tuple(getattr(gate, 'shape', ()))}")
    return flat, as_tokens(gate, d)


class _Accumulator:
    """A stream of activation batches of d units, kept on ``device``. A unit is active when
    ``gate > eps`` if ``update`` is given a gate, else when ``|acts| > eps``; eps is a float or a
    per-unit tensor [d]."""

    def __init__(self, d: int, eps, device: torch.device | str | None = None, *,
                 impl: str = "auto"):
        if d < 2:
            raise ValueError(f"activation measures need d >= 2 units, got {d}")
        _check_impl(impl)
        self.device = torch.device(device) if device is not None else None
        scalar, per_unit = eps_arg(eps, d, self.device or "cpu")  # validated once, here
        self.d, self.eps, self.impl = d, scalar if per_unit is None else per_unit, impl
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def _eps_on(self, device: torch.device):
        """Per-unit thresholds move to the batches' device once, not at every update."""
        if isinstance(self.eps, torch.Tensor) and self.eps.device != device:
            self.eps = self.eps.to(device)
        return self.eps


class _WindowedAccumulator(_Accumulator):
    """An accumulator that also keeps each window's fraction of active entries (batches [..., T, d])."""

    def _add_windows(self, token_active: torch.Tensor, window: int) -> None:
        """Record the windows of a batch from its per-token active counts (tokens in window order)."""
        per_window = token_active.view(-1, window).to(wide_dtype(self.device)).sum(dim=1)
        self._windows.append((per_window / (window * self.d)).to(self.device))

    def window_frac_active(self) -> torch.Tensor:
        """Fraction of active entries of every window seen, in order: [n_windows], float64."""
        if not self._windows:
            device = self.device or torch.device("cpu")
            return torch.zeros(0, dtype=wide_dtype(device), device=device)
        return torch.cat(self._windows)


class SparsityAccumulator(_WindowedAccumulator):
    """Streams activation batches into ``sparsity_stats`` with O(d) state, plus one density per
    window.

    Each ``update(acts, gate=None)`` reduces its batch at once to per-unit sums and sums over
    tokens of the per-token values (nothing of size tokens x d is kept); ``compute()`` returns the
    same dict as ``sparsity_stats`` on all batches seen. A batch of shape [B, T, d] (any dims
    before the last two index windows) also records each window's fraction of active entries
    among its T*d, which the standard error of a density gap needs; ``window_frac_active()``
    returns them in order. State lives on ``device`` (default: the first batch's device) in
    float64 (float32 on MPS); updates never synchronise the device.
    """

    def reset(self) -> None:
        self._sums: SparsitySums | None = None
        self._windows: list[torch.Tensor] = []

    @property
    def tokens(self) -> int:
        return 0 if self._sums is None else self._sums.tokens

    def update(self, acts: torch.Tensor, gate: torch.Tensor | None = None) -> None:
        flat, gate = _acts_and_gate(acts, gate, self.d)
        if self.device is None:
            self.device = flat.device
        if self._sums is None:
            self._sums = SparsitySums.zeros(self.d, self.device)
        if flat.shape[0] == 0:
            return
        # Per-token active counts come out of the kernel's first pass; only windows need them.
        counts = (torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
                  if acts.dim() > 2 else None)
        reduce = sparsity_sums if _use_kernel(flat, self.impl) else sparsity_sums_reference
        self._sums = self._sums + reduce(flat, self._eps_on(flat.device), gate=gate,
                                         token_active=counts)
        if counts is not None:
            self._add_windows(counts, acts.shape[-2])

    def compute(self) -> dict:
        if self.tokens == 0:
            raise ValueError("SparsityAccumulator.compute() before any token was seen")
        return stats_from_sums(self._sums)

    def all_reduce(self) -> None:
        """Sum the state over the ranks of torch.distributed's default group and gather every
        rank's windows in rank order (two collectives), so that ``compute()`` and
        ``window_frac_active()`` describe every rank's tokens. Every rank must call it, after at
        least one batch."""
        import torch.distributed as dist

        if self._sums is None:
            raise ValueError("SparsityAccumulator.all_reduce() before any batch was seen")
        s, mine = self._sums, self.window_frac_active()
        # One-hot by rank: the summed vector is every rank's window count, which the gather
        # needs (ranks may hold different numbers of windows), at no extra collective.
        windows = torch.zeros(dist.get_world_size())
        windows[dist.get_rank()] = mine.numel()
        parts = [s.active, s.abs_sum, s.sq_sum, s.hoyer_sum, s.top10_sum, torch.tensor(s.tokens),
                 windows]
        summed = sum_over_ranks(parts, s.abs_sum)
        tokens, *per_rank = (int(c) for c in torch.cat([summed[5].reshape(1), summed[6]]).tolist())
        self._sums = SparsitySums(summed[0].to(s.active.dtype), *summed[1:5], tokens=tokens)
        self._windows = [gather_windows(mine, per_rank)]


class DensityAccumulator(_WindowedAccumulator):
    """Only the density of ``SparsityAccumulator``: per-unit active counts and each window's
    fraction of active entries, with no per-token reductions (no top-k, no Hoyer), so a light
    measurement pays for its forwards and a compare. ``compute()`` returns ``frac_active``,
    ``firing_rate`` and ``tokens``, equal to those of ``SparsityAccumulator`` on the same batches.
    Batches must be [..., T, d] (windows of T tokens)."""

    def reset(self) -> None:
        self._active: torch.Tensor | None = None  # int64 [d]
        self._windows: list[torch.Tensor] = []
        self.tokens = 0

    def update(self, acts: torch.Tensor, gate: torch.Tensor | None = None) -> None:
        if acts.dim() < 3:
            raise ValueError(f"DensityAccumulator needs windows [..., T, d], got {tuple(acts.shape)}")
        flat, gate = _acts_and_gate(acts, gate, self.d)
        if self.device is None:
            self.device = flat.device
        if self._active is None:
            self._active = torch.zeros(self.d, dtype=torch.int64, device=self.device)
        with full_precision(flat.device):
            # fp32 0/1 sums are exact below 2**24 tokens a batch (far more than a probe batch holds)
            active = active_mask(flat, self._eps_on(flat.device), gate).to(torch.float32)
            self._active += active.sum(dim=0).to(torch.int64).to(self.device)
            self._add_windows(active.sum(dim=1), acts.shape[-2])
        self.tokens += flat.shape[0]

    def compute(self) -> dict:
        if self.tokens == 0:
            raise ValueError("DensityAccumulator.compute() before any token was seen")
        active = self._active.to(wide_dtype(self.device))
        return {"frac_active": float(active.sum() / (float(self.tokens) * self.d)),
                "firing_rate": (active / self.tokens).float(), "tokens": self.tokens}

    def all_reduce(self) -> None:
        """Sum the counts over the ranks and gather their windows in rank order (two collectives)."""
        import torch.distributed as dist

        if self._active is None:
            raise ValueError("DensityAccumulator.all_reduce() before any batch was seen")
        mine = self.window_frac_active()
        windows = torch.zeros(dist.get_world_size())
        windows[dist.get_rank()] = mine.numel()
        like = self._active.to(wide_dtype(self.device))
        summed = sum_over_ranks([self._active, torch.tensor(self.tokens), windows], like)
        self._active = summed[0].to(torch.int64)
        self.tokens, *per_rank = (int(c) for c in torch.cat([summed[1].reshape(1), summed[2]]).tolist())
        self._windows = [gather_windows(mine, per_rank)]


class CoactivationAccumulator(_Accumulator):
    """Streams activation batches into ``coactivation`` with one [d, d] count buffer.

    Counts B^T B accumulate in an fp32 buffer on ``device`` (default: the first batch's device;
    batches elsewhere are moved there). fp32 counts are exact below 2**24; before the buffer
    could pass that, it is folded into a float64 total, so counts stay exact for any stream.
    ``compute()`` returns float32 [d, d] counts / tokens.
    """

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None  # fp32, exact while _since_fold < 2**24
        self._folded: torch.Tensor | None = None  # wide total of earlier counts
        self._since_fold = 0
        self.tokens = 0

    def _fold(self) -> None:
        folded = self._counts.to(wide_dtype(self.device))
        self._folded = folded if self._folded is None else self._folded + folded
        self._counts.zero_()
        self._since_fold = 0

    def update(self, acts: torch.Tensor, gate: torch.Tensor | None = None) -> None:
        acts, gate = _acts_and_gate(acts, gate, self.d)
        if self.device is None:
            self.device = acts.device
        acts = acts.to(self.device)
        gate = None if gate is None else gate.to(self.device)
        if self._counts is None:
            self._counts = torch.zeros(self.d, self.d, dtype=torch.float32, device=self.device)
        add = coactivation_update_ if _use_kernel(acts, self.impl) else coactivation_update_reference_
        eps = self._eps_on(self.device)
        for start in range(0, acts.shape[0], EXACT_COUNT_LIMIT):
            rows = slice(start, start + EXACT_COUNT_LIMIT)
            chunk = acts[rows]
            if self._since_fold + chunk.shape[0] > EXACT_COUNT_LIMIT:
                self._fold()
            with full_precision(self.device):  # B^T B counts: a bf16 matmul would round them
                add(self._counts, chunk, eps, gate=None if gate is None else gate[rows])
            self._since_fold += chunk.shape[0]
            self.tokens += chunk.shape[0]

    def all_reduce(self) -> None:
        """Sum the counts over the ranks of torch.distributed's default group (one collective; see
        ``SparsityAccumulator.all_reduce``)."""
        if self._counts is None:
            raise ValueError("CoactivationAccumulator.all_reduce() before any batch was seen")
        total = self._counts.to(wide_dtype(self.device))
        if self._folded is not None:
            total = total + self._folded
        counts, tokens = sum_over_ranks([total, torch.tensor(self.tokens)], total)
        self._folded, self.tokens = counts, int(tokens.item())
        self._counts.zero_()
        self._since_fold = 0

    def compute(self) -> torch.Tensor:
        if self.tokens == 0:
            raise ValueError("CoactivationAccumulator.compute() before any token was seen")
        counts = self._counts.to(wide_dtype(self.device))
        if self._folded is not None:
            counts = counts + self._folded
        return (counts / self.tokens).float()


def sparsity_stats(acts: torch.Tensor, eps, *, gate: torch.Tensor | None = None,
                   impl: str = "auto") -> dict:
    """Sparsity statistics of ``acts`` [tokens, d]; active = gate > eps if a gate (shaped like
    acts) is given, else |a| > eps; eps a float or a per-unit tensor [d].

    Returns ``frac_active``, ``l1``, ``l2``, ``hoyer``, ``dead_frac``, ``top10_l1_share`` as
    Python floats (magnitudes always from acts), ``firing_rate`` as a float32 tensor [d] on the
    acts' device, and ``tokens``.
    """
    acts, gate = _acts_and_gate(acts, gate)
    if acts.shape[0] == 0:
        raise ValueError("sparsity_stats needs at least one token")
    if not _use_kernel(acts, impl):
        return sparsity_stats_reference(acts, eps, gate)
    acc = SparsityAccumulator(acts.shape[1], eps, acts.device, impl="kernel")
    acc.update(acts, gate)
    return acc.compute()


def coactivation(acts: torch.Tensor, eps, *, gate: torch.Tensor | None = None,
                 impl: str = "auto") -> torch.Tensor:
    """Co-activation C = B^T B / tokens, B = active as 0/1 (rule as in ``sparsity_stats``):
    float32 [d, d], diag = firing rate."""
    acts, gate = _acts_and_gate(acts, gate)
    if acts.shape[0] == 0:
        raise ValueError("coactivation needs at least one token")
    if not _use_kernel(acts, impl):
        with full_precision(acts.device):  # B^T B counts: a bf16 matmul would round them
            return coactivation_reference(acts, eps, gate)
    acc = CoactivationAccumulator(acts.shape[1], eps, acts.device, impl="kernel")
    acc.update(acts, gate)
    return acc.compute()


__all__ = [
    "CoactivationAccumulator",
    "EXACT_COUNT_LIMIT",
    "SparsityAccumulator",
    "active_mask",
    "as_tokens",
    "coactivation",
    "sparsity_stats",
]
