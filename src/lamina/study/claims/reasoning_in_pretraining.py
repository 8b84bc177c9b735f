"""Claim `reasoning-in-pretraining`: RLP (reinforcement as a pretraining objective, Hatamizadeh et al.,
arXiv:2510.01265: a thought is rewarded by the log-likelihood gain it gives the next tokens) on text
whose worked reasoning was stripped plants reasoning in a pretrained model.

Primary, named before any run: `rlp − base`, RLP's score at the end of phase 2 minus the score of the
base it started from, predicted > 0. Secondary (Holm): RLP above the same RLP with shuffled rewards,
and above next-token training at the same tokens and at the same FLOPs. Descriptive: the paper's
RLP, the other arms against the base, and rlp − base in the `think` format alone (the 2026-12-01
run's score, which read the base in a spelling it never trained on).

Design, per seed (lamina.study.rlp_runs, lamina.study.rlp_evaluation): phase 1 pretrains the base on
world arithmetic with its worked thoughts; phase 2 trains five arms from it on the same arithmetic
with the thoughts stripped (RLP, RLP with shuffled rewards, the paper's RLP, next-token training at
the same tokens and at the same FLOPs). Every model is scored outside its fit on the seed's own
held-out level-2 problems (none in either phase's text), greedily, in the prompt format it answers
best on one half of the problems, read on the other half (format-neutral). Why held out and drawn
per seed, why format-neutral, and phase 2's lr: docs/studies.md, "reasoning-in-pretraining and
elicitation: the design".
"""

from __future__ import annotations

import math
import os
import time

from lamina.errors import ConfigError
from lamina.study.claim import Claim, StudyContext, fmt3, preset_for, yaml_value
from lamina.study.evaluation import device_of
from lamina.study.report import ClaimResult, Contrast, Gate, PerSeed, every_seed_gate, write_report
from lamina.study.report import power_gate as power_gate_of
from lamina.study.rlp_evaluation import (
    BASE,
    LABELS,
    LEVEL,
    accuracy_figure,
    evaluation,
    held_out_problems,
    in_format,
    model_rows,
    notes,
    per_seed,
    room,
    save_numbers,
    score,
    scored_models,
    scores_of,
    seed_numbers,
    setup_text,
)
from lamina.study.rlp_runs import (
    ARMS,
    GATE_RANGE,
    PRESETS,
    STUDY,
    TOY,
    arm_configs,
    arm_words,
    checkpoint_counters,
    config_paths,
    flop_matched_steps,
    ntp_flops_words,
    phase2_steps_of,
    phase_data,
    run_compare,
    timed_run,
)
from lamina.study.runs import Run, RunSpec
from lamina.verdict import POWER, Prediction

NAME = STUDY  # "reasoning-in-pretraining": its runs' messages and folders name it too (lamina.study.rlp_runs)
SENTENCE = (
    "RLP on text whose worked reasoning was stripped plants reasoning in a pretrained model: scored "
    "format-neutrally, it ends solving more held-out arithmetic than where it started, more than RLP with "
    "shuffled rewards, and more than next-token training at the same tokens and at the same FLOPs."
)
# The primary contrast, named before any run: does RLP end above where it started?
PRIMARY = "rlp − base"
# The secondary contrasts (Holm within the claim): name, the arm RLP is compared with, what it says.
SECONDARIES = [("rlp − shuffled", "rlp-shuffled", "RLP minus the same RLP with rewards shuffled across groups"),
               ("rlp − ntp at the same tokens", "ntp-tokens", "RLP minus next-token training on the same batches"),
               ("rlp − ntp at the same FLOPs", "ntp-flops", "RLP minus next-token training for as many FLOPs")]
# The smallest accuracy difference of interest, fixed before any run: five points of greedy accuracy
# (about 13 of the 256 scored problems), a tenth of the gate's middle accuracy (0.5); a smaller change
# in what the model solves is not what "plants reasoning" means. No run's noise.
ACCURACY_MARGIN = 0.05
ACCURACY_MARGIN_NOTE = ("margin 0.05: five points of format-neutral accuracy (about 13 of 256 scored problems), a "
                        "tenth of the gate's middle accuracy 0.5")


# ---- gates: a contrast that needs a failed gate is not tested ----------------------------------------------


