"""lamina's progress bar and model summary in place of the ones Lightning adds by default."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary, RichProgressBar, TQDMProgressBar

from lamina.callbacks.progress import StepProgressBar
from lamina.callbacks.summary import PlainModelSummary

LIGHTNING_DEFAULTS = {
    RichProgressBar: StepProgressBar,
    TQDMProgressBar: StepProgressBar,
    RichModelSummary: PlainModelSummary,
    ModelSummary: PlainModelSummary,
}


class TerminalDefaults(L.Callback):
    """At setup, swaps the progress bar and the model summary that Lightning added by default
    (`trainer.enable_progress_bar`, `trainer.enable_model_summary`: a Rich or tqdm bar, a table with
    `Total FLOPs: 0`) for lamina's: StepProgressBar, PlainModelSummary.

    Lightning adds its defaults after the trainer's callbacks list, so after this callback (which
    `lamina fit` puts among its trainer defaults, after the callbacks of the config): a bar or summary
    before this callback is one the user configured, and is left as it is; none is there when the
    switch is off. (Swapped rather than listed among the defaults: Lightning refuses a progress bar
    in the callbacks beside `enable_progress_bar false` or beside the user's own bar, and logs a line
    about skipping its summary for one in the list.) The one swapped in is set up by the same round
    of setup hooks, which comes to it after this one.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        callbacks = trainer.callbacks
        if self not in callbacks:
            return
        for i in range(callbacks.index(self) + 1, len(callbacks)):
            replacement = LIGHTNING_DEFAULTS.get(type(callbacks[i]))
            if replacement is not None:
                callbacks[i] = replacement()
