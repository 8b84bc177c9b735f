"""lamina.verdict, the decision rule, on built cases: each outcome (supported, negligible and
trivial, against, inconclusive; not tested for a failed gate, a floor, a ceiling, zero variance,
too few seeds, a seed that drops out, named); Holm within a claim on the textbook p-values; and
"no structure in, nothing supported": every claim's contrasts fed measurements with no effect
(five seeds) support nothing. Fast: no fit."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lamina.errors import ConfigError
from lamina.study.claims import finetune_fragility as ft
from lamina.study import world_runs
from lamina.study.claims import context_vs_prior, density_familiarity, hierarchy, modularity, sparsify_difficulty
from lamina.study.claim import StudyContext
from lamina.study.report import ClaimResult, Contrast, Gate, write_report
from lamina.study.runs import Run, RunSpec
from lamina.verdict import (
    AGAINST,
    INCONCLUSIVE,
    NEGLIGIBLE,
    NOT_TESTED,
    SUPPORTED,
    Prediction,
    decide,
    detectable,
    half_width,
    holm,
    holm_confidence,
)

# The claims read off the shared world-v2 runs, one module each.
WORLD_CLAIMS = (density_familiarity, sparsify_difficulty, hierarchy, modularity, context_vs_prior)

M = 0.05  # the margin of the built cases


def around(mean: float, spread: float = 0.01) -> list[float]:
    """Five seeds' differences around `mean` (a fixed spread: sd 0.0079 at 0.01)."""
    return [mean + spread * d for d in (-1.0, -0.5, 0.0, 0.5, 1.0)]


# ---- each outcome ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, sign, verdict", [
    (around(0.10), 1, SUPPORTED),  # [0.090, 0.110]: beyond +m
    (around(-0.10), -1, SUPPORTED),  # predicted below: beyond -m
    (around(0.0), 1, NEGLIGIBLE),  # inside [-m, m], holding 0
    (around(-0.10), 1, AGAINST),  # the other side, beyond the margin
    (around(0.10), -1, AGAINST),
    (around(0.0, 0.3), 1, INCONCLUSIVE),  # holds 0 and reaches past the margin
    (around(0.05), 1, INCONCLUSIVE),  # above 0, straddling the margin: an effect of undetermined size
    (around(-0.05), 1, INCONCLUSIVE),  # below 0, straddling -m
])
def test_each_outcome_of_the_rule(values, sign, verdict):
    v = decide(values, sign=sign, margin=M, planned=5)
    assert v.verdict == verdict, v.reason
    want = stats.ttest_1samp(values, 0).confidence_interval()
    assert (v.lo, v.hi) == pytest.approx((want.low, want.high))  # Student's t over seeds
    assert v.p == pytest.approx(stats.ttest_1samp(values, 0).pvalue)
    assert v.half_width == pytest.approx((v.hi - v.lo) / 2) and v.margin == M
    assert not v.trivial


def test_a_real_effect_inside_the_margin_is_trivial():
    v = decide(around(0.02, 0.005), sign=1, margin=M, planned=5)  # [0.015, 0.025]: above 0, inside the margin
    assert v.verdict == NEGLIGIBLE and v.trivial and v.label == "negligible (trivial)"
    assert v.reason.startswith("trivial:")
    mirrored = decide([-x for x in around(0.02, 0.005)], sign=-1, margin=M, planned=5)
    assert mirrored.verdict == NEGLIGIBLE and mirrored.trivial
    # the same interval read against a smaller margin is supported; "supported" is not tried before the margin
    assert decide(around(0.02, 0.005), sign=1, margin=0.01, planned=5).verdict == SUPPORTED


def test_not_tested_for_a_failed_or_missing_gate():
    v = decide(around(0.10), sign=1, margin=M, planned=5, gates={"base-knows": False, "power": True})
    assert v.verdict == NOT_TESTED and v.reason == "not tested: gate base-knows failed"
    v = decide(around(0.10), sign=1, margin=M, planned=5, gates={"power": None})
    assert v.verdict == NOT_TESTED and v.reason == "not tested: gate power not run"


