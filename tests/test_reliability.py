"""Nothing lost under faults: atomic checkpoints under SIGKILL, Ctrl-C saves and exits, a full disk
leaves the last checkpoint whole, non-finite steps are caught, and resume is exact with the
instrumentation's state."""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lamina import checkpointing
from lamina.checkpointing import AtomicCheckpointIO
from lamina.cli import main
from lamina.lm import LanguageModel
from tests.test_train import fit_args, poisoned_steps, scalars  # noqa: F401 (a fixture)

NO_INSTRUMENT = ("--instrument.enabled", "false")


# ---- atomic checkpoints ---------------------------------------------------------------------------


def _save_forever(path: str, payload: torch.Tensor, pipe) -> None:
    """Child: save checkpoints to `path` in a loop, telling the parent when each save starts."""
    io = AtomicCheckpointIO()
    for step in range(1_000_000):
        pipe.send(("saving", step))
        io.save_checkpoint({"step": step, "payload": payload, "stamp": torch.full((4,), step)}, path)
        pipe.send(("saved", step))


def test_sigkill_during_saves_never_corrupts_the_last_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    payload = torch.arange(4_000_000, dtype=torch.float32)  # 16 MB: a save takes a while
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    kills, mid_save, last_saved = 24, 0, -1
    for _ in range(kills):
        parent, child = context.Pipe()
        process = context.Process(target=_save_forever, args=(str(path), payload, child), daemon=True)
        process.start()
        started = {}
        while True:  # let it complete a save or two, then kill it while the next one is under way
            event, step = parent.recv()
            started[event] = time.perf_counter()
            if event == "saved":
                last_saved = step
                duration = started["saved"] - started["saving"]
            if event == "saving" and step >= 1 + rng.randrange(2):
                break
        time.sleep(rng.uniform(0.0, duration))
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        mid_save += any(tmp_path.glob(f"last.ckpt{checkpointing.TEMP_MARK}*"))
        checkpoint = torch.load(path, weights_only=True)  # whole, whatever the moment of the kill
        assert checkpoint["step"] >= last_saved  # (the child may have finished more saves than we read)
        assert torch.equal(checkpoint["payload"], payload)
        assert torch.equal(checkpoint["stamp"], torch.full((4,), checkpoint["step"]))
    # The kills must really land inside saves for this test to mean anything.
    assert mid_save >= kills // 3, f"only {mid_save} of {kills} kills hit a save in progress"
    AtomicCheckpointIO().save_checkpoint({"step": -1}, path)
    assert not list(tmp_path.glob(f"*{checkpointing.TEMP_MARK}*")), "stale temp files are cleaned"


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", full_disk)
    with pytest.raises(checkpointing.CheckpointWriteError, match=r"checkpoint: cannot write .*out of disk space"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_full_disk_during_fit_is_one_line_and_the_last_checkpoint_loads(tmp_path, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def fills_up(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # the two files of the first checkpoint fit; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", fills_up)
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(tmp_path, "full", *NO_INSTRUMENT, "--trainer.max_steps", "9",
                      "--checkpoint.every_n_train_steps", "3"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "out of disk space" in errors[0] and errors[0].startswith("lamina: error:"), err
    last = tmp_path / "runs" / "full" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3


def test_cli_runs_write_checkpoints_atomically(tmp_path):
    from lamina.cli import LaminaCLI, cli_kwargs
    from lamina.data import TextDataModule

    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=fit_args(tmp_path, "io")[1:], **cli_kwargs())
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ---- Ctrl-C ------------------------------------------------------------------------------------------


def test_ctrl_c_saves_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path):
    accumulate = 3  # (with accumulation: the stop lands on a whole optimizer step, and resumes there)
    lamina = Path(sys.executable).parent / "lamina"
    # A constant learning rate after warmup: the interrupted run's schedule does not depend on its max_steps.
    common = [*NO_INSTRUMENT, "--model.min_lr_ratio", "1.0", "--trainer.log_every_n_steps", "1",
              "--trainer.accumulate_grad_batches", str(accumulate), "--trainer.val_check_interval", "1000",
              "--checkpoint.every_n_train_steps", "100000"]
    process = subprocess.Popen(
        [str(lamina), *fit_args(tmp_path, "ctrlc", *common, "--trainer.max_steps", "100000")],
        # as many threads as this process, which runs the resumed and the straight run: the same
        # reductions in the same order, so the losses can be compared bit for bit
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    for line in process.stderr:  # training has started once the module reports its MFU status
        if "MFU" in line:
            break
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    err = process.stderr.read()
    assert process.wait(timeout=120) == 130, err
    assert "Traceback" not in err
    stopped = [line for line in err.splitlines() if line.startswith("lamina: stopped by SIGINT")]
    assert stopped, err
    step = int(stopped[0].split("after step ")[1].split(";")[0])
    last = tmp_path / "runs" / "ctrlc" / "version_0" / "checkpoints" / "last.ckpt"
    assert step >= 1 and torch.load(last, weights_only=False)["global_step"] == step
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no stray last-v1.ckpt

    end = step + 4
    main(fit_args(tmp_path, "ctrlc", *common, "--trainer.max_steps", str(end), "--ckpt_path", "last"))
    main(fit_args(tmp_path, "straight", *common, "--trainer.max_steps", str(end)))
    resumed = scalars(tmp_path / "runs" / "ctrlc" / "version_0")["train/loss"]
    straight = scalars(tmp_path / "runs" / "straight" / "version_0")["train/loss"]
    assert [resumed[s] for s in range(step, end)] == [straight[s] for s in range(step, end)]
    # The resumed run's ModelCheckpoint took the stop's last.ckpt for its own: it wrote over it.
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(last, weights_only=False)["global_step"] == end


def test_ctrl_c_writes_last_ckpt_once(tmp_path, monkeypatch):
    # Lightning's ModelCheckpoint, when it has saved nothing yet in a fit, writes last.ckpt again at
    # the end of training: a second full write of the same step while a SIGTERM's grace period runs.
    original, sent = LanguageModel.on_train_batch_end, []

    def interrupt_once(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.global_step == 2 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    saves, real_save = [], AtomicCheckpointIO.save_checkpoint

    def counted(self, checkpoint, path, storage_options=None):
        saves.append(Path(path).name)
        real_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(LanguageModel, "on_train_batch_end", interrupt_once)
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", counted)
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(tmp_path, "once", *NO_INSTRUMENT, "--trainer.max_steps", "50",
                      "--checkpoint.every_n_train_steps", "1000"))
    assert exit_info.value.code == 130
    assert saves == ["last.ckpt"]


# ---- non-finite steps -----------------------------------------------------------------------------


def test_nonfinite_loss_stops_with_the_step_and_last_checkpoint(tmp_path, capsys, poisoned_steps):
    poisoned_steps.add(5)
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(tmp_path, "nan", *NO_INSTRUMENT, "--trainer.max_steps", "10",
                      "--checkpoint.every_n_train_steps", "3"))
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("lamina: error:"))
    assert "non-finite loss or gradient at step 5" in line
    last = tmp_path / "runs" / "nan" / "version_0" / "checkpoints" / "last.ckpt"
    assert str(last) in line
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 3
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, poisoned_steps):
    poisoned_steps.update({3, 7})
    main(fit_args(tmp_path, "skip", *NO_INSTRUMENT, "--trainer.max_steps", "10", "--model.on_nonfinite", "skip",
                  "--trainer.log_every_n_steps", "1"))
    run = tmp_path / "runs" / "skip" / "version_0"
    skips = scalars(run)["train/nonfinite_skips"]
    assert skips == {3: 1.0, 7: 2.0}
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["lamina"]["nonfinite_skips"] == 2
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())
    adam_steps = {float(s["step"]) for s in state["optimizer_states"][0]["state"].values()}
    assert adam_steps == {8.0}  # 10 steps, 2 of them skipped: the optimizer took 8


