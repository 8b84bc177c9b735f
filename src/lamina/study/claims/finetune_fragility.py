"""Claim `finetune-fragility`: direct fine-tuning corrupts knowledge stored in the lower layers,
while decoding-time proxy tuning (Liu et al. 2024, "Tuning Language Models by Proxy", arXiv
2401.08565) keeps it.

Primary, named before any run: proxy − finetuned on one-hop forced-choice retention, proxy at
alpha 1 (the method as Liu et al. define and evaluate it), predicted > 0. Secondary (Holm): the same
on two-hop facts; the new task, finetuned − proxy (what proxying costs); restore lower − restore
upper. Descriptive: forgetting, the proxy at alpha 0.5 and 2, exact match, drift.

Design, per seed (lamina.study.finetune_runs, lamina.study.finetune_evaluation): a tiny GPT pretrained
on the world's prose (`base`) and a smaller one (`small`) are each fine-tuned on world arithmetic
mixed with a fifth of pretraining prose (`finetuned-base`, `finetuned-small`, the small one for as
many FLOPs); `continued-base` trains the base as long on its prose alone (the forgetting that
training alone brings). Every arm answers the same items: the world's fact questions by forced
choice (retention), held-out arithmetic greedily (the new task). `proxy-base` decodes base + alpha
(finetuned-small − small) logits; `restored-lower` / `restored-upper` put the base's lower or upper
half of blocks back into finetuned-base, the causal test of "stored in the lower layers" (drift per
layer is descriptive: it says how far a layer moved, not what the move cost). Why this recipe, why
forced choice, why not drift, and one run's numbers: docs/studies.md, "finetune-fragility: the design".
"""

from __future__ import annotations

import math
import time

from lamina.errors import ConfigError
from lamina.study.claim import Claim, StudyContext, fmt3, preset_for, study_configs, yaml_value
from lamina.study.evaluation import device_of
from lamina.study.finetune_evaluation import (
    ARMS,
    NOTES,
    PROXIES,
    RESTORED,
    accuracy_numbers,
    accuracy_rows,
    add_drift_rows,
    base_facts,
    drift_contrasts,
    drift_layers,
    evaluate_cached,
    figures,
    per_seed,
    setup_text,
)
from lamina.study.finetune_runs import CONFIGS, PRESETS, TOY, specs_for
from lamina.study.report import ClaimResult, Contrast, Gate, PerSeed, write_report
from lamina.study.report import power_gate as power_gate_of
from lamina.verdict import POWER, Prediction

NAME = "finetune-fragility"
SENTENCE = (
    "Direct fine-tuning corrupts knowledge stored in the lower layers, while decoding-time proxy tuning "
    "(Liu et al. 2024) keeps it."
)
# The primary contrast, named before any run: does proxy tuning keep more one-hop facts than fine-tuning?
PRIMARY = "retention one-hop: proxy − finetuned"
RESTORE = "restore lower − restore upper"  # secondary: the claim's "stored in the lower layers", read causally
# The smallest effects of interest, fixed before any run (never from a run's noise; the primary, its
# alpha and these margins were fixed before the pilot that chose the fine-tuning recipe):
# - retention: five points of forced-choice accuracy, about 9 of the 178 one-hop questions and 6 of the
#   125 two-hop; about a thirteenth of the base's room above chance (the pilot's base: 0.74 one-hop
#   against chance 0.10);
RETENTION_MARGIN = 0.05
RETENTION_NOTE = ("margin 0.05: five points of forced-choice accuracy (about 9 of the 178 one-hop questions, "
                  "6 of the 125 two-hop)")
# - the new task: five points of exact match (5 of 100 problems);
TASK_MARGIN = 0.05
TASK_NOTE = "margin 0.05: five points of exact match on the arithmetic problems (5 of 100)"
# - restore lower − upper: five points of one-hop forced-choice accuracy, the retention contrasts' scale.
RESTORE_MARGIN = 0.05
RESTORE_NOTE = ("margin 0.05: five points of one-hop forced-choice accuracy (about 9 of 178 questions), "
                "the retention contrasts' scale")


# ---- gates: a contrast that needs a failed gate is not tested ----------------------------------------------


def above(acc: dict, floor: float) -> bool:
    return acc["lo"] is not None and math.isfinite(acc["lo"]) and acc["lo"] > floor


