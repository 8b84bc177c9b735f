"""Observers of training, as Lightning Callbacks: throughput and MFU, the non-finite guard, thinking
evaluations, the TensorBoard layout. `lamina fit` installs all of them (`training_callbacks()`); each reads its keys from the
module's hparams (`model.peak_flops`, `model.on_nonfinite`, `model.thought_eval`, ...). What the terminal shows: the
progress bar in optimizer steps (StepProgressBar) and the model summary (PlainModelSummary), which TerminalDefaults puts
in place of Lightning's defaults."""

from __future__ import annotations

from lamina.callbacks.guard import NonFiniteError, NonFiniteGuard
from lamina.callbacks.progress import StepProgressBar
from lamina.callbacks.summary import PlainModelSummary
from lamina.callbacks.terminal import TerminalDefaults
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
    "PlainModelSummary",
    "StepProgressBar",
    "TensorBoardLayout",
    "TerminalDefaults",
    "ThoughtEval",
    "Throughput",
    "peak_flops",
    "peak_flops_of",
    "training_callbacks",
]
