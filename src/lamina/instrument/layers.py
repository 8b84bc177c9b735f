"""Layers: effective rank of the centred residual stream after each block (DESIGN.md, "Measures").

The residual stream of a probe is streamed into its Gram matrix G = X^T X and its column sums
([n_embd, n_embd] and [n_embd], on the device), so the probe's tokens are never held at once.
Centring happens at the end: X_c^T X_c = G - n mu mu^T, with mu the mean row. X_c and
(X_c^T X_c)^(1/2) have the same singular values, so one eigendecomposition gives them and
`lamina.measures.effective_rank_from_singular_values` the effective rank.

Read it against its floor: the same measure on `id_b`, a second sample of the same text. The
difference of the two (`layers/layer<i>/effective_rank_floor`) is what sampling alone moves it by;
a change over training or between layers smaller than that is not a finding.
"""

from __future__ import annotations

import torch

from lamina import measures, tags
from lamina.measures import sum_over_ranks, wide_dtype


class GramAccumulator:
    """X^T X and the column sums of streamed rows of X (leading dims flattened), in float64."""

    def __init__(self):
        self.gram: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.rows = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1])
        x = x.to(wide_dtype(x.device))
        if self.gram is None:
            self.gram = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
            self.total = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        self.gram.addmm_(x.T, x)
        self.total += x.sum(dim=0)
        self.rows += x.shape[0]

    def all_reduce(self) -> None:
        """Sum G, the column sums and the row count over torch.distributed's default group (every
        rank calls it, after at least one batch)."""
        if self.gram is None:
            raise ValueError("GramAccumulator.all_reduce() before any row was seen")
        self.gram, self.total, rows = sum_over_ranks([self.gram, self.total, torch.tensor(self.rows)], self.gram)
        self.rows = int(rows.item())

    def singular_values(self, centred: bool = True) -> torch.Tensor:
        """Singular values of X (centred: of X minus its mean row), largest last."""
        if self.gram is None:
            raise ValueError("GramAccumulator: no rows seen")
        g = self.gram
        if centred:
            mean = self.total / self.rows
            g = g - self.rows * torch.outer(mean, mean)
        g = (g + g.T) / 2
        return torch.linalg.eigvalsh(g).clamp_min(0.0).sqrt()

    def effective_rank(self, centred: bool = True) -> float:
        return measures.effective_rank_from_singular_values(self.singular_values(centred))


def layer_scalars(grams: dict[str, list[GramAccumulator]], reference: str = "id", floor: str = "id_b") -> dict:
    """`layers/layer<i>/effective_rank` on `reference`, `/effective_rank_<floor>` on the second
    sample, and `/effective_rank_floor`, their absolute difference; `/effective_rank_rows`, the
    rows it was computed on (at least 4 x n_embd makes it trustworthy)."""
    scalars: dict[str, float] = {}
    if reference not in grams:
        return scalars
    for i, gram in enumerate(grams[reference]):
        rank = gram.effective_rank()
        scalars[tags.effective_rank(i)] = rank
        scalars[tags.effective_rank(i, "rows")] = float(gram.rows)
        if floor in grams:
            other = grams[floor][i].effective_rank()
            scalars[tags.effective_rank(i, floor)] = other
            scalars[tags.effective_rank(i, "floor")] = abs(rank - other)
    return scalars