def test_nonfinite_gradient_with_a_finite_loss_is_caught(tmp_path, monkeypatch):
    original = LanguageModel.on_before_optimizer_step

    def poison_grad(self, optimizer):
        if self.global_step == 2:
            next(p for p in self.model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
        original(self, optimizer)

    monkeypatch.setattr(LanguageModel, "on_before_optimizer_step", poison_grad)
    main(fit_args(tmp_path, "grad", *NO_INSTRUMENT, "--trainer.max_steps", "5", "--model.on_nonfinite", "skip",
                  "--trainer.log_every_n_steps", "1"))
    assert scalars(tmp_path / "runs" / "grad" / "version_0")["train/nonfinite_skips"] == {2: 1.0}


def test_too_many_skips_in_a_row_stop_the_run(tmp_path, capsys, poisoned_steps):
    poisoned_steps.update(range(2, 100))
    with pytest.raises(SystemExit):
        main(fit_args(tmp_path, "diverged", *NO_INSTRUMENT, "--trainer.max_steps", "20",
                      "--model.on_nonfinite", "skip", "--model.max_nonfinite_skips", "3"))
    err = capsys.readouterr().err
    assert "non-finite loss or gradient at step 5 (4 in a row" in err


# ---- measures and resume ------------------------------------------------------------------------


def test_a_model_with_only_dead_units_measures_without_nan(tmp_path):
    from lamina.data import TextDataModule
    from lamina.instrument import Instrumentation
    from lamina.probes import build_probes

    dm = TextDataModule(batch_size=4, block_size=32, max_bytes=200_000, val_tokens=2048,
                        cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup("fit")
    lm = LanguageModel(n_layer=2, n_head=2, n_embd=32, block_size=32, activation="relu", vocab_size=dm.model_vocab_size)
    with torch.no_grad():
        for block in lm.model.transformer.h:
            block.mlp.c_fc.weight.zero_()  # relu(0) = 0: every unit dead on every token
    instrument = Instrumentation(probes={"tokens": 256}, ablation={"examples": 2})
    instrument.probes = build_probes(dm, tokens=256, seed=0, task_examples=2, tasks=True)
    measurement = instrument.measure(lm.model, step=0, partition=True, ablate=True)
    assert measurement.scalars["sparsity/id/layer0"] == 0.0
    assert measurement.scalars["sparsity/id/layer0/dead_frac"] == 1.0
    bad = {tag: v for tag, v in measurement.scalars.items() if not torch.isfinite(torch.tensor(v))}
    assert not bad, bad


def test_resume_with_instrumentation_repeats_its_measurements(tmp_path):
    n = 6
    common = ["--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", str(n),
              "--instrument.every_n_steps", "3", "--instrument.probes.tokens", "256",
              "--instrument.ablation.examples", "2",
              "--instrument.series", "all"]  # every measured number a series, compared across the resume
    main(fit_args(tmp_path, "once", *common, "--trainer.max_steps", str(2 * n),
                  "--checkpoint.every_n_train_steps", str(n), "--checkpoint.save_top_k", "-1"))
    once_dir = tmp_path / "runs" / "once" / "version_0"
    midway = next((once_dir / "checkpoints").glob(f"*step={n}.ckpt"))
    main(fit_args(tmp_path, "resumed", *common, "--trainer.max_steps", str(2 * n), "--ckpt_path", str(midway)))
    once, resumed = scalars(once_dir), scalars(tmp_path / "runs" / "resumed" / "version_0")
    measured = [t for t in once if t.startswith(("sparsity/", "modularity/", "layers/", "lastlayer/"))]
    assert any("stability" in t for t in measured)
    compared = 0
    for tag in measured:
        later = {s: v for s, v in once[tag].items() if s > n}
        assert {s: resumed[tag][s] for s in later} == later, tag
        compared += bool(later)
    # The nulls are drawn again, the same, after the resume (seeded, never the global RNG).
    for tag in ("modularity/layer0/q_null_mean", "modularity/layer0/q_z", "sparsity/gap/id_b/z",
                "modularity/unlearned_tasks", "lastlayer/gap/level3/hoyer/z"):
        assert tag in measured, tag
    assert compared > 20


MEMORY_CHILD = """
import resource, sys, torch
from lamina.instrument import Instrumentation
from lamina.model import GPT, GPTConfig
from lamina.probes import ProbeSet

torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=256, block_size=64, n_layer=1, n_head=2, n_embd=64, activation="relu"))
instrument = Instrumentation(probes={"batch_size": 32}, ablation={"enabled": False}, pictures=False)
peaks = []
for windows in (128, 2048):  # 8k then 131k tokens per probe
    instrument.probes = ProbeSet({"id": torch.randint(0, 256, (windows, 64)), "random": torch.randint(0, 256, (windows, 64))})
    instrument.measure(model, step=0, partition=True)
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
print(peaks[1] - peaks[0])
"""


def test_probe_measurement_memory_does_not_grow_with_probe_size(tmp_path):
    """16x the probe tokens: the peak memory grows by far less than one [tokens, d_ff] tensor of
    the larger probe (131072 x 256 fp32 = 128 MiB), which a non-streaming measure would hold
    (measured: ~17 MiB streaming; ~300 MiB when each batch's activations are kept)."""
    result = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    growth_mib = int(result.stdout.split()[-1]) / 1024
    assert growth_mib < 64, f"peak memory grew {growth_mib:.0f} MiB with the probe size"


def test_fit_reports_the_run_folder_size_and_no_advertisement(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        main(fit_args(tmp_path, "sized", *NO_INSTRUMENT, "--trainer.max_steps", "2"))
    run = tmp_path / "runs" / "sized" / "version_0"
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("lamina: run folder"))
    reported = float(line.split(": ")[2].split(" MB")[0])
    # (event files may still grow a little when the logger closes, after the report)
    assert str(run) in line and "checkpoints" in line
    assert abs(reported - checkpointing.folder_bytes(run) / 1e6) <= 0.1
    # Lightning logs "💡 Tip: For seamless cloud logging ..., try installing litlogger" on every fit.
    assert "GPU available" in caplog.text, "Lightning's INFO lines must reach the log for this to test anything"
    assert not [r.getMessage() for r in caplog.records if "Tip:" in r.getMessage()]
    # Parsed values (jsonargparse's own int/float subclasses) reach the checkpoint as builtins.
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert type(state["hyper_parameters"]["n_layer"]) is int


def test_checkpointing_can_be_switched_off(tmp_path):
    main(fit_args(tmp_path, "nockpt", *NO_INSTRUMENT, "--trainer.max_steps", "3",
                  "--trainer.enable_checkpointing", "false"))
    run = tmp_path / "runs" / "nockpt" / "version_0"
    assert (run / "config.yaml").exists() and not (run / "checkpoints").exists()


def test_remote_paths_go_to_lightnings_writer(monkeypatch):
    seen = []
    monkeypatch.setattr(checkpointing.TorchCheckpointIO, "save_checkpoint",
                        lambda self, checkpoint, path, storage_options=None: seen.append(path))
    AtomicCheckpointIO().save_checkpoint({"step": 1}, "s3://bucket/run/last.ckpt")
    assert seen == ["s3://bucket/run/last.ckpt"]
