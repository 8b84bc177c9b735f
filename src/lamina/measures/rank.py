"""Representation measures: the effective rank of a matrix, or of its singular values.

- ``effective_rank(x)``: exp of the entropy of the normalised singular values of x (no
  centring), in float64 on x's device (the CPU for MPS). An all-zero x has rank 0.0.
- ``effective_rank_from_singular_values(s)``: the same from given singular values (what the
  streamed Gram matrix of ``lamina.instrument.layers`` yields).
"""

from __future__ import annotations

import torch

from lamina.measures.numeric import compute_device


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy of s / sum(s)) for the singular values s of x as given (no centring).

    x is [rows, features] (leading dims are flattened into rows). An all-zero x has rank 0.0.
    """
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(f"effective_rank needs a matrix, got shape {tuple(x.shape)}")
    if x.dim() > 2:
        x = x.reshape(-1, x.shape[-1])
    return effective_rank_from_singular_values(torch.linalg.svdvals(x.detach().to(compute_device(x), torch.float64)))


def effective_rank_from_singular_values(s: torch.Tensor) -> float:
    """exp(entropy of s / sum(s)) for singular values s (any order); all zero gives 0.0."""
    s = torch.as_tensor(s).detach().to(torch.float64).clamp_min(0.0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


__all__ = ["effective_rank", "effective_rank_from_singular_values"]
