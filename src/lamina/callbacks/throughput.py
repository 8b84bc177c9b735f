"""perf/tokens_per_sec and perf/mfu over training time only (the `throughput` section of a config:
`throughput.peak_flops`), and the one table of device peaks."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lamina import tags
from lamina.config_types import PositiveNumber, plain
from lamina.step import ends_logged_step

# Dense peak FLOP/s per device for the dtype of the matmuls (bf16 tensor cores, no sparsity); MFU is
# only reported where it is known. Matched in order on the CUDA device name: the PCIe H100 before
# any other H100 (the SXM part reports "H100 SXM..." or "H100 80GB HBM3"); an H100 that names
# neither (e.g. NVL) is not guessed.
PEAK_FLOPS: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("H100", "PCIE"), "bf16", 756e12),
    (("H100", "SXM"), "bf16", 989e12),
    (("H100", "HBM3"), "bf16", 989e12),
    (("H100", "NVL"), "bf16", 835e12),  # the NVL cards are clocked lower than SXM: 1,671 TF with sparsity
    (("H200", "NVL"), "bf16", 835e12),  # before the plain H200 row (SXM): the first match wins
    (("H200",), "bf16", 989e12),
    (("A100",), "bf16", 312e12),
)


def peak_flops_of(name: str, precision: str) -> float | None:
    """Peak FLOP/s of the device called `name` at `precision`, or None where the table has no entry."""
    dtype = "bf16" if "bf16" in str(precision) else None
    upper = name.upper()
    return next((flops for words, dt, flops in PEAK_FLOPS if dt == dtype and all(w in upper for w in words)), None)


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s from the table, or None (CPU, unknown card, or a precision the table does not hold)."""
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device), precision)


def counters(pl_module: L.LightningModule) -> dict[str, float]:
    """The run's cumulative counters (all ranks): perf/tokens_seen, perf/flops, and the tokens RLP spent
    sampling thoughts (perf/rlp_sample_tokens) where the objective is RLP's."""
    values = {"tokens_seen": pl_module.tokens_seen, "flops": pl_module.flops_seen}
    if getattr(pl_module, "rlp_sample_tokens", None) is not None:
        values["rlp_sample_tokens"] = pl_module.rlp_sample_tokens
    if getattr(pl_module, "rlp_flops_unshared", None) is not None:  # RLP's FLOPs without the shared context
        values["flops_unshared"] = pl_module.rlp_flops_unshared
    return values