def knows_facts_gate(values: dict[int, dict], family: str = "one_hop") -> Gate:
    """Does the base know its facts (forced choice: Wilson 95% lower bound above chance, every seed)?"""
    per = []
    passed = bool(values)
    for seed in sorted(values):
        acc = values[seed]
        ok = above(acc, acc["chance"])
        passed &= ok
        per.append(f"seed {seed}: {fmt3(acc['value'])} [{fmt3(acc['lo'])}, {fmt3(acc['hi'])}] vs chance "
                   f"{fmt3(acc['chance'])} (n {acc['n']})")
    return Gate(f"base-knows-{family.replace('_', '-')}",
                f"does the pretrained base know its {family.replace('_', '-')} facts (forced choice: Wilson 95% lower "
                "bound above chance, every seed)?", passed, "; ".join(per))


def learns_task_gate(name: str, arm: str, before: str, numbers: dict[int, dict]) -> Gate:
    """Does a tuning learn the task (Wilson lower bound above its untuned model and chance, every seed)?"""
    per, passed = [], bool(numbers)
    for seed in sorted(numbers):
        acc, was = numbers[seed]["accuracy"][arm]["arith"], numbers[seed]["accuracy"][before]["arith"]
        floor = max(was["value"], acc["chance"])
        ok = above(acc, floor)
        passed &= ok
        per.append(f"seed {seed}: {fmt3(acc['value'])} [{fmt3(acc['lo'])}, {fmt3(acc['hi'])}] vs {before} "
                   f"{fmt3(was['value'])}, chance {fmt3(acc['chance'])} (n {acc['n']})")
    return Gate(name, f"does {arm} solve the arithmetic items above {before} and chance (Wilson 95% lower bound, "
                "every seed)?", passed, "; ".join(per))


def forgets_gate(numbers: dict[int, dict]) -> Gate:
    """Does fine-tuning lose one-hop facts (base − finetuned at least the retention margin, every
    seed)? Without a loss a restoration has nothing to bring back."""
    base, tuned = per_seed(numbers, "base", "facts/one_hop"), per_seed(numbers, "finetuned-base", "facts/one_hop")
    seeds = sorted(set(base) & set(tuned))
    passed = bool(seeds) and len(seeds) == len(numbers) and all(
        base[s] - tuned[s] >= RETENTION_MARGIN for s in seeds)
    detail = "; ".join(f"seed {s}: base {fmt3(base[s])}, finetuned {fmt3(tuned[s])}, loss {fmt3(base[s] - tuned[s])}"
                       for s in seeds) or "no seed with both values"
    return Gate("finetuning-forgets", f"does fine-tuning lose one-hop facts (base − finetuned forced choice at least "
                f"the margin {RETENTION_MARGIN:g}, every seed)?", passed, detail)


def power_gate(numbers: dict[int, dict], name: str, what: str, arms: tuple[str, str], metric: str, margin: float,
               seeds: int) -> Gate:
    """Can `seeds` seeds tell a difference (arms[0] − arms[1] on `metric`) of twice the margin from
    none, from the seed-to-seed spread of its per-seed differences?"""
    a, b = per_seed(numbers, arms[0], metric), per_seed(numbers, arms[1], metric)
    diffs = {s: a[s] - b[s] for s in a if s in b}
    return power_gate_of(name, f"can {seeds} seed(s) tell a {what} ({arms[0]} − {arms[1]}) of twice the margin from "
                         f"none (seed-to-seed spread of the per-seed differences, {POWER:.0%} power, two-sided 5%)?",
                         diffs, margin, seeds)


def gates(numbers: dict[int, dict], n_seeds: int) -> list[Gate]:
    seeds = sorted(numbers)
    return [
        knows_facts_gate({s: numbers[s]["accuracy"]["base"]["facts/one_hop"] for s in seeds}),
        power_gate(numbers, "power-one-hop", "one-hop retention difference", ("proxy-base", "finetuned-base"),
                   "facts/one_hop", RETENTION_MARGIN, n_seeds),
        knows_facts_gate({s: numbers[s]["accuracy"]["base"]["facts/two_hop"] for s in seeds}, "two_hop"),
        power_gate(numbers, "power-two-hop", "two-hop retention difference", ("proxy-base", "finetuned-base"),
                   "facts/two_hop", RETENTION_MARGIN, n_seeds),
        learns_task_gate("finetuning-learns-task", "finetuned-base", "base", numbers),
        learns_task_gate("expert-learns-task", "finetuned-small", "small", numbers),
        forgets_gate(numbers),
        power_gate(numbers, "power-restore", "difference in facts brought back", RESTORED, "facts/one_hop",
                   RESTORE_MARGIN, n_seeds),
    ]


