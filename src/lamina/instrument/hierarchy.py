"""Hierarchy: linear probes per layer for labels at four tiers (DESIGN.md, "Measures": Layers).

Which layer holds what: for each label kind (lexical: token identity, digit; conceptual: entity,
attribute, town; functional: operator, carry, task marker; output: the answer token) a linear
probe reads the label off the residual stream after each block, fitted on one split of the
labelled tokens and scored on the other (split by probe row, so tokens that share a context never
sit on both sides).

The probe is a least-squares classifier in closed form: ridge regression of the one-hot label
onto standardised features, prediction = the argmax class. One eigendecomposition of the fit
split's Gram matrix gives the solution for every ridge of `RIDGES` (in units of fit items), and
the ridge is chosen by the exact closed-form leave-one-out accuracy on the fit split, so the
scoring split is never looked at and no fit item is spent on a validation set.

**What a layer adds: the gain of a probe over a baseline that needs no context.** A probe that
reads a label is not yet a finding: with byte tokens every label is partly a function of the
current byte, and a linear probe on d >= (byte types) features can fit any function of the byte.
Three ways to take that out were weighed (the argument, fixed before the study's runs):

- Hewitt & Liang's control task (EMNLP 2019: the same probe on a random function of the token
  type; selectivity = accuracy - control accuracy), this module's earlier reading. With byte tokens
  the lexical labels (token, digit) *are* functions of the byte, as is the control, so their
  selectivity is 0 by construction; and the probe fits a random function of the byte about as well
  as the byte is kept (on 1000-step world-v2-tiny runs, seeds 1 and 3: control accuracy 0.95-1.00 for
  every label at the first block, falling with the token at later ones), so the selectivity of every
  label above the lexical tier came out negative or nil at every block. It could show nothing.
- MDL probing (Voita & Titov, EMNLP 2020: the online code length of the labels given the layer,
  against the uniform code). It reads information and the effort to extract it, but against a
  uniform code the token itself compresses every label as well at the embedding as at any layer,
  so it leaves in what the byte gives (taking that out needs the baseline below anyway); and an
  online code is 7-10 probe fits per label and layer (one per portion): several times this
  instrument's cost, in the measurement battery of every fit.
- **Conditional probing** (Hewitt, Ethayarajh, Liang & Manning, EMNLP 2021, "measuring usable
  information beyond a baseline"): the accuracy of a probe on [baseline; layer] minus that of a
  probe on the baseline alone, the usable (V-)information the layer adds beyond the baseline. With
  the baseline the embedding output (the input of block 0: the token, and its position where the
  model embeds positions), it reads what the block has computed from the context, and it needs no
  random draws: one fit per label on the embedding and one per block (on twice the features), in
  place of a fit and 8 control draws per block: a little more (two 1000-step world-v2-tiny runs,
  about 5500 items, one thread: 1.13-1.17 s of CPU a measurement before, 1.27-1.30 s after). **Chosen.**

So every label is read by one rule, **gain = accuracy of the reading - accuracy of its baseline**,
the baseline being what needs no network at all:

- conceptual, functional and output labels: the probe on [embedding; block output] against the
  probe on the embedding (`embed_acc`), read as [embedding; embedding] so that both probes have the
  same features, standardisation and ridge grid, and a block that is the embedding (a zero-init
  model's at step 0) gains exactly 0;
- lexical labels (token, digit): the label *is* the token, so a gain beyond the embedding is 0 by
  construction; they are read as the probe on the block output against chance (the fit split's
  majority class scored on the other split): where in the network the token is still readable.

**Depth** of a label: the centre of gravity of its positive gains over the blocks (Tenney, Das &
Pavlick, ACL 2019, "BERT rediscovers the classical NLP pipeline": sum_l l s(l) / sum_l s(l)),
block 0 at 0 and the last block at 1. A flat profile sits at 0.5; one that fades with depth
below it (the token, as blocks turn to the next token); one that builds up, above it.

**Intervals within a run**: a bootstrap over the scoring split's probe rows (a row's tokens share
a context, so they are resampled together), `BOOTSTRAP_DRAWS` draws, the same draws for every
label, so that a tier's depth, the mean of its labels', and the contrast between tiers keep the
labels' correlation. Each gain, mean gain, depth, tier depth and the contrast carries its `_se`.

**Readable**: a label's mean gain over the blocks above its null with z > `READ_Z` (bootstrap se);
the null of a gain is 0 (a probe of labels with no relation to the features scores chance; a
block that adds nothing beyond the embedding gains nothing: both tested). Only readable labels
get a depth that enters their tier's: a label read nowhere has no centre of gravity to speak of.
Against an untrained network (the study reads step 0 of the same run) a higher tier's gain is
compared there; for a lexical label the untrained network is no null (its residual stream is the
embedding, which holds the token). An untrained GPT-2-init network (no zero-init projections)
does read context beyond the embedding through its near-uniform attention, a little more at each
block: in tests/test_claim_hierarchy.py five such toy networks give a depth contrast of a few
hundredths, inside the claim's margin.

Everything runs on the features' device: the decomposition in float64 (float32 on MPS), the
[items, classes] score products in float32.
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

from lamina import tags
from lamina.instrument.precision import forward_precision, in_full_precision, model_forward
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
HIGHER_TIERS = ("conceptual", "functional", "output")  # the claim's "higher" tiers, pooled as `higher`
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # lambda / fit items, on standardised features
MIN_ITEMS = 16  # per split: fewer and a label is skipped (an accuracy on 5 items is noise)
BOOTSTRAP_DRAWS = 200  # resamples of the scoring rows: a standard error to within about 5%
READ_Z = 3.0  # a label is read where its mean gain / se exceeds this


def tier_of(label: str) -> str:
    return TIERS.get(label, "other")


def is_lexical(label: str) -> bool:
    return tier_of(label) == "lexical"


@dataclass
class LayerProbe:
    """One label's reading at one block: `acc` its accuracy (lexical: the probe on the block output;
    else the probe on [embedding; block output]), `base_acc` its baseline's (lexical: chance; else
    the probe on the embedding), `ridge` the ridge chosen, `correct` ([n_test] bool) its hits on
    the label's scoring items, `gain_se` the bootstrap standard error of `gain` (set by
    `probe_hierarchy`)."""

    acc: float
    base_acc: float
    ridge: float
    correct: torch.Tensor
    gain_se: float = math.nan

    @property
    def gain(self) -> float:
        """The reading's accuracy minus its baseline's: what the block adds (see the module's text)."""
        return self.acc - self.base_acc


@dataclass
class LabelProbe:
    """One label's probes at every block, and what they rest on. `base_correct` ([n_test] bool)
    the baseline's hits (lexical: the majority class; else the probe on the embedding), `groups`
    ([n_test]) the probe row of each scoring item (the bootstrap resamples rows),
    `gain_draws` ([draws, layers]) the mean gain per layer in each bootstrap draw."""

    name: str
    layers: list[LayerProbe]
    chance: float
    embed_acc: float
    base_correct: torch.Tensor
    groups: torch.Tensor
    n_train: int
    n_test: int
    gain_draws: torch.Tensor | None = None

    @property
    def tier(self) -> str:
        return tier_of(self.name)

    @property
    def gains(self) -> list[float]:
        return [r.gain for r in self.layers]

    @property
    def mean_gain(self) -> float:
        return float(np.mean(self.gains))

    @property
    def mean_gain_se(self) -> float:
        return _se(self.gain_draws.mean(dim=1)) if self.gain_draws is not None else math.nan

    @property
    def depth(self) -> float:
        return float(centre_of_gravity(torch.tensor(self.gains, dtype=torch.float64)))

    @property
    def depth_draws(self) -> torch.Tensor:
        return centre_of_gravity(self.gain_draws)

    @property
    def depth_se(self) -> float:
        return _se(self.depth_draws) if self.gain_draws is not None else math.nan

    @property
    def readable(self) -> bool:
        """Its mean gain over the blocks stands above 0 by more than READ_Z bootstrap se."""
        se = self.mean_gain_se
        return bool(se > 0 and self.mean_gain / se > READ_Z) or bool(se == 0 and self.mean_gain > 0)

    @property
    def peak_layer(self) -> int:
        return int(np.argmax(self.gains))


def centre_of_gravity(gains: torch.Tensor) -> torch.Tensor:
    """Per row of `gains` ([..., L]): the layer position (0: first block, 1: last) weighted by the
    positive gains (Tenney et al. 2019's centre of gravity); nan where no gain is positive or L < 2."""
    gains = gains.double()
    n = gains.shape[-1]
    if n < 2:
        return torch.full(gains.shape[:-1], math.nan, dtype=torch.float64)
    weights = gains.clamp_min(0.0)
    total = weights.sum(dim=-1)
    positions = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=gains.device)
    centre = (weights * positions).sum(dim=-1) / total
    return torch.where(total > 0, centre, torch.full_like(centre, math.nan))


