"""lamina.study: the verdict rule on intervals built by hand, the runner's reuse and resume of fits
(counted through a stand-in fit), the report's files on a small made-up result, and one smoke run
of the finetune-fragility claim at toy sizes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from lamina.errors import ConfigError
from lamina.study import CLAIMS, main
from lamina.study import finetune as ft
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, write_report
from lamina.study.runs import Runner, RunSpec
from lamina.study.verdict import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Prediction, decide

# ---- the verdict rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo, hi, sign, margin, expected",
    [
        (0.02, 0.30, 1, 0.05, SUPPORTED),  # entirely above 0, predicted above
        (-0.30, -0.02, -1, 0.05, SUPPORTED),  # entirely below 0, predicted below
        (-0.30, -0.02, 1, 0.05, NOT_SUPPORTED),  # entirely on the other side
        (0.02, 0.30, -1, 0.05, NOT_SUPPORTED),
        (-0.04, 0.03, 1, 0.05, NOT_SUPPORTED),  # within the equivalence margin
        (-0.04, 0.03, -1, 0.05, NOT_SUPPORTED),
        (-0.10, 0.20, 1, 0.05, INCONCLUSIVE),  # holds 0, reaches past the margin
        (-0.04, 0.03, 1, 0.0, INCONCLUSIVE),  # no margin: an interval around 0 decides nothing
        (0.0, 0.30, 1, 0.0, INCONCLUSIVE),  # touching 0 is not "entirely above"
        (0.01, 0.02, 1, 0.05, SUPPORTED),  # on the predicted side and inside the margin: supported (said so)
    ],
)
def test_verdict_rule_on_built_intervals(lo, hi, sign, margin, expected):
    verdict = decide(lo, hi, Prediction(sign, margin))
    assert verdict.verdict == expected
    if (lo, hi, margin) == (0.01, 0.02, 0.05):
        assert "smaller than the margin" in verdict.reason


def test_verdict_without_an_interval_or_behind_a_failed_gate_is_inconclusive():
    assert decide(None, None, Prediction(1)).verdict == INCONCLUSIVE
    assert decide(math.nan, 1.0, Prediction(1)).verdict == INCONCLUSIVE
    blocked = decide(0.1, 0.2, Prediction(1), blocked="gate base-knows-facts failed")
    assert blocked.verdict == INCONCLUSIVE and "base-knows-facts" in blocked.reason
    with pytest.raises(ConfigError, match="sign"):
        Prediction(0)
    with pytest.raises(ConfigError, match="margin"):
        Prediction(1, -0.1)


def test_a_contrast_is_paired_by_seed_and_judged_by_its_t_interval():
    a = {1: 0.50, 2: 0.60, 3: 0.55, 4: 0.9}
    b = {1: 0.30, 2: 0.42, 3: 0.33}  # seed 4 has no partner: left out
    c = Contrast.paired("a − b", "", a, b, prediction=Prediction(1, 0.01), needs=("g",))
    assert sorted(c.per_seed) == [1, 2, 3]
    assert c.per_seed[1] == pytest.approx(0.2)
    st = c.stats
    from scipy import stats

    want = stats.ttest_1samp([0.2, 0.18, 0.22], 0).confidence_interval()
    assert (st.lo, st.hi) == pytest.approx((want.low, want.high))
    assert c.verdict({"g": Gate("g", "?", True, "")}).verdict == SUPPORTED
    assert c.verdict({"g": Gate("g", "?", False, "")}).verdict == INCONCLUSIVE
    assert c.verdict({}).verdict == INCONCLUSIVE  # a gate that was not run blocks too


# ---- the runner ------------------------------------------------------------------------------------


class FakeFit:
    """Stands in for `lamina fit`: writes last.ckpt at the step asked for (or `stop_at`)."""

    def __init__(self, stop_at: int | None = None):
        self.calls: list[list[str]] = []
        self.stop_at = stop_at

    def __call__(self, words: list[str]) -> None:
        self.calls.append(words)
        value = lambda key: words[words.index(key) + 1]  # noqa: E731
        folder = (f"{value('--trainer.logger.init_args.save_dir')}/{value('--trainer.logger.init_args.name')}"
                  f"/version_{value('--trainer.logger.init_args.version')}")
        step = int(value("--trainer.max_steps")) if self.stop_at is None else self.stop_at
        from pathlib import Path

        (Path(folder) / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save({"global_step": step, "state_dict": {}}, Path(folder) / "checkpoints" / "last.ckpt")


def test_runner_reuses_a_finished_run_and_resumes_a_half_done_one(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {n_layer: 1}\n")
    spec = RunSpec("arm", (str(config),), seed=2, max_steps=10, overrides=("--model.lr", "0.01"))
    lines: list[str] = []
    half = FakeFit(stop_at=4)
    runner = Runner(tmp_path / "runs", "demo", fit=half, log=lines.append)
    with pytest.raises(ConfigError, match="ended without .* at step 10"):
        runner.run(spec, 1, 3)
    full = FakeFit()
    runner = Runner(tmp_path / "runs", "demo", fit=full, log=lines.append)
    run = runner.run(spec, 1, 3)
    assert run.trained and "--ckpt_path" in full.calls[0]  # resumed from the half-done run
    assert full.calls[0][full.calls[0].index("--seed_everything") + 1] == "2"
    assert run.checkpoint == tmp_path / "runs" / "arm" / "seed2" / "version_0" / "checkpoints" / "last.ckpt"
    again = runner.run(spec, 1, 3)
    assert not again.trained and len(full.calls) == 1  # the second call does not train
    assert lines[-1].startswith("study demo: seed 1/3, arm arm: finished run reused")
    assert "resuming from step 4 to 10" in lines[-2]
    # the same folder asked for with other settings: refused, not silently mixed
    with pytest.raises(ConfigError, match="made with other settings"):
        runner.run(RunSpec("arm", (str(config),), seed=2, max_steps=10), 1, 3)
    config.write_text("model: {n_layer: 2}\n")
    with pytest.raises(ConfigError, match="made with other settings"):
        runner.run(spec, 1, 3)
    assert len(full.calls) == 1
    with pytest.raises(ConfigError, match="max_steps >= 1"):
        RunSpec("arm", (), seed=1, max_steps=0)


# ---- the report ------------------------------------------------------------------------------------


def test_report_writes_its_files_on_a_made_up_result(tmp_path):
    seeds = [1, 2, 3]
    result = ClaimResult(
        "made-up", "A is above B.", {"steps": "10"}, seeds,
        gates=[Gate("can-do", "does A do it?", True, "yes"), Gate("power", "enough items?", False, "no")],
        arms={"A": {"acc": {1: 0.5, 2: 0.6, 3: 0.55}}, "B": {"acc": {1: 0.3, 2: 0.4, 3: 0.35}}},
    )
    result.contrasts = [
        Contrast.paired("A − B", "acc", result.arms["A"]["acc"], result.arms["B"]["acc"],
                        prediction=Prediction(1, 0.02, "margin: made up"), needs=("can-do",)),
        Contrast.paired("A − B, powered", "acc", result.arms["A"]["acc"], result.arms["B"]["acc"],
                        prediction=Prediction(1), needs=("power",)),
        Contrast.paired("A alone", "descriptive", result.arms["A"]["acc"]),
    ]
    result.figures = [
        Figure("by_layer", "t", "layer", "y", ["0", "1"], {"A": [{1: 0.1, 2: 0.2}, {1: 0.3, 2: 0.2}]},
               {"floor": [{1: 0.0, 2: 0.01}, {1: 0.0, 2: 0.01}]}),
        Figure("bars", "t", "x", "y", ["acc"], {"A": [result.arms["A"]["acc"]], "B": [result.arms["B"]["acc"]]},
               kind="bar"),
    ]
    report = write_report(result, tmp_path)
    text = report.read_text()
    assert "**A − B**: supported" in text and "**A − B, powered**: inconclusive" in text
    assert "not tested: gate power failed" in text
    assert "Rule: For a contrast" in text and "| power | enough items? | **no** | no |" in text
    assert "0.2 [" in text  # the paired mean with its interval
    data = json.loads((tmp_path / "made-up" / "result.json").read_text())
    assert data["contrasts"][0]["verdict"] == SUPPORTED and data["contrasts"][2]["verdict"] is None
    assert data["arms"]["A"]["acc"]["per_seed"] == {"1": 0.5, "2": 0.6, "3": 0.55}
    for name in ("by_layer.png", "bars.png"):
        assert (tmp_path / "made-up" / name).read_bytes()[:4] == b"\x89PNG"
    index = (tmp_path / "index.md").read_text()
    assert "[made-up](made-up/report.md)" in index and "A − B: **supported**" in index
    assert "failed: power" in index


# ---- the claim -----------------------------------------------------------------------------------


def test_held_out_arithmetic_leaves_out_the_fine_tuning_problems():
    data = {"seed": 3, "families": ["arith"], "levels": [1, 2], "tasks": ["add"], "max_bytes": 20_000}
    seen = ft.training_questions(data)
    assert seen and all(q.startswith("Q: ") and q.endswith("=?") for q in seen)
    items, info = ft.arith_items(99, 2, 20, seen)
    assert len(items) == 20 and info["held_out"] and info["drawn"] >= 20
    assert not {item.prompt.removesuffix(" <think>") for item in items} & seen
    # level 1 has 100 problems, all in a text this size: none held out, the level's own are scored (and said so)
    ones = ft.training_questions({**data, "levels": [1], "max_bytes": 50_000})
    level1, info1 = ft.arith_items(99, 1, 100, ones)
    assert len(ones) == 100 and not info1["held_out"] and len(level1) == 100
    gold = items[0]
    assert gold.is_correct(gold.gold) and not gold.is_correct(" 1+1=2. </think> A: -1\n")
    assert (ft.checkpoint_every(746, 200), ft.checkpoint_every(400, 200), ft.checkpoint_every(7, 2)) == (373, 200, 1)
    assert ft.detectable_difference(0.5, 100, 3) > ft.detectable_difference(0.5, 400, 3)
    assert ft.detectable_difference(0.5, 100, 3) > ft.detectable_difference(0.5, 100, 10)


def test_study_command_refuses_bad_input_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="^lamina study: unknown claim 'nope'"):
        main(["nope", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="^--preset: expected one of"):
        main(["--preset", "tpu", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="^--seeds: expected distinct seeds"):
        main(["--seeds", "1", "1", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="^lamina study: argument --seeds"):
        main(["--seeds", "x"])
    with pytest.raises(ConfigError, match="expected the study's configs"):
        main(["--configs", str(tmp_path), "--out", str(tmp_path), "--preset", "test"])
    assert "finetune-fragility" in CLAIMS


def test_finetune_fragility_smoke_run_writes_a_report_with_verdicts(tmp_path, one_thread, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # (caches and anything relative land here)
    out = tmp_path / "study"
    args = ["finetune-fragility", "--seeds", "1", "--out", str(out), "--preset", "test", "--device", "cpu"]
    results = main(args)
    report = (out / "finetune-fragility" / "report.md").read_text()
    assert "## Verdicts" in report and "**retention one-hop: proxy − finetuned**:" in report
    assert "**drift lower − upper (1 − CKA)**:" in report
    for name in ("drift_cka_by_layer.png", "drift_weights_by_layer.png", "accuracy_by_arm.png"):
        assert (out / "finetune-fragility" / name).is_file()
    assert "finetune-fragility" in (out / "index.md").read_text()
    result = results["finetune-fragility"]
    assert set(result.arms) >= {"base", "finetuned-base", "proxy-base", "continued-base"}
    assert len(result.arms["finetuned-base"]["drift/layer0/1-cka"]) == 1
    # one seed: no interval, so every verdict is inconclusive, whatever the numbers
    judged = [c.verdict(result.gate_map) for c in result.contrasts if c.prediction]
    assert judged and all(v.verdict == INCONCLUSIVE for v in judged)
    printed = capsys.readouterr().out
    assert "study finetune-fragility: seed 1/1, arm finetuned-base: training 2 steps" in printed

    # again: every run is reused, nothing trains; with the stop gate on, a base that knows no facts
    # (4 steps) stops the study with one line, and the report says why
    counted = []
    monkeypatch.setattr("lamina.study.runs.in_process_fit", lambda words: counted.append(words))
    monkeypatch.setitem(ft.PRESETS, "test", dataclasses.replace(ft.PRESETS["test"], stop_on_gate=True))
    with pytest.raises(ConfigError, match="^study finetune-fragility: gate base-knows-one-hop failed"):
        main(args)
    assert counted == []
    assert "Stopped before the comparison" in (out / "finetune-fragility" / "report.md").read_text()
