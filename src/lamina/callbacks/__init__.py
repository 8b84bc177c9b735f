"""Observers of training, as Lightning Callbacks, each with its own config section in `lamina fit`:
throughput and MFU (`throughput.*`), thinking evaluations (`thought_eval.*`); and the TensorBoard
layout and the capability gates (lamina.gates), which every run gets (`training_callbacks()`: what a Trainer built in Python adds to train as
`lamina fit` does). What the terminal shows: the progress bar in optimizer steps (StepProgressBar) and
the model summary (PlainModelSummary), which TerminalDefaults puts in place of Lightning's defaults.
(The non-finite guard is the LanguageModel's own: lamina.step.NonFiniteGuard, `model.on_nonfinite`.)"""

from __future__ import annotations

from lamina.callbacks.gates import CapabilityGates
from lamina.callbacks.progress import StepProgressBar
from lamina.callbacks.summary import PlainModelSummary
from lamina.callbacks.terminal import TerminalDefaults
from lamina.callbacks.thought_eval import ThoughtEval
from lamina.callbacks.throughput import PEAK_FLOPS, Throughput, peak_flops, peak_flops_of
from lamina.tensorboard import TensorBoardLayout


def training_callbacks() -> list:
    """The callbacks a Trainer built in Python adds to train as `lamina fit` does: Throughput first
    (see its docstring), the TensorBoard layout, the capability gates. (`lamina fit` makes its Throughput from the
    `throughput` section, its ThoughtEval from `thought_eval`, which is off by default.)"""
    return [Throughput(), TensorBoardLayout(), CapabilityGates()]


__all__ = [
    "CapabilityGates",
    "PEAK_FLOPS",
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
