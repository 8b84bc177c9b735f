"""The claims read off the shared world-v2 runs (lamina.study.claims, lamina.study.world_runs): their pieces on data
whose answer is known by construction, and the five claims end to end at the test preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from lamina.errors import ConfigError
from lamina.study.claims import hierarchy, modularity
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
    assert modularity.match_score(a, a[rng.permutation(5)]) == pytest.approx(1.0)  # the same modules, relabelled
    # No structure in (two seeds' modules unrelated), no finding out.
    for seed in range(5):
        b = rng.normal(size=(5, 9))
        score, null_mean, null_std = modularity.profile_match(a, b, 200, seed)
        assert abs(score - null_mean) / null_std < 3
    # Shared structure (the same profiles plus noise) stands far out of the null.
    score, null_mean, null_std = modularity.profile_match(a, a[::-1] + 0.1 * rng.normal(size=a.shape), 200, 1)
    assert (score - null_mean) / null_std > 3


def profile_runs(folder: Path, profiles: dict[int, np.ndarray], layers: int = 2) -> dict[int, dict[str, Run]]:
    """Per seed, a run whose every layer's ablation damage profiles are `profiles[seed]` [modules, tasks]."""
    runs = {}
    for seed, matrix in profiles.items():
        values = {}
        for layer in range(layers):
            values[f"modularity/layer{layer}/q"] = [(10, 0.3)]
            for m, row in enumerate(matrix):
                for t, v in enumerate(row):
                    values[f"modularity/layer{layer}/ablation/m{m}/task{t:02d}"] = [(10, float(v))]
        runs[seed] = {modularity.ARM: event_run(folder / f"seed{seed}", values)}
    return runs


def matching_verdict(runs: dict[int, dict[str, Run]]):
    from lamina.study.report import ClaimResult, Contrast, Gate
    from lamina.verdict import Prediction

    result = ClaimResult("modularity", "", {}, sorted(runs), gates=[Gate("tasks-learned", "", True, "")])
    result.contrasts = [Contrast("match", "", {}, permutation=modularity.matching_test(runs, draws=300),
                                 prediction=Prediction(1, modularity.MATCH_MARGIN), needs=("tasks-learned",))]
    result.primary = "match"
    return result.verdicts()["match"]


def test_matching_across_seeds_is_one_permutation_test_that_finds_shared_modules_and_nothing_else(tmp_path):
    rng = np.random.default_rng(3)
    shared = rng.normal(size=(4, 8))
    # The same four modules in every seed (their order shuffled, noise added): supported, small p.
    planted = {s: shared[rng.permutation(4)] + 0.2 * rng.normal(size=shared.shape) for s in (1, 2, 3)}
    v = matching_verdict(profile_runs(tmp_path / "planted", planted))
    assert v.verdict == "supported" and v.p < 0.01 and v.n == 3, v
    # No structure in: each seed's modules unrelated to the others': nothing supported, in any of 5 draws.
    for draw in range(5):
        unrelated = {s: rng.normal(size=(4, 8)) for s in (1, 2, 3)}
        v = matching_verdict(profile_runs(tmp_path / f"unrelated{draw}", unrelated))
        assert v.verdict != "supported" and v.lo < 0 < v.hi, v
    # The confound without the effect: every module of every seed damages the same tasks more (one
    # vulnerability profile, scaled per module) and nothing module-specific recurs: nothing supported,
    # though it would clear a null that relabels whole profiles.
    vulnerability = rng.gamma(2.0, size=8)
    for draw in range(5):
        shared_only = {s: np.outer(rng.uniform(0.5, 2.0, 4), vulnerability) + 0.3 * rng.normal(size=(4, 8))
                       for s in (1, 2, 3)}
        v = matching_verdict(profile_runs(tmp_path / f"shared{draw}", shared_only))
        assert v.verdict != "supported" and abs(v.mean) < modularity.MATCH_MARGIN / 2, v
    # A seed without usable profiles leaves two: the rule says the planned third is missing.
    runs = profile_runs(tmp_path / "short", {1: shared, 2: shared + 0.1})
    runs[3] = profile_runs(tmp_path / "empty", {3: np.zeros((0, 0))})[3]
    v = matching_verdict(runs)
    assert v.verdict == "not tested" and "2 of 3 planned seeds" in v.reason, v


