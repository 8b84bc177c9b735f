"""What `lamina fit` shows on the terminal: a progress bar in optimizer steps out of trainer.max_steps
(lamina's, in place of Lightning's default; a user's own bar, or none, as configured), no `Total
FLOPs: 0` and no other library's deprecation notices, lamina's lines on lines of their own while
the bar is drawn, and at the end the train and val loss, the val bits per byte and the run folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from lamina.callbacks import StepProgressBar, training_callbacks
from lamina.cli import main
from test_train import QUIET, fit_args


class BarRecorder(L.Callback):
    """At each micro-batch's start: the optimizer step and what the trainer's progress bar shows."""

    def __init__(self):
        self.bar_types: set[type] = set()
        self.seen: list[tuple[int, int, int]] = []  # (global_step, bar count, bar total)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        bar = trainer.progress_bar_callback
        self.bar_types.add(type(bar))
        if isinstance(bar, StepProgressBar):
            self.seen.append((trainer.global_step, bar.train_progress_bar.n, bar.train_progress_bar.total))


@pytest.fixture
def recorder(monkeypatch):
    recorder = BarRecorder()
    monkeypatch.setattr("lamina.cli.training_callbacks", lambda: [*training_callbacks(), recorder])
    return recorder


def test_the_bar_counts_optimizer_steps_out_of_max_steps(tmp_path, recorder, one_thread):
    main(fit_args(tmp_path, "bar", *QUIET, "--trainer.max_steps", "4", "--trainer.accumulate_grad_batches", "2",
                  "--trainer.log_every_n_steps", "2", "--trainer.enable_progress_bar", "true"))
    assert recorder.bar_types == {StepProgressBar}
    steps = [step for step, _, _ in recorder.seen]
    assert steps == [0, 0, 1, 1, 2, 2, 3, 3]  # two micro-batches a step
    assert all(n == step and total == 4 for step, n, total in recorder.seen), recorder.seen


@pytest.mark.parametrize("args, bar_type", [
    (["--trainer.enable_progress_bar", "false"], type(None)),
    (["--trainer.enable_progress_bar", "true", "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"],
     TQDMProgressBar),
], ids=["bar-off", "users-own-bar"])
def test_a_bar_switched_off_or_the_users_own_is_left_as_configured(tmp_path, recorder, one_thread, args, bar_type):
    main(fit_args(tmp_path, "own", *QUIET, "--trainer.max_steps", "2", *args))
    assert recorder.bar_types == {bar_type}


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def screen(raw: str) -> list[str]:
    """The lines as a terminal shows them: a carriage return goes back to the line's start, and
    what follows overwrites what was there (cursor moves are dropped)."""
    lines = []
    for line in ANSI.sub("", raw).split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part):]
        lines.append(shown.rstrip())
    return lines


def test_what_a_fit_prints(tmp_path):
    """Through the console script, stdout and stderr into one pipe as on a terminal."""
    lamina = Path(sys.executable).parent / "lamina"
    args = fit_args(tmp_path, "term", *QUIET, "--trainer.max_steps", "6", "--trainer.log_every_n_steps", "2",
                    "--trainer.val_check_interval", "3", "--trainer.enable_progress_bar", "true",
                    "--trainer.enable_model_summary", "true")
    result = subprocess.run([str(lamina), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, timeout=600)
    out = result.stdout
    assert result.returncode == 0, out[-3000:]
    assert "Total params" in out  # the model summary ...
    assert "FLOPs" not in out  # ... without Lightning's `Total FLOPs: 0`
    assert "LeafSpec" not in out and "deprecat" not in out.lower(), out
    lines = screen(out)
    # lamina's lines stand on their own, the one printed mid-training with the bar drawn among them
    lamina_lines = [line for line in lines if "lamina:" in line]
    assert all(line.startswith("lamina:") for line in lamina_lines), lamina_lines
    assert any(line.startswith("lamina: the first step took") for line in lamina_lines), lamina_lines
    assert any(re.match(r"step 6/6 .*loss \d\.\d{3}, val \d\.\d{3}, .* tok/s$", line) for line in lines), lines
    # the end: train and val loss and bpb at the last step, then the run folder
    end = lines.index(next(line for line in lines if line.startswith("lamina: step 6/6:")))
    assert re.fullmatch(r"lamina: step 6/6: train loss \d\.\d{3}, val loss \d\.\d{3}, val bpb \d\.\d{3}", lines[end])
    assert lines[end + 1].startswith(f"lamina: run folder {tmp_path / 'runs' / 'term' / 'version_0'}: ")
