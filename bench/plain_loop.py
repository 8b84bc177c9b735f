"""A plain nanoGPT-style PyTorch training loop: the yardstick lamina's trainer is measured against.

Written independently of lamina.lm on purpose (nanoGPT's optimizer groups, schedule and loop), so
that a bug in lamina's objective shows up as a gap between the two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch

from lamina.model import GPT


def nanogpt_optimizer(model: GPT, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    decay = [p for n, p in params.items() if p.dim() >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for n, p in params.items() if not (p.dim() >= 2 and "wte" not in n and "wpe" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def nanogpt_lr(step: int, lr: float, warmup: int, max_steps: int, min_lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    ratio = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


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
) -> dict:
    """Train for `steps` steps; returns losses and tokens/s measured from step `timed_from` on."""
    optimizer = nanogpt_optimizer(model, lr, weight_decay, betas)
    model.train()
    losses, tokens, start = [], 0, None
    for step in range(steps):
        if step == timed_from:
            start, tokens = time.perf_counter(), 0
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(step, lr, warmup, steps, lr * min_lr_ratio)
        x, y = next(batches)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
        tokens += y.numel()
    elapsed = time.perf_counter() - start
    return {"losses": losses, "tokens_per_sec": tokens / elapsed, "seconds": elapsed}


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
