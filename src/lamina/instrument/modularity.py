"""Modularity: partition a layer's units by co-activation, Newman Q, stability across measurements.

From the co-activation C = B^T B / tokens of the `id` probe (B: active as 0/1; diag C = firing
rate p) the similarity of units i, j is their phi coefficient (the Pearson correlation of their
binary activity), clipped at 0:

    S_ij = max(0, (C_ij - p_i p_j) / sqrt(p_i (1 - p_i) p_j (1 - p_j)))

Subtracting p_i p_j removes the uniform background that joint firing of frequent units would
otherwise put between every pair (two independent units have S = 0), and units that never or
always fire (p = 0 or 1) have no edge, so `lamina.measures.partition` leaves them out (label -1):
dead neurons are excluded. The partition is spectral clustering with k fixed (`n_modules`) or by
eigengap in [2, max_modules]; Q = `measures.modularity_q(S, labels)`; stability =
`measures.partition_nmi` between this partition and the previous measurement's of the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lamina import measures


def phi_similarity(coactivation: torch.Tensor) -> torch.Tensor:
    """Phi coefficient of every pair of units from their co-activation matrix, clipped at 0,
    zero diagonal; float64 on the matrix's device (float32 on MPS)."""
    dtype = torch.float32 if coactivation.device.type == "mps" else torch.float64
    c = coactivation.to(dtype)
    c = (c + c.T) / 2
    p = torch.diagonal(c).clamp(0.0, 1.0)
    spread = torch.sqrt(p * (1 - p))
    denom = spread[:, None] * spread[None, :]
    phi = torch.where(denom > 0, (c - p[:, None] * p[None, :]) / denom.clamp_min(1e-300), torch.zeros_like(c))
    phi = phi.clamp(0.0, 1.0)
    phi.fill_diagonal_(0.0)
    return phi


@dataclass
class LayerModules:
    """A layer's partition: `labels` (CPU LongTensor [d], -1 excluded), `k` modules, Q, and the
    NMI with the previous partition (None at the first measurement)."""

    labels: torch.Tensor
    similarity: torch.Tensor
    k: int
    q: float
    stability: float | None

    def module_units(self) -> list[torch.Tensor]:
        """Unit indices of each module 0..k-1."""
        return [torch.nonzero(self.labels == m).flatten() for m in range(self.k)]


def find_modules(
    coactivation: torch.Tensor,
    previous: torch.Tensor | None = None,
    n_modules: int | None = None,
    max_modules: int = 16,
    seed: int = 0,
) -> LayerModules:
    """Partition one layer's units (see the module docstring)."""
    similarity = phi_similarity(coactivation)
    if n_modules is None:
        labels = measures.partition(similarity, None, min_k=2, max_k=max_modules, seed=seed)
    else:
        labels = measures.partition(similarity, n_modules, seed=seed)
    labels = labels.cpu()
    q = measures.modularity_q(similarity, labels)
    stability = None if previous is None else measures.partition_nmi(labels, previous)
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    return LayerModules(labels, similarity, k, q, stability)


def modularity_scalars(layers: list[LayerModules]) -> dict[str, float]:
    scalars: dict[str, float] = {}
    for i, mods in enumerate(layers):
        scalars[f"modularity/layer{i}/q"] = mods.q
        scalars[f"modularity/layer{i}/modules"] = float(mods.k)
        scalars[f"modularity/layer{i}/excluded_frac"] = float((mods.labels < 0).float().mean())
        if mods.stability is not None:
            scalars[f"modularity/layer{i}/stability"] = mods.stability
    return scalars