def _se(draws: torch.Tensor) -> float:
    """The bootstrap standard error: the standard deviation of the finite draws (nan with < 2)."""
    finite = draws[torch.isfinite(draws)].double()
    return float(finite.std(correction=1)) if finite.numel() > 1 else math.nan


# ---- splits -----------------------------------------------------------------------------------


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
    included); `predict` scores items projected once by `project`."""

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


def fit_and_score(x_fit: torch.Tensor, x_score: torch.Tensor, y_fit: torch.Tensor, y_score: torch.Tensor,
                  n_classes: int, ridges: Sequence[float] = RIDGES) -> tuple[torch.Tensor, float]:
    """(hits [m] bool on the scoring items, the ridge chosen by leave-one-out on the fit items)."""
    probe = RidgeClassifier(x_fit)
    targets = probe.targets(y_fit, n_classes)
    ridge = probe.best_ridge(targets, ridges)
    return probe.predict(probe.project(x_score), targets, ridge) == y_score, ridge


@in_full_precision  # the score products are fp32 matmuls: under autocast, bf16 ones
def probe_label(name: str, embedding: torch.Tensor, residuals: Sequence[torch.Tensor], labels: torch.Tensor,
                train: torch.Tensor, groups: torch.Tensor, ridges: Sequence[float] = RIDGES) -> LabelProbe | None:
    """One label's probes: on the embedding output (`embedding` [N, d], read as [embedding;
    embedding]) and at each block (`residuals` [N, d] each): for a lexical label on the block
    output, for the others on [embedding; block output] (conditional probing).
    `labels` [N] (-1: no label), `train` [N] bool, `groups` [N] (each item's probe row). None when a
    split has fewer than MIN_ITEMS labelled items or the fit split holds a single class."""
    device = embedding.device
    labels, train, groups = labels.to(device), train.to(device), groups.to(device)
    keep = labels >= 0
    fit, score = keep & train, keep & ~train
    if int(fit.sum()) < MIN_ITEMS or int(score.sum()) < MIN_ITEMS:
        return None
    y_fit, y_score, n_classes = _class_index(labels[fit], labels[score])
    if n_classes < 2:
        return None
    majority = torch.bincount(y_fit, minlength=n_classes).argmax()
    chance_correct = y_score == majority
    # The baseline reads the embedding twice, so that it and the reading of [embedding; block] have
    # the same features, standardisation and ridge grid, and a block that is the embedding gains
    # exactly 0 (beside the embedding alone, a duplicated feature set gains by its halved effective
    # ridge: +0.025 on `entity` at step 0 of a zero-init world-v2-tiny model, whose blocks are the identity).
    # A lexical label needs none: its baseline is chance (the embedding holds the token).
    lexical = is_lexical(name)
    embed_correct = None
    if not lexical:
        twice = torch.cat([embedding, embedding], dim=1)
        embed_correct, _ = fit_and_score(twice[fit], twice[score], y_fit, y_score, n_classes, ridges)
    base_correct = chance_correct if lexical else embed_correct
    base_acc = float(base_correct.double().mean())
    layers = []
    for h in residuals:
        x = h if lexical else torch.cat([embedding, h], dim=1)  # conditional probing: the baseline beside the block
        correct, ridge = fit_and_score(x[fit], x[score], y_fit, y_score, n_classes, ridges)
        layers.append(LayerProbe(acc=float(correct.double().mean()), base_acc=base_acc, ridge=ridge, correct=correct))
    return LabelProbe(name, layers, chance=float(chance_correct.double().mean()),
                      embed_acc=math.nan if lexical else float(embed_correct.double().mean()),
                      base_correct=base_correct,
                      groups=groups[score], n_train=int(fit.sum()), n_test=int(score.sum()))


def row_draws(groups: torch.Tensor, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bootstrap over groups: (the groups' ids [R], counts [draws, R]: how often each group is
    drawn in each of `draws` resamples of R groups with replacement)."""
    ids = torch.unique(groups.cpu())
    gen = torch.Generator().manual_seed(int(seed))
    picks = torch.randint(len(ids), (draws, len(ids)), generator=gen)
    counts = torch.zeros(draws, len(ids), dtype=torch.float64)
    counts.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))
    return ids, counts