def test_tiers_are_read_against_their_nulls_and_depths_come_from_the_tags(tmp_path):
    values = {
        # lexical: against 0 (the shuffled-labels null), never against step 0, whose embedding holds the token
        "layers/tier/lexical/gain": [(0, 0.9), (10, 0.8)], "layers/tier/lexical/gain_se": [(0, 0.01), (10, 0.02)],
        # read as well by the untrained network: no more than its null
        "layers/tier/conceptual/gain": [(0, 0.3), (10, 0.35)], "layers/tier/conceptual/gain_se": [(0, 0.02), (10, 0.02)],
        "layers/tier/functional/gain": [(0, 0.0), (10, 0.2)], "layers/tier/functional/gain_se": [(0, 0.0), (10, 0.05)],
        "layers/tier/output/gain": [(0, 0.0), (10, 0.0)], "layers/tier/output/gain_se": [(0, 0.0), (10, 0.0)],
        "layers/tier/lexical/depth": [(0, 0.5), (10, 0.45)], "layers/tier/higher/depth": [(10, 0.6)],
    }
    run = event_run(tmp_path / "run", values)
    assert hierarchy.tier_z(run, "lexical") == pytest.approx(0.8 / 0.02, rel=1e-5)
    assert hierarchy.tier_z(run, "conceptual") == pytest.approx(0.05 / (0.02 * 2**0.5), rel=1e-4)
    assert hierarchy.tier_z(run, "functional") == pytest.approx(0.2 / 0.05, rel=1e-5)
    assert hierarchy.tier_z(run, "output") == 0.0  # no gain, no spread: nothing read
    assert hierarchy.readable(run, ("lexical", "functional")) and not hierarchy.readable(run)
    assert hierarchy.tier_depth(run, "higher") == pytest.approx(0.6) and hierarchy.tier_depth(run, "lexical", 0) == 0.5
    assert np.isnan(hierarchy.tier_depth(run, "conceptual"))  # no label read: no depth


# sparsify-difficulty's pieces (right − wrong, matched levels, prompt density): tests/test_claim_sparsify_difficulty.py


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
    # world-v2's 1500-step fits (23 CPU-minutes a seed) before the RLP group's (12), then fine-tuning (6)
    assert order == [("world-v2", 3), ("world-v2", 1), ("reasoning-in-pretraining", 3),
                     ("reasoning-in-pretraining", 1), ("finetune-fragility", 3), ("finetune-fragility", 1),
                     ("other", 3), ("other", 1)]
    assert unit_order(groups, [1])[0][1] == ["density-familiarity", "hierarchy"]  # a group's claims stay together
    with pytest.raises(ConfigError, match="^--jobs: expected a count >= 1, got 0"):
        study_main(["--jobs", "0", "--out", "unused"])


def test_cached_json_reuses_a_value_while_its_key_holds_and_recomputes_otherwise(tmp_path):
    from lamina.study.evaluation import cached_json

    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return {"v": value}
        return run

    path = tmp_path / "evals" / "seed1.json"
    assert cached_json(path, "k1", "numbers", compute(1)) == {"v": 1}
    assert cached_json(path, "k1", "numbers", compute(2)) == {"v": 1}  # the same key: read back, not computed
    assert cached_json(path, "k2", "numbers", compute(3)) == {"v": 3}  # a new checkpoint or setting: computed
    path.write_text("{not json", encoding="utf-8")  # a torn file: computed again, never an error
    assert cached_json(path, "k2", "numbers", compute(4)) == {"v": 4}
    assert calls == [1, 3, 4] and not list(path.parent.glob("*.tmp-*"))
