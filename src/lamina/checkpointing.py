"""Checkpoints that survive faults: atomic writes, and a clean stop on Ctrl-C or SIGTERM.

`AtomicCheckpointIO` writes each checkpoint to a temporary file beside its target, flushes and
fsyncs it, then renames it into place (an atomic replace on POSIX), so a kill, a crash or a full
disk at any moment leaves the previous checkpoint whole. `StopOnSignal` turns the first Ctrl-C
(SIGINT) or SIGTERM into "finish this step, save `last.ckpt`, exit"; a second Ctrl-C aborts at
once (the last good checkpoint is still whole). `LastAtFinalStep` makes `last.ckpt` the final
step's whatever `checkpoint.every_n_train_steps` is.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lamina import tags
from lamina.errors import ConfigError, write_failure

TEMP_MARK = ".tmp-"


class CheckpointWriteError(ConfigError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to `<path>.tmp-<pid>`, fsync, rename over `<path>`, fsync the folder. Remote
    URLs go to Lightning's own writer (an object store replaces an object whole)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # object storage (s3://, gs://): its own upload is all or nothing
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"checkpoint: cannot write {path} ({write_failure(err)}); the previous checkpoint there, if any, "
                f"is intact"
            ) from err
        except BaseException:  # Ctrl-C or a bug mid-write: never leave the half-written file behind
            tmp.unlink(missing_ok=True)
            raise


def remove_stale_temps(path: Path) -> None:
    """Temp files of writers that were killed before their rename (one writer per path)."""
    for stale in path.parent.glob(f"{path.name}{TEMP_MARK}*"):
        stale.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some filesystems cannot open a folder: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Give the trainer's strategy AtomicCheckpointIO unless the user configured another IO plugin."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where `last.ckpt` of this run lives (the ModelCheckpoint folder, else <log_dir>/checkpoints)."""
    callback = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if callback is not None and callback.dirpath:
        return Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
    if trainer.log_dir:
        return Path(trainer.log_dir) / "checkpoints" / "last.ckpt"
    return None


def save_last(trainer: L.Trainer) -> Path | None:
    """Save last.ckpt now (every rank must call it); its path, None when the run has no folder to
    save to. Lightning has no public "save last now": the file is written where the run's
    ModelCheckpoint keeps its last.ckpt, and the callback is told it is its own (`last_model_path`,
    part of its state in the checkpoint, so a resumed run knows it too), or it would write a
    `last-v1.ckpt` beside it."""
    callback = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    keeps_last = callback is not None and bool(callback.save_last) and bool(callback.dirpath)
    if keeps_last:
        # the name as the callback makes it, character for character (it compares the strings)
        name = callback.format_checkpoint_name(
            {"epoch": trainer.current_epoch, "step": trainer.global_step}, ModelCheckpoint.CHECKPOINT_NAME_LAST
        )
        callback.last_model_path = name
        path = Path(name)
    else:
        path = last_checkpoint_path(trainer)
        if path is None:
            return None
    trainer.save_checkpoint(path)
    return path


def last_good_checkpoint(trainer: L.Trainer) -> str:
    """A phrase naming the newest checkpoint on disk, for error messages."""
    path = last_checkpoint_path(trainer)
    if path is not None and path.is_file():
        return f"the last good checkpoint is {path} (resume with --ckpt_path last)"
    return "no checkpoint was saved yet"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


class ReportRunFolder(L.Callback):
    """At the end of fit, where it got to and where it is: a line with the step, the last train loss
    and the last validation's loss and bits per byte (every fit validates at its last step: lamina.lm),
    then one with the run folder, its size and what takes it (checkpoints grow with the model and with
    checkpoint.save_top_k; events with logging and pictures)."""

    def __init__(self):
        self._validation: tuple[int, float, float | None] | None = None  # (step, val/loss, val/bpb)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if tags.VAL_LOSS in metrics:  # not after a partial sanity pass, which lamina does not log
            bpb = metrics.get(tags.VAL_BPB)
            self._validation = (trainer.global_step, float(metrics[tags.VAL_LOSS]), None if bpb is None else float(bpb))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            rank_zero_info(self.results(trainer))
            if log_dir and Path(log_dir).is_dir():
                rank_zero_info(run_folder_summary(Path(log_dir)))

    def results(self, trainer: L.Trainer) -> str:
        """`lamina: step 600/600: train loss 1.234, val loss 1.250, val bpb 1.803`."""
        step, parts = trainer.global_step, []
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"train loss {float(loss):.3f}")
        if self._validation is not None:
            at, val_loss, bpb = self._validation
            parts.append(f"val loss {val_loss:.3f}" + ("" if bpb is None else f", val bpb {bpb:.3f}")
                         + ("" if at == step else f" (at step {at})"))
        of = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        return f"lamina: step {step}{of}: " + (", ".join(parts) or "no loss logged")


