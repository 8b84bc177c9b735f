"""Ablation: replace each module of a layer by its mean and measure the damage on each string task.

What is ablated. For layer i, a `register_forward_pre_hook` on `block.mlp.c_proj` (whose input
is the MLP post-activation) overwrites the ablated units' values at every position. In `mean`
mode (the default) they are set to the unit's mean post-activation on the task probe (`unit_means`:
one forward with `record=` per measurement, averaged over each row's positions up to its last
scored one, the positions that can reach a scored loss; the padding after them cannot). That keeps
each unit's mean contribution W[:, j] * mean_j to c_proj's output in place and removes only its
variation, so a unit that is constant on the probe changes nothing, and no unit is moved to a
value it may never take (0, for GELU units that sit elsewhere). `zero` mode sets them to 0.
Each row of a forward carries its own unit set: the (unit set, row) pairs of all modules and all
null sets are flattened and run `batch_size` rows per forward. The hook exists only while
`task_losses` runs (removed in a `finally`), never in the training path; the caller sets eval
mode; the forwards run in the measurement's forward precision (`precision.model_forward`), the
losses from fp32 logits into float64 sums; the functions here run without grad.

Damage. D[m, t] = (mean next-token loss on task t's scored answer tokens with unit set m
ablated) minus (the same without ablation), nats per answer token, NOT clipped: a negative value
means the model does better on t without the module's variation.

Chance and learned tasks. `chance_losses`: per task, the entropy (nats) of the empirical
distribution of its scored target tokens in the probe, the loss of a predictor that knows only
how often each answer token occurs (about ln 26 = 3.26 for random letters with byte tokens; 0
for a task with no scored tokens). A task is learned when its base loss < 0.9 x chance; the
others (within 10% of chance, or worse) are left out of specificity and counted
(`modularity/unlearned_tasks`): ablating a module cannot show what a model does not do.

Specificity (one number per layer, nats per answer token). Over the learned tasks only: for each
module m, spec_m = D[m, t*] - mean_{t != t*} D[m, t] with t* = argmax_t D[m, t] (the damage on
its most-damaged task minus the mean damage on the other learned tasks); the layer's specificity
is the plain mean of spec_m over its modules. Plain, not damage-weighted: spec_m is already in
nats, so a module whose removal does nothing contributes about 0 by itself, and a weight would
only add a second, noisy factor. With fewer than 2 learned tasks it is undefined: none of the
specificity tags is logged (`unlearned_tasks` says why).

How to read it. 0 means a module's damage is spread evenly over the tasks; larger means it falls
on one task more than on the others. Taking the max over tasks biases it upward under noise, and
it grows with how much damage a set of that size does at all, so the raw value is read against
its null, not against 0: the same computation on random unit sets of the same sizes. Each of
`null_draws` (>= 2, default 8) draws relabels the layer's live units (label >= 0) by a random
permutation, which keeps every module's size, and runs exactly the same damage and specificity
computation (in the same batched forwards). `specificity_null_mean` and `_null_std` (ddof = 1)
are over draws; `specificity_z` = (specificity - null_mean) / null_std, 0 where null_std < 1e-9
(a null with no spread, e.g. one module holding every live unit, cannot tell anything apart). z
> ~3 says the modules' damage is more task-specific than random units' of the same sizes; |z| <
~2 says it is at the noise level. Specificity measures selectivity, not coverage: modules that
all hurt the same single task also score high; the damage matrix, logged whole, tells the two
apart. It measures concentration of change, so a module whose removal helps one task (D < 0) and
leaves the others also scores above 0 (the top is 0, the rest below it): read the damage beside it.

The draws come from a numpy Generator seeded by the given `seed` (an int or a sequence of ints,
e.g. (run seed, step, layer)), never the global RNGs: measuring does not change training, and a
resumed run draws the same sets.

Tags: `ablation_scalars` -> `modularity/layer{i}/ablation/m{m}/{task}` (damage, every task),
`modularity/layer{i}/specificity`, `/specificity_null_mean`, `/specificity_null_std`,
`/specificity_z` (these four only with >= 2 learned tasks); `task_scalars` ->
`modularity/task_loss/{task}`, `modularity/task_chance/{task}`, `modularity/unlearned_tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lamina import tags
from lamina.instrument.precision import model_forward
from lamina.probes import TaskProbe

LEARNED_BELOW = 0.9  # a task is learned when its loss < LEARNED_BELOW x its chance loss
STD_FLOOR = 1e-9  # nats: a null std below this gives z = 0
MODES = ("mean", "zero")


@dataclass
class LayerAblation:
    """One layer's ablation: `damage` [k, tasks] float64 (module m ablated), `null_damage`
    [draws, k, tasks] (the random sets), `learned` [tasks] bool, and the statistics over the
    learned tasks (None with fewer than 2 of them): `specificity`, `null` [draws] (per draw),
    `null_mean`, `null_std`, `z`."""

    damage: torch.Tensor
    null_damage: torch.Tensor
    learned: torch.Tensor
    specificity: float | None
    null: torch.Tensor | None
    null_mean: float | None
    null_std: float | None
    z: float | None


def mlp_output_projections(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Each block's `mlp.c_proj`, whose input is the MLP post-activation."""
    return [block.mlp.c_proj for block in model.transformer.h]