# ---- contrasts -------------------------------------------------------------------------------------------


def judged_contrasts(arm) -> list[Contrast]:
    """The primary and the secondaries (Holm within the claim); `arm(name, metric)`: the arms' rows. A
    floor (every arm compared at or below the form's chance in every seed) or a ceiling is not tested."""
    def chance(m: str) -> float | None:
        values = [v for v in arm("base", f"{m}/chance").values() if math.isfinite(v)]
        return max(values) if values else None

    tuned_needs = ("finetuning-learns-task", "expert-learns-task")  # both tunings did something
    return [
        Contrast.paired(PRIMARY, "facts/one_hop (forced choice), proxy-base (alpha 1) minus finetuned-base",
                        arm("proxy-base", "facts/one_hop"), arm("finetuned-base", "facts/one_hop"),
                        labels=("proxy-base", "finetuned-base"),
                        prediction=Prediction(1, RETENTION_MARGIN, RETENTION_NOTE),
                        needs=("base-knows-one-hop", "power-one-hop", *tuned_needs),
                        floor=chance("facts/one_hop"), ceiling=1.0),
        Contrast.paired("retention two-hop: proxy − finetuned",
                        "facts/two_hop (forced choice), proxy-base (alpha 1) minus finetuned-base",
                        arm("proxy-base", "facts/two_hop"), arm("finetuned-base", "facts/two_hop"),
                        labels=("proxy-base", "finetuned-base"),
                        prediction=Prediction(1, RETENTION_MARGIN, RETENTION_NOTE),
                        needs=("base-knows-two-hop", "power-two-hop", *tuned_needs),
                        floor=chance("facts/two_hop"), ceiling=1.0),
        Contrast.paired("new task: finetuned − proxy", "arith, finetuned-base minus proxy-base "
                        "(what proxying costs on the new task)",
                        arm("finetuned-base", "arith"), arm("proxy-base", "arith"),
                        labels=("finetuned-base", "proxy-base"), prediction=Prediction(1, TASK_MARGIN, TASK_NOTE),
                        needs=tuned_needs, floor=chance("arith"), ceiling=1.0),
        Contrast.paired(RESTORE, "facts/one_hop (forced choice), finetuned-base with the base's lower half of blocks "
                        "put back minus with its upper half put back",
                        arm("restored-lower", "facts/one_hop"), arm("restored-upper", "facts/one_hop"),
                        labels=RESTORED, prediction=Prediction(1, RESTORE_MARGIN, RESTORE_NOTE),
                        needs=("base-knows-one-hop", "finetuning-forgets", "power-restore"),
                        floor=chance("facts/one_hop"), ceiling=1.0),
    ]


def descriptive_contrasts(arm) -> list[Contrast]:
    """Where the differences come from, no verdict: forgetting, what each restoration brings back and
    breaks, exact match and the proxy's strength sweep."""
    def diff(name: str, what: str, a: str, b: str, metric: str = "facts/one_hop") -> Contrast:
        return Contrast.paired(name, what, arm(a, metric), arm(b, metric))

    c = [
        diff("forgetting: finetuned − base", "facts/one_hop", "finetuned-base", "base"),
        diff("forgetting: continued − base", "facts/one_hop (training alone)", "continued-base", "base"),
        diff("forgetting: proxy − base", "facts/one_hop", "proxy-base", "base"),
        diff("expert forgetting: finetuned-small − small", "facts/one_hop", "finetuned-small", "small"),
        diff("facts back: restored-lower − finetuned", "facts/one_hop: what the base's lower blocks bring back",
             "restored-lower", "finetuned-base"),
        diff("facts back: restored-upper − finetuned", "facts/one_hop: what the base's upper blocks bring back",
             "restored-upper", "finetuned-base"),
        diff("facts recovered: restored-lower − restored-upper", "of the one-hop facts fine-tuning lost (the base "
             "right, finetuned-base wrong), the share each restoration gets right", *RESTORED, "restore/recovered"),
        diff("facts broken: restored-lower − restored-upper", "of the one-hop facts finetuned-base still knows, the "
             "share each restoration gets wrong (the cost of mismatched blocks)", *RESTORED, "restore/broken"),
        diff("task kept: restored-lower − finetuned", "arith: what putting the lower blocks back costs the task",
             "restored-lower", "finetuned-base", "arith"),
        diff("task kept: restored-upper − finetuned", "arith: what putting the upper blocks back costs the task",
             "restored-upper", "finetuned-base", "arith"),
        diff("exact match one-hop: proxy − finetuned", "exact/one_hop, greedy: the answer's format as well as the "
             "fact", "proxy-base", "finetuned-base", "exact/one_hop"),
        diff("exact forgetting: finetuned − base", "exact/one_hop, greedy", "finetuned-base", "base",
             "exact/one_hop"),
    ]
    for name, alpha in PROXIES.items():  # the strength sweep
        c.append(diff(f"retention one-hop: {name} − finetuned", f"facts/one_hop, alpha {alpha:g}", name,
                      "finetuned-base"))
        c.append(diff(f"transfer: {name} − base", f"arith, alpha {alpha:g}: what the small expert's delta brings the "
                      "base", name, "base", "arith"))
    return c


