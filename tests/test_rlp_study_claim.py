"""The `reasoning-in-pretraining` study (lamina.study.claims.reasoning_in_pretraining, `make rlp-study`) and the `elicitation` claim
read off it (lamina.study.claims.elicitation): their gates and verdicts on built per-problem outcomes whose
answer is known by construction (a base at chance or at the ceiling, RL equal to its base, gains that
follow easiness alone, gains that follow the base's reach), the arms' configs (parsed through the CLI,
differing only where each arm says), the problems held out of both phases' text and drawn per seed,
FLOP matching, the elicitation share in `lamina compare`'s report, and one run at the test preset."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from lamina.callbacks import ThoughtEval
from lamina.verdict import detectable
from lamina.cli import LaminaCLI, cli_kwargs
from lamina.compare import KEY_METRICS
from lamina.compare import main as compare_main
from lamina.data import TextDataModule
from lamina.errors import ConfigError
from lamina.lm import LanguageModel
from lamina.rlp import PROMPT_FORMATS, RLPModel, arith_problems, elicitation_share, pass_at_k
from lamina.study.claims import elicitation
from lamina.study.claims import reasoning_in_pretraining as study
from lamina.study import rlp_evaluation, rlp_runs
from lamina.study.claim import repo_configs, word_value, yaml_value
from lamina.study.report import ClaimResult, markdown

CONFIGS = repo_configs()
PATHS = rlp_runs.config_paths(CONFIGS)
N = 512  # problems a seed, as the cpu preset draws them


# ---- built per-seed numbers (lamina.study.rlp_evaluation.seed_numbers' layout) ------------------------------------


def solved(accuracy: float, n: int = N, rng: random.Random | None = None) -> list[int]:
    """0/1 per problem with exactly round(accuracy * n / 2) ones in each half (choice, score)."""
    half = n // 2
    ones = round(accuracy * half)
    out = [0] * n
    picks = [list(range(1, n, 2)), list(range(0, n, 2))]
    for positions in picks:
        chosen = rng.sample(positions, ones) if rng else positions[:ones]
        for i in chosen:
            out[i] = 1
    return out


def outcomes(accuracy: float, fmt: str = "think-spaced", others: float = 0.0, rng=None) -> dict[str, list[int]]:
    """A model that answers `accuracy` of the problems in format `fmt`, `others` in every other one."""
    return {f: solved(accuracy if f == fmt else others, rng=rng) for f in PROMPT_FORMATS}


QUESTIONS = [q for q, _ in arith_problems(1_000_003, 2, N)]


def seed_numbers(acc: dict[str, float], base: float = 0.5, samples: list[int] | None = None,
                 formats: dict[str, str] | None = None) -> dict:
    formats = formats or {}
    return {
        "questions": QUESTIONS, "items": {"seed": 1, "n": N, "training_questions": 1000, "level": 2},
        "outcomes": {"base": outcomes(base), **{arm: outcomes(v, formats.get(arm, "think-spaced"))
                                                for arm, v in acc.items()}},
        "samples": {"format": "think-spaced", "n": 16, "counts": samples or [8] * N},
        "arms": {arm: {"step": 30, "tokens": 1.0, "flops": 2.0} for arm in acc},
        "signal": {"reward_std": 1.0, "zero_variance_frac": 0.1},
        "costs": {"rlp": {"seconds": 1.0, "cpu_seconds": 1.0}},
    }


ACC = {  # per seed (base 0.5): rlp above its base and above shuffled every time beyond the margin (0.05),
    # below ntp-tokens every time, ntp-flops all over the place
    1: {"rlp": 0.62, "rlp-shuffled": 0.52, "rlp-paper": 0.52, "ntp-tokens": 0.72, "ntp-flops": 0.55},
    2: {"rlp": 0.63, "rlp-shuffled": 0.51, "rlp-paper": 0.50, "ntp-tokens": 0.72, "ntp-flops": 0.68},
    3: {"rlp": 0.61, "rlp-shuffled": 0.50, "rlp-paper": 0.51, "ntp-tokens": 0.72, "ntp-flops": 0.50},
    4: {"rlp": 0.62, "rlp-shuffled": 0.53, "rlp-paper": 0.52, "ntp-tokens": 0.72, "ntp-flops": 0.66},
}


def assembled(numbers: dict[int, dict], n_seeds: int | None = None) -> ClaimResult:
    result = ClaimResult(study.NAME, study.SENTENCE, {}, sorted(numbers))
    study.assemble(result, numbers, n_seeds or len(numbers))
    return result


def verdicts(result: ClaimResult) -> dict[str, str]:
    return {name: v.verdict for name, v in result.verdicts().items() if v is not None}


# ---- the score and the gates ------------------------------------------------------------------------------


def test_the_score_is_the_best_format_on_the_choice_half_read_on_the_score_half():
    rng = random.Random(1)
    o = outcomes(0.6, "think", others=0.2, rng=rng)
    s = rlp_evaluation.score(o)
    assert s["format"] == "think" and s["accuracy"] == pytest.approx(round(0.6 * 256) / 256) and s["n"] == 256
    assert s["by_format"]["answer"] == pytest.approx(2 * round(0.2 * 256) / 512)
    # a format that is best only on the score half is not chosen: the choice half decides
    o = {"think": [0, 1] * 8, "answer": [1, 0] * 8}  # think right on the odd (choice), answer on the even
    assert rlp_evaluation.score(o)["format"] == "think" and rlp_evaluation.score(o)["accuracy"] == 0.0


@pytest.mark.parametrize("accuracy, passed", [(0.0, False), (0.14, False), (0.5, True), (0.84, True), (0.9, False),
                                              (1.0, False)])
def test_base_thinks_passes_inside_the_range_and_fails_at_chance_or_the_ceiling(accuracy, passed):
    ok, detail = study.base_thinks(outcomes(accuracy))
    assert ok is passed and "0.15-0.85" in detail and ("format think-spaced" in detail or accuracy == 0)
    gate = study.base_thinks_gate({1: outcomes(0.5), 2: outcomes(accuracy)})
    assert gate.passed is passed and "seed 2: level-2 accuracy" in gate.detail


def test_room_and_power_gates():
    base = {"think-spaced": [1, 0, 0, 0], "think": [0] * 4}
    r = rlp_evaluation.room(base, {"format": "think-spaced", "n": 64, "counts": [64, 3, 1, 0]})
    assert r == {"pass": pytest.approx(0.75), "greedy": 0.25, "n": 4, "k": 64, "format": "think-spaced"}
    assert rlp_evaluation.room(base, {}) == {}
    assert study.room_gate({1: r}).passed
    assert not study.room_gate({1: {**r, "pass": 0.25}}).passed  # sampling finds nothing greedy misses
    assert not study.room_gate({1: r, 2: {}}).passed

    # the detectable difference comes from the seed-to-seed spread of the per-seed differences: by hand
    # at sd 0.05, 3 seeds, (t(0.975, 2) + t(0.8, 2)) sd / sqrt(3)
    d3 = detectable(0.05, 3)
    assert d3 == pytest.approx((4.302653 + 1.060660) * 0.05 / math.sqrt(3), rel=1e-5)
    assert detectable(0.05, 10) < d3 and detectable(0.1, 3) == pytest.approx(2 * d3)
    assert detectable(0.05, 1) == math.inf  # one seed: no spread over seeds to read
    tight = study.power_gate({1: 0.10, 2: 0.11, 3: 0.12, 4: 0.11}, 4)
    assert tight.passed and "half-width" in tight.detail and "margin 0.05" in tight.detail
    # the spread of the 2026-12-01 run's rlp − base (−0.17, +0.07, −0.08) cannot see the margin
    assert not study.power_gate({1: -0.172, 2: 0.074, 3: -0.078}, 3).passed
    assert not study.power_gate({1: 0.1}, 3).passed  # one seed so far: no spread to plan from


# ---- verdicts on built numbers ---------------------------------------------------------------------------


def test_each_contrast_gets_the_verdict_its_interval_gives():
    result = assembled({s: seed_numbers(ACC[s]) for s in ACC})
    assert all(g.passed for g in result.gates), [(g.name, g.detail) for g in result.gates]
    assert result.primary == "rlp − base"
    assert verdicts(result) == {"rlp − base": "supported", "rlp − shuffled": "supported",
                                "rlp − ntp at the same tokens": "against", "rlp − ntp at the same FLOPs": "inconclusive"}
    assert result.claim_verdict().verdict == "supported"
    by_name = {c.name: c for c in result.contrasts}
    assert by_name["rlp − base"].stats.mean == pytest.approx(0.12, abs=0.005)
    assert by_name["rlp − shuffled"].prediction.margin == study.ACCURACY_MARGIN == 0.05  # fixed, not from the run
    assert result.role(by_name["rlp − base"]) == "primary" and result.role(by_name["rlp − shuffled"]) == "secondary"
    assert result.role(by_name["rlp-paper − shuffled"]) == "descriptive"  # descriptive rows have no verdict
    assert result.verdicts()["rlp-paper − shuffled"] is None
    shuffled = result.verdicts()["rlp − shuffled"]
    assert shuffled.confidence > 0.95 and shuffled.p_holm >= shuffled.p
    assert result.verdicts()["rlp − base"].confidence == pytest.approx(0.95)
    text = markdown(result, [])
    assert "**Claim verdict: supported**" in text and "**rlp − base** (primary): **supported**" in text
    assert "**rlp − ntp at the same tokens** (secondary): **against**" in text
    assert "achieved half-width" in text and "Holm-adjusted p" in text


def test_format_neutral_scoring_reads_each_arm_in_its_own_format():
    # next-token training on stripped text answers directly (`answer`), RLP thinks at the slot (`think`),
    # the base thinks in its own spelling (`think-spaced`): each is read in its format, not in the slot's
    formats = {"ntp-tokens": "answer", "ntp-flops": "answer", "rlp": "think", "rlp-shuffled": "think",
               "rlp-paper": "think"}
    flat = {arm: 0.5 for arm in rlp_runs.ARMS}
    result = assembled({s: seed_numbers({**flat, "ntp-tokens": 0.5 + 0.01 * s}, formats=formats) for s in (1, 2, 3)})
    by_name = {c.name: c for c in result.contrasts}
    half = N // 2
    expected = np.mean([0.5 - round((0.5 + 0.01 * s) * half) / half for s in (1, 2, 3)])
    assert by_name["rlp − ntp at the same tokens"].stats.mean == pytest.approx(expected)
    assert by_name["rlp − base"].stats.mean == 0  # both 0.5, each in its own format
    # in the slot's format alone (the old score) the base would be at 0 and RLP at 0.5
    assert by_name["rlp − base, `think` format only"].stats.mean == pytest.approx(0.5)
    assert "rlp think" in result.notes[0] and "base think-spaced" in result.notes[0]


def test_within_the_margin_is_negligible_and_one_seed_is_not_tested():
    diffs = {1: 0.01, 2: 0.0, 3: -0.01, 4: 0.005}
    near = {s: {**ACC[s], "rlp-shuffled": ACC[s]["rlp"] - diffs[s]} for s in ACC}
    assert verdicts(assembled({s: seed_numbers(near[s]) for s in near}))["rlp − shuffled"] == "negligible"
    one = assembled({1: seed_numbers(ACC[1])})
    assert set(verdicts(one).values()) == {"not tested"}
    assert one.claim_verdict().reason.startswith("not tested: gate power failed")  # no spread over one seed
    three = assembled({s: seed_numbers(ACC[s]) for s in (1, 2, 3)})
    three.seeds = [1, 2, 3, 4]
    assert three.verdicts()["rlp − base"].verdict == "not tested"
    assert "seed 4 missing" in three.verdicts()["rlp − base"].reason


def test_a_base_at_chance_or_at_the_ceiling_is_not_tested():
    for base in (0.0, 1.0):
        result = assembled({s: seed_numbers(ACC[s], base=base) for s in ACC})
        assert not result.gate_map["base-thinks"].passed
        assert result.claim_verdict().reason.startswith("not tested: gate base-thinks")


def test_no_structure_in_nothing_supported_rlp():
    rng = random.Random(7)
    for draw in range(10):  # every arm the same accuracy, up to noise between seeds, 5 seeds
        acc = {s: {arm: round(0.5 + rng.gauss(0, 0.03), 3) for arm in rlp_runs.ARMS} for s in range(1, 6)}
        numbers = {s: seed_numbers(acc[s], base=round(0.5 + rng.gauss(0, 0.03), 3)) for s in acc}
        assert "supported" not in verdicts(assembled(numbers)).values(), draw
    same = assembled({s: seed_numbers(dict.fromkeys(rlp_runs.ARMS, 0.5)) for s in range(1, 6)})  # identical arms
    assert set(verdicts(same).values()) == {"not tested"}
    assert "zero variance across seeds" in same.verdicts()["rlp − shuffled"].reason


# ---- elicitation on built per-problem worlds ----------------------------------------------------------------


def elicitation_world(seed: int, gains: str, rl_gain: float = 0.5) -> dict:
    """A seed whose base has a per-problem chance p of a right sample (its stratum's ease plus a part
    of its own), 16 samples, and greedy right where p > 0.6; the RL model solves what the base solves
    and gains missed problems with probability rl_gain * p ** 2 (`reach`: it elicits what the base
    reaches), rl_gain * (its stratum's mean p) (`easiness`: it follows difficulty alone) or none."""
    from lamina.rlp import arith_stratum

    rng = np.random.default_rng(seed)
    strata = [arith_stratum(q) for q in QUESTIONS]
    ease = {s: rng.normal(0, 2.0) for s in sorted(set(strata))}
    p = 1 / (1 + np.exp(-(np.array([ease[s] for s in strata]) + rng.normal(0, 1.0, N) - 0.5)))
    stratum_p = {s: float(np.mean([p[i] for i in range(N) if strata[i] == s])) for s in ease}
    base = [int(x > 0.6) for x in p]
    chance = {"reach": rl_gain * p ** 2, "easiness": rl_gain * np.array([stratum_p[s] for s in strata]),
              "none": np.zeros(N)}[gains]
    rl = [int(b or rng.random() < c) for b, c in zip(base, chance)]
    blank = [0] * N
    numbers = seed_numbers({arm: 0.5 for arm in rlp_runs.ARMS}, samples=[int(c) for c in rng.binomial(16, p)])
    numbers["outcomes"]["base"] = {"think-spaced": base, "think": blank, "answer": blank, "empty-thought": blank}
    for arm in rlp_runs.ARMS:  # shuffled-reward RLP gains nothing; the other arms as `rl`
        mine = blank if arm == "rlp-shuffled" else rl
        numbers["outcomes"][arm] = {"think-spaced": mine, "think": blank, "answer": blank, "empty-thought": blank}
    return numbers


def elicitation_result(worlds: dict[int, dict]) -> ClaimResult:
    return elicitation.from_rlp(assembled(worlds), worlds)


def test_elicitation_supports_gains_that_follow_the_base_reach():
    worlds = {s: elicitation_world(s, "reach", rl_gain=2.0) for s in range(1, 9)}
    result = elicitation_result(worlds)
    assert result.primary == "rlp: share − matched null"
    assert all(g.passed for g in result.gates), [(g.name, g.detail) for g in result.gates]
    assert result.claim_verdict().verdict == "supported", result.claim_verdict()
    # k chosen on the choice half so that the base's mean pass@k there is near 0.5
    read = {s: elicitation.seed_elicitation(v) for s, v in worlds.items()}
    assert all(abs(r["choice pass@k"] - 0.5) < 0.2 and 1 <= r["k"] <= 16 for r in read.values())
    # the share, by hand for seed 1: over the gained problems of the score half, the base's pass@k
    w, r = worlds[1], read[1]
    scored = range(0, N, 2)
    gained = [i for i in scored if not w["outcomes"]["base"]["think-spaced"][i] and w["outcomes"]["rlp"]["think-spaced"][i]]
    share = np.mean([pass_at_k(16, w["samples"]["counts"][i], r["k"]) for i in gained])
    assert r["arms"]["rlp"]["share"] == pytest.approx(share) and r["arms"]["rlp"]["gained"] == len(gained)


def test_elicitation_is_not_fooled_by_easiness():
    """The confound without the effect: RL's gains follow the problems' difficulty only. The old null
    (the mean pass@k over every missed problem) sits below the share; the matched null does not."""
    worlds = {s: elicitation_world(s, "easiness", rl_gain=0.8) for s in range(1, 6)}
    result = elicitation_result(worlds)
    by_name = {c.name: c for c in result.contrasts}
    assert by_name["rlp: matched − unmatched null"].stats.mean > 0.05  # easiness alone lifts the old contrast
    assert result.claim_verdict().verdict != "supported", result.claim_verdict()
    assert abs(by_name["rlp: share − matched null"].stats.mean) < 0.05


def test_rl_equal_to_its_base_is_not_tested_rl_elicited_nothing():
    worlds = {s: elicitation_world(s, "none") for s in range(1, 5)}
    result = elicitation_result(worlds)
    assert not result.gate_map["rl-improved"].passed
    verdict = result.claim_verdict()
    assert verdict.verdict == "not tested" and "rl-improved" in verdict.reason
    assert "else RL elicited nothing" in result.gate_map["rl-improved"].question


@pytest.mark.parametrize("count, why", [(16, "at a ceiling"), (0, "near chance")])
def test_elicitation_with_a_base_at_the_ceiling_or_at_chance_is_not_tested(count, why):
    worlds = {s: elicitation_world(s, "reach") for s in range(1, 5)}
    for w in worlds.values():
        w["samples"]["counts"] = [count] * N
    result = elicitation_result(worlds)
    gate = result.gate_map["base-in-range"]
    assert not gate.passed and why in gate.detail
    assert result.claim_verdict().reason.startswith("not tested: gate base-in-range")


def test_the_elicitation_margin_is_fixed_in_the_code():
    assert elicitation.SHARE_MARGIN == 0.05 and elicitation.K_TARGET == 0.5
    worlds = {s: elicitation_world(s, "reach") for s in range(1, 4)}
    primary = next(c for c in elicitation_result(worlds).contrasts if c.name == elicitation.PRIMARY)
    assert primary.prediction.margin == 0.05 and "a tenth of its mean pass@k" in primary.prediction.margin_note


# ---- the arms' configs and the problems ---------------------------------------------------------------------


def parsed(arm: str, *words: str):
    args = [w for c in rlp_runs.arm_configs(PATHS, arm) for w in ("--config", c)] + list(words)
    return LaminaCLI(LanguageModel, TextDataModule, run=False, args=args, **cli_kwargs())


def flat(namespace) -> dict:
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", namespace.as_dict())
    # the model's keys as `model.<key>` whatever its class (a class path puts them under init_args)
    return {k.replace("model.init_args.", "model.", 1): v for k, v in out.items() if not k.startswith("config")}


def differences(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


@pytest.fixture(scope="module")
def arms():
    init = "/some/phase1/last.ckpt"
    clis = {arm: parsed(arm, *rlp_runs.arm_words(rlp_runs.PRESETS["cpu"], arm, 7, Path(init)))
            for arm in ("rlp", "rlp-shuffled", "rlp-paper", "ntp-tokens")}
    clis["pretrain"] = parsed("pretrain", *rlp_runs.arm_words(rlp_runs.PRESETS["cpu"], "pretrain", 7, None))
    return clis


def test_arms_parse_and_differ_only_where_they_should(arms):
    cfg = {arm: flat(cli.config) for arm, cli in arms.items()}
    assert isinstance(arms["rlp"].model, RLPModel) and type(arms["ntp-tokens"].model) is LanguageModel
    rlp = arms["rlp"].model.rlp_config
    assert (rlp.positions, rlp.reward_tokens, rlp.reward, rlp.thoughts) == ("thought_slots", "line", "info_gain", "policy")
    assert rlp.max_thought_tokens is None and rlp.seed == 7  # the cap resolves to the trained levels'; seeded
    for cli in arms.values():  # the study scores the checkpoints itself: no evaluation inside a fit
        assert next(c for c in cli.trainer.callbacks if isinstance(c, ThoughtEval)).config is None

    assert differences(cfg["rlp"], cfg["rlp-shuffled"]) == {"model.rlp.reward": ("info_gain", "shuffled")}
    assert differences(cfg["rlp"], cfg["rlp-paper"]) == {
        "model.rlp.positions": ("thought_slots", "uniform"), "model.rlp.reward_tokens": ("line", 1)}
    diff = differences(cfg["rlp"], cfg["ntp-tokens"])
    assert {k for k in diff if not k.startswith("model.rlp")} == {"model.class_path"}
    assert diff["model.class_path"] == ("lamina.rlp.RLPModel", "lamina.lm.LanguageModel")

    # every phase-2 arm: the phase-1 checkpoint, stripped thoughts, the same lr, batches and steps
    for arm in ("rlp", "rlp-shuffled", "rlp-paper", "ntp-tokens"):
        c = cfg[arm]
        assert c["model.init_from"] == "/some/phase1/last.ckpt" and c["data.thoughts"] == "strip"
        for key in ("model.lr", "model.warmup_steps", "model.min_lr_ratio", "data.batch_size", "data.seed",
                    "trainer.max_steps", "data.families", "data.levels", "data.level_weights", "data.max_bytes",
                    "model.n_embd", "model.n_layer", "model.block_size"):
            assert c[key] == cfg["rlp"][key], (arm, key)

    # phase 1: the same world arithmetic and shape, with its thoughts, from scratch
    pre = cfg["pretrain"]
    assert pre["data.thoughts"] == "keep" and pre["model.init_from"] is None and pre.get("model.rlp") is None
    for key in ("data.families", "data.levels", "data.level_weights", "model.n_embd", "model.n_layer",
                "model.block_size"):
        assert pre[key] == cfg["rlp"][key], key
    assert pre["data.families"] == ["arith"] and pre["data.levels"] == [1, 2, 3] and pre["data.level_weights"] == "equal"


def test_the_problems_are_held_out_of_both_phases_and_drawn_per_seed(monkeypatch):
    toy = rlp_runs.PRESETS["test"]
    phases = {seed: [rlp_runs.phase_data(rlp_runs.arm_configs(PATHS, arm), rlp_runs.arm_words(toy, arm, seed, Path("x")), seed)
                     for arm in ("pretrain", "ntp-tokens")] for seed in (1, 2)}
    pre, phase2 = phases[1]
    assert (pre["thoughts"], phase2["thoughts"]) == ("keep", "strip") and pre["seed"] == phase2["seed"] == 1
    assert pre["max_bytes"] == phase2["max_bytes"] == 60_000  # the toy's words over the configs
    problems = {seed: rlp_evaluation.held_out_problems(seed, 40, phases[seed]) for seed in (1, 2)}
    from lamina.rlp import corpus_questions

    for seed, (items, info) in problems.items():
        seen = set().union(*(corpus_questions(p) for p in phases[seed]))
        assert len(items) == 40 and not {q for q, _ in items} & seen and info["training_questions"] == len(seen)
        assert info["seed"] == rlp_evaluation.world_seed(seed) != seed
    assert {q for q, _ in problems[1][0]} != {q for q, _ in problems[2][0]}  # each seed its own problems
    monkeypatch.setattr(rlp_evaluation, "arith_problems", lambda seed, level, n, exclude: [("Q: 1+1=?", "2")])  # too few left
    with pytest.raises(ConfigError, match=r"expected 40 level-2 problems outside the training text, found 1"):
        rlp_evaluation.held_out_problems(1, 40, phases[1])


def test_ntp_flops_steps_and_cadence():
    assert rlp_runs.flop_matched_steps(10.0e9, 1.0e9, 10) == 100  # 0.1e9 a step
    assert rlp_runs.flop_matched_steps(10.05e9, 1.0e9, 10) == 101  # rounded up: at least rlp's FLOPs
    with pytest.raises(ConfigError):
        rlp_runs.flop_matched_steps(0.0, 1.0, 1)
    phase2 = yaml_value([PATHS["phase2"]], "trainer", "max_steps")
    every = yaml_value([PATHS["phase2"]], "trainer", "val_check_interval")
    words = rlp_runs.ntp_flops_words(PATHS, (), 10 * phase2, phase2)
    assert word_value(words, "trainer.val_check_interval") == str(10 * every)
    assert word_value(words, "checkpoint.every_n_train_steps") == str(10 * phase2)


# ---- lamina compare: the key metrics and the elicitation share ---------------------------------------------


def record(think: list[int], pass_correct: list[int] | None = None, samples: int = 64) -> dict:
    """One level of a ThoughtEvaluator record (lamina.callbacks.ThoughtEval's step<N>.json)."""
    n = len(think)
    out = {"questions": [f"Q: {i}+{i}=?" for i in range(n)], "answers": [str(2 * i) for i in range(n)],
           "think": think, "nothink": [0] * n}
    if pass_correct is not None:
        out.update(pass_samples=samples, pass_correct=pass_correct)
    return out


def write_eval(folder: Path, step: int, levels: dict[int, dict]) -> None:
    (folder / "thought_eval").mkdir(parents=True, exist_ok=True)
    (folder / "thought_eval" / f"step{step}.json").write_text(json.dumps({str(k): v for k, v in levels.items()}))


def test_compare_key_metrics_read_rlp_learning():
    assert "rlp/reward_mean" not in KEY_METRICS
    assert {"rlp/reward_std", "rlp/advantage_abs_mean", "rlp/zero_variance_frac"} <= set(KEY_METRICS)
    import fnmatch
    gain = [p for p in KEY_METRICS if p.startswith("eval/think_acc_gain")]
    assert gain and fnmatch.fnmatchcase("eval/think_acc_gain/level2", gain[0])
    assert not fnmatch.fnmatchcase("eval/think_acc_gain/level2/lo", gain[0])


def fake_run(folder: Path, seed: int, init: str, evals: dict[int, dict[int, dict]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for step in (0, 10):
        writer.add_scalar("perf/tokens_seen", 512.0 * step, step)
        writer.add_scalar("eval/arith_acc/level2", 0.5, step)
    writer.close()
    (folder / "config.yaml").write_text(f"seed_everything: {seed}\nmodel:\n  init_from: {init}\ndata:\n  seed: {seed}\n")
    for step, levels in evals.items():
        write_eval(folder, step, levels)


def test_compare_reports_the_elicitation_share(tmp_path):
    base = {2: record([1, 0, 0, 0], pass_correct=[64, 32, 0, 16], samples=64)}
    solved_1 = {2: record([1, 1, 0, 1])}  # solves problems 0, 1, 3: base pass@64 1, 1, 1
    solved_2 = {2: record([0, 0, 1, 0])}  # solves problem 2 only, which the base never did
    runs = tmp_path / "runs"
    fake_run(runs / "rlp" / "version_0", 1, "p1.ckpt", {0: base, 10: solved_1})
    fake_run(runs / "rlp" / "version_1", 2, "p2.ckpt", {0: base, 10: solved_2})
    fake_run(runs / "ntp" / "version_0", 1, "p1.ckpt", {0: {2: record([1, 0, 0, 0])}, 10: solved_2})  # base: rlp's
    fake_run(runs / "other" / "version_0", 1, "elsewhere.ckpt", {0: {2: record([1, 0, 0, 0])}, 10: solved_1})
    assert elicitation_share(solved_1, base, 64) == {2: (1.0, 3)}
    assert pass_at_k(64, 16, 64) == 1.0
    out = tmp_path / "cmp"
    compare_main([str(runs / "rlp"), str(runs / "ntp"), str(runs / "other"), "--out", str(out)])
    md = (out / "report.md").read_text()
    assert "## Elicitation share" in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines()
            if line.startswith("| ") and "| 2 | 64 |" in line}
    assert "0.5 ± 0.71" in rows["rlp"] and "own step 0" in rows["rlp"]  # shares 1 and 0 over two runs
    assert "0 (n=1)" in rows["ntp"] and "rlp/version_0" in rows["ntp"]  # the same seed and init_from: rlp's base
    assert "other" not in rows  # another start model, no pass@k of its own: no share


# ---- both claims at the test preset -----------------------------------------------------------------------


def test_both_claims_run_at_the_test_preset(tmp_path, monkeypatch, capsys):
    """`lamina study reasoning-in-pretraining elicitation --seeds 1 --preset test`: every fit at toy
    sizes, the seed's problems, the evaluations outside the fits, both reports (two seeds and
    their intervals: the built numbers above). One seed has no interval: nothing is tested."""
    from lamina.study import main

    monkeypatch.chdir(tmp_path)  # (caches and anything relative land here)
    out = tmp_path / "study"
    results = main(["reasoning-in-pretraining", "elicitation", "--seeds", "1", "--out", str(out), "--preset", "test",
                    "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "study reasoning-in-pretraining: seed 1/1, arm ntp-flops: training" in printed
    assert "gate base-thinks: level-2 accuracy" in printed
    for name, result in results.items():
        assert (out / name / "report.md").is_file() and result.primary
        assert result.claim_verdict().verdict == "not tested", name
    numbers = json.loads((out / study.NAME / "numbers" / "seed1.json").read_text())
    assert set(numbers["outcomes"]) == {"base", *rlp_runs.ARMS}
    assert all(set(o) == set(PROMPT_FORMATS) for o in numbers["outcomes"].values())
    assert len(numbers["questions"]) == len(numbers["samples"]["counts"]) == rlp_runs.PRESETS["test"].problems
    assert (out / "runs" / "rlp" / "seed1" / "version_0" / rlp_evaluation.EVAL).is_file()  # kept: a second pass reuses it