def base_thinks(outcomes: dict[str, list[int]], bounds: tuple[float, float] = GATE_RANGE) -> tuple[bool, str]:
    """The gate on one seed's base: its score (format-neutral accuracy) within `bounds` (GATE_RANGE:
    it can do the task, with room above; an untrained network scores 0 in every format)."""
    lo, hi = bounds
    if not outcomes:
        return False, "no evaluation of the base"
    s = score(outcomes)
    correct = sum(s["items"])
    passed = s["n"] > 0 and lo <= s["accuracy"] <= hi
    return passed, (f"level-{LEVEL} accuracy {fmt3(s['accuracy'])} ({correct}/{s['n']}, format {s['format']}), "
                    f"needs {lo:.2f}-{hi:.2f}")


def base_thinks_gate(outcomes: dict[int, dict[str, list[int]]], bounds: tuple[float, float] = GATE_RANGE) -> Gate:
    checks = {seed: base_thinks(outcomes[seed], bounds) for seed in sorted(outcomes)}
    passed = bool(checks) and all(ok for ok, _ in checks.values())
    return Gate("base-thinks", f"does the base solve held-out level-{LEVEL} arithmetic (greedy, its best format, "
                f"score half) in [{bounds[0]:.2f}, {bounds[1]:.2f}], every seed?", passed,
                "; ".join(f"seed {s}: {text}" for s, (_, text) in checks.items()))


def room_gate(rooms: dict[int, dict]) -> Gate:
    """The base's pass@n above its greedy accuracy: its own samples hold answers its greedy thought
    misses, which is all RLP's reward can find."""
    def check(r: dict) -> tuple[bool, str]:
        return r["pass"] > r["greedy"], (f"pass@{r['k']} {fmt3(r['pass'])} vs greedy {fmt3(r['greedy'])} on {r['n']} "
                                         f"problems ({r['format']})")

    return every_seed_gate("room-to-elicit", f"does the base solve more level-{LEVEL} problems in its samples than "
                           "greedily (so a better thought policy has something to find), every seed?", rooms, check,
                           "no samples of the base")


def power_gate(differences: PerSeed, seeds: int, margin: float = ACCURACY_MARGIN) -> Gate:
    """Can `seeds` seeds tell a difference of twice the margin from none, from the seed-to-seed spread
    of the primary's per-seed differences (rlp − base; each seed draws its own problems, so the spread
    holds item sampling as well as training noise)?"""
    return power_gate_of("power", f"can {seeds} seed(s) tell an rlp − base difference of twice the margin from "
                         f"none (seed-to-seed spread of the per-seed differences, {POWER:.0%} power, two-sided 5%)?",
                         differences, margin, seeds)


def signal_gate(signals: dict[int, dict]) -> Gate:
    """The rlp arm's rewards vary within groups (a zero-variance group has no advantage, no gradient)."""
    per, passed = [], bool(signals)
    for seed in sorted(signals):
        s = signals[seed]
        ok = s.get("zero_variance_frac", math.nan) < 1 and s.get("reward_std", 0.0) > 0
        passed &= bool(ok)
        per.append(f"seed {seed}: reward std {fmt3(s.get('reward_std'))}, zero-variance groups "
                   f"{fmt3(s.get('zero_variance_frac'))} (means over logged steps)")
    return Gate("rlp-signal", "do the rlp arm's rewards differ within groups (mean rlp/reward_std > 0 and "
                "rlp/zero_variance_frac < 1), every seed?", passed, "; ".join(per))


# ---- contrasts, paired by seed, on the score ------------------------------------------------------------------


# What every contrast compares: the score of lamina.study.rlp_evaluation.score, paired by seed.
SCORED = f"greedy accuracy on the scored held-out level-{LEVEL} problems, each model in its best format"


def judged_contrasts(acc: dict[str, PerSeed]) -> list[Contrast]:
    """The primary and the secondaries, rlp minus another model, each predicted > 0 with ACCURACY_MARGIN;
    every arm at 0 or at 1 in every seed is a floor or a ceiling, not tested."""
    prediction = Prediction(1, ACCURACY_MARGIN, ACCURACY_MARGIN_NOTE)
    needs = ("base-thinks", "room-to-elicit", "power", "rlp-signal")

    def judged(name: str, words: str, other: str) -> Contrast:
        return Contrast.paired(name, f"{SCORED}: {words}", acc.get("rlp", {}), acc.get(other, {}),
                               labels=("rlp", other), prediction=prediction, needs=needs, floor=0.0, ceiling=1.0)

    return [judged(PRIMARY, "RLP at the end of phase 2 minus the base it started from", BASE),
            *(judged(name, words, other) for name, other, words in SECONDARIES)]