def test_not_tested_at_a_floor_or_a_ceiling():
    # retention, 2026-12-01: every tuned arm 0.000 on facts whose chance is 0.10, every seed
    floor = decide([0.0, 0.0, 0.0], sign=1, margin=M, planned=3,
                   arms={"proxy-base": {1: 0.0, 2: 0.0, 3: 0.0}, "finetuned-base": {1: 0.0, 2: 0.0, 3: 0.0}},
                   floor=0.10, ceiling=1.0)
    assert floor.verdict == NOT_TESTED and "a floor" in floor.reason and "proxy-base, finetuned-base" in floor.reason
    # at chance, with noise: still nothing to compare, whatever the interval
    noisy = decide([0.02, -0.01, 0.03], sign=1, margin=M, planned=3,
                   arms={"a": [0.09, 0.08, 0.10], "b": [0.07, 0.09, 0.07]}, floor=0.10)
    assert noisy.verdict == NOT_TESTED and "a floor" in noisy.reason
    ceiling = decide([0.0, 0.01, -0.01], sign=1, margin=M, planned=3, arms={"a": [1.0, 1.0, 1.0], "b": [1, 1, 1]},
                     floor=0.0, ceiling=1.0)
    assert ceiling.verdict == NOT_TESTED and "a ceiling" in ceiling.reason
    # one arm off the floor: a comparison
    assert decide(around(0.3), sign=1, margin=M, planned=5, arms={"a": [0.4] * 5, "b": [0.1] * 5},
                  floor=0.1).verdict == SUPPORTED


def test_not_tested_for_zero_variance_and_too_few_seeds():
    zero = decide([0.0, 0.0, 0.0], sign=1, margin=M, planned=3)  # not "exact equivalence"
    assert zero.verdict == NOT_TESTED and "zero variance across seeds" in zero.reason
    assert decide([0.3, 0.3, 0.3], sign=1, margin=M).verdict == NOT_TESTED  # nor exact support
    one = decide([0.5], sign=1, margin=M, planned=1)
    assert one.verdict == NOT_TESTED and "fewer than two seeds" in one.reason
    short = decide({1: 0.1, 2: 0.11, 3: 0.12}, sign=1, margin=M, planned=[1, 2, 3, 4, 5])
    assert short.verdict == NOT_TESTED and short.reason.startswith("not tested: seeds 4, 5 missing")
    assert short.missing == (4, 5)
    counted = decide([0.1, 0.11, 0.12], sign=1, margin=M, planned=5)
    assert counted.verdict == NOT_TESTED and "3 of 5 planned seeds" in counted.reason
    # an interval alone: the same rule
    assert decide(sign=1, margin=M, interval=(0.06, 0.2), n=3, planned=3).verdict == SUPPORTED
    assert decide(sign=1, margin=M, interval=(0.0, 0.0), n=3, planned=3).verdict == NOT_TESTED
    assert decide(sign=1, margin=M, interval=(0.06, 0.2), n=2, planned=3).verdict == NOT_TESTED


def test_a_seed_that_drops_out_is_named():
    v = decide({1: 0.1, 2: math.nan, 3: 0.12, 4: 0.11}, sign=1, margin=M, planned=[1, 2, 3, 4])
    assert v.verdict == NOT_TESTED and "seed 2 missing (seed 2: nan)" in v.reason
    # through a contrast: the arm and the value are named, and the report says so
    depth = {1: 0.4, 2: math.nan, 3: math.nan}  # hierarchy, 2026-12-01: two seeds had no depth
    c = Contrast.paired("higher − lexical", "", depth, {1: 0.3, 2: 0.2, 3: 0.2}, labels=("higher", "lexical"),
                        prediction=Prediction(1, 0.1, "a tenth"))
    assert c.dropped == {2: "higher is nan", 3: "higher is nan"} and list(c.per_seed) == [1]
    result = ClaimResult("demo", "x", {}, [1, 2, 3], contrasts=[c], primary="higher − lexical")
    verdict = result.claim_verdict()
    assert verdict.verdict == NOT_TESTED and "seeds 2, 3 missing" in verdict.reason
    from lamina.study.report import markdown

    assert "dropped out: seed 2 (higher is nan); seed 3 (higher is nan)" in markdown(result, [])


