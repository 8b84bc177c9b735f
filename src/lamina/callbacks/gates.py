"""At the end of every fit, the capability gates (lamina.gates) read from what the run logged:
a line each and `gate/<name>` in the run's events. Gates whose evaluation did not run say nothing."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lamina.gates import capability_gates, gate_lines, gate_scalars


class CapabilityGates(L.Callback):
    """Reads the last value of every tag, and its value at step 0, from the loggers that keep them
    (lamina's TensorBoardLogger: `last_values`, `start_values`) once the fit has ended (after the last measurement and the
    last thinking evaluation), prints the measured gates and logs them at the last step."""

    def __init__(self):
        self.results = []  # the lamina.gates.GateResult of the last fit, measured or not

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        values: dict[str, float] = {}
        start: dict[str, float] = {}
        for logger in trainer.loggers:
            values.update(getattr(logger, "last_values", {}))
            start.update(getattr(logger, "start_values", {}))
        self.results = capability_gates(values, start)
        measured = [r for r in self.results if r.passed is not None]
        if not measured:
            return
        for line in gate_lines(measured):
            rank_zero_info(line)
        for logger in trainer.loggers:
            logger.log_metrics(gate_scalars(measured), step=trainer.global_step)
            logger.save()
