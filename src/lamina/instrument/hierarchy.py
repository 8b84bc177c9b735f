"""Hierarchy: linear probes per layer for labels at four tiers (DESIGN.md, "Measures": Layers).

Which layer holds what: for each label kind (lexical: token identity, digit; conceptual: entity,
attribute, town; functional: operator, carry, task marker; output: the answer token) a linear
probe reads the label off the residual stream after each block, fitted on one split of the
labelled tokens and scored on the other.

The probe is a least-squares classifier in closed form: ridge regression of the one-hot label
onto standardised features, prediction = the argmax class. One eigendecomposition of the fit
split's Gram matrix gives the solution for every ridge of `RIDGES` (in units of fit items), and
the ridge is chosen by the exact closed-form leave-one-out accuracy on the fit split, so the
scoring split is never looked at and no fit item is spent on a validation set.

A probe that reads a label is not yet a finding: a probe with enough capacity memorises a
label per token type whatever the layer holds. Its null is Hewitt & Liang's control task (EMNLP
2019): each token type gets a fixed random label, assigned so that the control labels keep the
label's own marginals (`control_labels`), so the control can only be learnt by memorising token
identity. The same probe (its ridge chosen the same way, on the control's labels) fits
`CONTROL_DRAWS` such controls; **selectivity = accuracy - mean control accuracy** is what is
reported, beside chance (the fit split's majority class scored on the other split).

Its standard error has two parts: the per-item difference (correct - control correct) over the
scoring items (paired: both are scored on the same items), and the spread s between control
draws (one random function of the tokens is easier to fit than another by luck; read as the
null, the label is one more draw, so s^2 (1 + 1/K) enters). Without the second part a label
that is itself a function of the token type would show a "finding" from the luck of its draw.

How to read it: selectivity > 0 (z > 3) says the layer holds the label beyond what memorising
token types gives. A label with no structure in a layer that holds token identity gives
selectivity < 0 (the control is memorised, the label is not): never a finding. For the token
label itself the control is a random many-to-one grouping of the same tokens; there the curve
to read is `acc` against `chance`.

`layers/probe/<label>/peak_layer` is the layer of highest selectivity and `peak_gap_z` the z of
its lead over the runner-up layer: below ~2 the peak is not told apart from noise. Everything
runs on the features' device: the decomposition in float64 (float32 on MPS), the [items,
classes] score products in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure

from lamina.instrument.precision import in_full_precision, model_forward
from lamina.measures import wide_dtype

TIERS: dict[str, str] = {
    "token": "lexical",
    "digit": "lexical",
    "entity": "conceptual",
    "attribute": "conceptual",
    "town": "conceptual",
    "operator": "functional",
    "carry": "functional",
    "task": "functional",
    "answer": "output",
}
TIER_ORDER = ("lexical", "conceptual", "functional", "output", "other")
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # lambda / fit items, on standardised features
MIN_ITEMS = 16  # per split: fewer and a label is skipped (an accuracy on 5 items is noise)
CONTROL_DRAWS = 8  # control tasks per label: their spread is part of the selectivity's error


@dataclass
class LayerProbe:
    """One label's probe at one layer: accuracies on the scoring split, and what they rest on.

    `correct` ([n_test] bool) and `control_correct` ([n_test] float: the share of control draws
    the item was right in) stay on the features' device for paired comparisons (between layers,
    for the peak's z); `control_accs` holds each control draw's accuracy."""

    acc: float
    chance: float
    n_train: int
    n_test: int
    ridge: float
    control_ridge: float
    correct: torch.Tensor
    control_correct: torch.Tensor
    control_accs: tuple[float, ...]

    @property
    def control_acc(self) -> float:
        return sum(self.control_accs) / len(self.control_accs)

    @property
    def selectivity(self) -> float:
        return self.acc - self.control_acc

    @property
    def selectivity_se(self) -> float:
        """Standard error of the selectivity: the paired item-level error over the scoring items,
        and the spread between control draws (a random function of the tokens is easier or harder
        to fit by luck; under the null the label is one more such draw: variance s^2 (1 + 1/K))."""
        items = paired_se(self.correct, self.control_correct)
        k = len(self.control_accs)
        if k < 2:
            return items
        spread = float(np.var(self.control_accs, ddof=1))
        return math.sqrt(items**2 + spread * (1 + 1 / k))


def tier_of(label: str) -> str:
    return TIERS.get(label, "other")


def paired_se(a: torch.Tensor, b: torch.Tensor) -> float:
    """Standard error of mean(a - b) over paired items (ddof=1); 0 with fewer than 2 items."""
    diff = a.double() - b.double()
    if diff.numel() < 2:
        return 0.0
    return float(diff.std(correction=1)) / math.sqrt(diff.numel())


# ---- splits and the control task ------------------------------------------------------------


def split_items(n: int, seed: int = 0, groups: torch.Tensor | None = None, train_fraction: float = 0.5,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """A seeded fit/score split of n items ([n] bool, True = fit). With `groups` ([n] int, e.g.
    the example each token comes from) whole groups go to one side, so tokens of one example never
    sit on both sides (their features share a context)."""
    gen = torch.Generator().manual_seed(int(seed))
    if groups is None:
        order = torch.randperm(n, generator=gen)
        train = torch.zeros(n, dtype=torch.bool)
        train[order[: int(round(train_fraction * n))]] = True
        return train.to(device)
    ids, inverse = torch.unique(groups.cpu(), return_inverse=True)
    chosen = torch.zeros(len(ids), dtype=torch.bool)
    chosen[torch.randperm(len(ids), generator=gen)[: int(round(train_fraction * len(ids)))]] = True
    return chosen[inverse].to(device)


def control_labels(labels: torch.Tensor, token_ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Hewitt & Liang's control task: every token type among the labelled items gets one label at
    random, so that the labelled items' control labels have the label's own marginals (to within
    one type's count per class: a control whose majority class were larger by luck would have a
    higher chance and bias the selectivity down). Types are laid out in a random order, each
    spanning as many slots as it has items, against the items' labels sorted by a random class
    order; each type takes the label at its span's midpoint. Unlabelled items (-1) stay -1. A
    fixed function of (labels, token_ids, seed): every measurement of a run probes the same
    control."""
    labels_cpu, tokens_cpu = labels.cpu(), token_ids.cpu()
    labelled = labels_cpu >= 0
    out = torch.full_like(labels_cpu, -1)
    if not bool(labelled.any()):
        return out.to(labels.device)
    types, inverse, type_counts = torch.unique(tokens_cpu[labelled], return_inverse=True, return_counts=True)
    classes, class_counts = torch.unique(labels_cpu[labelled], return_counts=True)
    gen = torch.Generator().manual_seed(int(seed))
    type_order = torch.randperm(len(types), generator=gen)
    class_order = torch.randperm(len(classes), generator=gen)
    ends = torch.cumsum(class_counts[class_order], 0).double()
    spans = type_counts[type_order].double()
    midpoints = torch.cumsum(spans, 0) - spans / 2
    slot = torch.searchsorted(ends, midpoints).clamp_max(len(classes) - 1)
    per_type = torch.empty(len(types), dtype=labels_cpu.dtype)
    per_type[type_order] = classes[class_order[slot]]
    out[labelled] = per_type[inverse]
    return out.to(labels.device)