def descriptive_contrasts(numbers: dict[int, dict], acc: dict[str, PerSeed], models: list[str]) -> list[Contrast]:
    """No verdict: the paper's RLP, the other arms against the base, rlp − base in `think` alone."""
    return [
        Contrast.paired("rlp-paper − shuffled", f"{SCORED}: the paper's RLP (uniform positions, K = 1) minus "
                        "shuffled rewards", acc.get("rlp-paper", {}), acc.get("rlp-shuffled", {})),
        Contrast.paired("rlp − rlp-paper", f"{SCORED}: thought slots and line reward minus the paper's choices",
                        acc.get("rlp", {}), acc.get("rlp-paper", {})),
        *[Contrast.paired(f"{arm} − base", f"{SCORED}: end of phase 2 minus its start", acc[arm], acc[BASE])
          for arm in models if arm not in (BASE, "rlp")],
        Contrast.paired("rlp − base, `think` format only", "greedy accuracy on the score half, both in stripped "
                        "text's thought slot (`Q: 47+38=?<think>`), a spelling the base never trained on (the "
                        "2026-12-01 run's score)", in_format(numbers, "rlp", "think"),
                        in_format(numbers, BASE, "think")),
    ]


def assemble(result: ClaimResult, numbers: dict[int, dict], n_seeds: int,
             bounds: tuple[float, float] = GATE_RANGE) -> None:
    """Arms, gates, contrasts, figures and notes of the result from every seed's numbers."""
    seeds = sorted(numbers)
    scores = scores_of(numbers)
    models = scored_models(scores)
    for model in models:
        result.arms[LABELS[model]] = model_rows(numbers, scores, model)
    acc = {model: per_seed(scores, model) for model in models}
    primary = {s: acc["rlp"][s] - acc[BASE][s] for s in seeds if s in acc.get("rlp", {}) and s in acc[BASE]}
    result.gates = [
        base_thinks_gate({s: numbers[s]["outcomes"].get(BASE, {}) for s in seeds}, bounds),
        room_gate({s: room(numbers[s]["outcomes"].get(BASE, {}), numbers[s].get("samples", {})) for s in seeds}),
        power_gate(primary, n_seeds),
        signal_gate({s: numbers[s].get("signal", {}) for s in seeds}),
    ]
    result.primary = PRIMARY
    result.contrasts = judged_contrasts(acc) + descriptive_contrasts(numbers, acc, models)
    result.figures = [accuracy_figure(result.arms, acc, models)]
    result.notes = notes(numbers, scores, models, [(PRIMARY, BASE)] + [(name, arm) for name, arm, _ in SECONDARIES])


# ---- the study -------------------------------------------------------------------------------------------------


def stop(ctx: StudyContext, result: ClaimResult, gate: Gate, message: str, setup: dict[str, str]) -> None:
    result.gates = [gate]
    result.stopped = message
    result.setup = setup
    write_report(result, ctx.out)
    raise ConfigError(f"study {NAME}: gate {gate.name} failed: {gate.detail}; report in {ctx.folder / 'report.md'}")


def power_so_far(numbers: dict[int, dict], planned: int) -> str:
    """The power gate's numbers from the seeds finished so far (earlier seeds as the pilot)."""
    scores = scores_of(numbers)
    rlp_acc, base_acc = per_seed(scores, "rlp"), per_seed(scores, BASE)
    return power_gate({s: rlp_acc[s] - base_acc[s] for s in rlp_acc if s in base_acc}, planned).detail