def bootstrap(results: Mapping[str, LabelProbe], groups: torch.Tensor, draws: int = BOOTSTRAP_DRAWS,
              seed: int = 0) -> None:
    """Each label's `gain_draws` and each layer's `gain_se` from one bootstrap over the scoring
    rows (`groups`: the scoring items' rows, every label's among them), shared by every label."""
    if not results:
        return
    ids, counts = row_draws(groups, draws, seed)
    for probe in results.values():
        where = torch.searchsorted(ids, probe.groups.cpu())
        weights = counts[:, where]  # [draws, n_test]
        diffs = torch.stack([r.correct.cpu().double() for r in probe.layers]) - probe.base_correct.cpu().double()
        total = weights.sum(dim=1, keepdim=True)
        probe.gain_draws = torch.where(total > 0, weights @ diffs.T / total.clamp_min(1e-12),
                                       torch.full((draws, len(probe.layers)), math.nan, dtype=torch.float64))
        for i, layer in enumerate(probe.layers):
            layer.gain_se = _se(probe.gain_draws[:, i])


def probe_hierarchy(residuals: Sequence[torch.Tensor], labels: Mapping[str, torch.Tensor], token_ids: torch.Tensor,
                    split: torch.Tensor | int = 0, *, embedding: torch.Tensor, groups: torch.Tensor | None = None,
                    ridges: Sequence[float] = RIDGES, seed: int = 0,
                    draws: int = BOOTSTRAP_DRAWS) -> dict[str, LabelProbe]:
    """`probe_label` for each label kind of `labels` (name -> [N]), plus `token` (the token
    identity, from `token_ids`) unless given, then the bootstrap. `residuals` [N, d] per block,
    `embedding` [N, d] the embedding output (block 0's input); `split` a [N] bool mask (True = fit)
    or a seed for `split_items`; `groups` [N] each item's probe row (the split keeps rows whole and
    the bootstrap resamples them; None: every item its own). Labels with too few items are left out."""
    n = int(token_ids.shape[0])
    labels = dict(labels)
    labels.setdefault("token", token_ids)
    groups = torch.arange(n, device=token_ids.device) if groups is None else groups
    if isinstance(split, int):
        split = split_items(n, split, groups, device=token_ids.device)
    out = {}
    for name, y in labels.items():
        result = probe_label(name, embedding, residuals, y, split, groups, ridges)
        if result is not None:
            out[name] = result
    bootstrap(out, groups[~split.to(groups.device)], draws, seed)
    return out


