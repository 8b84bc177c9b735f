"""End to end through the `lamina` CLI: a tiny fit writes the run folder and the tags; resume is exact;
user mistakes give one line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lamina.cli import main

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
        "--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger",
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