def study(ctx: StudyContext) -> tuple[ClaimResult, dict[int, dict]]:
    """The claim's result and every seed's numbers (the `elicitation` claim reads the same numbers)."""
    preset = preset_for(ctx, PRESETS, TOY)
    started, load_start = time.perf_counter(), os.getloadavg()
    paths = config_paths(ctx.configs)
    pretrain_steps = preset.pretrain_steps or yaml_value([paths["pretrain"]], "trainer", "max_steps")
    if not isinstance(pretrain_steps, int):
        raise ConfigError(f"study {NAME}: expected trainer.max_steps in {paths['pretrain']}")
    phase2_steps = phase2_steps_of(preset, paths)
    device = device_of(ctx.device)
    n = len(ctx.seeds)
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds), primary=PRIMARY)  # named before it runs
    numbers: dict[int, dict] = {}

    def setup(wall: float) -> dict[str, str]:
        return setup_text(ctx, paths, pretrain_steps, phase2_steps, preset, numbers, wall, load_start)

    for k, seed in enumerate(ctx.seeds, 1):
        costs: dict[str, dict] = {}
        words = arm_words(preset, "pretrain", seed, None)
        spec = RunSpec("pretrain", arm_configs(paths, "pretrain"), seed, pretrain_steps, words)
        pretrain, costs["pretrain"] = timed_run(ctx, spec, k, n)
        phase2_words = arm_words(preset, "ntp-tokens", seed, pretrain.checkpoint)
        phases = [phase_data(arm_configs(paths, "pretrain"), words, seed),
                  phase_data(arm_configs(paths, "ntp-tokens"), phase2_words, seed)]
        problems, items = held_out_problems(seed, preset.problems, phases)
        evaluations = {BASE: evaluation(pretrain, problems, preset, device, sample=True)}
        passed, detail = base_thinks(evaluations[BASE]["outcomes"], preset.gate_range)
        ctx.progress(f"seed {seed}: gate base-thinks: {detail}: {'passed' if passed else 'FAILED'}")
        if not passed:
            stop(ctx, result, base_thinks_gate({seed: evaluations[BASE]["outcomes"]}, preset.gate_range),
                 f"phase 1 does not land in the gate ({detail}, seed {seed}); change trainer.max_steps in "
                 f"{paths['pretrain']}", setup(time.perf_counter() - started))
        arms: dict[str, Run] = {}
        for arm in ARMS:
            words = arm_words(preset, arm, seed, pretrain.checkpoint)
            steps = phase2_steps
            if arm == "ntp-flops":
                rlp = checkpoint_counters(arms["rlp"].checkpoint)
                ntp = checkpoint_counters(arms["ntp-tokens"].checkpoint)
                steps = flop_matched_steps(rlp["flops"], ntp["flops"], ntp["step"])
                words += ntp_flops_words(paths, words, steps, phase2_steps)
                ctx.progress(f"seed {seed}: ntp-flops: {steps} steps match rlp's {rlp['flops']:.3g} FLOPs "
                             f"({ntp['flops'] / ntp['step']:.3g} per next-token step)")
            spec = RunSpec(arm, arm_configs(paths, arm), seed, steps, words)
            arms[arm], costs[arm] = timed_run(ctx, spec, k, n)
            evaluations[arm] = evaluation(arms[arm], problems, preset, device, sample=False)
        costs["evaluation"] = {"seconds": sum(e["cost"]["seconds"] for e in evaluations.values()),
                               "cpu_seconds": sum(e["cost"]["cpu_seconds"] for e in evaluations.values())}
        numbers[seed] = seed_numbers(problems, items, evaluations, arms, costs)
        save_numbers(ctx.folder, seed, numbers[seed])
        s = scores_of({seed: numbers[seed]})[seed]
        ctx.progress(f"seed {seed}: " + ", ".join(f"{m} {fmt3(v['accuracy'])} ({v['format']})" for m, v in s.items())
                     + f"; power from the seeds so far: {power_so_far(numbers, n)}")
    assemble(result, numbers, n, preset.gate_range)
    if not ctx.unit:  # lamina compare reads every seed's runs: the report's pass does it
        compared = run_compare(ctx)
        if compared:
            result.notes.append(compared)
    result.setup = setup(time.perf_counter() - started)
    return result, numbers


def run(ctx: StudyContext) -> ClaimResult:
    return study(ctx)[0]


CLAIM = Claim(NAME, SENTENCE, run, presets=tuple(PRESETS), primary=PRIMARY, margin=ACCURACY_MARGIN)

__all__ = ["ACCURACY_MARGIN", "CLAIM", "NAME", "PRIMARY", "SENTENCE", "assemble", "base_thinks", "base_thinks_gate",
           "power_gate", "room_gate", "run", "signal_gate", "study"]
