"""The claims read off world-v2 pretraining runs (lamina.study.pretraining): their pieces on data
whose answer is known by construction, and the five claims end to end at the test preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from lamina.errors import ConfigError
from lamina.model import GPT, GPTConfig
from lamina.study import pretraining as pt
from lamina.study.command import main as study_main, unit_order
from lamina.study.runs import Run, RunSpec


def event_run(folder: Path, values: dict[str, list[tuple[int, float]]]) -> Run:
    """A run whose TensorBoard scalars are `values` (tag -> [(step, value)])."""
    folder.mkdir(parents=True)
    writer = SummaryWriter(str(folder))
    for tag, points in values.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()
    return Run(RunSpec("x", (), 1, 1), folder, trained=False)


def test_matched_profiles_score_one_and_random_profiles_stay_inside_their_null():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 9))
    assert pt.match_score(a, a[rng.permutation(5)]) == pytest.approx(1.0)  # the same modules, relabelled
    # No structure in (two seeds' modules unrelated), no finding out.
    for seed in range(5):
        b = rng.normal(size=(5, 9))
        score, null_mean, null_std = pt.profile_match(a, b, 200, seed)
        assert abs(score - null_mean) / null_std < 3
    # Shared structure (the same profiles plus noise) stands far out of the null.
    score, null_mean, null_std = pt.profile_match(a, a[::-1] + 0.1 * rng.normal(size=a.shape), 200, 1)
    assert (score - null_mean) / null_std > 3


def test_label_depths_weigh_layers_by_positive_selectivity(tmp_path):
    sel = {"token": [0.5, 0.1, -0.2, 0.0], "entity": [0.0, 0.0, 0.3, 0.3], "carry": [-0.1, -0.1, -0.1, -0.1]}
    values = {}
    for name, layers in sel.items():
        values[f"layers/probe/{name}/peak_layer"] = [(10, float(np.argmax(layers)))]
        for i, v in enumerate(layers):
            values[f"layers/layer{i}/probe/{name}/selectivity"] = [(10, v)]
            values[f"layers/layer{i}/probe/{name}/selectivity_se"] = [(10, 0.05)]
    run = event_run(tmp_path / "run", values)
    depths = pt.label_depths(run)
    assert depths["token"] == pytest.approx((0 * 0.5 + (1 / 3) * 0.1) / 0.6, abs=1e-6)
    assert depths["entity"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)
    assert "carry" not in depths  # nothing read beyond its control anywhere: no depth
    assert pt.tier_depth(run, pt.HIGHER_TIERS) == pytest.approx(depths["entity"], abs=1e-6)
    assert pt.readable(run, ("lexical",)) and pt.readable(run, pt.HIGHER_TIERS)  # 0.5/0.05 and 0.3/0.05 > 3


def test_right_minus_wrong_is_within_level():
    levels = {
        # level 1: right 0.6, 0.4 (mean 0.5), wrong 0.2: +0.3
        "1": {"correct": [True, True, False], "density": [0.6, 0.4, 0.2]},
        # level 2: right 0.3, wrong 0.2, 0.1: +0.15
        "2": {"correct": [True, False, False], "density": [0.3, 0.2, 0.1]},
        "3": {"correct": [False, False], "density": [0.9, 0.9]},  # no right answer: left out
    }
    assert pt.correct_minus_wrong(levels, minimum=1) == pytest.approx((0.3 + 0.15) / 2)
    assert np.isnan(pt.correct_minus_wrong({"5": levels["3"]}, minimum=1))
    assert pt.mixed_levels(levels, minimum=1) == ["1", "2"]
    # Two right answers do not make a comparison: below the minimum a level is left out.
    assert pt.mixed_levels(levels, minimum=2) == [] and np.isnan(pt.correct_minus_wrong(levels, minimum=2))


def test_prompt_density_does_not_depend_on_batching():
    from lamina.data.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    tokenizer = byte_tokenizer()
    eot = tokenizer.token_to_id("<|endoftext|>")
    prompts = ["Q: 3+4=? <think>", "Q: 12+30=? <think>", "x", "Q: 9+9=? <think>", "a" * 50]
    one = pt.prompt_density(model, tokenizer, prompts, eot, torch.device("cpu"), 1)
    many = pt.prompt_density(model, tokenizer, prompts, eot, torch.device("cpu"), 16)
    assert np.allclose(one, many, atol=1e-6) and all(0 < d < 1 for d in one)
    record: dict = {}
    model(torch.tensor([[eot, *tokenizer.encode("x", add_special_tokens=False).ids]]), record=record)
    by_hand = float(np.mean([(pre > 0).float().mean() for pre in record["mlp_pre"]]))
    assert one[2] == pytest.approx(by_hand, abs=1e-6)


def test_the_five_claims_at_the_test_preset(tmp_path, capsys):
    claims = ["density-familiarity", "sparsify-difficulty", "hierarchy", "modularity", "context-vs-prior"]
    results = study_main([*claims, "--seeds", "2", "--out", str(tmp_path), "--preset", "test"])
    out = capsys.readouterr().out
    assert set(results) == set(claims)
    assert "seed 2/2, arm world-v2-small: training 4 steps" in out  # the progress line
    assert out.count("arm world-v2: training") == 2  # the five claims share the two world-v2 runs
    index = (tmp_path / "index.md").read_text()
    for claim in claims:
        report = tmp_path / claim / "report.md"
        assert report.is_file() and list((tmp_path / claim).glob("*.png"))
        data = json.loads((tmp_path / claim / "result.json").read_text())
        judged = [c["verdict"] for c in data["contrasts"] if c["verdict"]]
        assert data["gates"] and judged
        # Four steps teach nothing: no claim may come out supported.
        assert "supported" not in judged, claim
        # one primary contrast, named by the claim; the claim's verdict is its
        assert data["primary"] in {c["name"] for c in data["contrasts"]} and data["verdict"]["verdict"] != "supported"
        assert [c["role"] for c in data["contrasts"]].count("primary") == 1
        assert f"[{claim}]({claim}/report.md)" in index
    assert index.index("density-familiarity") < index.index("context-vs-prior")  # the research note's order
    assert "| [modularity](modularity/report.md) | learned: Q above its shuffled-weights null, end − step 0 |" in index
    assert "| Q above its permutation null | descriptive | (descriptive: no verdict) |" in index and "## Not tested" in index


def test_jobs_fit_each_seed_of_a_group_in_a_process_of_its_own(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # (the token caches of the processes land here)
    results = study_main(["density-familiarity", "finetune-fragility", "--seeds", "2", "--out", str(tmp_path / "s"),
                          "--preset", "test", "--jobs", "2"])
    out = capsys.readouterr().out
    for seed in (1, 2):
        assert f"study: seed {seed} of density-familiarity in a process of its own" in out
        assert f"study: seed {seed} of finetune-fragility in a process of its own" in out
    # (the processes' own lines go to the terminal) The reports are written here from the finished
    # runs: no fit starts in this process.
    assert "seed 2/2, arm world-v2: finished run reused" in out and ": training " not in out
    assert set(results) == {"density-familiarity", "finetune-fragility"}
    assert all(r.contrasts and r.seeds == [1, 2] for r in results.values())
    index = (tmp_path / "s" / "index.md").read_text()
    assert "[density-familiarity](density-familiarity/report.md)" in index
    assert "[finetune-fragility](finetune-fragility/report.md)" in index


def test_a_unit_fits_one_seed_and_writes_no_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s"
    assert study_main(["density-familiarity", "--seeds", "3", "--fits-for-seed", "2", "--out", str(out),
                       "--preset", "test"]) == {}
    assert sorted(p.name for p in (out / "runs" / "world-v2").iterdir()) == ["seed2"]
    assert not (out / "density-familiarity" / "report.md").exists() and not (out / "index.md").exists()
    with pytest.raises(ConfigError, match="^--fits-for-seed: expected one of the seeds 1 2 3, got 4$"):
        study_main(["density-familiarity", "--seeds", "3", "--fits-for-seed", "4", "--out", str(out)])


def test_units_run_the_longest_first():
    groups = {"finetune-fragility": ["finetune-fragility"], "world-v2": ["density-familiarity", "hierarchy"],
              "reasoning-in-pretraining": ["reasoning-in-pretraining", "elicitation"], "other": ["x"]}
    order = [(group, seed) for group, _, seed in unit_order(groups, [3, 1])]
    # world-v2's 1500-step fits (23 CPU-minutes a seed) before the RLP group's (20), then fine-tuning (8)
    assert order == [("world-v2", 3), ("world-v2", 1), ("reasoning-in-pretraining", 3),
                     ("reasoning-in-pretraining", 1), ("finetune-fragility", 3), ("finetune-fragility", 1),
                     ("other", 3), ("other", 1)]
    assert unit_order(groups, [1])[0][1] == ["density-familiarity", "hierarchy"]  # a group's claims stay together
    with pytest.raises(ConfigError, match="^--jobs: expected a count >= 1, got 0"):
        study_main(["--jobs", "0", "--out", "unused"])
