"""The ``cett`` active rule's threshold: ``cett_threshold(acts, weight, target)``.

The threshold of one MLP layer under CETT (Sparsing Law, arXiv 2411.02335), calibrated on
activations: the unit-contribution cut that changes the layer's output by ``target`` on average.
Its products W a run in fp32 even under an outer bf16 autocast (``full_precision``).
"""

from __future__ import annotations

import torch

from lamina.measures.activation import as_tokens
from lamina.measures.numeric import full_precision


def cett_threshold(acts: torch.Tensor, weight: torch.Tensor, target: float, *, max_iter: int = 60) -> float:
    """The CETT threshold of one MLP layer (Sparsing Law, arXiv 2411.02335).

    Unit j's contribution to token t's MLP output is c_tj = |a_tj| * ||W[:, j]|| (``weight`` is
    W_down, [out, d]). Dropping every contribution below tau changes the output y_t = W a_t by
    E(tau) = mean over tokens of ||W (a_t * [c_t < tau])|| / ||y_t|| (tokens with y_t = 0 left out);
    this returns the tau with E(tau) = ``target`` (0 < target < 1), found by bisection to within
    0.1% of the target (or ``max_iter`` halvings). E(0) = 0 and E(max c) = 1 bound the search.
    The products run in fp32 whatever autocast is on."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"cett target must be in (0, 1), got {target}")
    a = as_tokens(acts).float()
    w = weight.detach().to(a.device, torch.float32)
    if w.dim() != 2 or w.shape[1] != a.shape[1]:
        raise ValueError(f"weight must be [out, {a.shape[1]}], got {tuple(w.shape)}")
    with full_precision(a.device):
        return _bisect(a, w, target, max_iter)


def _bisect(a: torch.Tensor, w: torch.Tensor, target: float, max_iter: int) -> float:
    """``cett_threshold`` of fp32 tokens a [n, d] and W [out, d], autocast already off."""
    contribution = a.abs() * w.norm(dim=0)
    out_norm = (a @ w.T).norm(dim=1)
    keep = out_norm > 0
    a, contribution, out_norm = a[keep], contribution[keep], out_norm[keep]
    if a.shape[0] == 0:
        return 0.0

    def error(tau: float) -> float:
        dropped = torch.where(contribution < tau, a, torch.zeros_like(a))
        return float(((dropped @ w.T).norm(dim=1) / out_norm).mean())

    low, high = 0.0, float(contribution.max()) * (1 + 1e-6)
    for _ in range(max_iter):
        tau = (low + high) / 2
        e = error(tau)
        if abs(e - target) <= 1e-3 * target:
            return tau
        low, high = (tau, high) if e < target else (low, tau)
    return (low + high) / 2


__all__ = ["cett_threshold"]
