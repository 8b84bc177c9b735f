"""The gradient norm of an optimizer step, computed once (clipping and the NonFiniteGuard both read
it), and clipping by it: on one device, under DDP and under FSDP, where it is the norm of the whole
gradient, not of this rank's shard."""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from lamina.sharding import global_grad_norm, is_fsdp, scaler_owns_infs


def step_grad_norm(trainer, optimizer) -> torch.Tensor | None:
    """After backward (gradients all-reduced under DDP, reduce-scattered under FSDP), before clipping
    and the update: the norm of the step's gradient, on the device. None with fp16's scaler, whose
    gradients may still be scaled. Under FSDP FSDP's own clip_grad_norm_ with no limit computes it (a
    collective, on every rank) and leaves the gradients as they are (times 1; a non-finite norm makes
    them NaN, a step the guard drops)."""
    if scaler_owns_infs(trainer.precision):
        return None
    if is_fsdp(trainer):
        return global_grad_norm(trainer)
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else None


def clip_by_step_norm(module, optimizer, norm: torch.Tensor | None, gradient_clip_val=None,
                      gradient_clip_algorithm=None) -> None:
    """Clip by the step's gradient norm `norm` (the same numbers as Lightning's clip_grad_norm_,
    without computing the norm twice); Lightning's own clipping where it was not computed, or under
    another sharded strategy. Under FSDP each rank scales its shard by the one factor the global norm
    gives, as FSDP's clip_grad_norm_ does (Lightning's FSDP plugin refuses to clip by norm)."""
    trainer = module.trainer
    by_norm = gradient_clip_algorithm in (None, "norm")
    fsdp = is_fsdp(trainer)
    ours = fsdp or type(trainer.strategy) in (SingleDeviceStrategy, DDPStrategy)  # not DeepSpeed
    if fsdp and norm is None and gradient_clip_val and by_norm:
        return  # the guard dropped this step's gradients (fp16 with clipping is refused under FSDP)
    if norm is None or not gradient_clip_val or not by_norm or not ours:
        module.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)


__all__ = ["clip_by_step_norm", "step_grad_norm"]
