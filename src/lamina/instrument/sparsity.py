"""Sparsity: stream every probe through the model and its MLP activations through the accumulators.

One forward per probe batch (eval mode, no grad, the measurement's forward precision: see
`lamina.instrument.precision`) with `record=`, the model's one narrow interface. Each layer's MLP
activation `[B, T, d_ff]` goes into a `lamina.measures.SparsityAccumulator` under the run's active
rule (`ActiveRule`), which also keeps the density of every window; for the probes that modularity
reads (`id`, `id_b`) the 0/1 activity is kept too, and for those that the layer measures read, the
residual stream goes into a Gram accumulator. Everything stays on the device until `compute()`,
which returns small reductions.

The active rules (`instrument.sparsity.active`):

- `sign`: a unit is active when its pre-activation is > 0 (for gated MLPs, the gate's). Scaling
  the input weights by any positive factor leaves it unchanged, so density cannot rise merely
  because weights grow.
- `cett` (Sparsing Law, arXiv 2411.02335): per layer, unit j is active when its contribution to
  the MLP output |a_j| * ||W_down[:, j]|| exceeds the threshold tau at which dropping every
  smaller contribution changes the output by `instrument.sparsity.cett` in mean relative L2 on `id`;
  tau is calibrated on `id` at each measurement and applied to every probe.
- `eps`: |a| > eps on the post-activation (the lab's first rule, kept for comparison: it moves
  with weight scale, and for gated MLPs the cut on silu(gate) * up means little).

Gaps and their intervals: `sparsity/gap/<probe>` is the density on `id` minus the probe's (mean
over layers), `.../layer<i>` per layer. Each has `/se` and `/z` from the window-level variance of
both probes: for a probe made of other windows (id_b, random, ood/...), the two-sample standard
error sqrt(var_id / n_id + var_p / n_p); for `shuffled`, whose windows are `id`'s own tokens
reordered, the paired one, std(d_w) / sqrt(n) over per-window differences d_w. `id_b` is the
calibration check: drawn from the same distribution as `id`, its |z| exceeds 1.96 in about 5%
of measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from lamina import measures, tags
from lamina.instrument.ablation import mlp_output_projections
from lamina.instrument.layers import GramAccumulator
from lamina.instrument.precision import in_full_precision, model_forward, wide

STATS = ("frac_active", "l1", "l2", "hoyer", "dead_frac", "top10_l1_share")
ACTIVE_RULES = ("sign", "cett", "eps")
PAIRED_WITH_ID = ("shuffled",)  # probes whose window w is id's window w reordered
CETT_CALIBRATION_TOKENS = 4096  # id tokens the cett threshold is fitted on, per layer

# Default thresholds of the `eps` rule by model.activation (see Instrumentation's `eps`).
DEFAULT_EPS = {
    "relu": 0.0,
    "relu2": 0.0,
    "gelu": 0.17,  # |min GELU| = 0.1700 (at x = -0.752): the whole negative branch is inactive
    "geglu": 0.17,
    "silu": 0.28,  # |min SiLU| = 0.2785 (at x = -1.278)
    "swiglu": 0.28,
}


def default_eps(activation: str) -> float:
    return DEFAULT_EPS.get(activation, 0.0)


@dataclass
class ActiveRule:
    """The active rule in force at one measurement: `thresholds[layer]` (a float, or a [d] tensor
    of per-unit thresholds for cett); `sign` compares the pre-activation, the others |a|."""

    name: str
    thresholds: list[float | torch.Tensor]

    def threshold(self, layer: int) -> float | torch.Tensor:
        # One threshold serves every layer (sign, eps), or there is one per layer (cett).
        return self.thresholds[layer] if len(self.thresholds) > 1 else self.thresholds[0]

    def gate(self, record: dict, layer: int) -> torch.Tensor | None:
        return record["mlp_pre"][layer] if self.name == "sign" else None

    def active(self, record: dict, layer: int) -> torch.Tensor:
        """The 0/1 activity of one layer's units, bool [tokens, d]."""
        a = record["mlp"][layer]
        mask = measures.active_mask(a, self.threshold(layer), gate=self.gate(record, layer))
        return mask.reshape(-1, a.shape[-1])