def test_a_margin_is_a_smallest_effect_of_interest():
    with pytest.raises(ConfigError, match="margin"):
        Prediction(1, 0.0)  # no margin: "negligible" could never be read
    with pytest.raises(ConfigError, match="sign"):
        Prediction(0, 0.1)
    with pytest.raises(ConfigError, match="margin"):
        decide([0.1, 0.2], sign=1, margin=-1.0)


def test_power_from_the_spread_of_seeds():
    sd = 0.05
    assert half_width(sd, 3) == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert detectable(sd, 3) == pytest.approx((stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) * sd / math.sqrt(3))
    assert detectable(sd, 1) == math.inf
    # an effect of twice the margin, where detectable <= margin, is supported about 80% of the time
    n, margin = 6, 0.05
    sd = margin / ((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) / math.sqrt(n))
    rng = np.random.default_rng(0)
    hits = sum(decide(list(rng.normal(2 * margin, sd, n)), sign=1, margin=margin).verdict == SUPPORTED
               for _ in range(2000))
    assert 0.72 < hits / 2000 < 0.88


# ---- Holm within a claim ------------------------------------------------------------------------------


def test_holm_on_the_textbook_example():
    # Holm (1979), as Wikipedia gives it: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects the first and
    # the last (0.005 < 0.05/4, 0.01 < 0.05/3; 0.03 > 0.05/2 stops there)
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]
    assert holm([0.5]) == [0.5] and holm([]) == [] and holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    assert holm([0.2, 0.01]) == pytest.approx([0.2, 0.02])  # (and never below an earlier one)
    # the adjusted interval excludes 0 exactly when p_Holm < alpha
    assert holm_confidence(0.01, 0.03) == pytest.approx(1 - 0.05 / 3)
    assert holm_confidence(0.04, 0.06) == pytest.approx(1 - 0.05 * 0.04 / 0.06)


def values_with_p(p: float, n: int = 3, sd: float = 0.02) -> list[float]:
    """n differences with sample sd `sd` whose t-test against 0 gives two-sided p."""
    t = stats.t.isf(p / 2, n - 1)
    mean = t * sd / math.sqrt(n)
    base = np.array([-1.0, 0.0, 1.0])
    return list(mean + base / base.std(ddof=1) * sd)


def test_holm_within_a_claim_reads_the_secondary_contrasts_at_their_holm_level():
    # 2026-12-01: rlp − shuffled at p = 0.0225, one of three contrasts: below 0.05 alone, not under Holm
    seeds = [1, 2, 3]
    ps = {"secondary a": 0.0225, "secondary b": 0.30, "secondary c": 0.60}
    contrasts = [Contrast("primary", "", dict(zip(seeds, values_with_p(0.0225))), Prediction(1, 0.001))]
    contrasts += [Contrast(name, "", dict(zip(seeds, values_with_p(p))), Prediction(1, 0.001)) for name, p in ps.items()]
    contrasts.append(Contrast("described", "", {1: 1.0, 2: 2.0, 3: 3.0}))
    result = ClaimResult("demo", "x", {}, seeds, contrasts=contrasts, primary="primary")
    verdicts = result.verdicts()
    assert verdicts["primary"].verdict == SUPPORTED and verdicts["primary"].p_holm is None  # the primary: alone
    a = verdicts["secondary a"]
    assert a.p == pytest.approx(0.0225) and a.p_holm == pytest.approx(3 * 0.0225)
    assert a.verdict == INCONCLUSIVE and a.lo < 0 < a.hi  # the Holm-adjusted interval holds 0
    assert a.confidence == pytest.approx(1 - 0.05 / 3)
    assert verdicts["secondary b"].p_holm == pytest.approx(2 * 0.30)
    assert verdicts["described"] is None and result.role(contrasts[-1]) == "descriptive"
    # were it alone (the one secondary), its 95% interval would clear the margin
    alone = ClaimResult("demo", "x", {}, seeds, contrasts=contrasts[:2], primary="primary")
    assert alone.verdicts()["secondary a"].verdict == SUPPORTED
    # a secondary contrast that is not tested leaves the family
    blocked = Contrast("secondary b", "", dict(zip(seeds, values_with_p(0.30))), Prediction(1, 0.001), needs=("g",))
    fewer = ClaimResult("demo", "x", {}, seeds, contrasts=contrasts[:2] + [blocked],
                        gates=[Gate("g", "?", False, "")], primary="primary")
    assert fewer.verdicts()["secondary a"].p_holm == pytest.approx(0.0225)