# ---- the probe ------------------------------------------------------------------------------


def _class_index(y_train: torch.Tensor, y_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Labels as 0..C-1 over the classes of the fit split; a scoring label the fit split never
    saw becomes -1 (a probe cannot predict it: it counts as wrong)."""
    classes, y_tr = torch.unique(y_train, return_inverse=True)
    pos = torch.searchsorted(classes, y_test).clamp_max(len(classes) - 1)
    y_te = torch.where(classes[pos] == y_test, pos, torch.full_like(pos, -1))
    return y_tr, y_te, len(classes)


class RidgeClassifier:
    """Ridge least squares of one-hot targets on standardised features, for every ridge at once.

    The constructor decomposes the fit split's Gram matrix once; `targets` turns one label vector
    into the moments every ridge shares; `loo_accuracy` is the exact leave-one-out accuracy of a
    ridge (y_-i = (y_i - h_i t_i) / (1 - h_i), h the hat matrix's diagonal, the intercept's 1/n
    included); `predict` scores items projected once by `project`. The task and its control
    draws, on the same items, share the decomposition and the projection."""

    def __init__(self, x: torch.Tensor):
        dtype = wide_dtype(x.device)
        x = x.to(dtype)
        self.n = x.shape[0]
        self.mean = x.mean(dim=0)
        sd = x.std(dim=0, correction=0)
        self.sd = torch.where(sd > 0, sd, torch.ones_like(sd))  # constant features: centred to 0
        xs = (x - self.mean) / self.sd
        eigvals, self.basis = torch.linalg.eigh(xs.T @ xs)
        self.eigvals = eigvals.clamp_min(0.0)
        self.z = xs @ self.basis  # fit items in the eigenbasis [n, d]
        # The [items, classes] score products run in float32: an argmax needs no more, and they
        # are the cost (n d C per ridge); the decomposition stays wide.
        self.z32 = self.z.float()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Items standardised as the fit split and put in its eigenbasis [m, d]."""
        return (((x.to(self.z.dtype) - self.mean) / self.sd) @ self.basis).float()

    def targets(self, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y, class shares [C], V^T X^T Y [d, C]); X is centred, so X^T Y = X^T (Y - mean Y)."""
        prior = torch.bincount(y, minlength=n_classes).to(self.z.dtype) / self.n
        zty = torch.zeros(self.z.shape[1], n_classes, dtype=self.z.dtype, device=self.z.device)
        zty.index_add_(1, y, self.z.T)
        return y, prior, zty

    def _weights(self, zty: torch.Tensor, ridge: float) -> torch.Tensor:
        return (zty / (self.eigvals + ridge * self.n)[:, None]).float()

    def loo_accuracy(self, targets: tuple, ridge: float) -> float:
        y, prior, zty = targets
        inv = 1.0 / (self.eigvals + ridge * self.n)
        keep = (1.0 / (1.0 - ((self.z.square() * inv).sum(dim=1) + 1.0 / self.n)).clamp_min(1e-12)).float()
        loo = (self.z32 @ self._weights(zty, ridge) + prior.float()) * keep[:, None]
        loo[torch.arange(self.n, device=y.device), y] -= keep - 1.0  # h / (1 - h) = keep - 1: i's own target out
        return float((loo.argmax(dim=1) == y).double().mean())

    def best_ridge(self, targets: tuple, ridges: Sequence[float] = RIDGES) -> float:
        """The ridge of highest leave-one-out accuracy; on a tie the larger (the simpler probe)."""
        best, best_acc = None, -1.0
        for ridge in sorted(ridges, reverse=True):
            acc = self.loo_accuracy(targets, ridge)
            if acc > best_acc + 1e-12:
                best, best_acc = ridge, acc
        return float(best)

    def predict(self, z: torch.Tensor, targets: tuple, ridge: float) -> torch.Tensor:
        """Predicted classes [m] of projected items z, by the probe fitted to `targets`."""
        _, prior, zty = targets
        return (z @ self._weights(zty, ridge) + prior.float()).argmax(dim=1)


@in_full_precision  # the score products are fp32 matmuls: under autocast, bf16 ones
def probe_layer(features: torch.Tensor, labels: torch.Tensor, controls: Sequence[torch.Tensor],
                train: torch.Tensor, ridges: Sequence[float] = RIDGES) -> LayerProbe | None:
    """The probe and its control draws at one layer. `features` [N, d]; `labels` and each of
    `controls` [N] (items with label -1 are left out); `train` [N] bool. The control's ridge is
    chosen (leave-one-out) on the first draw and kept for the others. None when a split has
    fewer than MIN_ITEMS labelled items or the fit split holds a single class."""
    device = features.device
    labels, train = labels.to(device), train.to(device)
    keep = labels >= 0
    fit, score = keep & train, keep & ~train
    if int(fit.sum()) < MIN_ITEMS or int(score.sum()) < MIN_ITEMS:
        return None
    y_tr, y_te, n_classes = _class_index(labels[fit], labels[score])
    if n_classes < 2:
        return None
    probe = RidgeClassifier(features[fit])
    z_test = probe.project(features[score])
    task = probe.targets(y_tr, n_classes)
    ridge = probe.best_ridge(task, ridges)
    correct = probe.predict(z_test, task, ridge) == y_te
    control_ridge, control_hits = None, []
    for control in controls:
        c_tr, c_te, n_control = _class_index(control.to(device)[fit], control.to(device)[score])
        if n_control < 2:  # a one-class control: the probe predicts the fit split's class
            control_hits.append(c_te == 0)
            continue
        targets = probe.targets(c_tr, n_control)
        if control_ridge is None:
            control_ridge = probe.best_ridge(targets, ridges)
        control_hits.append(probe.predict(z_test, targets, control_ridge) == c_te)
    hits = torch.stack(control_hits).double()
    majority = torch.bincount(y_tr, minlength=n_classes).argmax()
    return LayerProbe(
        acc=float(correct.double().mean()),
        chance=float((y_te == majority).double().mean()),
        n_train=int(fit.sum()),
        n_test=int(score.sum()),
        ridge=ridge,
        control_ridge=float("nan") if control_ridge is None else control_ridge,
        correct=correct,
        control_correct=hits.mean(dim=0),
        control_accs=tuple(float(a) for a in hits.mean(dim=1)),
    )


def control_draws(labels: torch.Tensor, token_ids: torch.Tensor, seed: int = 0,
                  draws: int = CONTROL_DRAWS) -> list[torch.Tensor]:
    """`draws` control tasks (`control_labels` with seeds derived from `seed`)."""
    return [control_labels(labels, token_ids, (int(seed) * 1_000_003 + k) % 2**63) for k in range(draws)]


def probe_layers(residuals: Sequence[torch.Tensor], labels: torch.Tensor, token_ids: torch.Tensor,
                 split: torch.Tensor | int = 0, *, groups: torch.Tensor | None = None,
                 ridges: Sequence[float] = RIDGES, control_seed: int = 0,
                 draws: int = CONTROL_DRAWS) -> list[LayerProbe] | None:
    """One label's probe at every layer: `residuals` [N, d] per layer, `labels` [N] (-1 = no
    label), `token_ids` [N] (the token type of each item, for the control), `split` a [N] bool
    mask (True = fit) or a seed for `split_items` (by `groups` when given). The same split and
    the same control draws serve every layer. None when the label has too few items."""
    n = int(labels.shape[0])
    if isinstance(split, int):
        split = split_items(n, split, groups)
    controls = control_draws(labels, token_ids, control_seed, draws)
    results = [probe_layer(x, labels, controls, split, ridges) for x in residuals]
    return None if any(r is None for r in results) else results


def peak_layer(results: Sequence[LayerProbe]) -> tuple[int, float]:
    """(layer of highest selectivity, z of its lead over the runner-up layer: the paired item
    error on the shared scoring items plus each layer's control-mean error s^2 / K; +inf when the
    lead has no variance, nan with one layer)."""
    sel = [r.selectivity for r in results]
    order = sorted(range(len(sel)), key=lambda i: sel[i], reverse=True)
    best = order[0]
    if len(order) < 2:
        return best, float("nan")
    top, runner = results[best], results[order[1]]
    lead = sel[best] - sel[order[1]]
    a = top.correct.double() - top.control_correct
    b = runner.correct.double() - runner.control_correct
    var = paired_se(a, b) ** 2 + sum(_control_mean_var(r) for r in (top, runner))
    se = math.sqrt(var)
    return best, (lead / se if se > 0 else (0.0 if lead == 0 else math.inf))


def _control_mean_var(r: LayerProbe) -> float:
    k = len(r.control_accs)
    return float(np.var(r.control_accs, ddof=1)) / k if k > 1 else 0.0


def probe_hierarchy(residuals: Sequence[torch.Tensor], labels: Mapping[str, torch.Tensor], token_ids: torch.Tensor,
                    split: torch.Tensor | int = 0, *, groups: torch.Tensor | None = None,
                    ridges: Sequence[float] = RIDGES, control_seed: int = 0,
                    draws: int = CONTROL_DRAWS) -> dict[str, list[LayerProbe]]:
    """`probe_layers` for each label kind of `labels` (name -> [N]), plus `token` (the token
    identity, from `token_ids`) unless given; labels with too few items are left out."""
    labels = dict(labels)
    labels.setdefault("token", token_ids)
    if isinstance(split, int):
        split = split_items(int(token_ids.shape[0]), split, groups)
    out = {}
    for name, y in labels.items():
        results = probe_layers(residuals, y, token_ids, split, ridges=ridges, control_seed=control_seed, draws=draws)
        if results is not None:
            out[name] = results
    return out


def hierarchy_scalars(results: Mapping[str, Sequence[LayerProbe]]) -> dict[str, float]:
    """Tags: `layers/layer<i>/probe/<label>/acc`, `/control_acc`, `/selectivity`,
    `/selectivity_se`, `/chance`; per label `layers/probe/<label>/peak_layer`, `/peak_selectivity`,
    `/peak_gap_z` (lead of the peak over the runner-up layer, paired z), `/n_train`, `/n_test`."""
    out: dict[str, float] = {}
    for name, layers in results.items():
        for i, r in enumerate(layers):
            prefix = f"layers/layer{i}/probe/{name}"
            out[f"{prefix}/acc"] = r.acc
            out[f"{prefix}/control_acc"] = r.control_acc
            out[f"{prefix}/selectivity"] = r.selectivity
            out[f"{prefix}/selectivity_se"] = r.selectivity_se
            out[f"{prefix}/chance"] = r.chance
        best, z = peak_layer(layers)
        out[f"layers/probe/{name}/peak_layer"] = float(best)
        out[f"layers/probe/{name}/peak_selectivity"] = layers[best].selectivity
        if not math.isnan(z):
            out[f"layers/probe/{name}/peak_gap_z"] = z
        out[f"layers/probe/{name}/n_train"] = float(layers[0].n_train)
        out[f"layers/probe/{name}/n_test"] = float(layers[0].n_test)
    return out


# ---- reading the model ----------------------------------------------------------------------


@dataclass
class LabelledResiduals:
    """Residual streams at labelled positions: `residuals` [N, d] per layer (float32, on the
    device), `labels` name -> [N], `token_ids` [N], `rows` [N] (each item's probe row, the group
    `split_items` keeps whole)."""

    residuals: list[torch.Tensor]
    labels: dict[str, torch.Tensor]
    token_ids: torch.Tensor
    rows: torch.Tensor


def labelled_positions(labels: Mapping[str, torch.Tensor], shape: tuple[int, int], max_items: int | None,
                       seed: int = 0) -> torch.Tensor:
    """[rows, T] bool: positions with at least one label (every position with no labels), at
    most `max_items` of them kept, chosen at random (seeded)."""
    if labels:
        mask = torch.stack([torch.as_tensor(y).cpu() >= 0 for y in labels.values()]).any(dim=0)
    else:
        mask = torch.ones(shape, dtype=torch.bool)
    where = mask.flatten().nonzero().squeeze(1)
    if max_items is not None and len(where) > max_items:
        gen = torch.Generator().manual_seed(int(seed))
        dropped = where[torch.randperm(len(where), generator=gen)[max_items:]]
        mask = mask.flatten().clone()
        mask[dropped] = False
        mask = mask.view(shape)
    return mask


def collect_residuals(model: torch.nn.Module, tokens: torch.Tensor, labels: Mapping[str, torch.Tensor],
                      batch_size: int, device: torch.device | str, max_items: int | None = 8192,
                      seed: int = 0) -> LabelledResiduals:
    """Run `tokens` [rows, T] through the model (no grad; eval mode is the caller's; the forward
    precision the measurement's) and keep each block's output residual, as fp32, at the positions of
    `labelled_positions`.
    `labels` name -> [rows, T] per-token labels (-1 = none)."""
    mask = labelled_positions(labels, tuple(tokens.shape), max_items, seed)
    kept: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            part = mask[start : start + batch_size].to(device)
            if not bool(part.any()):
                continue
            record: dict = {}
            model_forward(model, tokens[start : start + batch_size].to(device), record=record)
            for i, resid in enumerate(record["resid"]):
                if len(kept) <= i:
                    kept.append([])
                kept[i].append(resid[part].float())
            del record
    rows = torch.arange(tokens.shape[0])[:, None].expand_as(mask)[mask]
    flat = {name: torch.as_tensor(y).cpu()[mask].to(device) for name, y in labels.items()}
    return LabelledResiduals([torch.cat(parts) for parts in kept], flat, tokens.cpu()[mask].to(device),
                             rows.to(device))


def measure_hierarchy(model: torch.nn.Module, tokens: torch.Tensor, labels: Mapping[str, torch.Tensor],
                      batch_size: int, device: torch.device | str, *, max_items: int | None = 8192,
                      seed: int = 0) -> dict[str, list[LayerProbe]]:
    """`collect_residuals`, then `probe_hierarchy` split by probe row (seeded); the control task
    shares the seed. Feed the result to `hierarchy_scalars` and `hierarchy_figure`."""
    data = collect_residuals(model, tokens, labels, batch_size, device, max_items, seed)
    split = split_items(len(data.rows), seed, data.rows, device=data.rows.device)
    return probe_hierarchy(data.residuals, data.labels, data.token_ids, split, control_seed=seed)


# ---- the picture ----------------------------------------------------------------------------


def tier_sorted(names: Sequence[str]) -> list[str]:
    """Label names ordered by tier (lexical first, output last), then by name."""
    return sorted(names, key=lambda n: (TIER_ORDER.index(tier_of(n)), n))


def hierarchy_figure(results: Mapping[str, Sequence[LayerProbe]], step: int | None = None) -> Figure:
    """Selectivity per label (rows, grouped by tier) and layer (columns): a diverging heatmap
    centred at 0, each cell written with its standard error, each row's peak boxed where it is
    a finding (selectivity > 3 se)."""
    names = tier_sorted(list(results))
    n_layers = max((len(results[n]) for n in names), default=0)
    sel = np.full((len(names), n_layers), np.nan)
    se = np.full_like(sel, np.nan)
    for r, name in enumerate(names):
        for c, probe in enumerate(results[name]):
            sel[r, c], se[r, c] = probe.selectivity, probe.selectivity_se
    width, height = max(4.0, 2.2 + 0.7 * n_layers), max(2.5, 1.2 + 0.35 * len(names))
    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=1.6 / width, right=1 - 1.0 / width, bottom=0.55 / height, top=1 - 0.4 / height)
    ax = fig.add_subplot()
    ax.set_title("probe selectivity (acc - control acc) by layer" + ("" if step is None else f", step {step}"),
                 fontsize=8)
    if sel.size == 0:
        ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
        return fig
    finite = sel[np.isfinite(sel)]
    half = max(float(np.abs(finite).max()) if finite.size else 1.0, 0.05)
    image = ax.imshow(np.ma.masked_invalid(sel), cmap=colormaps["RdBu_r"].with_extremes(bad="0.8"),
                      norm=CenteredNorm(0.0, half), aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(n_layers), [str(i) for i in range(n_layers)], fontsize=7)
    ax.set_yticks(np.arange(len(names)), [f"{tier_of(n)}: {n}" for n in names], fontsize=7)
    ax.set_xlabel("layer", fontsize=8)
    for r, name in enumerate(names):
        best, _ = peak_layer(results[name])
        peak = results[name][best]
        if peak.selectivity > 3 * peak.selectivity_se:  # box only a peak that is a finding
            ax.add_patch(_box(best, r))
        for c in range(len(results[name])):
            ax.text(c, r, f"{sel[r, c]:.2f}\n\u00b1{se[r, c]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(sel[r, c]) > 0.6 * half else "black")
    cax = fig.add_axes((1 - 0.85 / width, 0.55 / height, 0.12 / width, 1 - 0.95 / height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("selectivity", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return fig


def _box(col: int, row: int):
    from matplotlib.patches import Rectangle

    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5)


__all__ = [
    "MIN_ITEMS",
    "RIDGES",
    "TIERS",
    "LabelledResiduals",
    "LayerProbe",
    "RidgeClassifier",
    "collect_residuals",
    "CONTROL_DRAWS",
    "control_draws",
    "control_labels",
    "hierarchy_figure",
    "hierarchy_scalars",
    "labelled_positions",
    "measure_hierarchy",
    "peak_layer",
    "probe_hierarchy",
    "probe_layer",
    "probe_layers",
    "split_items",
    "tier_of",
]
