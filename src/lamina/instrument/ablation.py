"""Ablation: zero each module of a layer in turn and measure the damage on each string task.

For layer i, a `register_forward_pre_hook` on `block.mlp.c_proj` multiplies the MLP post-activation
by a 0/1 mask that is 0 on the zeroed module's units; each row of a forward carries its own mask, so
one forward can ablate several modules (row r of the probe with module m zeroed, for many (m, r)).
The hook exists only while that measurement runs (it is removed in a `finally`), never in the
training path.

Damage D[m, t] = (mean next-token loss on task t's answer tokens with module m zeroed) minus (the
same without ablation), in nats per answer token.

Specificity of a layer (one number, 0..1): how much of the damage each module does falls on a
single task. With D clipped at 0, T tasks, and for each module with any damage its share
s_m = max_t D[m, t] / sum_t D[m, t], rescaled as (s_m - 1/T) / (1 - 1/T) so that damage spread
evenly over the tasks gives 0 and damage on one task only gives 1; the layer's specificity is
the mean of the rescaled shares weighted by each module's total damage (so a module whose
removal changes almost nothing cannot dominate by chance). A permutation-like (diagonal) damage
matrix gives 1, a uniform one 0, and no damage at all gives 0. It measures selectivity, not
coverage: modules that all hurt the same single task also score 1; the damage matrix, logged
whole, tells the two apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lamina.probes import TaskProbe


def mlp_output_projections(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Each block's `mlp.c_proj`, whose input is the MLP post-activation."""
    return [block.mlp.c_proj for block in model.transformer.h]


def task_losses(
    model: torch.nn.Module,
    probe: TaskProbe,
    batch_size: int,
    device: torch.device,
    layer: int | None = None,
    modules: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean next-token loss (nats) on each task's scored tokens: float64 [n_tasks] on the CPU,
    or, with `layer` and `modules` (unit indices), [n_modules, n_tasks] with each module of that
    layer zeroed in turn.

    The (module, row) pairs are flattened and run `batch_size` rows per forward, each row with its
    own 0/1 mask on the layer's MLP post-activation, so small models need few forward calls."""
    rows, n_tasks = probe.inputs.shape[0], len(probe.tasks)
    n_variants = 1 if modules is None else len(modules)
    if n_variants == 0:
        return torch.zeros(0, n_tasks, dtype=torch.float64)
    inputs, targets, task_ids = (v.to(device) for v in (probe.inputs, probe.targets, probe.task_ids))
    total = torch.zeros(n_variants * n_tasks, dtype=torch.float64, device=device)
    count = torch.zeros_like(total)
    handle, current = None, {}
    if modules is not None:
        c_proj = mlp_output_projections(model)[layer]
        masks = torch.ones(n_variants, c_proj.in_features, device=device)
        for m, units in enumerate(modules):
            masks[m, units.to(device)] = 0.0

        def zero_modules(_module, args):
            a = args[0]
            return (a * masks[current["variant"]][:, None, :].to(a.dtype),) + tuple(args[1:])

        handle = c_proj.register_forward_pre_hook(zero_modules)
    try:
        for start in range(0, n_variants * rows, batch_size):
            flat = torch.arange(start, min(start + batch_size, n_variants * rows), device=device)
            variant, row = flat // rows, flat % rows
            current["variant"] = variant
            x, y, t = inputs[row], targets[row], task_ids[row]
            logits, _ = model.forward(x)  # eagerly: see sparsity.forward_recorded
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


def specificity(damage: torch.Tensor) -> float:
    """Damage-weighted, rescaled max-task share of a [modules, tasks] damage matrix (see above)."""
    d = torch.as_tensor(damage, dtype=torch.float64).clamp_min(0.0)
    if d.dim() != 2:
        raise ValueError(f"damage must be a [modules, tasks] matrix, got shape {tuple(d.shape)}")
    n_tasks = d.shape[1]
    totals = d.sum(dim=1)
    live = totals > 0
    if n_tasks < 2 or not live.any():
        return 0.0
    share = d[live].max(dim=1).values / totals[live]
    rescaled = (share - 1.0 / n_tasks) / (1.0 - 1.0 / n_tasks)
    return float((rescaled * totals[live]).sum() / totals[live].sum())


def ablation_scalars(layer: int, damage: torch.Tensor, tasks: tuple[str, ...]) -> dict[str, float]:
    scalars = {
        f"modularity/layer{layer}/ablation/m{m}/{task}": float(damage[m, t])
        for m in range(damage.shape[0])
        for t, task in enumerate(tasks)
    }
    scalars[f"modularity/layer{layer}/specificity"] = specificity(damage)
    return scalars