# ---- tiers --------------------------------------------------------------------------------------


@dataclass
class TierReading:
    """A tier's mean gain (over its labels and blocks) and the depth of its readable labels (the
    mean of their centres of gravity), each with its bootstrap draws."""

    labels: tuple[str, ...]  # every label of the tier probed
    read: tuple[str, ...]  # those readable: their depths enter the tier's
    gain: float
    gain_draws: torch.Tensor
    depth: float
    depth_draws: torch.Tensor

    @property
    def gain_se(self) -> float:
        return _se(self.gain_draws)

    @property
    def depth_se(self) -> float:
        return _se(self.depth_draws)


def tier_reading(results: Mapping[str, LabelProbe], tiers: Sequence[str]) -> TierReading | None:
    """The reading of the labels of `tiers` pooled (None: none probed)."""
    probes = [p for p in results.values() if p.tier in tiers and p.gain_draws is not None]
    if not probes:
        return None
    gain = float(np.mean([p.mean_gain for p in probes]))
    gain_draws = torch.stack([p.gain_draws.mean(dim=1) for p in probes]).mean(dim=0)
    read = [p for p in probes if p.readable and math.isfinite(p.depth)]
    if read:
        depth = float(np.mean([p.depth for p in read]))
        depth_draws = torch.stack([p.depth_draws for p in read]).nanmean(dim=0)
    else:
        depth, depth_draws = math.nan, torch.full_like(gain_draws, math.nan)
    return TierReading(tuple(p.name for p in probes), tuple(p.name for p in read), gain, gain_draws, depth, depth_draws)


