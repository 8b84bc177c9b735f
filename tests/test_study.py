"""lamina.study: a contrast paired by seed and judged (the rule itself: tests/test_verdict.py), the
runner's reuse and resume of fits (counted through a stand-in fit), the report's files on a small
made-up result, one smoke run of the finetune-fragility claim at toy sizes, and the gpu preset of
every claim: its device and precision, its refusal without CUDA, and `--preset gpu --rehearse`
(its code at toy sizes on the CPU) for all eight claims."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from pathlib import Path

from lamina.errors import ConfigError
from lamina.study import CLAIMS, main
from lamina.study import finetune_runs, rlp_runs, world_runs
from lamina.study.evaluation import arith_items, training_questions
from lamina.study.claim import GPU, REHEARSAL, StudyContext, is_words, rehearsal, repo_configs
from lamina.study.command import check_device, parser, unit_words
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, write_report
from lamina.study.runs import Runner, RunSpec
from lamina.verdict import NOT_TESTED, SUPPORTED, Prediction, detectable

# ---- a contrast ----------------------------------------------------------------------------------


def test_a_contrast_is_paired_by_seed_and_judged_by_its_t_interval():
    a = {1: 0.50, 2: 0.60, 3: 0.55, 4: 0.9}
    b = {1: 0.30, 2: 0.42, 3: 0.33}  # seed 4 has no partner: it drops out, and is named
    c = Contrast.paired("a − b", "", a, b, prediction=Prediction(1, 0.01), needs=("g",))
    assert sorted(c.per_seed) == [1, 2, 3] and c.dropped == {4: "no value in b"}
    assert c.per_seed[1] == pytest.approx(0.2)
    st = c.stats
    from scipy import stats

    want = stats.ttest_1samp([0.2, 0.18, 0.22], 0).confidence_interval()
    assert (st.lo, st.hi) == pytest.approx((want.low, want.high))
    passed, failed = {"g": Gate("g", "?", True, "")}, {"g": Gate("g", "?", False, "")}
    assert c.verdict(passed, [1, 2, 3]).verdict == SUPPORTED
    assert c.verdict(failed, [1, 2, 3]).verdict == NOT_TESTED
    assert c.verdict({}, [1, 2, 3]).reason == "not tested: gate g not run"  # a gate that was not run blocks too
    # four seeds planned, three paired: not tested, and the seed that dropped out is named
    short = c.verdict(passed, [1, 2, 3, 4])
    assert short.verdict == NOT_TESTED and "seed 4 missing" in short.reason
    nan = Contrast.paired("a − b", "", {1: 0.5, 2: math.nan, 3: 0.4}, {1: 0.1, 2: 0.2, 3: 0.1}, labels=("A", "B"))
    assert nan.dropped == {2: "A is nan"} and sorted(nan.per_seed) == [1, 3]


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
        arms={"A": {"acc": {1: 0.5, 2: 0.6, 3: 0.56}}, "B": {"acc": {1: 0.3, 2: 0.4, 3: 0.35}}},
        primary="A − B",
    )
    result.contrasts = [
        Contrast.paired("A − B", "acc", result.arms["A"]["acc"], result.arms["B"]["acc"],
                        prediction=Prediction(1, 0.02, "margin: made up"), needs=("can-do",)),
        Contrast.paired("A − B, powered", "acc", result.arms["A"]["acc"], result.arms["B"]["acc"],
                        prediction=Prediction(1, 0.02), needs=("power",)),
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
    assert "**Claim verdict: supported**" in text and "**A − B** (primary): **supported**" in text
    assert "**A − B, powered** (secondary): **not tested**" in text and "not tested: gate power failed" in text
    assert "Rule: Each claim names one **primary** contrast" in text and "| power | enough items? | **no** | no |" in text
    assert "0.203 [" in text  # the paired mean with its interval
    assert "achieved half-width" in text and "### Descriptive" in text
    data = json.loads((tmp_path / "made-up" / "result.json").read_text())
    assert data["contrasts"][0]["verdict"] == SUPPORTED and data["contrasts"][2]["verdict"] is None
    assert data["primary"] == "A − B" and data["verdict"]["verdict"] == SUPPORTED
    assert [c["role"] for c in data["contrasts"]] == ["primary", "secondary", "descriptive"]
    assert data["arms"]["A"]["acc"]["per_seed"] == {"1": 0.5, "2": 0.6, "3": 0.56}
    for name in ("by_layer.png", "bars.png"):
        assert (tmp_path / "made-up" / name).read_bytes()[:4] == b"\x89PNG"
    index = (tmp_path / "index.md").read_text()
    assert "| [made-up](made-up/report.md) | A − B | **supported** | +0.203 [" in index  # one row per claim
    assert "| A − B, powered | secondary | **not tested** |" in index
    assert "| A alone | descriptive | (descriptive: no verdict) |" in index
    assert "- made-up: A − B, powered (secondary): not tested: gate power failed" in index
    assert "failed: power" in index


# ---- the claim -----------------------------------------------------------------------------------


def test_held_out_arithmetic_leaves_out_the_fine_tuning_problems():
    data = {"seed": 3, "families": ["arith"], "levels": [1, 2], "tasks": ["add"], "max_bytes": 20_000}
    seen = training_questions(data)
    assert seen and all(q.startswith("Q: ") and q.endswith("=?") for q in seen)
    items, info = arith_items(99, 2, 20, seen)
    assert len(items) == 20 and info["held_out"] and info["drawn"] >= 20
    assert not {item.prompt.removesuffix(" <think>") for item in items} & seen
    # level 1 has 100 problems, all in a text this size: none held out, the level's own are scored (and said so)
    ones = training_questions({**data, "levels": [1], "max_bytes": 50_000})
    level1, info1 = arith_items(99, 1, 100, ones)
    assert len(ones) == 100 and not info1["held_out"] and len(level1) == 100
    gold = items[0]
    assert gold.is_correct(gold.gold) and not gold.is_correct(" 1+1=2. </think> A: -1\n")
    every = finetune_runs.checkpoint_every
    assert (every(746, 200), every(400, 200), every(7, 2)) == (373, 200, 1)
    # power from the seed-to-seed spread of the per-seed differences: more spread, fewer seeds, less power
    assert detectable(0.1, 3) > detectable(0.05, 3)
    assert detectable(0.05, 3) > detectable(0.05, 10)


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
    assert "## Verdicts" in report and "**retention one-hop: proxy − finetuned** (primary):" in report
    assert "**restore lower − restore upper** (secondary):" in report and "- **drift lower − upper (1 − CKA)**:" in report
    for name in ("drift_cka_by_layer.png", "drift_weights_by_layer.png", "accuracy_by_arm.png"):
        assert (out / "finetune-fragility" / name).is_file()
    assert "finetune-fragility" in (out / "index.md").read_text()
    result = results["finetune-fragility"]
    assert set(result.arms) >= {"base", "finetuned-base", "proxy-base", "continued-base"}
    assert len(result.arms["finetuned-base"]["drift/layer0/1-cka"]) == 1
    # one seed: no interval, so nothing is tested, whatever the numbers
    judged = [v for v in result.verdicts().values() if v is not None]
    assert judged and all(v.verdict == NOT_TESTED for v in judged)
    assert result.primary == "retention one-hop: proxy − finetuned" and "**Claim verdict: not tested**" in report
    printed = capsys.readouterr().out
    assert "study finetune-fragility: seed 1/1, arm finetuned-base: training 2 steps" in printed

    # again: every run is reused, nothing trains; with the stop gate on, a base that knows no facts
    # (4 steps) stops the study with one line, and the report says why
    counted = []
    monkeypatch.setattr("lamina.study.runs.in_process_fit", lambda words: counted.append(words))
    presets = finetune_runs.PRESETS
    monkeypatch.setitem(presets, "test", dataclasses.replace(presets["test"], stop_on_gate=True))
    with pytest.raises(ConfigError, match="^study finetune-fragility: gate base-knows-one-hop failed"):
        main(args)
    assert counted == []
    assert "Stopped before the comparison" in (out / "finetune-fragility" / "report.md").read_text()


# ---- the gpu preset, and its rehearsal on the CPU ----------------------------------------------


def settings(words) -> dict[str, str]:
    """What `--key value` words set, as the CLI reads them (the last value of a key wins)."""
    words = list(words)
    return {words[i][2:]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")
            and not words[i + 1].startswith("--")}


def arm_words(module, preset) -> dict[str, tuple[str, ...]]:
    """The CLI words each arm of a runs module (world_runs, finetune_runs, rlp_runs) gets after its config files,
    at `preset`."""
    if module is world_runs:
        ctx = StudyContext("density-familiarity", Path("unused"), [1], "gpu", None, repo_configs())
        return {arm: spec.overrides for arm, spec in world_runs.specs_for(ctx, preset, 1).items()}
    if module is finetune_runs:
        return {"base": preset.every + preset.base, "small": preset.every + preset.small,
                "finetuned-base": preset.every + preset.base + preset.tune,
                "finetuned-small": preset.every + preset.small + preset.tune}
    return {arm: rlp_runs.arm_words(preset, arm, 1, None if arm == "pretrain" else Path("phase1.ckpt"))
            for arm in ("pretrain", *rlp_runs.ARMS[:-1])}


MODULES = (world_runs, finetune_runs, rlp_runs)
# what a rehearsal sets beyond the test preset's words: the CPU, and what it keeps of the gpu preset
# (its precision, and a choice of data that is not a size: the fine-tuning's arithmetic levels)
BEYOND_TEST = {"trainer.accelerator": "cpu", "trainer.devices": "1", "trainer.precision": "bf16-mixed",
               "data.levels": "[1,2]"}


def test_every_claim_has_a_gpu_preset_on_one_cuda_device_in_bf16():
    assert all("gpu" in claim.presets for claim in CLAIMS.values())
    assert settings(GPU) == {"trainer.accelerator": "gpu", "trainer.devices": "1", "trainer.precision": "bf16-mixed"}
    for module in MODULES:
        for arm, words in arm_words(module, module.PRESETS["gpu"]).items():
            assert {k: settings(words)[k] for k in settings(GPU)} == settings(GPU), (module.__name__, arm)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_a_rehearsal_is_the_gpu_preset_at_the_test_presets_sizes_on_the_cpu(module):
    gpu, test = module.PRESETS["gpu"], module.PRESETS["test"]
    rehearsed = rehearsal(gpu, module.TOY)
    assert rehearsed.every[:len(gpu.every)] == gpu.every  # the gpu preset's own words, then the toy's
    assert rehearsed.every[-len(REHEARSAL):] == REHEARSAL
    for field in dataclasses.fields(gpu):
        if not is_words(getattr(gpu, field.name)):  # steps, items, cadences: the toy's, as the test preset has them
            assert getattr(rehearsed, field.name) == getattr(test, field.name), field.name
    rehearsal_words, test_words = arm_words(module, rehearsed), arm_words(module, test)
    for arm, words in rehearsal_words.items():
        got, want = settings(words), settings(test_words[arm])
        # every size the test preset sets, the rehearsal sets alike; beyond them, the CPU and what it keeps
        assert {k: got[k] for k in want} == want, arm
        beyond = {k: v for k, v in got.items() if k not in want}
        assert beyond.items() <= BEYOND_TEST.items() and beyond["trainer.precision"] == "bf16-mixed", arm
        assert beyond["trainer.accelerator"] == "cpu", arm


def test_the_gpu_preset_without_cuda_is_one_line_naming_preset_and_device(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        main(["hierarchy", "--preset", "gpu", "--out", str(tmp_path)])
    line = str(err.value)
    assert line.startswith("--preset gpu: expected a machine with CUDA, got none here") and "\n" not in line
    assert "--device auto" in line and "--preset cpu --device cpu" in line and "--rehearse" in line
    assert not (tmp_path / "runs").exists()  # refused before anything ran
    with pytest.raises(ConfigError, match="^--device cuda: expected a machine with CUDA"):
        check_device("cpu", "cuda")
    with pytest.raises(ConfigError, match="^--device cuda:0: expected a machine with CUDA"):
        check_device("gpu", "cuda:0", rehearse=True)  # a rehearsal runs on the CPU, its evaluations too
    check_device("gpu", "auto", rehearse=True)
    check_device("cpu", "auto")
    args = parser().parse_args(["--preset", "gpu", "--rehearse", "--out", "s"])
    assert unit_words(args, ["hierarchy"], 1)[-1] == "--rehearse"  # --jobs' processes rehearse too


@pytest.mark.filterwarnings("ignore:Precision bf16-mixed is not supported by the model summary")
def test_gpu_preset_rehearsal_of_every_claim(tmp_path, one_thread, monkeypatch, capsys):
    """`lamina study --preset gpu --seeds 1 --rehearse`: every claim through the gpu preset's code
    (its words, its bf16-mixed precision) at toy sizes on the CPU, a handful of steps each: 31 s
    alone on one thread of the shared 2-core development machine, 42-62 s in pytest beside other
    engineers' jobs (load average 7), a cold token cache each time."""
    monkeypatch.chdir(tmp_path)  # (caches and anything relative land here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    out = tmp_path / "study"
    results = main(["--seeds", "1", "--out", str(out), "--preset", "gpu", "--rehearse"])  # --device auto: the CPU
    printed = capsys.readouterr().out
    assert set(results) == set(CLAIMS)
    assert "study reasoning-in-pretraining: seed 1/1, arm rlp: training 2 steps" in printed
    assert "study hierarchy: seed 1/1, arm world-v2-small: training 4 steps" in printed
    records = sorted((out / "runs").glob("*/seed1/version_0/study-run.json"))
    assert len(records) == 13  # world-v2 2, reasoning-in-pretraining 6, finetune-fragility 5
    for path in records:
        argv = json.loads(path.read_text())["argv"]
        got = settings(argv)
        assert (got["trainer.accelerator"], got["trainer.precision"]) == ("cpu", "bf16-mixed"), path
        assert " ".join(GPU) in " ".join(argv), path  # the gpu preset's words, then the toy sizes
    index = (out / "index.md").read_text()
    for name, result in results.items():
        assert f"[{name}]({name}/report.md)" in index and result.primary
        assert "gpu (rehearsed: toy sizes on the CPU)" in (out / name / "report.md").read_text()
        judged = [v for v in result.verdicts().values() if v is not None]
        assert judged and all(v.verdict == NOT_TESTED for v in judged), name  # one seed: nothing is tested