# ---- the model side: losses and means on the task probe ---------------------------------------


def reaching_positions(targets: torch.Tensor) -> torch.Tensor:
    """[n, T] bool: positions up to each row's last scored one (those that can reach a scored loss)."""
    pos = torch.arange(targets.shape[1], device=targets.device)
    last = torch.where(targets >= 0, pos, -1).max(dim=1).values
    return pos[None, :] <= last[:, None]


@torch.no_grad()
def unit_means(model: torch.nn.Module, probe: TaskProbe, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """Each layer's mean MLP post-activation (float64 [d_ff], CPU) over the probe's reaching positions."""
    keep_all = reaching_positions(probe.targets)
    sums: list[torch.Tensor] | None = None
    for start in range(0, probe.inputs.shape[0], batch_size):
        x = probe.inputs[start : start + batch_size].to(device)
        keep = keep_all[start : start + batch_size].to(device)
        record: dict = {}
        model_forward(model, x, record=record)
        batch = [a[keep].double().sum(dim=0) for a in record["mlp"]]
        sums = batch if sums is None else [s + b for s, b in zip(sums, batch)]
    n = max(int(keep_all.sum()), 1)
    return [(s / n).cpu() for s in sums]


@torch.no_grad()
def task_losses(
    model: torch.nn.Module,
    probe: TaskProbe,
    batch_size: int,
    device: torch.device,
    layer: int | None = None,
    modules: list[torch.Tensor] | None = None,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token loss (nats) on each task's scored tokens: float64 [n_tasks] on the CPU,
    or, with `layer` and `modules` (unit index sets), [n_sets, n_tasks] with each set of that
    layer's units ablated in turn: set to `fill` ([d_ff], e.g. `unit_means(...)[layer]`) or to
    0 when `fill` is None.

    The (set, row) pairs are flattened and run `batch_size` rows per forward, each row with its
    own set, so small models need few forward calls."""
    rows, n_tasks = probe.inputs.shape[0], len(probe.tasks)
    n_variants = 1 if modules is None else len(modules)
    if n_variants == 0:
        return torch.zeros(0, n_tasks, dtype=torch.float64)
    inputs, targets, task_ids = (v.to(device) for v in (probe.inputs, probe.targets, probe.task_ids))
    total = torch.zeros(n_variants * n_tasks, dtype=torch.float64, device=device)
    count = torch.zeros_like(total)
    current: dict = {}
    handle = None if modules is None else _ablation_hook(model, layer, modules, fill, current, device)
    try:
        for start in range(0, n_variants * rows, batch_size):
            flat = torch.arange(start, min(start + batch_size, n_variants * rows), device=device)
            variant, row = flat // rows, flat % rows
            current["variant"] = variant
            y, t = targets[row], task_ids[row]
            logits, _ = model_forward(model, inputs[row])
            scored = y >= 0
            loss = F.cross_entropy(logits[scored].float(), y[scored], reduction="none")
            slot = (variant[:, None] * n_tasks + t)[scored]
            total.index_add_(0, slot, loss.to(total.dtype))
            count.index_add_(0, slot, torch.ones_like(loss, dtype=count.dtype))
    finally:
        if handle is not None:
            handle.remove()
    losses = (total / count.clamp_min(1)).view(n_variants, n_tasks).cpu()
    return losses[0] if modules is None else losses


def _ablation_hook(model, layer, modules, fill, current, device):
    """Pre-hook on layer's c_proj: row r's units in its set take `fill` (0 when None)."""
    c_proj = mlp_output_projections(model)[layer]
    ablate = torch.zeros(len(modules), c_proj.in_features, dtype=torch.bool, device=device)
    for m, units in enumerate(modules):
        ablate[m, units.to(device)] = True
    value = torch.zeros(c_proj.in_features, device=device) if fill is None else fill.to(device, torch.float32)

    def hook(_module, args):
        a = args[0]
        return (torch.where(ablate[current["variant"]][:, None, :], value.to(a.dtype), a),) + tuple(args[1:])

    return c_proj.register_forward_pre_hook(hook)


def chance_losses(probe: TaskProbe) -> torch.Tensor:
    """float64 [n_tasks]: entropy (nats) of each task's empirical distribution of scored target
    tokens (0 for a task with no scored tokens)."""
    scored = probe.targets >= 0
    out = torch.zeros(len(probe.tasks), dtype=torch.float64)
    for t in range(len(probe.tasks)):
        tokens = probe.targets[scored & (probe.task_ids == t)]
        if tokens.numel():
            p = torch.bincount(tokens).double()
            p = p[p > 0] / tokens.numel()
            out[t] = -(p * p.log()).sum()
    return out


def learned_tasks(base_losses: torch.Tensor, chance: torch.Tensor) -> torch.Tensor:
    """[n_tasks] bool: base loss < 0.9 x chance loss."""
    base = torch.as_tensor(base_losses, dtype=torch.float64)
    return base < LEARNED_BELOW * torch.as_tensor(chance, dtype=torch.float64)


# ---- the statistics (no model: a test can plant the damage) -----------------------------------


def specificity(damage: torch.Tensor, learned: torch.Tensor | None = None) -> float | None:
    """Mean over modules of (damage on the most-damaged learned task - mean damage on the other
    learned tasks), for an unclipped [modules, tasks] damage matrix; None with < 2 learned tasks."""
    d = torch.as_tensor(damage, dtype=torch.float64)
    if d.dim() != 2:
        raise ValueError(f"damage must be a [modules, tasks] matrix, got shape {tuple(d.shape)}")
    if learned is not None:
        d = d[:, torch.as_tensor(learned, dtype=torch.bool)]
    n = d.shape[1]
    if n < 2 or d.shape[0] == 0:
        return None
    top = d.max(dim=1).values
    rest = (d.sum(dim=1) - top) / (n - 1)
    return float((top - rest).mean())


def module_sets(labels: torch.Tensor, k: int | None = None) -> list[torch.Tensor]:
    """Unit indices of modules 0..k-1 (k: max label + 1 by default); label -1 is in none."""
    labels = torch.as_tensor(labels)
    if k is None:
        k = int(labels.max()) + 1 if labels.numel() else 0
    return [torch.nonzero(labels == m).flatten() for m in range(max(k, 0))]


def random_relabellings(labels: torch.Tensor, draws: int, seed: int | Sequence[int]) -> list[torch.Tensor]:
    """`draws` relabellings of the live units (label >= 0) by random permutations (module sizes
    kept, dead units stay -1), from a numpy Generator seeded by `seed` alone."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    labels = torch.as_tensor(labels).cpu()
    live = torch.nonzero(labels >= 0).flatten()
    out = []
    for _ in range(draws):
        relabelled = labels.clone()
        relabelled[live] = labels[live][torch.from_numpy(rng.permutation(live.numel()))]
        out.append(relabelled)
    return out


def ablation_statistics(
    damage_of: Callable[[list[torch.Tensor]], torch.Tensor],
    labels: torch.Tensor,
    learned: torch.Tensor,
    null_draws: int = 8,
    seed: int | Sequence[int] = 0,
) -> LayerAblation:
    """Damage, specificity and its null for one layer's partition `labels`. `damage_of(sets)`
    returns the [len(sets), tasks] damage of ablating each unit set; it is called once, with the
    k modules followed by the k sets of each of `null_draws` random relabellings."""
    if null_draws < 2:
        raise ValueError(f"null_draws: expected at least 2 draws (a null needs a spread), got {null_draws}")
    labels = torch.as_tensor(labels).cpu()
    k = int(labels.max()) + 1 if labels.numel() else 0
    sets = module_sets(labels, k)
    for relabelled in random_relabellings(labels, null_draws, seed):
        sets += module_sets(relabelled, k)
    damage = torch.as_tensor(damage_of(sets), dtype=torch.float64).cpu()
    damage, null_damage = damage[:k], damage[k:].reshape(null_draws, k, damage.shape[1])
    learned = torch.as_tensor(learned, dtype=torch.bool)
    spec = specificity(damage, learned)
    if spec is None or k == 0:
        return LayerAblation(damage, null_damage, learned, None, None, None, None, None)
    null = torch.tensor([specificity(d, learned) for d in null_damage], dtype=torch.float64)
    mean, std = float(null.mean()), float(null.std(correction=1))
    z = (spec - mean) / std if std >= STD_FLOOR else 0.0
    return LayerAblation(damage, null_damage, learned, spec, null, mean, std, z)


# ---- the entry for the callback ------------------------------------------------------------


def layer_ablation(
    model: torch.nn.Module,
    probe: TaskProbe,
    batch_size: int,
    device: torch.device,
    layer: int,
    labels: torch.Tensor,
    unit_means: list[torch.Tensor] | None,
    base_losses: torch.Tensor,
    learned: torch.Tensor,
    mode: str = "mean",
    null_draws: int = 8,
    seed: int | Sequence[int] = 0,
) -> LayerAblation:
    """Ablate each module of `layer` (partition `labels`, -1: excluded) and `null_draws` random
    equal-size unit sets, in one batched pass; `unit_means` (from `unit_means`, needed for `mean`
    mode), `base_losses` (from `task_losses` without ablation) and `learned` (from
    `learned_tasks`) are computed once per measurement by the caller."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "mean" and unit_means is None:
        raise ValueError("mode='mean' needs unit_means (from ablation.unit_means)")
    fill = unit_means[layer] if mode == "mean" else None
    base = torch.as_tensor(base_losses, dtype=torch.float64).cpu()

    def damage_of(sets: list[torch.Tensor]) -> torch.Tensor:
        return task_losses(model, probe, batch_size, device, layer, sets, fill) - base

    return ablation_statistics(damage_of, labels, learned, null_draws, seed)


def ablation_scalars(layer: int, result: LayerAblation, tasks: Sequence[str]) -> dict[str, float]:
    """The layer's damage per (module, task) and, where defined, specificity with its null."""
    scalars = {
        tags.ablation_damage(layer, m, task): float(result.damage[m, t])
        for m in range(result.damage.shape[0])
        for t, task in enumerate(tasks)
    }
    if result.specificity is not None:
        scalars[tags.specificity(layer)] = result.specificity
        scalars[tags.specificity(layer, "null_mean")] = result.null_mean
        scalars[tags.specificity(layer, "null_std")] = result.null_std
        scalars[tags.specificity(layer, "z")] = result.z
    return scalars


def task_scalars(
    tasks: Sequence[str], base_losses: torch.Tensor, chance: torch.Tensor, learned: torch.Tensor
) -> dict[str, float]:
    """Per task its loss and chance loss, and the count of unlearned tasks (left out of specificity)."""
    scalars = {tags.task_loss(task): float(base_losses[t]) for t, task in enumerate(tasks)}
    scalars.update({tags.task_chance(task): float(chance[t]) for t, task in enumerate(tasks)})
    scalars[tags.UNLEARNED_TASKS] = float((~torch.as_tensor(learned, dtype=torch.bool)).sum())
    return scalars
