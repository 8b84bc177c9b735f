"""What one optimizer step does besides the forward and backward, called from LanguageModel's hooks
(lamina.lm's docstring lists them in order): the step's gradient norm, computed once; clipping by it;
the non-finite guard; when a step's metrics are written, and how a value gets to the logger without
a host sync. On one device, under DDP and under FSDP (where the norm is that of the whole gradient,
not of this rank's shard)."""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info

from lamina.checkpointing import last_good_checkpoint
from lamina.errors import ConfigError
from lamina.sharding import global_grad_norm, is_fsdp, scaler_owns_infs

NONFINITE_POLICIES = ("stop", "skip")

# ---- the gradient norm, once, and clipping by it ------------------------------------------------


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


# ---- logging: when, and without a host sync -----------------------------------------------------


def ends_optimizer_step(trainer, batch_idx: int) -> bool:
    """In on_train_batch_end: this micro-batch is the last of its optimizer step."""
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0


def ends_logged_step(trainer, batch_idx: int) -> bool:
    """In on_train_batch_end: this micro-batch ends an optimizer step whose metrics Lightning writes
    (every log_every_n_steps optimizer steps, as its logger connector counts them)."""
    if not ends_optimizer_step(trainer, batch_idx):
        return False
    n = trainer.log_every_n_steps
    return bool(n) and (trainer.global_step % n == 0 or trainer.should_stop)


def runs_logged_step(trainer) -> bool:
    """In on_train_batch_start: the optimizer step now running is one whose metrics Lightning
    writes (`ends_logged_step` at its end: every log_every_n_steps steps, and the last one)."""
    n, step = trainer.log_every_n_steps, trainer.global_step + 1
    return bool(n) and (step % n == 0 or (trainer.max_steps is not None and step == trainer.max_steps))


def host_scalar(value: torch.Tensor | float) -> torch.Tensor:
    """A float32 scalar on the host for self.log: no host-to-device copy, and Lightning's per-batch
    progress-bar conversion of it never waits for the device."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32)
    return torch.tensor(float(value), dtype=torch.float32)


# ---- the non-finite guard -----------------------------------------------------------------------


class NonFiniteError(ConfigError):
    """Training produced a NaN/Inf and the policy is to stop: one line for the user, not a traceback."""


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """A fused Adam/AdamW takes `found_inf` (as from a GradScaler) and skips its update on the
    device when it is 1: the step's parameters and state, its step count included, stay as they were."""
    return bool(optimizer.defaults.get("fused")) and getattr(optimizer, "_step_supports_amp_scaling", False)


class NonFiniteGuard:
    """The LanguageModel's guard (`model.on_nonfinite`, `model.max_nonfinite_skips`): after backward
    (gradients all-reduced under DDP), before clipping and the update, the step's loss (the sum of its
    micro-batches') and gradient norm must be finite; a step that is not stops the run (`stop`) or
    loses its update (`skip`, counted in `skips` and logged in train/nonfinite_skips).

    With a fused optimizer (the GPU runs, and AdamW on the CPU) nothing waits for the device: the
    update is skipped on the device when the step is not finite, and the host reads the steps' flags
    once per logging interval, before a checkpoint is saved and at the end; then it counts the skips
    (logged at their steps) or stops, naming the first non-finite step. A stopped run's weights never
    took the bad update, and no checkpoint after it is written. Otherwise the decision is made at the
    step, on a host value. Ranks decide together.
    """

    MOST_PENDING = 1000  # read at least this often, whatever the logging interval

    def __init__(self, policy: str = "stop", most_in_a_row: int = 10):
        self.policy, self.most_in_a_row = policy, most_in_a_row
        self.skips = 0  # non-finite steps skipped over the whole run (all ranks agree), kept in checkpoints
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, not finite) not yet read on the host
        self._in_a_row = 0

    def start(self) -> None:
        """At the start of training (a resumed run starts its count of skips in a row afresh)."""
        self._pending, self._in_a_row = [], 0

    def check(self, trainer, optimizer, loss: torch.Tensor | None, norm: torch.Tensor | None) -> bool:
        """In on_before_optimizer_step: False when this step's gradients were dropped here (a host
        decision: the optimizer skips parameters without a gradient); True otherwise, also when a
        fused optimizer is told to skip the update on the device (`found_inf`)."""
        scaler = scaler_owns_infs(trainer.precision)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = None if loss is None else torch.isfinite(loss)
        if norm is not None:
            grads_finite = torch.isfinite(norm)
            finite = grads_finite if finite is None else finite & grads_finite.to(finite.device)
        if finite is None:
            self._passed()
            return True
        if skips_on_device(optimizer) and not scaler:
            bad = (~finite).to(torch.float32)
            if trainer.world_size > 1:  # a NaN on one rank is a NaN for all: a collective, no host sync
                bad = (trainer.strategy.reduce(bad, reduce_op="sum") > 0).to(torch.float32)
            optimizer.found_inf = bad.to(grads[0].device) if grads else bad
            self._pending.append((trainer.global_step, bad))
            return True
        ok = bool(finite)
        if trainer.world_size > 1:  # a NaN on one rank is a NaN for all: they must agree
            ok = trainer.strategy.reduce_boolean_decision(ok, all=True)
        if ok:
            self._passed()
            return True
        self._nonfinite(trainer, trainer.global_step)
        optimizer.zero_grad(set_to_none=True)
        return False

    @property
    def pending(self) -> bool:
        """Steps whose flags the host has not read yet."""
        return bool(self._pending)

    def read_if_due(self, trainer, batch_idx: int) -> None:
        """In on_train_batch_end: the pending flags at a log step (or when too many are pending)."""
        if self._pending and (ends_logged_step(trainer, batch_idx) or len(self._pending) >= self.MOST_PENDING):
            self.read(trainer)

    def read(self, trainer) -> None:
        """The pending steps' flags to the host (one wait for the device), in step order. Before a
        checkpoint is written: it raises there when a pending step stops the run."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flags = torch.stack([bad.reshape(()) for _, bad in pending]).cpu().tolist()
        for (step, _), bad in zip(pending, flags, strict=True):
            if bad:
                self._nonfinite(trainer, step)
            else:
                self._passed()

    def _passed(self) -> None:
        self._in_a_row = 0

    def _nonfinite(self, trainer, step: int) -> None:
        self.skips += 1
        self._in_a_row += 1
        if self.policy == "stop" or self._in_a_row > self.most_in_a_row:
            why = "model.on_nonfinite is stop" if self.policy == "stop" else (
                f"{self._in_a_row} in a row, more than model.max_nonfinite_skips"
            )
            raise NonFiniteError(
                f"train: non-finite loss or gradient at step {step} ({why}); "
                f"{last_good_checkpoint(trainer)}; try a lower model.lr or model.on_nonfinite skip"
            )
        if trainer.is_global_zero:  # straight to the loggers: only at the steps that skipped
            for logger in trainer.loggers:
                logger.log_metrics({"train/nonfinite_skips": float(self.skips)}, step=step)
        rank_zero_info(f"lamina: step {step}: non-finite loss or gradient, update skipped")


__all__ = [
    "NONFINITE_POLICIES",
    "NonFiniteError",
    "NonFiniteGuard",
    "clip_by_step_norm",
    "ends_logged_step",
    "host_scalar",
    "skips_on_device",
    "step_grad_norm",
]
