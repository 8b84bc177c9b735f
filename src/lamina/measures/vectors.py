"""Per-vector measures of hidden states: how concentrated each vector's energy is.

Per-vector measures of a batch of hidden states h [..., d] (the last dim is the vector), as
Jin et al. (arXiv 2603.03415, github.com/MingyuJ666/sparsityLLM) apply them to the final
hidden state, beside lamina's Hoyer. Each returns float64 [...] (one value per vector, so
that standard errors over problems can be taken), computed in float64 on h's device (the CPU
for MPS, which has no float64). A zero vector (sum of squares 0 in float64) counts as
maximally sparse, the one-hot limit, as `sparsity_stats` counts an all-zero token as 1:
energy_share 1, entropy_rank 1/d, hoyer 1. Non-finite entries propagate (no check, no sync).

- ``energy_share(h, frac)``: the share of sum h_j^2 held by the top ``frac`` of entries.
- ``entropy_rank(h)``: exp(H(h^2 / ||h||^2)) / d.
- ``hoyer(h)``: (sqrt(d) - ||h||_1 / ||h||_2) / (sqrt(d) - 1).
- ``top_fraction_count(d, frac)``: how many of d entries make the top ``frac``.
"""

from __future__ import annotations

import math

import torch

from lamina.measures.numeric import compute_device


_ROUNDINGS = ("ceil", "floor")


def top_fraction_count(d: int, frac: float, *, rounding: str = "ceil") -> int:
    """How many of d entries make the top ``frac`` of them, at least 1.

    ``rounding="ceil"``: ceil(frac d) in exact rational arithmetic on frac as written in decimal
    (0.07 is 7/100: 100 entries give 7, where ``math.ceil(0.07 * 100)`` is 8), as
    ``lamina.kernels.top_count`` does for 10%. ``rounding="floor"``: max(1, floor(frac d)), the
    count of Jin et al.'s code (``max(1, int(d * frac))``; the same for frac 0.01, 0.05, 0.1).
    """
    from fractions import Fraction

    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    q = Fraction(repr(float(frac)))
    if not 0 < q <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac!r}")
    k = math.ceil(q * d) if rounding == "ceil" else math.floor(q * d)
    return max(1, k)


def _vectors(h: torch.Tensor) -> torch.Tensor:
    """h as float64 on its compute device; the last dim is the vector, of d >= 2 entries."""
    h = torch.as_tensor(h)
    if h.dim() < 1 or h.shape[-1] < 2:
        raise ValueError(f"last-layer measures need vectors of d >= 2 entries, got shape {tuple(h.shape)}")
    return h.detach().to(compute_device(h), torch.float64)


def _safe_ratio(num: torch.Tensor, den: torch.Tensor, zero: torch.Tensor, fill: float) -> torch.Tensor:
    """num / den where not ``zero``, ``fill`` where ``zero`` (no NaN on either branch)."""
    ratio = num / torch.where(zero, torch.ones_like(den), den)
    return torch.where(zero, torch.full_like(ratio, fill), ratio)


def energy_share(h: torch.Tensor, frac: float, *, rounding: str = "ceil") -> torch.Tensor:
    """Share of sum_j h_j^2 held by the k largest h_j^2 of each vector, k =
    ``top_fraction_count(d, frac, rounding=rounding)`` (ceil(frac d) by default). In [k/d, 1]:
    a constant vector gives k/d, a one-hot (or zero) vector 1. float64 [...] for h [..., d]."""
    x = _vectors(h)
    k = top_fraction_count(x.shape[-1], frac, rounding=rounding)
    sq = x * x
    total = sq.sum(dim=-1)
    top = sq.topk(k, dim=-1).values.sum(dim=-1)
    return _safe_ratio(top, total, total == 0, 1.0).clamp(0.0, 1.0)


def entropy_rank(h: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) / d with p = h^2 / ||h||^2 and H the natural-log entropy (0 log 0 = 0), for
    each vector. In [1/d, 1]: a constant vector gives 1, a one-hot (or zero) vector 1/d.
    float64 [...] for h [..., d]. (Jin et al.'s code adds 1e-10 inside the log; a difference of
    order d * 1e-9 in H.)"""
    x = _vectors(h)
    d = x.shape[-1]
    sq = x * x
    total = sq.sum(dim=-1)
    zero = total == 0
    p = sq / torch.where(zero, torch.ones_like(total), total)[..., None]
    rank = torch.exp(-torch.xlogy(p, p).sum(dim=-1)) / d
    return torch.where(zero, torch.full_like(rank, 1.0 / d), rank).clamp(1.0 / d, 1.0)


def hoyer(h: torch.Tensor) -> torch.Tensor:
    """Hoyer sparsity (sqrt(d) - ||h||_1 / ||h||_2) / (sqrt(d) - 1) of each vector, in [0, 1]:
    a one-hot (or zero) vector gives 1, a constant one 0. float64 [...] for h [..., d]; its
    mean over tokens is ``sparsity_stats(...)["hoyer"]``."""
    x = _vectors(h)
    root_d = math.sqrt(x.shape[-1])
    l1 = x.abs().sum(dim=-1)
    sq = (x * x).sum(dim=-1)
    ratio = _safe_ratio(l1, sq.sqrt(), sq == 0, 1.0)
    value = (root_d - ratio) / (root_d - 1.0)
    return torch.where(sq == 0, torch.ones_like(value), value).clamp(0.0, 1.0)


__all__ = ["energy_share", "entropy_rank", "hoyer", "top_fraction_count"]
