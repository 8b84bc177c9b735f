"""bench/speedrun.py at toy size (a 1-layer, 32-wide model, a few steps): both subcommands run end
to end and write what docs/benchmarks.md reads. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "speedrun.py"


@pytest.fixture(scope="module")
def speedrun():
    spec = importlib.util.spec_from_file_location("speedrun_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy(tmp_path: Path) -> list[str]:
    return [
        "--threads", "1", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
        "--model.n_layer", "1", "--model.n_embd", "32", "--model.n_head", "2", "--model.block_size", "32",
        "--model.warmup_steps", "2", "--data.batch_size", "4", "--data.max_bytes", "60000",
        "--data.val_tokens", "256", "--data.cache_dir", str(tmp_path / "cache"), "--data.num_proc", "1",
    ]


@pytest.mark.parametrize("corpus", ["world", "text"])
def test_speedrun_at_toy_size(corpus, speedrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = speedrun.main(["speedrun", "--corpus", corpus, "--rounds", "2", "--nanogpt-steps", "6",
                          "--nanogpt-eval-every", "3", "--new-steps", "4", "--eval-every", "2",
                          "--text-bytes", "80000", *toy(tmp_path)])
    assert path.name.startswith(f"speedrun-{corpus}-cpu-")
    result = json.loads(path.read_text())
    nanogpt, plain = result["arms"]["nanogpt"], result["arms"]["plain"]
    assert result["target_val_bpb"] == nanogpt["final_val_bpb"] and nanogpt["steps_to_target"] == 6
    # Same model, initial weights, windows and schedule: the plain loop ends where lamina's trainer does.
    assert plain["final_val_bpb"] == pytest.approx(nanogpt["final_val_bpb"], abs=1e-4)
    assert Path(result["val_source"]).exists() and result["val_source"] != result["data_source"]
    for r in result["rounds"]:
        assert sorted(r["order"]) == ["nanogpt", "new", "plain"]
        assert [p["step"] for p in r["nanogpt"]["curve"]] == [3, 6]
        assert [p["step"] for p in r["new"]["curve"]][:1] == [2]
    assert result["rounds"][0]["order"][0] == "nanogpt"
    if corpus == "text":  # nanoGPT's split: the last 10% validates
        train, val = Path(result["data_source"]).read_text(), Path(result["val_source"]).read_text()
        assert len(val) < len(train) / 5 and train.endswith("\n")


def test_ablation_at_toy_size(speedrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = speedrun.main(["ablation", "--steps", "4", "--eval-every", "2", "--arms", "nanogpt", "muon", "all",
                          "--seed-arms", "nanogpt", "--seeds", "1", "--timing-rounds", "2", "--timing-steps", "4",
                          "--timing-skip", "1", *toy(tmp_path)])
    result = json.loads(path.read_text())
    assert [row["arm"] for row in result["table"]] == ["nanogpt", "muon", "all"]
    assert result["table"][0]["minus_nanogpt"] == 0 and result["table"][0]["cpu_time_per_step_vs_nanogpt"] == 1
    assert result["seed_noise"]["nanogpt"]["seeds"] == [1337, 1]
    table = path.with_suffix(".md").read_text()
    assert "| muon | optimizer=muon |" in table and "Seed noise" in table
