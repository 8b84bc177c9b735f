"""Observers of training, as Lightning Callbacks: throughput and MFU, the non-finite guard, thinking
evaluations, the TensorBoard layout. `lamina fit` installs all of them (`training_callbacks()`); each reads its keys from the
module's hparams (`model.peak_flops`, `model.on_nonfinite`, `model.thought_eval`, ...)."""

from __future__ import annotations

from lamina.callbacks.guard import NonFiniteError, NonFiniteGuard
from lamina.callbacks.thought_eval import ThoughtEval
from lamina.callbacks.throughput import PEAK_FLOPS, Throughput, peak_flops, peak_flops_of
from lamina.tensorboard import TensorBoardLayout


def training_callbacks() -> list:
    """The callbacks every lamina run trains with; Throughput first (see its docstring)."""
    return [Throughput(), NonFiniteGuard(), ThoughtEval(), TensorBoardLayout()]


__all__ = [
    "PEAK_FLOPS",
    "NonFiniteError",
    "NonFiniteGuard",
    "TensorBoardLayout",
    "ThoughtEval",
    "Throughput",
    "peak_flops",
    "peak_flops_of",
    "training_callbacks",
]
