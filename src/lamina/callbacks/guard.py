"""The non-finite guard: a NaN/Inf loss or gradient stops the run or skips the update
(`model.on_nonfinite`, `model.max_nonfinite_skips`, read from the module's hparams)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lamina.checkpointing import last_good_checkpoint
from lamina.errors import ConfigError
from lamina.step_logging import ends_logged_step
from lamina.sharding import scaler_owns_infs


class NonFiniteError(ConfigError):
    """Training produced a NaN/Inf and the policy is to stop: one line for the user, not a traceback."""


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """A fused Adam/AdamW takes `found_inf` (as from a GradScaler) and skips its update on the
    device when it is 1: the step's parameters and state, its step count included, stay as they were."""
    return bool(optimizer.defaults.get("fused")) and getattr(optimizer, "_step_supports_amp_scaling", False)


class NonFiniteGuard(L.Callback):
    """After backward (gradients all-reduced under DDP), before clipping and the update: the step's
    loss (the sum of its micro-batches') and gradient norm must be finite. The module computes the
    norm once, in its on_before_optimizer_step, for clipping and for this check (`step_check`, set
    here at setup: Lightning runs callbacks' on_before_optimizer_step before the module's).

    With a fused optimizer (the GPU runs) nothing waits for the device: the update is skipped on the
    device when the step is not finite, and the host reads the steps' flags once per logging
    interval, before a checkpoint is saved and at the end; then it counts the skips (logged at their
    steps in train/nonfinite_skips) or stops, naming the first non-finite step. A stopped run's
    weights never took the bad update, and no checkpoint after it is written. Otherwise (CPU) the
    decision is made at the step, on a host tensor. Ranks decide together.
    """

    MOST_PENDING = 1000  # read at least this often, whatever the logging interval

    def __init__(self):
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, not finite) not yet read on the host
        self._in_a_row = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending, self._in_a_row = [], 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.step_check = self.check  # the module calls it after its on_before_optimizer_step work

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.step_check = None

    def check(self, trainer: L.Trainer, pl_module, optimizer) -> None:
        """This step's loss and gradient norm (LanguageModel.on_before_optimizer_step computed it)."""
        loss, norm = pl_module.step_loss_sum, pl_module.grad_norm
        scaler = scaler_owns_infs(trainer.precision)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = None if loss is None else torch.isfinite(loss)
        if norm is not None:
            grads_finite = torch.isfinite(norm)
            finite = grads_finite if finite is None else finite & grads_finite.to(finite.device)
        if finite is None:
            self._passed()
            return
        if skips_on_device(optimizer) and not scaler:
            bad = (~finite).to(torch.float32)
            if trainer.world_size > 1:  # a NaN on one rank is a NaN for all: a collective, no host sync
                bad = (trainer.strategy.reduce(bad, reduce_op="sum") > 0).to(torch.float32)
            optimizer.found_inf = bad.to(grads[0].device) if grads else bad
            self._pending.append((trainer.global_step, bad))
            return
        ok = bool(finite)
        if trainer.world_size > 1:  # a NaN on one rank is a NaN for all: they must agree
            ok = trainer.strategy.reduce_boolean_decision(ok, all=True)
        if ok:
            self._passed()
            return
        self._nonfinite(trainer, pl_module, trainer.global_step)
        optimizer.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
        pl_module.grad_norm = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._pending and (ends_logged_step(trainer, batch_idx) or len(self._pending) >= self.MOST_PENDING):
            self._read(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._read(trainer, pl_module)  # raises before a checkpoint after a stopping step is written

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read(trainer, pl_module)

    def _read(self, trainer: L.Trainer, pl_module) -> None:
        """The pending steps' flags to the host (one wait for the device), in step order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flags = torch.stack([bad.reshape(()) for _, bad in pending]).cpu().tolist()
        for (step, _), bad in zip(pending, flags, strict=True):
            if bad:
                self._nonfinite(trainer, pl_module, step)
            else:
                self._passed()

    def _passed(self) -> None:
        self._in_a_row = 0

    def _nonfinite(self, trainer: L.Trainer, pl_module, step: int) -> None:
        pl_module.nonfinite_skips += 1
        self._in_a_row += 1
        policy, most = pl_module.hparams.on_nonfinite, pl_module.hparams.max_nonfinite_skips
        if policy == "stop" or self._in_a_row > most:
            why = "model.on_nonfinite is stop" if policy == "stop" else (
                f"{self._in_a_row} in a row, more than model.max_nonfinite_skips"
            )
            raise NonFiniteError(
                f"train: non-finite loss or gradient at step {step} ({why}); "
                f"{last_good_checkpoint(trainer)}; try a lower model.lr or model.on_nonfinite skip"
            )
        if trainer.is_global_zero:  # straight to the loggers: only at the steps that skipped
            for logger in trainer.loggers:
                logger.log_metrics({"train/nonfinite_skips": float(pl_module.nonfinite_skips)}, step=step)
        rank_zero_info(f"lamina: step {step}: non-finite loss or gradient, update skipped")