def test_the_claim_verdict_is_the_primary_and_says_why_when_there_is_none():
    c = Contrast("a", "", {1: 0.2, 2: 0.21, 3: 0.22}, Prediction(1, 0.05))
    assert ClaimResult("x", "", {}, [1, 2, 3], contrasts=[c], primary="a").claim_verdict().verdict == SUPPORTED
    stopped = ClaimResult("x", "", {}, [1, 2, 3], stopped="phase 1 misses its gate", primary="a")
    assert stopped.claim_verdict().verdict == NOT_TESTED and "phase 1 misses its gate" in stopped.claim_verdict().reason
    assert "names no primary" in ClaimResult("x", "", {}, [1], contrasts=[c]).claim_verdict().reason
    with pytest.raises(ValueError, match="no prediction"):
        ClaimResult("x", "", {}, [1], contrasts=[Contrast("a", "", {1: 0.1})], primary="a").verdicts()


# ---- no structure in, nothing supported ----------------------------------------------------------------


def test_no_structure_in_nothing_supported_on_drawn_differences():
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(500):  # five seeds of differences drawn around 0, at the scale of the margin and beyond
        spread = rng.choice([0.2, 1.0, 3.0]) * M
        v = decide(list(rng.normal(0.0, spread, 5)), sign=int(rng.choice([1, -1])), margin=M, planned=5)
        seen.add(v.verdict)
        assert v.verdict != SUPPORTED, v.reason
    assert {NEGLIGIBLE, INCONCLUSIVE} <= seen
    # identical arms: zero variance, not tested (never "exact equivalence")
    same = Contrast.paired("a − b", "", {s: 0.3 + 0.01 * s for s in range(1, 6)}, {s: 0.3 + 0.01 * s for s in range(1, 6)},
                           prediction=Prediction(1, M))
    assert same.verdict({}, range(1, 6)).verdict == NOT_TESTED


STEPS = (0, 600)


