"""Layers: effective rank of the residual stream after each block (DESIGN.md, "Measures").

The residual stream of a probe is streamed into its Gram matrix G = X^T X ([n_embd, n_embd], on
the device), so the probe's tokens are never held at once. X and G^(1/2) have the same singular
values, so `lamina.measures.effective_rank` of diag(sqrt(eig(G))) is the effective rank of X.
"""

from __future__ import annotations

import torch

from lamina import measures
from lamina.measures import sum_over_ranks


def _wide(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class GramAccumulator:
    """X^T X over streamed rows of X (leading dims flattened), accumulated in float64."""

    def __init__(self):
        self.gram: torch.Tensor | None = None
        self.rows = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1])
        x = x.to(_wide(x.device))
        if self.gram is None:
            self.gram = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        self.gram.addmm_(x.T, x)
        self.rows += x.shape[0]

    def all_reduce(self) -> None:
        """Sum G and the row count over torch.distributed's default group (every rank calls it,
        after at least one batch)."""
        if self.gram is None:
            raise ValueError("GramAccumulator.all_reduce() before any row was seen")
        self.gram, rows = sum_over_ranks([self.gram, torch.tensor(self.rows)], self.gram)
        self.rows = int(rows.item())

    def singular_values(self) -> torch.Tensor:
        if self.gram is None:
            raise ValueError("GramAccumulator: no rows seen")
        g = (self.gram + self.gram.T) / 2
        return torch.linalg.eigvalsh(g).clamp_min(0.0).sqrt()

    def effective_rank(self) -> float:
        return effective_rank_from_singular_values(self.singular_values())


def effective_rank_from_singular_values(s: torch.Tensor) -> float:
    """`measures.effective_rank` of a matrix with singular values s (diag(s) is one)."""
    return measures.effective_rank(torch.diag(s))
