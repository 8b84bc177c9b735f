"""When a training step's metrics are written, and how a value gets to the logger without a host sync."""

from __future__ import annotations

import torch


def ends_logged_step(trainer, batch_idx: int) -> bool:
    """In on_train_batch_end: this micro-batch ends an optimizer step whose metrics Lightning writes
    (every log_every_n_steps optimizer steps, as its logger connector counts them)."""
    if (batch_idx + 1) % trainer.accumulate_grad_batches:
        return False
    n = trainer.log_every_n_steps
    return bool(n) and (trainer.global_step % n == 0 or trainer.should_stop)


def host_scalar(value: torch.Tensor | float) -> torch.Tensor:
    """A float32 scalar on the host for self.log: no host-to-device copy, and Lightning's per-batch
    progress-bar conversion of it never waits for the device."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32)
    return torch.tensor(float(value), dtype=torch.float32)


__all__ = ["ends_logged_step", "host_scalar"]