def tier_readings(results: Mapping[str, LabelProbe]) -> dict[str, TierReading]:
    """Each tier of TIER_ORDER but `other` with a label probed, and `higher` (HIGHER_TIERS pooled)."""
    out = {t: tier_reading(results, (t,)) for t in TIER_ORDER[:-1]}
    out["higher"] = tier_reading(results, HIGHER_TIERS)
    return {t: r for t, r in out.items() if r is not None}


def hierarchy_scalars(results: Mapping[str, LabelProbe]) -> dict[str, float]:
    """Tags, per label and block i: `layers/layer<i>/probe/<label>/acc` (the reading's accuracy:
    lexical, the probe on the block output; else on [embedding; block output]), `/gain`, `/gain_se`;
    per label `layers/probe/<label>/chance`, `/embed_acc` (not for lexical labels), `/mean_gain`,
    `/mean_gain_se`, `/peak_layer` (of highest gain), `/n_train`, `/n_test`, and where it is
    readable `/depth`, `/depth_se`; per tier (lexical, conceptual, functional, output,
    higher) `layers/tier/<tier>/gain`, `/gain_se`, `/labels_read` and, where a label is read,
    `/depth`, `/depth_se`; and `layers/tier/contrast`, `/contrast_se` (higher - lexical depth)."""
    out: dict[str, float] = {}
    for name, probe in results.items():
        for i, r in enumerate(probe.layers):
            out[tags.label_probe(name, "acc", i)] = r.acc
            out[tags.label_probe(name, "gain", i)] = r.gain
            if math.isfinite(r.gain_se):
                out[tags.label_probe(name, "gain_se", i)] = r.gain_se
        out.update({tags.label_probe(name, "chance"): probe.chance,
                    tags.label_probe(name, "mean_gain"): probe.mean_gain,
                    tags.label_probe(name, "peak_layer"): float(probe.peak_layer),
                    tags.label_probe(name, "n_train"): float(probe.n_train),
                    tags.label_probe(name, "n_test"): float(probe.n_test)})
        _finite_into(out, tags.label_probe(name, "embed_acc"), probe.embed_acc)  # (lexical labels: none)
        _finite_into(out, tags.label_probe(name, "mean_gain_se"), probe.mean_gain_se)
        if probe.readable:
            _finite_into(out, tags.label_probe(name, "depth"), probe.depth)
            _finite_into(out, tags.label_probe(name, "depth_se"), probe.depth_se)
    tiers = tier_readings(results)
    for tier, reading in tiers.items():
        out[tags.tier(tier, "gain")] = reading.gain
        out[tags.tier(tier, "labels_read")] = float(len(reading.read))
        _finite_into(out, tags.tier(tier, "gain_se"), reading.gain_se)
        _finite_into(out, tags.tier(tier, "depth"), reading.depth)
        _finite_into(out, tags.tier(tier, "depth_se"), reading.depth_se)
    if "higher" in tiers and "lexical" in tiers:
        contrast = tiers["higher"].depth - tiers["lexical"].depth
        _finite_into(out, tags.TIER_CONTRAST, contrast)
        if math.isfinite(contrast):
            draws = tiers["higher"].depth_draws - tiers["lexical"].depth_draws  # the same draws: paired
            _finite_into(out, tags.TIER_CONTRAST_SE, _se(draws))
    return out