def assemble(result: ClaimResult, numbers: dict[int, dict], n_seeds: int) -> None:
    """Arms, gates, contrasts, figures and notes of the result from every seed's numbers."""
    n_layer = drift_layers(numbers)
    for name in ARMS:
        result.arms[name] = accuracy_rows(numbers, name)
    add_drift_rows(result.arms, numbers)

    def arm(a: str, m: str) -> PerSeed:
        return result.arms[a].get(m, {})

    result.gates = gates(numbers, n_seeds)
    result.primary = PRIMARY
    result.contrasts = [*judged_contrasts(arm), *descriptive_contrasts(arm), *drift_contrasts(arm, n_layer)]
    result.figures = figures(arm, n_layer)
    result.notes = list(NOTES)


# ---- the study -------------------------------------------------------------------------------------------


def run(ctx: StudyContext) -> ClaimResult:
    preset = preset_for(ctx, PRESETS, TOY)
    started = time.perf_counter()
    paths = study_configs(NAME, ctx.configs, CONFIGS)
    pretrain = preset.pretrain_steps or yaml_value([paths["base"]], "trainer", "max_steps")
    tune = preset.tune_steps or yaml_value([paths["base"], paths["tune"]], "trainer", "max_steps")
    cont = preset.tune_steps or yaml_value([paths["base"], paths["continue"]], "trainer", "max_steps")
    if not (isinstance(pretrain, int) and isinstance(tune, int)) or cont != tune:
        raise ConfigError(f"study {NAME}: expected trainer.max_steps in {paths['base']} and the same in "
                          f"{paths['tune']} and {paths['continue']}, got {pretrain}, {tune}, {cont}")
    device = device_of(ctx.device)
    n = len(ctx.seeds)
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds), primary=PRIMARY)  # named before it runs
    numbers: dict[int, dict] = {}
    gate_facts: dict[int, dict] = {}
    seconds: dict[str, float] = {}
    for k, seed in enumerate(ctx.seeds, 1):
        pretrained = {arm: ctx.runner.run(spec, k, n)
                      for arm, spec in specs_for(paths, preset, seed, (pretrain, tune)).items()}
        gate_facts[seed] = accuracy_numbers(base_facts(pretrained["base"], seed, preset, device))
        gate = knows_facts_gate({seed: gate_facts[seed]})
        if not gate.passed and preset.stop_on_gate:
            result.gates = [knows_facts_gate(gate_facts)]
            result.stopped = (f"the pretrained base does not know its facts ({gate.detail}); raise "
                              f"trainer.max_steps in {paths['base']}")
            result.setup = setup_text(ctx, paths, preset, pretrain, tune, {}, time.perf_counter() - started)
            write_report(result, ctx.out)
            raise ConfigError(f"study {NAME}: gate {gate.name} failed: {gate.detail}; report in "
                              f"{ctx.folder / 'report.md'}")
        tuned = {arm: ctx.runner.run(spec, k, n)
                 for arm, spec in specs_for(paths, preset, seed, (pretrain, tune), pretrained).items()}
        runs = {**pretrained, **tuned}
        for arm, r in runs.items():
            seconds[arm] = seconds.get(arm, 0.0) + r.seconds
        numbers[seed] = evaluate_cached(ctx.folder, runs, seed, preset, device, ctx.progress)
    assemble(result, numbers, n)
    small_tune = tuned["finetuned-small"].spec.max_steps if numbers else None
    result.setup = setup_text(ctx, paths, preset, pretrain, tune, numbers, time.perf_counter() - started, seconds,
                              small_tune)
    return result


CLAIM = Claim(NAME, SENTENCE, run, primary=PRIMARY, margin=RETENTION_MARGIN)

__all__ = ["CLAIM", "NAME", "PRIMARY", "RESTORE", "SENTENCE", "assemble", "run"]
