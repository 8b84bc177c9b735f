"""Phi similarity of units: how much more often two units fire together than independent ones.

- ``phi_similarity(coactivation)``: the phi coefficient of every pair from a co-activation C =
  B^T B / n, clipped at 0, zero diagonal; float64.
- ``activity_phi(active)``: the same from 0/1 activity [n, d], with exact pair counts.
- ``pair_counts(x)``, ``phi_of(x)``: the exact counts X^T X of a 0/1 float32 buffer and their
  phi (what ``activity_phi`` and the nulls' draws run on).

The counts are an fp32 matmul, under ``full_precision``: an outer bf16 autocast would round
them to 8 significant bits (``lamina.instrument.precision``).
"""

from __future__ import annotations

import torch

from lamina.kernels import EXACT_COUNT_LIMIT
from lamina.measures.numeric import full_precision, wide_dtype


def phi_similarity(coactivation: torch.Tensor) -> torch.Tensor:
    """Phi coefficient of every pair of units from their co-activation C = B^T B / n (diag C =
    firing rate p), clipped at 0, zero diagonal: S_ij = max(0, (C_ij - p_i p_j) /
    sqrt(p_i (1 - p_i) p_j (1 - p_j))); 0 for units that never or always fire. float64 on the
    matrix's device (float32 on MPS)."""
    dtype = wide_dtype(coactivation.device)
    c = coactivation.to(dtype)
    c = (c + c.T) / 2
    p = torch.diagonal(c).clamp(0.0, 1.0)
    spread = torch.sqrt(p * (1 - p))
    denom = spread[:, None] * spread[None, :]
    phi = torch.where(denom > 0, (c - p[:, None] * p[None, :]) / denom.clamp_min(1e-300), torch.zeros_like(c))
    phi = phi.clamp(0.0, 1.0)
    phi.fill_diagonal_(0.0)
    return phi


def as_active(active: torch.Tensor) -> torch.Tensor:
    """0/1 activity [tokens, units] as bool (nonzero = active), at least one token."""
    a = torch.as_tensor(active)
    if a.dim() != 2 or a.shape[0] == 0:
        raise ValueError(f"activity must be [tokens, units] with at least one token, got {tuple(a.shape)}")
    return a if a.dtype == torch.bool else a != 0


def pair_counts(x: torch.Tensor) -> torch.Tensor:
    """X^T X for 0/1 float32 x [n, d]: exact joint-activity counts, float64 [d, d] (float32 on
    MPS). fp32 sums of 0/1 products are exact below 2**24 tokens, so tokens go in chunks of
    that many; on the CPU only the upper block triangle is multiplied (X^T X is symmetric).
    Autocast is off for the products: under a bf16 one they would not be exact."""
    n, d = x.shape
    wide = wide_dtype(x.device)
    out = torch.zeros(d, d, dtype=wide, device=x.device)
    step = d if x.device.type != "cpu" else max(1, -(-d // 4))
    with full_precision(x.device):
        for t in range(0, n, EXACT_COUNT_LIMIT):
            chunk = x[t : t + EXACT_COUNT_LIMIT]
            for i in range(0, d, step):
                out[i : i + step, i:] += (chunk[:, i : i + step].T @ chunk[:, i:]).to(wide)
    if step < d:
        out = out.triu() + out.triu(1).T
    return out


def phi_of(x: torch.Tensor) -> torch.Tensor:
    """``phi_similarity`` of 0/1 float32 activity x [n, d] (exact counts)."""
    return phi_similarity(pair_counts(x) / x.shape[0])


def activity_phi(active: torch.Tensor) -> torch.Tensor:
    """``phi_similarity`` of 0/1 activity [n, d] (bool, or nonzero = active): the co-activation
    is ``coactivation(active.float(), 0.5)`` with exact counts, in float64."""
    return phi_of(as_active(active).to(torch.float32))


__all__ = ["activity_phi", "as_active", "pair_counts", "phi_of", "phi_similarity"]
