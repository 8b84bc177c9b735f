"""How far a model has moved from a reference: representation similarity, weight change, and
linear probes fitted on one model and read on another. Plain functions on torch tensors, run on the
tensors' device.

- Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited",
  eq. 5 with centred features): for paired rows X [n, p], Y [n, q], centred column-wise,
  CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F). It is 1 for Y = X R (any orthogonal R, any
  isotropic scale) and near (p q)^(1/2) / n for independent isotropic features (its small-sample
  floor: `cka_permutation_null` gives it for any features). Streamed: X^T X, Y^T Y, X^T Y and the
  column sums accumulate batch by batch in float64 ([p, p] + [q, q] + [p, q] state, never [n, n]),
  and centring happens at the end.
- Relative weight change ||W - W_ref||_F / ||W_ref||_F over a group of parameters.
- Ridge probe: a closed-form least-squares classifier (one-hot targets, ridge relative to the
  features' mean variance), fitted on one model's features, applied to another's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from lamina.measures import wide_dtype


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1, x.shape[-1])


class CKAAccumulator:
    """Linear CKA of two feature sets over streamed, paired batches of rows."""

    def __init__(self):
        self.xx = self.yy = self.xy = self.sx = self.sy = None
        self.rows = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add paired rows: x [..., p] and y [..., q] with the same leading shape."""
        x, y = _rows(x), _rows(y)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"CKA needs paired rows, got {x.shape[0]} and {y.shape[0]}")
        dtype = wide_dtype(x.device)
        x, y = x.to(dtype), y.to(dtype)
        if self.xx is None:
            self.xx = torch.zeros(x.shape[1], x.shape[1], dtype=dtype, device=x.device)
            self.yy = torch.zeros(y.shape[1], y.shape[1], dtype=dtype, device=x.device)
            self.xy = torch.zeros(x.shape[1], y.shape[1], dtype=dtype, device=x.device)
            self.sx = torch.zeros(x.shape[1], dtype=dtype, device=x.device)
            self.sy = torch.zeros(y.shape[1], dtype=dtype, device=x.device)
        self.xx.addmm_(x.T, x)
        self.yy.addmm_(y.T, y)
        self.xy.addmm_(x.T, y)
        self.sx += x.sum(dim=0)
        self.sy += y.sum(dim=0)
        self.rows += x.shape[0]

    def merged(self, other: CKAAccumulator) -> CKAAccumulator:
        """The accumulator of both sets of rows (as if every batch had gone into one)."""
        out = CKAAccumulator()
        for name in ("xx", "yy", "xy", "sx", "sy"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.rows = self.rows + other.rows
        return out

    def cka(self) -> float:
        """Linear CKA of the centred features; 0 when either set has no variance."""
        if self.xx is None or self.rows < 2:
            raise ValueError("CKA needs at least two rows")
        n = self.rows
        mx, my = self.sx / n, self.sy / n
        cxx = self.xx - n * torch.outer(mx, mx)
        cyy = self.yy - n * torch.outer(my, my)
        cxy = self.xy - n * torch.outer(mx, my)
        denom = torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy)
        if not float(denom) > 0:
            return 0.0
        return float(cxy.square().sum() / denom)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of paired rows x [..., p] and y [..., q] (leading dims flattened), centred."""
    acc = CKAAccumulator()
    acc.update(x, y)
    return acc.cka()


def cka_permutation_null(x: torch.Tensor, y: torch.Tensor, draws: int = 20, seed: int = 0) -> torch.Tensor:
    """CKA of x against y with y's rows shuffled, `draws` times: what CKA gives on these features
    when the pairing carries nothing (its small-sample floor). Seeded, never the global RNG."""
    x, y = _rows(x), _rows(y)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    values = [linear_cka(x, y[torch.randperm(y.shape[0], generator=generator).to(y.device)]) for _ in range(draws)]
    return torch.tensor(values, dtype=torch.float64)


def weight_change(current: Iterable[torch.Tensor], reference: Iterable[torch.Tensor]) -> float:
    """||W - W_ref||_F / ||W_ref||_F over all the tensors of a group, taken together."""
    diffs, refs = [], []
    for w, w_ref in zip(current, reference, strict=True):
        w_ref = w_ref.detach().to(wide_dtype(w_ref.device))
        diffs.append((w.detach().to(w_ref) - w_ref).square().sum())
        refs.append(w_ref.square().sum())
    diff, ref = (float(torch.stack(parts).sum()) for parts in (diffs, refs))  # one device sync
    return math.sqrt(diff / ref) if ref > 0 else 0.0


def parameter_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """Parameter names by group: `layer<i>` (block i) and `embeddings` (everything else: token
    and position embeddings, the tied output layer, the final norm). Tied tensors count once."""
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():  # (named_parameters lists a tied tensor once)
        parts = name.split(".")
        group = f"layer{parts[2]}" if parts[:2] == ["transformer", "h"] else "embeddings"
        groups.setdefault(group, []).append(name)
    return groups


def weight_changes(model: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
    """Relative weight change of each parameter group of `model` from `reference` (same shape)."""
    mine, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    return {
        group: weight_change((mine[n] for n in names), (theirs[n] for n in names))
        for group, names in parameter_groups(reference).items()
    }


@dataclass
class RidgeProbe:
    """scores = (x - mean) @ weight + prior; the predicted class is the largest score."""

    mean: torch.Tensor  # [d]
    weight: torch.Tensor  # [d, classes]
    prior: torch.Tensor  # [classes]: the training share of each class

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        x = _rows(x).to(self.weight)
        return ((x - self.mean) @ self.weight + self.prior).argmax(dim=1)

    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        if labels.numel() == 0:
            return float("nan")
        return float((self.predict(x) == labels.to(self.weight.device)).double().mean())


def fit_ridge_probe(x: torch.Tensor, labels: torch.Tensor, n_classes: int, ridge: float = 0.1) -> RidgeProbe:
    """Least squares onto one-hot labels with a ridge of `ridge` times the mean feature variance
    (so one setting fits layers of any scale); closed form, on x's device, in float64."""
    x = _rows(x)
    x = x.to(wide_dtype(x.device))
    labels = labels.to(x.device)
    onehot = torch.nn.functional.one_hot(labels, n_classes).to(x)
    mean, prior = x.mean(dim=0), onehot.mean(dim=0)
    xc = x - mean
    gram = xc.T @ xc
    scale = float(torch.diagonal(gram).mean()) or 1.0
    eye = torch.eye(gram.shape[0], dtype=x.dtype, device=x.device)
    weight = torch.linalg.solve(gram + ridge * scale * eye, xc.T @ (onehot - prior))
    return RidgeProbe(mean, weight, prior)


__all__ = [
    "CKAAccumulator",
    "RidgeProbe",
    "cka_permutation_null",
    "fit_ridge_probe",
    "linear_cka",
    "parameter_groups",
    "weight_change",
    "weight_changes",
]