def run_folder_summary(folder: Path) -> str:
    checkpoints = folder_bytes(folder / "checkpoints") if (folder / "checkpoints").is_dir() else 0
    events = sum(f.stat().st_size for f in folder.glob("events.out.tfevents.*"))
    return (
        f"lamina: run folder {folder}: {megabytes(folder_bytes(folder))} "
        f"(checkpoints {megabytes(checkpoints)}, TensorBoard events {megabytes(events)})"
    )


class LastAtFinalStep(L.Callback):
    """`last.ckpt` at the step training ended on. Lightning's ModelCheckpoint saves every
    `every_n_train_steps` steps and keeps last.ckpt at the latest of those: a fit of 1500 steps
    saving every 200 would end with last.ckpt at step 1400, and a model that is not the one the
    final validation measured. At the end of training, where the latest checkpoint written (any
    callback's: this one hears every save) is from an earlier step, last.ckpt is saved now. A fit
    that wrote none is left to ModelCheckpoint's own end-of-training save of last.ckpt (it saves
    then when it has saved nothing), so that the file is written once."""

    def __init__(self):
        self.saved_step: int | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        keeps_last = any(isinstance(c, ModelCheckpoint) and c.save_last for c in trainer.checkpoint_callbacks)
        if keeps_last and self.saved_step is not None and self.saved_step != trainer.global_step:
            save_last(trainer)


class StopOnSignal(L.Callback):
    """First SIGINT/SIGTERM: finish the current optimizer step (all its micro-batches), save
    last.ckpt, stop. Second SIGINT:
    abort at once. Under DDP the ranks agree on the stop every `log_every_n_steps` steps (no
    collective in every step), so all of them save and stop at the same step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: str | None = None  # the signal's name once one arrived
        self.saved_step: int | None = None
        self.saved_path: Path | None = None
        self._previous: dict[int, Any] = {}
        self._step_seen: int | None = None
        self._paused: list[tuple[ModelCheckpoint, Any]] = []  # (callback, its save_last) until the fit ends

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_seen = trainer.global_step
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        rank_zero_info(
            f"\nlamina: {self.requested}: saving a checkpoint after this step, then stopping "
            "(Ctrl-C again to abort without saving)"
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Only right after an optimizer step: with gradient accumulation, never between the
        # micro-batches of one step (a resumed run restarts the step from its first micro-batch).
        stepped, self._step_seen = trainer.global_step != self._step_seen, trainer.global_step
        if not stepped or self.saved_step is not None or not self._agreed(trainer):
            return
        self.saved_step, self.saved_path = trainer.global_step, save_last(trainer)
        # A ModelCheckpoint that saved nothing yet in this fit saves its last.ckpt at the end of
        # training: this same step again, a second full write inside a SIGTERM grace period.
        self._paused = [(c, c.save_last) for c in trainer.checkpoint_callbacks
                        if isinstance(c, ModelCheckpoint) and c.save_last]
        for callback, _ in self._paused:
            callback.save_last = False
        trainer.should_stop = True

    def _agreed(self, trainer: L.Trainer) -> bool:
        if trainer.world_size == 1:
            return self.requested is not None
        if trainer.global_step % max(1, trainer.log_every_n_steps):
            return False
        return trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for callback, save_last in self._paused:
            callback.save_last = save_last
        self._paused = []

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def message(self) -> str:
        """One line for the user after the run stopped on a signal."""
        where = f"saved {self.saved_path}" if self.saved_path else "no checkpoint folder to save to"
        return f"lamina: stopped by {self.requested} after step {self.saved_step}; {where}; resume with --ckpt_path last"
