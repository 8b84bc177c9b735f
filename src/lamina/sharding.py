"""What lamina needs of Lightning's FSDPStrategy, in one place: the checks a sharded run must pass
before it starts, the root module FSDP wraps, and the global gradient norm over every shard."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.strategies import FSDPStrategy

from lamina.errors import ConfigError


def is_fsdp(trainer) -> bool:
    return isinstance(trainer.strategy, FSDPStrategy)


def scaler_owns_infs(precision) -> bool:
    """fp16 mixed precision: the GradScaler skips overflowing steps and lowers its scale itself."""
    return str(precision) in ("16-mixed", "16")


def check_fsdp(trainer) -> None:
    """Refuse, in one line, what lamina cannot do right under FSDP; then check the wrapping."""
    strategy = trainer.strategy
    if not strategy.kwargs.get("use_orig_params"):
        raise ConfigError(
            "trainer.strategy.dict_kwargs.use_orig_params: lamina's weight-decay groups need true under "
            "FSDP (Lightning's default; configs/fsdp.yaml sets it), got false"
        )
    clip = trainer.gradient_clip_val and trainer.gradient_clip_algorithm in (None, "norm")
    if clip and scaler_owns_infs(trainer.precision):
        raise ConfigError(
            f"trainer.precision: {trainer.precision} with trainer.gradient_clip_val is not supported "
            "under FSDP (fp16's gradient scaler may leave the gradients scaled when clipping); use bf16-mixed"
        )
    fsdp_root(trainer)  # Lightning wrapped the module (not a legacy configure_sharded_model)


def fsdp_root(trainer):
    """The root FullyShardedDataParallel module that Lightning's FSDPStrategy wraps the module in."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    root = trainer.strategy.model
    if not isinstance(root, FullyShardedDataParallel):
        raise ConfigError(
            "trainer.strategy: lamina under FSDP expects Lightning to wrap the whole module (its "
            f"auto_wrap_policy), found {type(root).__name__}"
        )
    return root


def global_grad_norm(trainer) -> torch.Tensor:
    """The norm of the whole gradient, not of this rank's shard: FSDP's own clip_grad_norm_ (a
    collective, on every rank) with no limit computes it and leaves the gradients as they are (times
    1; a non-finite norm makes them NaN, a step the guard drops)."""
    return fsdp_root(trainer).clip_grad_norm_(math.inf)


__all__ = ["check_fsdp", "fsdp_root", "global_grad_norm", "is_fsdp", "scaler_owns_infs"]
