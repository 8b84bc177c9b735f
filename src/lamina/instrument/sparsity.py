"""Sparsity: stream every probe through the model and its MLP activations through the accumulators.

One forward per probe batch (eval mode, no grad, the caller's autocast) with `record=`, the
model's one narrow interface: each layer's MLP post-activation `[B, T, d_ff]` goes into a
`lamina.measures.SparsityAccumulator`; for the probe that modularity and layer measures read
(`id`), also into a `CoactivationAccumulator` and the residual stream into a Gram accumulator.
Everything stays on the device until `compute()`, which returns small reductions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lamina import measures
from lamina.instrument.layers import GramAccumulator

STATS = ("frac_active", "l1", "l2", "hoyer", "dead_frac", "top10_l1_share")

# Default activation thresholds by model.activation (see Instrumentation's `eps`).
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
class ProbeStats:
    """What one pass over the probes measured.

    `stats[probe][layer]`: the dict of `measures.sparsity_stats` (floats, `firing_rate` on the
    device). `coactivation[layer]` ([d_ff, d_ff], float32) and `grams[layer]` (residual stream) of
    the gather probe, where asked for."""

    stats: dict[str, list[dict]] = field(default_factory=dict)
    coactivation: list[torch.Tensor] | None = None
    grams: list[GramAccumulator] | None = None


def forward_recorded(model: torch.nn.Module, idx: torch.Tensor) -> dict:
    """Run the GPT on idx and return its record (`mlp`, `resid`: one tensor per layer).

    `model.forward` rather than `model(...)`: a model compiled in place (`model.compile()`)
    would otherwise recompile for eval mode and the record; the measurement runs eagerly."""
    record: dict = {}
    model.forward(idx, record=record)
    return record


def measure_probes(
    model: torch.nn.Module,
    probes: dict[str, torch.Tensor],
    *,
    eps: float,
    batch_size: int,
    device: torch.device,
    impl: str = "auto",
    gather: str | None = "id",
    coactivation: bool = True,
    residual: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> ProbeStats:
    """Sparsity statistics of every layer on every probe; co-activation and residual Grams on
    the `gather` probe. The caller sets eval mode, no_grad and autocast.

    With world_size > 1 (torch.distributed initialised, every rank calling with the same probes
    and weights) each rank measures its share of the windows and the accumulators are summed over
    the ranks, so every rank returns the statistics of the whole probe set."""
    out = ProbeStats()
    for name, windows in probes.items():
        windows = shard_windows(windows, rank, world_size)
        is_gather = name == gather
        sparsity: list[measures.SparsityAccumulator] = []
        coact: list[measures.CoactivationAccumulator] = []
        grams: list[GramAccumulator] = []
        for batch in windows.split(batch_size):
            record = forward_recorded(model, batch.to(device, non_blocking=True))
            if not sparsity:  # sized from the first batch: the model tells its own widths
                widths = [a.shape[-1] for a in record["mlp"]]
                sparsity = [measures.SparsityAccumulator(d, eps, device, impl=impl) for d in widths]
                if is_gather and coactivation:
                    coact = [measures.CoactivationAccumulator(d, eps, device, impl=impl) for d in widths]
                if is_gather and residual:
                    grams = [GramAccumulator() for _ in record["resid"]]
            for layer, acts in enumerate(record["mlp"]):
                sparsity[layer].update(acts)
                if coact:
                    coact[layer].update(acts)
            for layer, resid in enumerate(record.get("resid", []) if grams else []):
                grams[layer].update(resid)
            del record
        if world_size > 1:  # (shard_windows gives every rank at least one window)
            for acc in [*sparsity, *coact, *grams]:
                acc.all_reduce()
        out.stats[name] = [acc.compute() for acc in sparsity]
        if is_gather:
            out.coactivation = [acc.compute() for acc in coact] if coact else None
            out.grams = grams or None
    return out


def shard_windows(windows: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous share of a probe's windows. With fewer windows than ranks every
    rank takes all of them: each measure is a mean over tokens (and effective rank is scale
    free), so counting every token world_size times changes nothing, and no rank sits idle in a
    collective with nothing to add."""
    if world_size == 1 or len(windows) < world_size:
        return windows
    return windows.tensor_split(world_size)[rank]


def sparsity_scalars(stats: dict[str, list[dict]], reference: str = "id") -> dict[str, float]:
    """The sparsity tags: `sparsity/<probe>/layer<i>` (frac_active), `.../layer<i>/<stat>` for
    the other statistics, `sparsity/<probe>/mean` (over layers) and `sparsity/gap/<probe>` (the
    reference probe's mean density minus this probe's)."""
    scalars: dict[str, float] = {}
    means: dict[str, float] = {}
    for probe, layers in stats.items():
        for i, s in enumerate(layers):
            scalars[f"sparsity/{probe}/layer{i}"] = s["frac_active"]
            for key in STATS[1:]:
                scalars[f"sparsity/{probe}/layer{i}/{key}"] = s[key]
        means[probe] = sum(s["frac_active"] for s in layers) / len(layers)
        scalars[f"sparsity/{probe}/mean"] = means[probe]
    if reference in means:
        for probe, value in means.items():
            if probe != reference:
                scalars[f"sparsity/gap/{probe}"] = means[reference] - value
    return scalars
