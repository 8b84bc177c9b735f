"""A plain nanoGPT-style PyTorch training loop: the yardstick lamina's trainer is measured against.

Written independently of lamina.lm on purpose (nanoGPT's optimizer groups, schedule and loop), so
that a bug in lamina's objective shows up as a gap between the two. As strong as nanoGPT's
train.py loop, not weaker: AdamW fused wherever this torch has the fused kernel for the device
(nanoGPT asks for it on CUDA; recent torch has it on the CPU too), no host sync per step (the
loss is read on the host only every `log_every` steps, as nanoGPT's `log_interval`), gradient
clipping by the global norm when `grad_clip` is not 0, the learning rate set per step from
nanoGPT's warmup-cosine `get_lr`, `zero_grad(set_to_none=True)`.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator

import torch

from lamina.model import GPT


def fused_adamw_available(device: torch.device) -> bool:
    """Whether torch.optim.AdamW(fused=True) takes parameters on `device` (CUDA; the CPU in torch >= 2.4)."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1, device=device))], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def nanogpt_optimizer(model: GPT, lr: float, weight_decay: float, betas: tuple[float, float],
                      fused: bool | None = None) -> torch.optim.AdamW:
    """nanoGPT's two groups (decay on matrices; here, as in lamina, not on the embeddings) and AdamW,
    fused where available unless `fused` says otherwise."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    decay = [p for n, p in params.items() if p.dim() >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for n, p in params.items() if not (p.dim() >= 2 and "wte" not in n and "wpe" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if fused is None:
        fused = fused_adamw_available(next(model.parameters()).device)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


def nanogpt_lr(step: int, lr: float, warmup: int, max_steps: int, min_lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    ratio = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_plain(
    model: GPT,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
    warmup: int,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    grad_clip: float = 1.0,
    timed_from: int = 0,
    log_every: int = 10,
    fused: bool | None = None,
    after_step: Callable[[int], bool] | None = None,
) -> dict:
    """Train for `steps` steps; returns the losses, tokens/s from step `timed_from` on (wall time; and
    the process's CPU time over the same steps, `cpu_seconds`), and the wall time of the steps before
    it (`warmup_seconds`: compilation and allocator warm-up). `after_step(n)`, if given, is called
    after the n-th optimizer step (n from 1; e.g. to validate, bench/speedrun.py); it returning True
    ends training there (the schedule is still the one of `steps` steps)."""
    optimizer = nanogpt_optimizer(model, lr, weight_decay, betas, fused)
    device = next(model.parameters()).device
    model.train()
    losses, tokens, start = [], 0, None
    synchronize(device)
    began = time.perf_counter()
    for step in range(steps):
        if step == timed_from:
            synchronize(device)
            start, cpu_start, tokens = time.perf_counter(), time.process_time(), 0
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(step, lr, warmup, steps, lr * min_lr_ratio)
        x, y = next(batches)
        _, loss = model(x, y)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        if log_every and step % log_every == 0:
            loss.item()  # nanoGPT's log_interval: its one host sync
        tokens += y.numel()
        if after_step is not None and after_step(step + 1):
            break
    synchronize(device)
    end, cpu_end = time.perf_counter(), time.process_time()
    elapsed = end - (start if start is not None else began)
    return {
        "losses": torch.stack(losses).float().tolist(),
        "tokens_per_sec": tokens / elapsed,
        "seconds": elapsed,
        "cpu_seconds": cpu_end - cpu_start if start is not None else None,
        "warmup_seconds": (start if start is not None else end) - began,
        "fused_adamw": bool(optimizer.defaults.get("fused")),
    }


@torch.no_grad()
def mean_val_loss(model: GPT, val_batches) -> float:
    model.eval()
    total, rows = 0.0, 0
    for x, y in val_batches:
        _, loss = model(x, y)
        total += loss.item() * x.size(0)
        rows += x.size(0)
    model.train()
    return total / rows