@in_full_precision
def active_rule(
    name: str,
    model: torch.nn.Module,
    *,
    eps: float,
    cett: float,
    calibration: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> ActiveRule:
    """The rule `name` for the model as it is now; for cett, calibrated on the first
    CETT_CALIBRATION_TOKENS tokens of `calibration` (the `id` windows), the same on every rank.
    The forwards run in the measurement's forward precision, the calibration (W a, in bisection)
    in fp32 on activations taken to fp32 (in bf16 its error curve moved tau by ~0.1% on a tiny model)."""
    if name == "sign":
        return ActiveRule("sign", [0.0])
    if name == "eps":
        return ActiveRule("eps", [eps])
    rows = max(1, CETT_CALIBRATION_TOKENS // calibration.shape[1])
    acts: list[list[torch.Tensor]] = []
    for batch in calibration[:rows].split(batch_size):
        record = forward_recorded(model, batch.to(device, non_blocking=True))
        acts.append([a.reshape(-1, a.shape[-1]) for a in record["mlp"]])
    thresholds = []
    for layer, c_proj in enumerate(mlp_output_projections(model)):
        weight = c_proj.weight  # W_down, [n_embd, d_ff]
        layer_acts = wide(torch.cat([batch[layer] for batch in acts]))  # per layer: one fp32 copy at a time
        tau = measures.cett_threshold(layer_acts, weight, cett)
        thresholds.append(tau / weight.detach().float().norm(dim=0))  # inf where a column is 0
    return ActiveRule("cett", thresholds)


@dataclass
class ProbeStats:
    """What one pass over the probes measured.

    `stats[probe][layer]`: the dict of `measures.sparsity_stats` (floats, `firing_rate` on the
    device) plus `window_frac_active` (float64 numpy [windows]). `active[probe][layer]`: bool
    [tokens, d_ff] activity of the probes asked for (modularity). `grams[probe][layer]`: the
    residual stream's Gram accumulators of the probes asked for (layers)."""

    stats: dict[str, list[dict]] = field(default_factory=dict)
    active: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    grams: dict[str, list[GramAccumulator]] = field(default_factory=dict)


def forward_recorded(model: torch.nn.Module, idx: torch.Tensor) -> dict:
    """Run the GPT on idx and return its record (`mlp`, `mlp_pre`, `resid`: one tensor per layer),
    eagerly and in the measurement's forward precision (`precision.model_forward`)."""
    record: dict = {}
    model_forward(model, idx, record=record)
    return record


@in_full_precision
def measure_probes(
    model: torch.nn.Module,
    probes: dict[str, torch.Tensor],
    *,
    rule: ActiveRule,
    batch_size: int,
    device: torch.device,
    impl: str = "auto",
    keep_active: tuple[str, ...] = (),
    residual: tuple[str, ...] = (),
    rank: int = 0,
    world_size: int = 1,
    density_only: bool = False,
) -> ProbeStats:
    """Sparsity statistics of every layer on every probe under `rule`; the 0/1 activity of the
    `keep_active` probes and the residual Grams of the `residual` probes. `density_only`: only
    the density (`frac_active`, `firing_rate`, the windows' densities), as the light tier reads
    it, without the per-token statistics (their top-k is most of a CPU measurement's reductions). The caller sets eval
    mode and no_grad; the forwards run in the measurement's forward precision, the accumulators
    in full precision (they read bf16 activations through an fp32 compare and fp32 or float64 sums).

    With world_size > 1 (torch.distributed initialised, every rank calling with the same probes
    and weights) each rank measures its share of the windows and the accumulators are summed over
    the ranks (the kept activity gathered in rank order), so every rank returns the statistics of
    the whole probe set."""
    out = ProbeStats()
    for name, windows in probes.items():
        windows = shard_windows(windows, rank, world_size)
        sparsity: list[measures.SparsityAccumulator] = []
        active: list[list[torch.Tensor]] = []
        grams: list[GramAccumulator] = []
        for batch in windows.split(batch_size):
            record = forward_recorded(model, batch.to(device, non_blocking=True))
            if not sparsity:  # sized from the first batch: the model tells its own widths
                sparsity = [
                    measures.DensityAccumulator(a.shape[-1], rule.threshold(i), device, impl=impl)
                    if density_only else
                    measures.SparsityAccumulator(a.shape[-1], rule.threshold(i), device, impl=impl)
                    for i, a in enumerate(record["mlp"])
                ]
                active = [[] for _ in record["mlp"]] if name in keep_active else []
                grams = [GramAccumulator() for _ in record["resid"]] if name in residual else []
            for layer, acts in enumerate(record["mlp"]):
                sparsity[layer].update(acts, gate=rule.gate(record, layer))
                if active:
                    active[layer].append(rule.active(record, layer))
            for layer, resid in enumerate(record["resid"] if grams else []):
                grams[layer].update(resid)
            del record
        active_layers = [torch.cat(parts) for parts in active]
        if world_size > 1 and len(probes[name]) >= world_size:  # (else every rank holds all windows)
            for acc in [*sparsity, *grams]:
                acc.all_reduce()
            active_layers = [measures.gather_rows(a) for a in active_layers]
        out.stats[name] = [_with_windows(acc) for acc in sparsity]
        if active_layers:
            out.active[name] = active_layers
        if grams:
            out.grams[name] = grams
    return out


def _with_windows(acc: measures.SparsityAccumulator | measures.DensityAccumulator) -> dict:
    stats = acc.compute()
    stats["window_frac_active"] = acc.window_frac_active().cpu().numpy()
    return stats


def shard_windows(windows: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous share of a probe's windows. With fewer windows than ranks every
    rank takes all of them: each measure is a mean over tokens (and effective rank is scale
    free), so counting every token world_size times changes nothing, and no rank sits idle in a
    collective with nothing to add."""
    if world_size == 1 or len(windows) < world_size:
        return windows
    return windows.tensor_split(world_size)[rank]


def sparsity_scalars(stats: dict[str, list[dict]]) -> dict[str, float]:
    """The density tags: `sparsity/<probe>/layer<i>` (frac_active) and `sparsity/<probe>/mean` for
    every probe; the other statistics as `sparsity/<probe>/<stat>` (the mean over layers), and by
    layer (`sparsity/id/layer<i>/<stat>`) for the reference `id` only. Per layer and probe they are
    in the `sparsity/stats_by_layer` figure: a 124M model would otherwise log probes x layers x 5
    series no one reads (about 600 of them)."""
    scalars = density_scalars(stats)
    for probe, layers in stats.items():
        if probe == "id":
            for i, s in enumerate(layers):
                for key in STATS[1:]:
                    scalars[tags.sparsity_stat(probe, key, i)] = s[key]
        for key in STATS[1:]:
            scalars[tags.sparsity_stat(probe, key)] = sum(s[key] for s in layers) / len(layers)
    return scalars


def density_scalars(stats: dict[str, list[dict]]) -> dict[str, float]:
    """The density tags alone: `sparsity/<probe>/layer<i>` and `sparsity/<probe>/mean`."""
    scalars: dict[str, float] = {}
    for probe, layers in stats.items():
        for i, s in enumerate(layers):
            scalars[tags.density(probe, i)] = s["frac_active"]
        scalars[tags.density(probe)] = sum(s["frac_active"] for s in layers) / len(layers)
    return scalars


@dataclass(frozen=True)
class Gap:
    """A density difference (reference minus probe) with its standard error."""

    value: float
    se: float

    @property
    def z(self) -> float:
        return self.value / self.se if self.se > 0 else 0.0


def density_gap(reference: np.ndarray, probe: np.ndarray, paired: bool) -> Gap:
    """Mean window density of `reference` minus `probe`'s, with its standard error: paired over
    windows (one-to-one, equal counts) or two-sample (independent windows)."""
    reference, probe = np.asarray(reference, np.float64), np.asarray(probe, np.float64)
    value = float(reference.mean() - probe.mean())
    if paired:
        diff = reference - probe
        se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
    else:
        se = math.sqrt(_var_of_mean(reference) + _var_of_mean(probe))
    return Gap(value, float(se))


def _var_of_mean(x: np.ndarray) -> float:
    return float(x.var(ddof=1) / len(x)) if len(x) > 1 else 0.0


def layer_mean_windows(layers: list[dict]) -> np.ndarray:
    """Each window's density averaged over layers (the windows of `sparsity/<probe>/mean`)."""
    return np.mean([s["window_frac_active"] for s in layers], axis=0)


HEADLINE_GAPS = ("id_b", "shuffled", "random")  # read first: each as a chart with its 95% band


def gap_scalars(stats: dict[str, list[dict]], reference: str = "id") -> dict[str, float]:
    """`sparsity/gap/<probe>` (over layers) and `.../layer<i>`, each with `/se` and `/z`; the
    HEADLINE_GAPS' means also with `/lo` and `/hi`, their 95% interval (value -/+ 1.96 se), the band
    TensorBoard's custom-scalars chart draws."""
    if reference not in stats:
        return {}
    scalars: dict[str, float] = {}
    ref_layers = stats[reference]
    for probe, layers in stats.items():
        if probe == reference:
            continue
        paired = probe in PAIRED_WITH_ID and len(layers[0]["window_frac_active"]) == len(
            ref_layers[0]["window_frac_active"]
        )
        pairs = [(None, layer_mean_windows(ref_layers), layer_mean_windows(layers))]
        pairs += [
            (i, r["window_frac_active"], p["window_frac_active"])
            for i, (r, p) in enumerate(zip(ref_layers, layers))
        ]
        for layer, ref_windows, probe_windows in pairs:
            gap = density_gap(ref_windows, probe_windows, paired)
            tag = tags.gap(probe, layer)
            scalars[tag], scalars[tags.se(tag)], scalars[tags.z(tag)] = gap.value, gap.se, gap.z
            if layer is None and probe in HEADLINE_GAPS:
                scalars[tags.lo(tag)], scalars[tags.hi(tag)] = gap.value - 1.96 * gap.se, gap.value + 1.96 * gap.se
    return scalars


def density_intervals(stats: dict[str, list[dict]], z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Density per probe (rows) and layer (columns, then the mean over layers) and the half-width
    of its `z` interval from the window-level variance: for the density picture."""
    density, halfwidth = [], []
    for layers in stats.values():
        windows = [s["window_frac_active"] for s in layers] + [layer_mean_windows(layers)]
        density.append([float(np.mean(w)) for w in windows])
        halfwidth.append([z * math.sqrt(_var_of_mean(np.asarray(w))) for w in windows])
    return np.array(density), np.array(halfwidth)
