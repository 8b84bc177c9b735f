"""End to end through the `lamina` CLI: a tiny fit writes the run folder and the tags; resume is exact;
user mistakes give one line and a non-zero exit; the training core's metrics (train/loss over
micro-batches, perf over training time only, the peak table) and no host sync in a training step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lamina import lm as lm_module
from lamina.callbacks import Throughput, peak_flops_of, training_callbacks
from lamina.cli import main
from lamina.lm import LanguageModel
from lamina.step import NonFiniteGuard

TINY = [
    "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32", "--model.block_size", "32",
    "--model.warmup_steps", "5", "--model.lr", "3e-3",
    "--data.batch_size", "8", "--data.max_bytes", "300000", "--data.val_tokens", "2048",
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--seed_everything", "7",
]


def fit_args(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        "fit", *TINY,
        "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.logger.class_path", "lamina.tensorboard.TensorBoardLogger",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.logger.init_args.name", name,
        *extra,
    ]


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tiny_fit_writes_run_folder_and_tags(tmp_path):
    main(fit_args(tmp_path, "e2e", "--trainer.max_steps", "40", "--trainer.val_check_interval", "20",
                  "--trainer.log_every_n_steps", "10"))
    run = tmp_path / "runs" / "e2e" / "version_0"
    assert (run / "config.yaml").exists()
    assert (run / "tokenizer.json").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    tags = scalars(run)
    for tag in ("train/loss", "val/loss", "val/bpb", "lr", "perf/tokens_per_sec"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    assert "perf/mfu" not in tags  # no peak FLOP/s known for a CPU: no number rather than a wrong one
    bpb = tags["val/bpb"]
    assert min(bpb) == 0, "val/bpb is logged at step 0"
    assert bpb[max(bpb)] < bpb[0]


def test_resume_gives_the_same_losses_as_one_run(tmp_path):
    n = 12
    main(fit_args(tmp_path, "once", "--trainer.max_steps", str(2 * n), "--trainer.log_every_n_steps", "1",
                  "--trainer.val_check_interval", str(n), "--checkpoint.every_n_train_steps", str(n),
                  "--checkpoint.save_top_k", "-1"))
    once_dir = tmp_path / "runs" / "once" / "version_0"
    midway = next((once_dir / "checkpoints").glob(f"*step={n}.ckpt"))
    main(fit_args(tmp_path, "resumed", "--trainer.max_steps", str(2 * n), "--trainer.log_every_n_steps", "1",
                  "--trainer.val_check_interval", str(n), "--ckpt_path", str(midway)))
    once = scalars(once_dir)["train/loss"]
    resumed = scalars(tmp_path / "runs" / "resumed" / "version_0")["train/loss"]
    later = sorted(s for s in once if s >= n)
    assert later and sorted(resumed) == later
    assert [resumed[s] for s in later] == [once[s] for s in later]


def test_ckpt_path_last_continues_the_latest_version(tmp_path):
    main(fit_args(tmp_path, "cont", "--trainer.max_steps", "6", "--checkpoint.every_n_train_steps", "3"))
    main(fit_args(tmp_path, "cont", "--trainer.max_steps", "9", "--ckpt_path", "last",
                  "--trainer.log_every_n_steps", "1"))
    versions = sorted(p.name for p in (tmp_path / "runs" / "cont").iterdir())
    assert versions == ["version_0"]
    steps = scalars(tmp_path / "runs" / "cont" / "version_0")["train/loss"]
    assert max(steps) >= 7


def test_a_fit_validates_and_keeps_last_ckpt_at_its_last_step_whatever_its_length(tmp_path, monkeypatch):
    from lamina import checkpointing

    saved = []
    monkeypatch.setattr(checkpointing, "save_last", lambda trainer, save=checkpointing.save_last: saved.append(
        trainer.global_step) or save(trainer))
    # 7 steps, a checkpoint every 3: Lightning alone would leave last.ckpt at step 6
    main(fit_args(tmp_path, "odd", "--trainer.max_steps", "7", "--trainer.val_check_interval", "5",
                  "--trainer.log_every_n_steps", "5", "--checkpoint.every_n_train_steps", "3"))
    run = tmp_path / "runs" / "odd" / "version_0"
    tags = scalars(run)
    assert sorted(tags["val/bpb"]) == [0, 5, 7]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 7
    assert saved == [7]
    # 2 steps, a checkpoint every 3: nothing saved during the fit, so ModelCheckpoint's own end-of-training
    # save writes last.ckpt at step 2, and LastAtFinalStep writes nothing more
    main(fit_args(tmp_path, "short", "--trainer.max_steps", "2", "--checkpoint.every_n_train_steps", "3"))
    last = tmp_path / "runs" / "short" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    assert saved == [7]


def test_extending_a_run_keeps_its_learning_rate_schedule(tmp_path, caplog):
    # lr 3e-3, warmup 5, min_lr_ratio 0.1: the cosine reaches its floor, 3e-4, at the first run's max_steps.
    main(fit_args(tmp_path, "ext", "--trainer.max_steps", "10", "--trainer.log_every_n_steps", "1"))
    first = scalars(tmp_path / "runs" / "ext" / "version_0")["lr"]
    with caplog.at_level("INFO"):
        main(fit_args(tmp_path, "ext", "--trainer.max_steps", "14", "--ckpt_path", "last",
                      "--trainer.log_every_n_steps", "1"))
    lr = scalars(tmp_path / "runs" / "ext" / "version_0")["lr"]
    assert [lr[s] for s in range(10)] == [first[s] for s in range(10)]
    assert 3e-4 < lr[9] < 6e-4  # on its way down to the floor before the extension ...
    assert all(lr[s] == pytest.approx(3e-4) for s in range(10, 14)), lr  # ... and at it after, not back up
    said = [r.getMessage() for r in caplog.records if "learning rate keeps its schedule" in r.getMessage()]
    assert len(said) == 1 and "trainer.max_steps 14" in said[0] and "steps 10-14 train at its floor" in said[0]


def run_cli_error(tmp_path, capsys, *extra) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(tmp_path, "bad", "--trainer.max_steps", "2", *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("lamina: error:"), err
    return errors[0]


def test_unknown_key_is_one_line(tmp_path, capsys):
    assert "model.n_layers" in run_cli_error(tmp_path, capsys, "--model.n_layers", "3")


def test_heads_not_dividing_width_is_one_line(tmp_path, capsys):
    assert "model.n_head" in run_cli_error(tmp_path, capsys, "--model.n_head", "3")


def test_wrong_type_is_one_line(tmp_path, capsys):
    assert "model.n_layer" in run_cli_error(tmp_path, capsys, "--model.n_layer", "four")


def test_missing_data_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.txt"
    assert "nowhere.txt" in run_cli_error(tmp_path, capsys, "--data.source", str(missing))


def test_empty_data_file_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty.txt" in run_cli_error(tmp_path, capsys, "--data.source", str(empty))


def test_console_script_reports_errors_in_one_line(tmp_path):
    lamina = Path(sys.executable).parent / "lamina"
    result = subprocess.run(
        [str(lamina), *fit_args(tmp_path, "bad", "--model.n_head", "5")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lamina: error: model.n_head")
    assert result.stderr.count("error") == 1


def test_fit_on_own_text_file_with_byte_tokenizer(tmp_path):
    text = tmp_path / "notes.txt"
    line = "The quick brown fox jumps over the lazy dog; caf\u00e9 na\u00efve r\u00e9sum\u00e9.\n"
    text.write_text(line * 3000, encoding="utf-8")
    main(fit_args(tmp_path, "notes", "--data.source", str(text), "--data.tokenizer", "byte",
                  "--trainer.max_steps", "60", "--trainer.val_check_interval", "60"))
    bpb = scalars(tmp_path / "runs" / "notes" / "version_0")["val/bpb"]
    assert bpb[max(bpb)] < 0.7 * bpb[0]  # a repeated line is easy: bits per byte must fall fast


# ---- the training core: train/loss over micro-batches, no host sync in the step, perf, peaks ---------

QUIET = ("--instrument.enabled", "false")


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H100 PCIe", "bf16-mixed", 756e12),
    ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989e12),
    ("NVIDIA H100 SXM5 80GB", "bf16-true", 989e12),
    ("NVIDIA H200", "bf16-mixed", 989e12),
    ("NVIDIA A100-SXM4-80GB", "bf16-mixed", 312e12),
    ("NVIDIA H100 NVL", "bf16-mixed", 835e12),
    ("NVIDIA H200 NVL", "bf16-mixed", 835e12),  # not the H200 SXM's 989e12
    ("NVIDIA GeForce RTX 4090", "bf16-mixed", None),
    ("NVIDIA H100 80GB HBM3", "32-true", None),  # the table holds bf16 peaks only
])
def test_peak_flops_table(name, precision, peak):
    assert peak_flops_of(name, precision) == peak


def test_train_loss_is_the_mean_of_the_accumulated_micro_batches(tmp_path, monkeypatch):
    losses: dict[int, list[torch.Tensor]] = {}
    original = LanguageModel.training_step

    def training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        losses.setdefault(self.global_step, []).append(loss.detach().clone())
        return loss

    monkeypatch.setattr(LanguageModel, "training_step", training_step)
    main(fit_args(tmp_path, "acc", *QUIET, "--trainer.max_steps", "4", "--trainer.accumulate_grad_batches", "2",
                  "--trainer.log_every_n_steps", "1"))
    logged = scalars(tmp_path / "runs" / "acc" / "version_0")["train/loss"]
    assert sorted(logged) == [0, 1, 2, 3] and all(len(v) == 2 for v in losses.values())
    for step, (a, b) in losses.items():
        assert a.item() != b.item()
        assert logged[step] == ((a + b) / 2).item()  # float32 on both sides: exact


class FusedAdamW(torch.optim.AdamW):
    """AdamW as on a GPU (fused: it skips a non-finite step on the device), here on the CPU."""

    def __init__(self, *args, fused=None, **kwargs):
        super().__init__(*args, fused=True, **kwargs)


class HostValue(torch.Tensor):
    """Marks the values lamina.step.host_scalar puts on the host (through lamina.lm) (it survives Lightning's clones): on a
    GPU they live in host memory, and reading them waits for nothing."""

    def __deepcopy__(self, memo):
        return self.clone()


class CountHostSyncs(L.Callback):
    """Counts Tensor.item / tolist / __bool__ of anything but host values from the start of each
    training batch to the start of the next (the step, its hooks, Lightning's logging and progress
    bar), in the steps that are neither the first, the last, nor log steps."""

    def __init__(self, monkeypatch):
        self.counting, self.calls, self.counted_steps = False, [], set()
        real_host_scalar = lm_module.host_scalar
        monkeypatch.setattr(lm_module, "host_scalar", lambda value: real_host_scalar(value).as_subclass(HostValue))
        for name in ("item", "tolist", "__bool__"):
            real = getattr(torch.Tensor, name)

            def counted(tensor, *args, _real=real, _name=name, **kwargs):
                if self.counting and not isinstance(tensor, HostValue):
                    self.calls.append(_name)
                return _real(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        self.counting = 1 <= step < trainer.max_steps - 1 and (step + 1) % trainer.log_every_n_steps != 0
        if self.counting:
            self.counted_steps.add(step)


def test_no_host_sync_in_training_steps_that_are_not_log_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.optim, "AdamW", FusedAdamW)  # the GPU path of the non-finite guard
    counter = CountHostSyncs(monkeypatch)
    monkeypatch.setattr("lamina.cli.training_callbacks", lambda: [*training_callbacks(), counter])
    main(fit_args(tmp_path, "nosync", *QUIET, "--trainer.max_steps", "8", "--trainer.log_every_n_steps", "3",
                  "--trainer.accumulate_grad_batches", "2", "--trainer.enable_progress_bar", "true",
                  "--trainer.val_check_interval", "1000", "--checkpoint.every_n_train_steps", "1000"))
    assert counter.counted_steps == {1, 3, 4, 6}  # 2 and 5 are log steps: train/loss is read there
    assert counter.calls == []


@pytest.fixture
def poisoned_steps(monkeypatch):
    """Steps at which the training loss is multiplied by NaN (so every gradient is NaN too)."""
    steps: set[int] = set()
    original = LanguageModel.training_step

    def training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step in steps else loss

    monkeypatch.setattr(LanguageModel, "training_step", training_step)
    return steps


def test_guard_skips_on_the_device_with_a_fused_optimizer(tmp_path, monkeypatch, poisoned_steps):
    monkeypatch.setattr(torch.optim, "AdamW", FusedAdamW)
    poisoned_steps.update({3, 7})
    main(fit_args(tmp_path, "skip", *QUIET, "--trainer.max_steps", "10", "--model.on_nonfinite", "skip",
                  "--trainer.log_every_n_steps", "4"))
    run = tmp_path / "runs" / "skip" / "version_0"
    assert scalars(run)["train/nonfinite_skips"] == {3: 1.0, 7: 2.0}  # logged at their steps, read later
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert {float(s["step"]) for s in state["optimizer_states"][0]["state"].values()} == {8.0}
    assert state["lamina"]["nonfinite_skips"] == 2
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())


def test_guard_stop_on_the_device_writes_no_checkpoint_after_the_bad_step(tmp_path, monkeypatch, capsys,
                                                                         poisoned_steps):
    monkeypatch.setattr(torch.optim, "AdamW", FusedAdamW)
    poisoned_steps.add(5)
    with pytest.raises(SystemExit):
        main(fit_args(tmp_path, "nan", *QUIET, "--trainer.max_steps", "20", "--trainer.log_every_n_steps", "50",
                      "--checkpoint.every_n_train_steps", "3"))
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("lamina: error:"))
    assert "non-finite loss or gradient at step 5" in line
    state = torch.load(tmp_path / "runs" / "nan" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 3


def test_perf_counts_training_time_only(tmp_path, monkeypatch):
    """A fake clock: each micro-batch takes 1 s; validation and another callback's work (a measurement,
    a checkpoint) take far longer and must not lower perf/tokens_per_sec."""
    clock = [0.0]
    step, validate = LanguageModel.training_step, LanguageModel.validation_step

    def training_step(self, batch, batch_idx):
        clock[0] += 1.0
        return step(self, batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        clock[0] += 100.0
        return validate(self, batch, batch_idx)

    class Measure(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock[0] += 50.0

    monkeypatch.setattr(LanguageModel, "training_step", training_step)
    monkeypatch.setattr(LanguageModel, "validation_step", validation_step)
    monkeypatch.setattr(Throughput, "host_clock", staticmethod(lambda: clock[0]))
    monkeypatch.setattr("lamina.cli.training_callbacks", lambda: [*training_callbacks(), Measure()])
    main(fit_args(tmp_path, "perf", *QUIET, "--trainer.max_steps", "9", "--trainer.log_every_n_steps", "3",
                  "--trainer.val_check_interval", "2", "--trainer.accumulate_grad_batches", "2"))
    perf = scalars(tmp_path / "runs" / "perf" / "version_0")["perf/tokens_per_sec"]
    tokens_per_micro_batch = 8 * 32  # data.batch_size x block_size
    assert sorted(perf) == [2, 5, 8]
    assert all(v == tokens_per_micro_batch for v in perf.values()), perf


def test_throughput_is_the_first_callback(tmp_path):
    from lamina.cli import LaminaCLI, cli_kwargs
    from lamina.data import TextDataModule

    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=fit_args(tmp_path, "order")[1:], **cli_kwargs())
    assert isinstance(cli.trainer.callbacks[0], Throughput)  # the first section that makes a callback
    assert sum(isinstance(c, Throughput) for c in cli.trainer.callbacks) == 1  # (not also training_callbacks')
    # the non-finite guard is the model's, not a callback's: nothing is plugged into the module
    assert isinstance(cli.model.guard, NonFiniteGuard) and cli.model.guard.policy == "stop"
    assert not any("Guard" in type(c).__name__ for c in cli.trainer.callbacks)


def test_steps_line_up_validation_counts_optimizer_steps(tmp_path):
    """Every value at step s is of the weights after s updates: validation after update 2 lands at 2
    beside that step's measurement, the counters at s are what trained them, and with accumulation
    val_check_interval counts optimizer steps (not micro-batches); step 0's validation is the sanity pass."""
    main(fit_args(tmp_path, "steps", "--trainer.max_steps", "6", "--trainer.log_every_n_steps", "1",
                  "--trainer.accumulate_grad_batches", "2", "--trainer.val_check_interval", "2",
                  "--instrument.every_n_steps", "2", "--instrument.probes.tokens", "512",
                  "--instrument.modularity.enabled", "false", "--instrument.ablation.enabled", "false",
                  "--instrument.layers.enabled", "false", "--instrument.pictures", "false"))
    tags = scalars(tmp_path / "runs" / "steps" / "version_0")
    assert sorted(tags["val/bpb"]) == [0, 2, 4, 6]
    assert sorted(tags["val/bpb"]) == sorted(tags["sparsity/id/mean"])
    assert sorted(tags["train/loss"]) == [0, 1, 2, 3, 4, 5]  # the loss of the weights after s updates
    tokens_per_step = 2 * 8 * 32  # accumulation x data.batch_size x block_size
    assert tags["perf/tokens_seen"] == {s: s * tokens_per_step for s in range(1, 7)}
    assert list(tags["perf/first_step_seconds"]) == [0] and tags["perf/first_step_seconds"][0] > 0
    assert "hp_metric" not in tags and "epoch" not in tags  # no Lightning clutter in lamina's logger
    charts = custom_scalars_layout(tmp_path / "runs" / "steps" / "version_0")
    assert {"loss: train and val", "Q layer 1 against its shuffled-weights null (band: null mean +- 2 sd)"} <= set(charts)
    assert charts["loss: train and val"] == ["^train/loss$", "^val/loss$"]


def custom_scalars_layout(run_dir: Path) -> dict[str, list[str]]:
    """The charts of the custom-scalars layout in a run's event file: title -> tags (or patterns)."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {}
    for category in layout.category:
        for chart in category.chart:
            content = chart.multiline if chart.HasField("multiline") else chart.margin
            charts[chart.title] = list(content.tag) if chart.HasField("multiline") else [
                s.value for s in content.series
            ]
    return charts


def test_lamina_help_names_every_subcommand(capsys):
    from lamina.cli import SUBCOMMANDS, TOOLS, LaminaCLI

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    runnable = {*LaminaCLI.subcommands(), "prepare", *TOOLS}
    assert runnable == set(SUBCOMMANDS)  # the list is what main() runs, no more, no less
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == runnable
    with pytest.raises(SystemExit) as exit_info:
        main(["tset"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("lamina: error: unknown subcommand 'tset'") and "\n" not in err