class Throughput(L.Callback):
    """perf/tokens_per_sec (training tokens, all ranks), perf/mfu, perf/tokens_seen, perf/flops (and
    perf/rlp_sample_tokens for RLP) every log_every_n_steps optimizer steps.

    Timed from each micro-batch's on_train_batch_start to its on_train_batch_end hook: the training
    step, its backward and optimizer step. Validation, checkpoint saves, measurements and thinking
    evaluations run outside these windows and are not counted; so is the fetch of the next batch. (This
    callback's hooks run before lamina's others: `throughput` is the first of lamina fit's config
    sections that make callbacks, Lightning calls callbacks in that order (a config's own
    trainer.callbacks before them) and moves ModelCheckpoint last, so the others' on_train_batch_end
    hooks come after its window closes.) On CUDA the marks are events on the device's stream (never a
    synchronisation per step: one per logging interval, when the sum is read); elsewhere the host
    clock. The first step after start or resume pays for warm-up and compilation and is not timed.
    Peak FLOP/s: `throughput.peak_flops`, else the table; an unknown device logs no MFU and says so once.
    """

    host_clock = staticmethod(time.perf_counter)  # the clock off CUDA (tests put a fake one in its place)

    def __init__(self, peak_flops: PositiveNumber | None = None):
        """
        Args:
            peak_flops: the device's peak FLOP/s for perf/mfu, in place of the built-in table (H100, H200,
                A100 at bf16); null: the table's, and no MFU where the table has none.
        """
        self.peak_flops = plain(peak_flops)
        self._peak: float | None = None
        self._first_step = 0
        self._marks: list = []  # (start, end) per timed micro-batch of this interval
        self._start = None
        self._tokens = 0  # all ranks, this interval
        self._tokens_at_start = 0
        self._counters_before_step: dict[str, float] = {}
        self._first_marks: list | None = []  # the first step's micro-batches (None once reported)
        self._in_first_step = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._peak = self.peak_flops or peak_flops(pl_module.device, trainer.precision)
        if self._peak is None:
            rank_zero_info(
                f"lamina: no MFU logged: peak FLOP/s unknown for {pl_module.device} at precision "
                f"{trainer.precision} (set throughput.peak_flops to report it)"
            )
        self._first_step, self._marks, self._tokens, self._first_marks = trainer.global_step, [], 0, []

    def _clock(self, device: torch.device):
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self.host_clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx % trainer.accumulate_grad_batches == 0:
            self._counters_before_step = counters(pl_module)
        self._start, self._tokens_at_start = self._clock(pl_module.device), pl_module.tokens_seen
        self._in_first_step = trainer.global_step == self._first_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._start is not None:
            mark = (self._start, self._clock(pl_module.device))
            if self._in_first_step:  # timed apart: compilation and warm-up are not throughput
                if self._first_marks is not None:
                    self._first_marks.append(mark)
            else:
                self._marks.append(mark)
                self._tokens += pl_module.tokens_seen - self._tokens_at_start
            self._start = None
        if not self._marks or not ends_logged_step(trainer, batch_idx):
            return
        seconds, tokens = self._seconds(self._marks), self._tokens
        steps = len(self._marks) / trainer.accumulate_grad_batches
        self._marks, self._tokens = [], 0
        if not seconds > 0:
            return
        if self._first_marks:
            self._report_first_step(trainer, pl_module, self._seconds(self._first_marks), seconds / steps)
        tokens_per_sec = tokens / seconds
        # Lightning writes this round at step s = global_step - 1, where lamina's convention puts the
        # weights after s updates (train/loss there is their loss): the counters that trained them.
        perf = {"tokens_per_sec": tokens_per_sec, **self._counters_before_step}
        if self._peak:
            perf["mfu"] = tokens_per_sec * pl_module.flops_per_token / (self._peak * trainer.world_size)
        for name, value in perf.items():
            pl_module.log(tags.perf(name), torch.tensor(float(value)), rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The counters of the final weights, at the last step (the logging rounds above stop one short)."""
        if trainer.is_global_zero:
            final = {tags.perf(name): float(value) for name, value in counters(pl_module).items()}
            for logger in trainer.loggers:
                logger.log_metrics(final, step=trainer.global_step)

    def _report_first_step(self, trainer: L.Trainer, pl_module: L.LightningModule, first: float, later: float) -> None:
        """The first step after start or resume pays for torch.compile (model.compile) and warm-up:
        perf/first_step_seconds (once, at the step it started from), and a line with its excess over
        a later step's mean."""
        self._first_marks = None  # once a fit
        if trainer.is_global_zero:  # straight to the loggers: a value logged once, not every round
            for logger in trainer.loggers:
                logger.log_metrics({tags.perf("first_step_seconds"): first}, step=self._first_step)
        rank_zero_info(
            f"lamina: the first step took {first:.2f} s, later ones {later:.3f} s: about {max(first - later, 0):.2f} s "
            f"of {'compilation and ' if pl_module.hparams.get('compile') else ''}warm-up"
        )

    @staticmethod
    def _seconds(marks: list) -> float:
        if isinstance(marks[0][0], float):
            return sum(end - start for start, end in marks)
        marks[-1][1].synchronize()  # the interval's one wait for the device
        return sum(start.elapsed_time(end) for start, end in marks) / 1e3