def _finite_into(out: dict[str, float], tag: str, value: float) -> None:
    """A tag only where its value is finite (a nan in TensorBoard would read as a measurement)."""
    if math.isfinite(value):
        out[tag] = float(value)


# ---- reading the model ----------------------------------------------------------------------


@dataclass
class LabelledResiduals:
    """Residual streams at labelled positions: `residuals` [N, d] per block and `embedding` [N, d]
    the embedding output (block 0's input; float32, on the device), `labels` name -> [N],
    `token_ids` [N], `rows` [N] (each item's probe row, the group `split_items` keeps whole)."""

    residuals: list[torch.Tensor]
    embedding: torch.Tensor
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


def embedding_output(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """What block 0 of a lamina GPT reads ([B, T, d]): the token embedding, plus the position
    embedding where the model has one (rotary models put positions in attention instead); dropout
    is the identity in eval mode."""
    transformer = getattr(model, "transformer", None)
    if transformer is None or "wte" not in transformer:
        raise TypeError(f"hierarchy: expected a lamina GPT (model.transformer.wte), got {type(model).__name__}")
    with forward_precision():
        x = transformer.wte(idx)
        if "wpe" in transformer:
            x = x + transformer.wpe(torch.arange(idx.shape[1], device=idx.device))
    return x


def collect_residuals(model: torch.nn.Module, tokens: torch.Tensor, labels: Mapping[str, torch.Tensor],
                      batch_size: int, device: torch.device | str, max_items: int | None = 8192,
                      seed: int = 0) -> LabelledResiduals:
    """Run `tokens` [rows, T] through the model (no grad; eval mode is the caller's; the forward
    precision the measurement's) and keep the embedding output and each block's output residual,
    as fp32, at the positions of `labelled_positions`.
    `labels` name -> [rows, T] per-token labels (-1 = none)."""
    mask = labelled_positions(labels, tuple(tokens.shape), max_items, seed)
    kept: list[list[torch.Tensor]] = []
    embedded: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            part = mask[start : start + batch_size].to(device)
            if not bool(part.any()):
                continue
            idx = tokens[start : start + batch_size].to(device)
            record: dict = {}
            model_forward(model, idx, record=record)
            embedded.append(embedding_output(model, idx)[part].float())
            for i, resid in enumerate(record["resid"]):
                if len(kept) <= i:
                    kept.append([])
                kept[i].append(resid[part].float())
            del record
    rows = torch.arange(tokens.shape[0])[:, None].expand_as(mask)[mask]
    flat = {name: torch.as_tensor(y).cpu()[mask].to(device) for name, y in labels.items()}
    return LabelledResiduals([torch.cat(parts) for parts in kept], torch.cat(embedded), flat,
                             tokens.cpu()[mask].to(device), rows.to(device))


def measure_hierarchy(model: torch.nn.Module, tokens: torch.Tensor, labels: Mapping[str, torch.Tensor],
                      batch_size: int, device: torch.device | str, *, max_items: int | None = 8192,
                      seed: int = 0) -> dict[str, LabelProbe]:
    """`collect_residuals`, then `probe_hierarchy` split by probe row (seeded); the bootstrap
    shares the seed. Feed the result to `hierarchy_scalars` and `hierarchy_figure`."""
    data = collect_residuals(model, tokens, labels, batch_size, device, max_items, seed)
    split = split_items(len(data.rows), seed, data.rows, device=data.rows.device)
    return probe_hierarchy(data.residuals, data.labels, data.token_ids, split, embedding=data.embedding,
                           groups=data.rows, seed=seed)


# ---- the picture ----------------------------------------------------------------------------


def tier_sorted(names: Sequence[str]) -> list[str]:
    """Label names ordered by tier (lexical first, output last), then by name."""
    return sorted(names, key=lambda n: (TIER_ORDER.index(tier_of(n)), n))


def hierarchy_figure(results: Mapping[str, LabelProbe], step: int | None = None) -> Figure:
    """The gain per label (rows, grouped by tier) and block (columns): a diverging heatmap centred
    at 0, each cell written with its standard error, each row's depth (centre of gravity) marked
    where the label is read (mean gain > 3 se)."""
    names = tier_sorted(list(results))
    n_layers = max((len(results[n].layers) for n in names), default=0)
    gain = np.full((len(names), n_layers), np.nan)
    se = np.full_like(gain, np.nan)
    for r, name in enumerate(names):
        for c, probe in enumerate(results[name].layers):
            gain[r, c], se[r, c] = probe.gain, probe.gain_se
    width, height = max(4.0, 2.2 + 0.7 * n_layers), max(2.5, 1.2 + 0.35 * len(names))
    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=1.6 / width, right=1 - 1.0 / width, bottom=0.55 / height, top=1 - 0.4 / height)
    ax = fig.add_subplot()
    ax.set_title("probe gain by block (lexical: acc - chance; others: beyond the embedding)"
                 + ("" if step is None else f", step {step}"), fontsize=8)
    if gain.size == 0:
        ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
        return fig
    finite = gain[np.isfinite(gain)]
    half = max(float(np.abs(finite).max()) if finite.size else 1.0, 0.05)
    image = ax.imshow(np.ma.masked_invalid(gain), cmap=colormaps["RdBu_r"].with_extremes(bad="0.8"),
                      norm=CenteredNorm(0.0, half), aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(n_layers), [str(i) for i in range(n_layers)], fontsize=7)
    ax.set_yticks(np.arange(len(names)), [f"{tier_of(n)}: {n}" for n in names], fontsize=7)
    ax.set_xlabel("block", fontsize=8)
    for r, name in enumerate(names):
        probe = results[name]
        if probe.readable and math.isfinite(probe.depth) and len(probe.layers) > 1:
            ax.plot([probe.depth * (len(probe.layers) - 1)], [r], marker="|", markersize=14, color="black")
        for c in range(len(probe.layers)):
            ax.text(c, r, f"{gain[r, c]:.2f}\n\u00b1{se[r, c]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(gain[r, c]) > 0.6 * half else "black")
    cax = fig.add_axes((1 - 0.85 / width, 0.55 / height, 0.12 / width, 1 - 0.95 / height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("gain", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return fig


__all__ = [
    "BOOTSTRAP_DRAWS",
    "HIGHER_TIERS",
    "MIN_ITEMS",
    "READ_Z",
    "RIDGES",
    "TIERS",
    "TIER_ORDER",
    "LabelProbe",
    "LabelledResiduals",
    "LayerProbe",
    "RidgeClassifier",
    "TierReading",
    "bootstrap",
    "centre_of_gravity",
    "collect_residuals",
    "embedding_output",
    "fit_and_score",
    "hierarchy_figure",
    "hierarchy_scalars",
    "is_lexical",
    "labelled_positions",
    "measure_hierarchy",
    "probe_hierarchy",
    "probe_label",
    "row_draws",
    "split_items",
    "tier_of",
    "tier_readings",
    "tier_sorted",
]