def curve(start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array(STEPS), np.array([start, end], dtype=float)


def flat_world_scalars(rng: random.Random, layers: int) -> dict:
    """A world-v2 run's scalars with no structure: every probe, level, tier and exposure bin the
    same value up to noise; the gates' conditions met, so that the contrasts are read."""
    g = lambda sd: rng.gauss(0.0, sd)  # noqa: E731
    out = {"val/bpb": curve(8.0, 1.0)}
    probes = ["id", "id_b", "random", "shuffled", "novel"] + [f"exposure/{b}" for b in ("0", "1", "10", "100")]
    density = {p: (0.5 + g(0.002), 0.26 + g(0.006)) for p in probes}
    for p, (start, end) in density.items():
        out[f"sparsity/{p}/mean"] = curve(start, end)
        out[f"sparsity/gap/{p}"] = curve(density["id"][0] - start, density["id"][1] - end)
    out["sparsity/gap/id_b/z"], out["sparsity/gap/id_b/se"] = curve(0.1, 0.5), curve(0.003, 0.003)
    for k in (1, 2, 3):
        out[f"sparsity/level/{k}/mean"] = curve(0.5, 0.26 + g(0.006))
    for k in (4, 5):
        out[f"sparsity/ood/level/{k}/mean"] = curve(0.5, 0.26 + g(0.006))
    for stat in ("top5_energy", "entropy_rank", "hoyer"):  # (read by no claim now; the draws keep the others' noise)
        out[f"lastlayer/gap/level5/{stat}"] = curve(0.0, g(0.015))
    # hierarchy: every tier at the same depth up to noise, each read above its null (the lexical gain
    # above 0, the others' above step 0's). As many draws as the per-label tags once took, so that the
    # other claims' noise stays as it was.
    noise = iter([g(0.03) for _ in range(9 * layers)])
    for tier in ("lexical", "conceptual", "functional", "output", "higher"):
        out[f"layers/tier/{tier}/depth"] = curve(0.5, 0.5 + next(noise))
        out[f"layers/tier/{tier}/gain"] = curve(0.85 if tier == "lexical" else 0.0, 0.3 + next(noise))
        out[f"layers/tier/{tier}/gain_se"] = curve(0.01 if tier == "lexical" else 0.0, 0.02)
    out["layers/tier/contrast"] = curve(0.0, out["layers/tier/higher/depth"][1][1] - out["layers/tier/lexical/depth"][1][1])
    out["layers/tier/contrast_se"] = curve(0.0, 0.01)
    tasks = ("a", "b", "c", "d")
    for i in range(2):
        out[f"modularity/layer{i}/q"] = curve(0.3 + g(0.02), 0.3 + g(0.02))
        out[f"modularity/layer{i}/q_null_hi"] = curve(0.1 + g(0.005), 0.1 + g(0.005))
        # No learned arrangement: the shuffled-weights copies score what the network does, at 0 and the end.
        out[f"modularity/layer{i}/q_shuffled_mean"] = curve(0.3 + g(0.02), 0.3 + g(0.02))
        out[f"modularity/layer{i}/q_shuffled_z"] = curve(g(1.0), g(1.0))
        out[f"modularity/layer{i}/q_heldout"] = curve(0.3 + g(0.02), 0.3 + g(0.02))
        out[f"modularity/layer{i}/specificity"] = curve(0.1, 0.1 + g(0.02))
        out[f"modularity/layer{i}/specificity_null_mean"] = curve(0.1, 0.1 + g(0.005))
        out[f"modularity/layer{i}/specificity_null_std"] = curve(0.005, 0.005)
        for m in range(4):
            for t in tasks:
                out[f"modularity/layer{i}/ablation/m{m}/{t}"] = curve(0.0, g(0.1))
    out["modularity/unlearned_tasks"] = curve(4.0, 0.0)
    for t in tasks:
        out[f"modularity/task_loss/{t}"] = curve(3.0, 1.0)
        out[f"modularity/task_chance/{t}"] = curve(3.0, 3.0)  # every task learned (1/3 of chance): the gate holds
    # A capable model (the capability gates hold): it thinks at level 2 and reads its context.
    out.update({"eval/arith_acc/level2": curve(0.0, 0.6), "eval/arith_n/level2": curve(256.0, 256.0)})
    # Context: every bin alike (the context wins as much at exposure 100 as at 0), it reads its context and
    # holds its priors (the gates hold), and the steering vector moves nothing beyond a random direction.
    for b in ("0", "1", "10", "100"):
        out[f"eval/context/n/{b}"] = curve(512.0, 512.0)
        out[f"eval/context/follow/{b}"] = curve(0.5, 0.6 + g(0.03))
        prior = 0.5 if b == "0" else 0.8  # never-seen people: a coin without the context
        out[f"eval/context/nocontext_follow/{b}"] = curve(0.5, 1 - prior + g(0.03))
        out[f"eval/context/nocontext_prior/{b}"] = curve(0.5, prior + g(0.03))
        out[f"eval/context/pull/{b}"] = curve(0.0, 0.4 + g(0.03))
        out[f"eval/context/win/{b}"] = curve(0.0, 0.5 + g(0.03))
        out[f"eval/context/shift/{b}"] = curve(0.0, 1.0 + g(0.1))
    for name in ("s1/", "s4/", "s16/", ""):
        out[f"eval/context/follow_steered/{name}100"] = curve(0.5, 0.6 + g(0.03))
        out[f"eval/context/follow_steered_random/{name}100"] = curve(0.5, 0.6 + g(0.03))
        out[f"eval/context/steer_vs_random/{name}100"] = curve(0.0, g(0.03))
    out.update({"eval/context/follow/0/lo": curve(0.3, 0.55), "eval/context/pull/0/lo": curve(0.0, 0.3),
                "eval/context/nocontext_prior/100/lo": curve(0.4, 0.75), "eval/context/follow_heldout/100":
                curve(0.5, 0.6), "eval/context/steer_layer": curve(-1.0, 1.0), "eval/context/steer_strength":
                curve(-1.0, 4.0), "eval/context/steer_norm": curve(0.0, 0.3), "eval/context/steer_norm_null":
                curve(0.0, 0.2), "eval/context/steer_heldout_n": curve(0.0, 256.0),
                "eval/context/steer_gain/100": curve(0.0, g(0.03))})
    # Density on name-swapped windows (seen often − novel, two never-seen people): nothing but noise.
    for b in ("100", "0"):
        for kind in ("both", "name", "attribute"):
            out[f"density/name_swap/{b}/{kind}"] = curve(0.0, g(0.004))
            out[f"density/name_swap/{b}/{kind}/se"] = curve(0.0, 0.002)
    return out


def test_no_structure_in_nothing_supported_for_the_world_v2_claims(tmp_path, monkeypatch):
    rng = random.Random(3)
    seeds = [1, 2, 3, 4, 5]
    runs, tables, problems = {}, {}, {}
    for s in seeds:
        runs[s] = {}
        for arm, layers in ((world_runs.ARM, 4), (world_runs.SMALL_ARM, 3)):
            folder = tmp_path / "runs" / arm / f"seed{s}"
            runs[s][arm] = Run(RunSpec(arm, (), s, 600), folder, trained=False)
            tables[str(folder)] = flat_world_scalars(rng, layers)
        # sparsify-difficulty's problems: flat in level, length and right/wrong, in the trained and the untrained
        # network (its other measures from a generator of their own, so that the shared draws stay as they were)
        own = random.Random(100 + s)
        flat = lambda *pairs: {m: [v + own.gauss(0, 0.01) for _ in range(40)] for m, v in pairs}  # noqa: E731
        problems[s] = {str(k): {"correct": [i % 2 == 0 for i in range(40)],
                                "density": [0.26 + rng.gauss(0, 0.01) for _ in range(40)],
                                "length": [10 + k + i % 3 for i in range(40)],
                                **flat(("top5_energy", 0.3), ("entropy_rank", 0.5)),
                                "untrained": flat(("density", 0.26), ("top5_energy", 0.3), ("entropy_rank", 0.5)),
                                "trained": k <= 3, "held_out": True} for k in range(1, 6)}
    fakes = {"train": lambda ctx, arms=(world_runs.ARM,): (runs, world_runs.PRESETS["test"], 0.0),
             "scalars": lambda run: tables[str(run.folder)],
             "cached_problems": lambda ctx, run, seed, preset, device: problems[seed]}
    for module in (world_runs, *WORLD_CLAIMS):
        for name, fake in fakes.items():
            if hasattr(module, name):
                monkeypatch.setattr(module, name, fake)
    for claim in (module.CLAIM for module in WORLD_CLAIMS):
        ctx = StudyContext(claim.name, tmp_path / "study", seeds, "test", None, device="cpu")
        result = claim.run(ctx)
        failed = [g.name for g in result.gates if not g.passed]
        verdicts = result.verdicts()
        judged = {name: v.verdict for name, v in verdicts.items() if v is not None}
        assert SUPPORTED not in judged.values(), (claim.name, judged)
        primary = result.claim_verdict(verdicts)
        # the gates hold, so the primary was read (not "not tested"): the rule, not a gate, found nothing
        assert not failed and primary.verdict in (NEGLIGIBLE, INCONCLUSIVE, AGAINST), (claim.name, failed, primary)
        write_report(result, tmp_path / "study")
    index = (tmp_path / "study" / "index.md").read_text()
    assert "| **supported** |" not in index and index.count("| [") >= len(WORLD_CLAIMS)
    for name in ("Q above its permutation null", "held-out Q above its permutation null",
                 "learned: (familiar − random) end − step 0"):
        assert f"| {name} | descriptive | (descriptive: no verdict) |" in index


def flat_finetune_numbers(rng: random.Random, seed: int) -> dict:
    """A seed's numbers (as evaluate_seed writes them) where proxy tuning and fine-tuning retain the
    same, the expert and the fine-tuned base learn the task alike, and every layer drifts alike."""
    def acc(value: float, chance: float) -> dict:
        value = min(max(value, 0.0), 1.0)
        return {"value": value, "lo": value - 0.08, "hi": value + 0.08, "n": 100, "correct": round(100 * value),
                "chance": chance}

    facts = {arm: {"facts/one_hop": acc(0.5 + rng.gauss(0, 0.01), 0.1), "facts/two_hop": acc(0.5 + rng.gauss(0, 0.01), 0.17)}
             for arm in ft.ARMS}
    task = {"base": 0.0, "small": 0.0, "continued-base": 0.0}
    accuracy = {arm: {**facts[arm], "arith": acc(task.get(arm, 0.5 + rng.gauss(0, 0.02)), 0.1)} for arm in ft.ARMS}
    for arm in ft.ARMS:
        accuracy[arm]["arith/level1"] = accuracy[arm]["arith"]
    drift = {arm: {} for arm in ("finetuned-base", "continued-base")}
    for i in range(4):
        for arm, scale in (("finetuned-base", 0.5), ("continued-base", 0.05)):
            drift[arm][f"drift/layer{i}/cka"] = 1 - scale - rng.gauss(0, 0.02)
            drift[arm][f"drift/layer{i}/weights"] = scale / 2 + rng.gauss(0, 0.01)
            drift[arm][f"drift/layer{i}/probe_acc"] = 0.3
        drift["finetuned-base"].update({f"drift/layer{i}/cka_floor": 0.01, f"drift/layer{i}/cka_init": 0.2,
                                        f"drift/layer{i}/weights_init": 0.75, f"drift/layer{i}/probe_acc_ref": 0.3,
                                        f"drift/layer{i}/probe_acc_control": 0.2})
    drift["finetuned-base"]["drift/probe_chance"] = 0.3
    return {"accuracy": accuracy, "drift": drift, "levels": [1], "training_problems": 100,
            "arith_items": {"1": {"items": 100, "drawn": 100, "held_out": False}}}


def test_no_structure_in_nothing_supported_for_finetune_fragility():
    rng = random.Random(5)
    for draw in range(10):
        numbers = {s: flat_finetune_numbers(rng, s) for s in range(1, 6)}
        result = ClaimResult(ft.NAME, ft.SENTENCE, {}, sorted(numbers))
        ft.assemble(result, numbers, len(numbers))
        judged = {name: v.verdict for name, v in result.verdicts().items() if v is not None}
        assert SUPPORTED not in judged.values(), (draw, judged)
        assert result.primary == ft.PRIMARY and judged[ft.PRIMARY] != NOT_TESTED, result.gates
    # every tuned arm at 0 on the facts (below chance), every seed: a floor, not "exact equivalence"
    numbers = {s: flat_finetune_numbers(rng, s) for s in range(1, 6)}
    for s in numbers:
        for arm in ("proxy-base", "finetuned-base"):
            for fam in ("facts/one_hop", "facts/two_hop"):
                numbers[s]["accuracy"][arm][fam].update(value=0.0, lo=0.0, hi=0.04)
    result = ClaimResult(ft.NAME, ft.SENTENCE, {}, sorted(numbers))
    ft.assemble(result, numbers, len(numbers))
    primary = result.claim_verdict()
    assert primary.verdict == NOT_TESTED and ("a floor" in primary.reason or "zero variance" in primary.reason)
    assert result.verdicts()["retention two-hop: proxy − finetuned"].verdict == NOT_TESTED


def test_the_claims_name_their_primary_and_fix_their_margins():
    """Every margin is a constant of the claim's code with its reason (none from a run's noise)."""
    import inspect

    from lamina.study.claims import elicitation
    from lamina.study.claims import reasoning_in_pretraining as rlp

    import re

    for module in (*WORLD_CLAIMS, ft, rlp, elicitation):
        source = inspect.getsource(module)
        margins = re.findall(r"Prediction\(\s*-?1,\s*([^,)]+),\s*([^,)]+)\)", source)
        assert margins and all(re.fullmatch(r"[A-Z_]+_MARGIN", m) and re.fullmatch(r"[A-Z_]+_NOTE", note)
                               for m, note in margins), margins  # a named constant and its reason, every one
        assert "margin_from_null" not in source and "3 × the within-run" not in source
    assert (density_familiarity.DENSITY_MARGIN, sparsify_difficulty.LASTLAYER_MARGIN, hierarchy.DEPTH_MARGIN,
            modularity.Q_MARGIN, context_vs_prior.FOLLOW_MARGIN) == (0.01, 0.02, 0.1, 0.03, 0.05)
    assert rlp.PRIMARY == "rlp − base" and ft.PRIMARY == "retention one-hop: proxy − finetuned"
    for module in WORLD_CLAIMS:  # one claim per file, its primary named at its top
        assert Path(module.__file__).parent.name == "claims" and module.CLAIM.name == module.NAME
        assert isinstance(module.PRIMARY, str) and module.PRIMARY


@pytest.mark.parametrize("kwargs, message", [
    (dict(margin=-1), r"^compare\.margin: expected a finite number > 0"),
    (dict(margin=float("inf")), r"^compare\.margin: expected a finite number > 0"),
    (dict(predict="up"), r"^compare\.predict: expected one of lower, higher, got 'up'$"),
    (dict(primary=" "), r"^compare\.primary: expected a scalar tag"),
])
def test_a_bad_compare_question_is_one_line(kwargs, message):
    from lamina.verdict import Question

    with pytest.raises(ConfigError, match=message) as info:
        Question(**kwargs)
    assert "\n" not in str(info.value)
    assert Question(primary="val/bpb", margin=0.005, predict="higher").margin == 0.005


def test_a_permutation_test_reads_its_effect_interval_and_p_off_its_null():
    from lamina.verdict import PermutationTest

    null = tuple(x / 100 for x in range(-50, 51))  # mean 0, quantiles known: q(0.975) = 0.475
    test = PermutationTest(0.8, null, (1, 2, 3))
    assert test.effect == pytest.approx(0.8)
    lo, hi = test.interval()
    assert (lo, hi) == (pytest.approx(0.8 - 0.475), pytest.approx(0.8 + 0.475))
    assert test.p == pytest.approx(1 / 102)  # no draw as far from the mean as 0.8
    assert PermutationTest(0.0, null).p == pytest.approx(1.0)  # every draw at least as far as 0
    with pytest.raises(ValueError):
        PermutationTest(0.0, (0.1, 0.2))
