"""The progress bar of a lamina fit: optimizer steps out of trainer.max_steps, with the train loss,
the last validation loss and tokens/s; lines logged while it is on the terminal stand on their own."""

from __future__ import annotations

import logging
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf

from lamina import tags
from lamina.step import ends_logged_step

# Lightning's rank_zero_info (which lamina's lines go through) logs here; the handlers that print
# its records are on this logger's ancestors (Lightning's own on "lightning.pytorch").
LOGGER = "lightning.pytorch.utilities.rank_zero"


class StepProgressBar(TQDMProgressBar):
    """`step 120/600 |███      | 01:02<04:10, loss 2.310, val 2.295, 12.3k tok/s`.

    The count is optimizer steps (trainer.global_step: with gradient accumulation, one per
    accumulate_grad_batches micro-batches) out of trainer.max_steps, across epochs, and from the step
    a resumed run starts at. The numbers after it are read after each step Lightning logs (every
    log_every_n_steps steps: train/loss, perf/tokens_per_sec from Throughput; never in other steps)
    and after each validation (val/loss); other progress-bar metrics (RLP's) follow under their last
    name. A validation's own bar stands below it while it runs and goes when it ends.

    While it is set up, the terminal handlers of Lightning's logger (through which lamina's lines,
    `rank_zero_info`, are printed) write through tqdm: each line clears the bars, is printed on a
    line of its own and the bars are drawn again below it. (`lamina fit` puts this bar in place of
    Lightning's default one: lamina.callbacks.TerminalDefaults.)
    """

    TRAIN_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}{postfix}"
    VALIDATION_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}"

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False):
        """`refresh_rate`: redraw every this many optimizer steps (and validation batches); 0 hides the
        bars. (`leave` is Lightning's, for a bar per epoch: this one spans the fit and always stays.)"""
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self._routed: list[tuple[logging.StreamHandler, Any]] = []  # (handler, its own stream)
        self._metrics_due = False  # a log step just ended: read its metrics at the next batch

    # ---- descriptions -------------------------------------------------------------------------

    @property
    def train_description(self) -> str:
        return "step"

    @property
    def validation_description(self) -> str:
        return "validation"

    @property
    def sanity_check_description(self) -> str:
        # lamina's default sanity pass is the whole val set: the validation at step 0 (lamina.lm)
        return "validation"

    # ---- the bars -----------------------------------------------------------------------------

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        max_steps = trainer.max_steps
        return Tqdm(
            desc=self.train_description,
            total=max_steps if max_steps is not None and max_steps > 0 else None,
            initial=trainer.global_step,  # a resumed run: the ETA counts from where it started
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.TRAIN_FORMAT,
        )

    def init_sanity_tqdm(self) -> Tqdm:
        return self._validation_tqdm(position=2 * self.process_position, leave=False)

    def init_validation_tqdm(self) -> Tqdm:
        # Below the train bar during a fit, gone when it ends; alone and left in `lamina validate`.
        has_main_bar = self.trainer.state.fn == "fit"
        return self._validation_tqdm(position=2 * self.process_position + has_main_bar, leave=not has_main_bar)

    def _validation_tqdm(self, position: int, leave: bool) -> Tqdm:
        # (`lamina validate` does not restore the checkpoint's step: the trainer's is 0 there)
        where = f" at step {self.trainer.global_step}" if self.trainer.state.fn == "fit" else ""
        return Tqdm(
            desc=f"{self.validation_description}{where}:",
            position=position,
            disable=self.is_disabled,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.VALIDATION_FORMAT,
        )

    # ---- training: optimizer steps ------------------------------------------------------------

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """Nothing: the bar counts steps across epochs (Lightning's restarts it at each epoch)."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # The step's train/loss is logged by the module's on_train_batch_end, after this callback's:
        # the numbers of a log step are read at the start of the next batch (never in other steps:
        # reading logged values converts them on the host).
        if self._metrics_due and self.is_enabled:
            self.train_progress_bar.set_postfix_str(self.postfix(self.get_metrics(trainer, pl_module)), refresh=False)
        self._metrics_due = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Any,
                           batch_idx: int) -> None:
        if not self.is_enabled:
            return
        bar = self.train_progress_bar
        self._metrics_due = ends_logged_step(trainer, batch_idx)
        step = trainer.global_step
        if step != bar.n and (step % self.refresh_rate == 0 or step == bar.total):
            bar.n = step
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show_metrics(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._show_metrics(trainer, pl_module)

    def _show_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_enabled:
            self.train_progress_bar.set_postfix_str(self.postfix(self.get_metrics(trainer, pl_module)))

    # ---- validation ---------------------------------------------------------------------------

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        self.val_progress_bar.reset(total=convert_inf(self.total_val_batches_current_dataloader))

    # ---- what the bar shows -------------------------------------------------------------------

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """loss (train/loss), val (val/loss), tok/s (perf/tokens_per_sec), then any other metric
        logged with prog_bar=True under its last name. (No v_num: the run folder is printed at the end.)"""
        shown = dict(trainer.progress_bar_metrics)
        metrics: dict[str, float] = {}
        for key, name in ((tags.TRAIN_LOSS, "loss"), (tags.VAL_LOSS, "val")):
            if key in shown:
                metrics[name] = float(shown.pop(key))
        tokens_per_sec = trainer.callback_metrics.get(tags.TOKENS_PER_SEC)  # on the host (Throughput)
        if tokens_per_sec is not None:
            metrics["tok/s"] = float(tokens_per_sec)
        for key, value in shown.items():
            if isinstance(value, (int, float)):
                metrics[key.rsplit("/", 1)[-1]] = float(value)
        return metrics

    @staticmethod
    def postfix(metrics: dict[str, float]) -> str:
        """`loss 2.310, val 2.295, 12.3k tok/s`."""
        parts = []
        for name, value in metrics.items():
            if name == "tok/s":
                parts.append(f"{human(value)} tok/s")
            elif name in ("loss", "val"):
                parts.append(f"{name} {value:.3f}")
            else:
                parts.append(f"{name} {value:.3g}")
        return ", ".join(parts)

    # ---- lines printed while a bar is on the terminal -----------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # (disables the bar on ranks other than 0)
        if self.is_enabled:
            self._route_log_lines()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_log_lines()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_log_lines()

    def _route_log_lines(self) -> None:
        """Give each handler that prints Lightning's log records to the terminal a stream that writes
        through tqdm (until teardown)."""
        if self._routed:
            return
        for handler in terminal_handlers(logging.getLogger(LOGGER)):
            self._routed.append((handler, handler.stream))
            handler.setStream(BarSafeStream(handler.stream))

    def _restore_log_lines(self) -> None:
        for handler, stream in self._routed:
            if isinstance(handler.stream, BarSafeStream):
                handler.setStream(stream)
        self._routed = []

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_routed": []}


class BarSafeStream:
    """A log handler's stream while bars are on the terminal: tqdm.write clears the bars (those on
    stdout too when this is stderr: a terminal mixes both), writes the line, and redraws them."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        Tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):  # encoding, isatty, fileno, ... of the real stream
        return getattr(self.stream, name)


def terminal_handlers(logger: logging.Logger) -> list[logging.StreamHandler]:
    """The handlers that print `logger`'s records on stdout or stderr (its own and its ancestors', as
    far as records propagate); not files, not pytest's capture."""
    terminals = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}
    found = []
    current: logging.Logger | None = logger
    while current is not None:
        found += [h for h in current.handlers if isinstance(h, logging.StreamHandler)
                  and not isinstance(h, logging.FileHandler) and id(h.stream) in terminals]
        current = current.parent if current.propagate else None
    return found


def human(value: float) -> str:
    """12345.6 -> '12.3k'; 1.5e6 -> '1.50M'; 812.4 -> '812'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)):
        if abs(value) >= size or not unit:
            x = value / size
            return (f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}") + unit
    return str(value)
