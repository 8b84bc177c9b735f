"""Claim `reasoning-in-pretraining`: RLP (reinforcement as a pretraining objective, Hatamizadeh et al.,
arXiv:2510.01265: a thought is rewarded by the log-likelihood gain it gives the next tokens) on text
whose worked reasoning was stripped plants reasoning in a pretrained model: it ends solving more
held-out arithmetic than where it started (the primary contrast, `rlp − base`), more than the same RLP
with shuffled rewards and more than next-token training at the same tokens and at the same FLOPs
(secondary, Holm-corrected), every model scored the same format-neutral way.

Per seed s (every fit of a seed gets seed_everything = data.seed = s; the arms of a seed share their
pretraining, their batches and their evaluation problems, and differ only where the arm says):

1. `pretrain` (configs/rlp-study-pretrain.yaml): next-token pretraining of the tiny GPT on world
   arithmetic at levels 1-3 with its worked thoughts (`data.thoughts: keep`).
2. The problems (`held_out_problems`): `Preset.problems` (512 at the cpu preset) distinct level-LEVEL
   problems from a world stream whose seed follows s (`lamina.probes.world_seed(s, LEVEL, ITEMS)`),
   none of which occurs in the text of either phase (`lamina.rlp.corpus_questions`: every question of
   the phase-1 text and of the phase-2 text, both splits, up to each one's data.max_bytes as the data
   module counts it). The items differ from seed to seed, so the interval over seeds holds item
   sampling as well as training noise. The problems' odd positions are the *choice* half, their even
   positions the *score* half (lamina.rlp.elicitation.halves).
3. Every model (the phase-1 checkpoint, `base`, and each phase-2 arm's last checkpoint) is scored
   outside its fit (lamina.rlp.FormatScorer) in each prompt format of lamina.rlp.PROMPT_FORMATS:
   `think` (stripped text's thought slot, where RLP puts its thoughts), `think-spaced` (the spelling
   of the text with thoughts, the base's own), `answer` and `empty-thought` (no thought, in the
   spelling of each text): greedy, exact match. A model's **score** is its greedy accuracy on the
   score half in the format it answers best on the choice half (format-neutral: next-token training
   on stripped text is not scored in a format its training penalises, nor the base in a spelling it
   never saw; the paper compares models after identical post-training, which this replaces). The
   base also answers each problem `Preset.samples` times at temperature 1 in its best thinking format
   (pass@k: room-to-elicit here; the `elicitation` claim reads them).
4. Gate `base-thinks`: the base's score lies in GATE_RANGE (it can do the task, with room above);
   the study stops with one line where a seed misses it.
5. Phase 2, each from the phase-1 checkpoint (`model.init_from`) on the same arithmetic with its
   thoughts stripped (`data.thoughts: strip`), the same batches and the same lr
   (rlp-study-phase2.yaml): `rlp` (+ rlp-study-rlp.yaml: thoughts at the thought slots, reward over
   the answer line), `rlp-shuffled` (+ rlp-study-shuffled.yaml: rewards moved to another group),
   `rlp-paper` (+ rlp-study-paper.yaml: uniform positions, K = 1), `ntp-tokens` (the phase-2 file
   alone: next-token at the same steps and batches) and `ntp-flops` (next-token for as many steps as
   match the `rlp` run's training FLOPs, read from its checkpoint).
6. Gates `room-to-elicit` (the base's pass@n over its n samples above its greedy accuracy in that format:
   its own samples hold answers its greedy thought misses, which is all RLP's reward can find),
   `rlp-signal` (rewards differ within groups) and `power` (from the seed-to-seed spread of the
   primary's per-seed differences, the planned seeds can tell twice the margin from none).
7. Contrasts, paired by seed, on the score, each predicted > 0 with the margin ACCURACY_MARGIN (five
   points, about 13 of the 256 scored problems, a tenth of the gate's middle accuracy: fixed here, not
   from any run's noise): the primary rlp − base; secondary rlp − rlp-shuffled, rlp − ntp-tokens,
   rlp − ntp-flops (Holm); descriptive:
   the paper's RLP, the other arms against the base, and rlp − base in the `think` format alone (the
   score of the 2026-12-01 run, which read the base in a spelling it never trained on).

Phase 2's length and lr (rlp-study-phase2.yaml) come from a measurement: see its comments.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamina.compare.stats import summarize
from lamina.errors import ConfigError
from lamina.rlp.elicitation import accuracy_on, best_format, halves, mean_pass
from lamina.rlp.evaluate import (
    PROMPT_FORMATS,
    THINKING_FORMATS,
    FormatScorer,
    arith_problems,
    corpus_questions,
    paired_interval,
)
from lamina.study.claim import GPU as ON_GPU
from lamina.study.claim import Claim, StudyContext, fmt3, preset_for, shrunk, study_configs, word_value, yaml_value
from lamina.study.evaluation import checkpoint_key, device_of, fingerprint
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, PerSeed, write_report
from lamina.study.report import power_gate as power_gate_of
from lamina.study.runs import Run, RunSpec
from lamina.verdict import Prediction, detectable

NAME = "reasoning-in-pretraining"
SENTENCE = (
    "RLP on text whose worked reasoning was stripped plants reasoning in a pretrained model: scored "
    "format-neutrally, it ends solving more held-out arithmetic than where it started, more than RLP with "
    "shuffled rewards, and more than next-token training at the same tokens and at the same FLOPs."
)
CONFIGS = {
    "pretrain": "rlp-study-pretrain.yaml",
    "phase2": "rlp-study-phase2.yaml",
    "rlp": "rlp-study-rlp.yaml",
    "shuffled": "rlp-study-shuffled.yaml",
    "paper": "rlp-study-paper.yaml",
}
# phase-2 arms in the order they run (ntp-flops needs rlp's FLOPs and ntp-tokens' FLOPs per step)
ARMS = ("rlp", "rlp-shuffled", "rlp-paper", "ntp-tokens", "ntp-flops")
RLP_ARMS = ("rlp", "rlp-shuffled", "rlp-paper")
LABELS = {
    "base": "base (phase 1)",
    "rlp": "RLP (thought slots, line reward)",
    "rlp-shuffled": "RLP, shuffled rewards",
    "rlp-paper": "RLP as the paper (uniform, K = 1)",
    "ntp-tokens": "next-token, same tokens",
    "ntp-flops": "next-token, same FLOPs",
}
BASE = "base"  # the phase-1 model, where every phase-2 arm starts
LEVEL = 2  # the arithmetic level of the problems (phase 1 trains levels 1-3; level 1 has 100 problems in all)
GATE_LEVEL = LEVEL
ITEMS = "study/rlp/arith"  # the purpose the problems' world seed is derived for (lamina.probes.world_seed)
GATE_RANGE = (0.15, 0.85)
# The primary contrast, named before any run: does RLP end above where it started?
PRIMARY = "rlp − base"
# The smallest accuracy difference of interest, fixed before any run: five points of greedy accuracy
# (about 13 of the 256 scored problems), a tenth of the gate's middle accuracy (0.5); a smaller change
# in what the model solves is not what "plants reasoning" means. No run's noise.
ACCURACY_MARGIN = 0.05
ACCURACY_MARGIN_NOTE = ("margin 0.05: five points of format-neutral accuracy (about 13 of 256 scored problems), a "
                        "tenth of the gate's middle accuracy 0.5")
POWER = 0.8  # the power gate: an effect of twice the margin is supported 80% of the time


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset: CLI words after the configs (every run, phase 1, phase-2 arms, RLP arms
    only), steps (None: the configs' trainer.max_steps), the gate's accuracy range, and the
    evaluation outside the fits (problems per seed, the base's samples per problem, the thought
    budget: None, the longest worked thought at LEVEL; rows decoded together)."""

    every: tuple[str, ...] = ()
    pretrain: tuple[str, ...] = ()
    phase2: tuple[str, ...] = ()
    rlp: tuple[str, ...] = ()
    rlp_only: tuple[str, ...] = ()  # the `rlp` arm alone (after `rlp`)
    pretrain_steps: int | None = None
    phase2_steps: int | None = None
    gate_range: tuple[float, float] = GATE_RANGE
    # held-out problems per seed: 256 choose formats and k, 256 are scored (measured on one thread: 256
    # problems in 4 formats greedy, 1.6 CPU-seconds a model; 16 samples of each, 10.7)
    problems: int = 512
    samples: int = 16  # the base's sampled answers per problem (pass@k for k <= 16; the seed-1 pilot's k is 2)
    thought_budget: int | None = None
    eval_batch: int = 1024


CPU = Preset()
# gpu: one seed's six fits in about 2 minutes of an H100 (all eight claims' one seed: about 6.5
# minutes, within one 10-minute device call). Reasoning (estimates: no GPU has run these yet):
# - phase 1 as the cpu preset (4 x 128, 800 steps of 32 x 128 tokens): the base-thinks gate was
#   piloted at exactly these settings, so they stay (in bf16-mixed here, the pilots' fp32 there: the
#   gate is read per seed and stops the study in one line if missed). A step is 5.8M FLOPs a token
#   x 4096 tokens, bound by launches: about 4.5 ms, 800 steps about 4 s.
#   The rewards are differences of log-probabilities: bf16's rounding of the logits (hundredths of
#   a nat) is small beside their spread (a reward std of about 8.6 at the cpu preset).
# - phase 2: twice the cpu preset's steps of 16 windows (the cpu preset's 4: 64 positions x 16
#   thoughts = 1024 thoughts a step, four times the thoughts per update at the same lr 1e-5, a
#   gradient a quarter as noisy; unpiloted: on the CPU, 60 steps at 3e-5 and 8 windows at 3e-5 showed
#   no gain over 30 steps of 4, see rlp-study-phase2.yaml): sampling ~65 decode steps of ~2 ms over
#   1024 rows, then the scoring forwards and one backward: about 0.2 s a step, well under 20 s per
#   RLP arm (three of them).
# - ntp-flops: as many next-token steps as rlp's FLOPs (both grow with the batch): about 2600 steps
#   of ~4.5 ms, about 12 s.
# - the evaluation outside the fits: 1024 problems (the cpu preset's 512; 1024 stay out of both
#   phases' text at seeds 1-3), 6 models x 4 formats greedy and the base's 32 samples of each (16 at
#   the cpu preset), in batches of 1024 rows of ~50 decode steps of ~2 ms: about 20 s.
# - data (5 MB of arithmetic, with and without its thoughts, generated on every core), Lightning's
#   setup of six fits, lamina compare over the arms and the two reports' figures: about 45 s.
GPU = Preset(
    every=ON_GPU,
    phase2=("--data.batch_size", "16"),
    phase2_steps=60,
    problems=1024, samples=32,
)
# A handful of steps at toy sizes (the test preset, and a rehearsal of any preset): the code path, not
# a finding. Its words come after the preset's, so each key a preset sets for size is set here again.
TOY = Preset(
    every=("--data.max_bytes", "60000", "--data.val_tokens", "1024", "--model.n_layer", "1", "--model.n_head", "2",
           "--model.n_embd", "16", "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "2",
           "--checkpoint.every_n_train_steps", "2"),
    pretrain=("--data.batch_size", "4", "--model.warmup_steps", "0"),
    phase2=("--model.warmup_steps", "0", "--data.batch_size", "4", "--trainer.val_check_interval", "2",
            "--checkpoint.every_n_train_steps", "2"),
    rlp=("--model.rlp.group_size", "2", "--model.rlp.max_thought_tokens", "6"),
    pretrain_steps=2, phase2_steps=2, gate_range=(0.0, 1.0),
    problems=8, samples=2, thought_budget=6, eval_batch=64,
)
PRESETS = {"cpu": CPU, "gpu": GPU, "test": shrunk(CPU, TOY)}


# ---- configs ---------------------------------------------------------------------------------------


def config_paths(folder: Path) -> dict[str, Path]:
    return study_configs(NAME, folder, CONFIGS)


def arm_configs(paths: dict[str, Path], arm: str) -> tuple[str, ...]:
    """The config files of an arm, in order (later ones overlay earlier ones)."""
    if arm == "pretrain":
        return (str(paths["pretrain"]),)
    phase2 = (str(paths["phase2"]),)
    rlp = phase2 + (str(paths["rlp"]),)
    return {"rlp": rlp, "rlp-shuffled": rlp + (str(paths["shuffled"]),), "rlp-paper": rlp + (str(paths["paper"]),),
            "ntp-tokens": phase2, "ntp-flops": phase2}[arm]



def setting(paths, words: tuple[str, ...], dotted: str) -> int | None:
    """An integer setting as a run sees it: the CLI words over the config files."""
    value = word_value(words, dotted)
    if value is None:
        value = yaml_value(paths, *dotted.split("."))
    return None if value is None else int(value)


def arm_words(preset: Preset, arm: str, seed: int, init: Path | None) -> tuple[str, ...]:
    """The CLI words after an arm's config files (the Runner adds the seed and max_steps)."""
    if arm == "pretrain":
        return preset.every + preset.pretrain
    words = preset.every + preset.phase2 + ("--model.init_from", str(init))
    if arm in RLP_ARMS:
        words += preset.rlp + ("--model.rlp.seed", str(seed))  # thought sampling and positions follow the seed
        if arm == "rlp":
            words += preset.rlp_only
    return words


def flop_matched_steps(rlp_flops: float, ntp_flops: float, ntp_steps: int) -> int:
    """Next-token steps whose training FLOPs reach the RLP run's: ceil(rlp / (ntp per step))."""
    if not (rlp_flops > 0 and ntp_flops > 0 and ntp_steps > 0):
        raise ConfigError(f"study {NAME}: cannot match FLOPs (rlp {rlp_flops}, next-token {ntp_flops} in {ntp_steps} steps)")
    return max(1, math.ceil(rlp_flops / (ntp_flops / ntp_steps) - 1e-9))


def ntp_flops_words(paths, words: tuple[str, ...], steps: int, phase2_steps: int) -> tuple[str, ...]:
    """ntp-flops' validation cadence scaled by its steps over phase 2's (it validates at about the
    FLOPs the rlp arm validates at); its checkpoint lands on its last step."""
    configs = [paths["phase2"]]
    every = setting(configs, words, "trainer.val_check_interval")
    extra = ["--trainer.val_check_interval", str(max(1, round(every * steps / phase2_steps)))] if every else []
    return tuple(extra) + ("--checkpoint.every_n_train_steps", str(steps))


DATA_KEYS = ("source", "seed", "families", "levels", "tasks", "level_weights", "thoughts", "max_bytes")


def phase_data(configs, words: tuple[str, ...], seed: int) -> dict:
    """The data settings a phase's fits read their text with (what decides which problems its text
    holds): the config files, then the CLI words, then the seed the study sets (data.seed)."""
    import yaml

    data = {}
    for key in DATA_KEYS:
        value = word_value(words, f"data.{key}")
        data[key] = yaml_value(configs, "data", key) if value is None else yaml.safe_load(value)  # as the CLI reads it
    data["seed"] = seed
    return {k: v for k, v in data.items() if v is not None}


# ---- the problems and their evaluation -----------------------------------------------------------------------


def held_out_problems(seed: int, n: int, phases: list[dict]) -> tuple[list[tuple[str, str]], dict]:
    """n level-LEVEL problems for seed `seed` that occur in none of the phases' texts (`phases`: each
    phase's data settings, phase_data), and what was checked."""
    seen: set[str] = set()
    for data in phases:
        seen |= corpus_questions(data)
    items_seed = world_seed(seed)
    problems = arith_problems(items_seed, LEVEL, n, frozenset(seen))
    if len(problems) < n:
        raise ConfigError(f"study {NAME}: expected {n} level-{LEVEL} problems outside the training text, found "
                          f"{len(problems)} (the phases' data.max_bytes leave too few unseen)")
    return problems, {"seed": items_seed, "n": len(problems), "training_questions": len(seen), "level": LEVEL}


def world_seed(seed: int) -> int:
    """The world seed of a study seed's problems: it follows the seed, and never equals a data.seed."""
    from lamina.probes import world_seed as derived

    return derived(seed, LEVEL, ITEMS)


def scorer_for(problems: list[tuple[str, str]], preset: Preset, tokenizer) -> FormatScorer:
    from lamina.data.thoughts import longest_thought_tokens

    ids = {name: tokenizer.token_to_id(token) for name, token in
           (("think", "<think>"), ("end", "</think>"), ("eot", "<|endoftext|>"))}
    if None in ids.values():
        raise ConfigError(f"study {NAME}: the runs' tokenizer has no {', '.join(k for k, v in ids.items() if v is None)}")
    budget = preset.thought_budget or longest_thought_tokens(("arith",), [LEVEL])
    return FormatScorer(tokenizer, ids["think"], ids["end"], ids["eot"], problems, budget, batch_size=preset.eval_batch)


EVAL = "rlp-study-eval.json"  # in a run folder: that run's last checkpoint scored on the seed's problems


def evaluation(run: Run, problems: list[tuple[str, str]], preset: Preset, device, sample: bool) -> dict:
    """A run's last checkpoint scored in every format on `problems` (greedy), and with `sample` the
    base's SAMPLES answers per problem in its best thinking format (chosen on the choice half). Kept
    in the run folder and reused while the checkpoint, the problems and the settings are the same."""
    from lamina.pretrained import load_gpt

    checkpoint = run.checkpoint
    key = fingerprint(checkpoint_key(checkpoint), problems, preset.samples if sample else 0, preset.thought_budget,
                      list(PROMPT_FORMATS))
    path = run.folder / EVAL
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return cached["evaluation"]
    except (OSError, json.JSONDecodeError):
        pass
    started, cpu = time.perf_counter(), cpu_seconds()
    loaded = load_gpt(checkpoint, f"study {NAME}: {run.spec.arm}")
    model = loaded.model.to(device).eval()
    scorer = scorer_for(problems, preset, loaded.tokenizer)
    found = {"outcomes": scorer.greedy(model)}
    if sample:
        choice, _ = halves(len(problems))
        fmt = best_format({f: found["outcomes"][f] for f in THINKING_FORMATS}, choice)
        found["samples"] = {"format": fmt, "n": preset.samples,
                            "counts": scorer.sampled(model, fmt, preset.samples, world_seed(run.spec.seed))}
    found["cost"] = {"seconds": time.perf_counter() - started, "cpu_seconds": cpu_seconds() - cpu}
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "evaluation": found}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return found


def checkpoint_counters(path: Path) -> dict:
    """global_step, tokens seen and training FLOPs of a lamina checkpoint."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a torn or foreign file is the study's to report
        raise ConfigError(f"study {NAME}: cannot read {path} ({err})") from err
    state = checkpoint.get("lamina", {})
    return {"step": int(checkpoint.get("global_step", 0)), "tokens": float(state.get("tokens_seen", 0)),
            "flops": float(state.get("flops_seen", 0.0))}


# ---- scores ------------------------------------------------------------------------------------------------


def score(outcomes: dict[str, list[int]]) -> dict:
    """A model's format-neutral score: its format (the best on the choice half) and its greedy
    accuracy on the score half in it, with every format's accuracy on all the problems."""
    n = len(next(iter(outcomes.values())))
    choice, scored = halves(n)
    fmt = best_format(outcomes, choice)
    return {"format": fmt, "accuracy": accuracy_on(outcomes[fmt], scored), "n": len(scored),
            "items": [outcomes[fmt][i] for i in scored],
            "by_format": {f: accuracy_on(v, range(n)) for f, v in outcomes.items()}}



def base_thinks(outcomes: dict[str, list[int]], bounds: tuple[float, float] = GATE_RANGE) -> tuple[bool, str]:
    """The gate on one seed's base: its score (format-neutral accuracy) within `bounds`."""
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


def room(outcomes: dict[str, list[int]], samples: dict) -> dict:
    """The base's room to elicit: its pass@n over all problems (n: all its samples) and its greedy
    accuracy on the same problems in the format it sampled in."""
    if not samples or not samples.get("counts"):
        return {}
    n, counts = int(samples["n"]), samples["counts"]
    greedy = outcomes[samples["format"]]
    return {"pass": mean_pass(counts, n, n), "greedy": float(np.mean(greedy)), "n": len(counts), "k": n,
            "format": samples["format"]}


def room_gate(rooms: dict[int, dict]) -> Gate:
    per, passed = [], bool(rooms)
    for seed in sorted(rooms):
        r = rooms[seed]
        if not r:
            passed = False
            per.append(f"seed {seed}: no samples of the base")
            continue
        ok = r["pass"] > r["greedy"]
        passed &= ok
        per.append(f"seed {seed}: pass@{r['k']} {fmt3(r['pass'])} vs greedy {fmt3(r['greedy'])} on {r['n']} problems "
                   f"({r['format']})")
    return Gate("room-to-elicit", f"does the base solve more level-{LEVEL} problems in its samples than greedily (so "
                "a better thought policy has something to find), every seed?", passed, "; ".join(per))


def detectable_difference(sd: float, seeds: int) -> float:
    """The smallest true difference beyond a bound that the 95% t-interval over `seeds` seeds clears
    with probability POWER, from the seed-to-seed standard deviation `sd` of the per-seed differences
    (earlier seeds or a pilot): (t(0.975, k - 1) + t(POWER, k - 1)) sd / sqrt(k). Each seed draws its
    own problems, so sd holds item sampling as well as training noise."""
    return detectable(sd, seeds, POWER)


def power_gate(differences: PerSeed, seeds: int, margin: float = ACCURACY_MARGIN) -> Gate:
    """Can `seeds` seeds tell a difference of twice the margin from none, from the seed-to-seed spread
    of the primary's per-seed differences (rlp − base)?"""
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


# ---- one seed's numbers ---------------------------------------------------------------------------------


def rlp_signal(folder: Path) -> dict:
    """Means over the logged steps of rlp/reward_std, rlp/advantage_abs_mean, rlp/zero_variance_frac."""
    from lamina.compare.runs import read_scalars

    scalars = read_scalars(folder)
    return {tag.removeprefix("rlp/"): float(np.mean(scalars[tag][1])) for tag in
            ("rlp/reward_std", "rlp/advantage_abs_mean", "rlp/zero_variance_frac") if tag in scalars}


def seed_numbers(problems: list[tuple[str, str]], items: dict, evaluations: dict[str, dict], arms: dict[str, Run],
                 costs: dict[str, dict]) -> dict:
    """Every number of one seed (JSON-able): the problems, each model's outcomes per format and
    problem, the base's samples, each arm's counters, the rlp arm's reward signal and the costs."""
    return {
        "questions": [q for q, _ in problems], "items": items,
        "outcomes": {model: e["outcomes"] for model, e in evaluations.items()},
        "samples": evaluations[BASE].get("samples", {}),
        "arms": {arm: checkpoint_counters(run.checkpoint) for arm, run in arms.items()},
        "signal": rlp_signal(arms["rlp"].folder) if "rlp" in arms else {},
        "costs": costs,
    }


# ---- the result --------------------------------------------------------------------------------------------


def scores_of(numbers: dict[int, dict]) -> dict[int, dict[str, dict]]:
    """seed -> model -> score()."""
    return {s: {model: score(o) for model, o in v["outcomes"].items() if o} for s, v in numbers.items()}


def per_seed(scores: dict[int, dict[str, dict]], model: str, key: str = "accuracy") -> PerSeed:
    return {s: float(v[model][key]) for s, v in scores.items() if model in v and math.isfinite(v[model][key])}


def in_format(numbers: dict[int, dict], model: str, fmt: str) -> PerSeed:
    """A model's greedy accuracy on the score half in one format (not its best)."""
    out = {}
    for s, v in numbers.items():
        outcomes = v["outcomes"].get(model, {}).get(fmt)
        if outcomes:
            out[s] = accuracy_on(outcomes, halves(len(outcomes))[1])
    return out


def mean_of(values: PerSeed) -> float:
    st = summarize([values[s] for s in sorted(values)])
    return st.mean if st.n else math.nan


def within_seed(scores: dict[int, dict[str, dict]], a: str, b: str) -> list[str]:
    """Per seed, a − b on the same scored problems with its 95% t-interval paired over problems (item sampling only)."""
    out = []
    for seed in sorted(scores):
        sa, sb = scores[seed].get(a), scores[seed].get(b)
        if sa and sb and len(sa["items"]) == len(sb["items"]):
            mean, lo, hi = paired_interval(np.array(sa["items"], dtype=float) - np.array(sb["items"], dtype=float))
            out.append(f"seed {seed}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(sa['items'])} problems")
    return out


def assemble(result: ClaimResult, numbers: dict[int, dict], n_seeds: int,
             bounds: tuple[float, float] = GATE_RANGE) -> None:
    """Arms, gates, contrasts, figures and notes of the result from every seed's numbers."""
    seeds = sorted(numbers)
    scores = scores_of(numbers)
    models = [BASE] + [arm for arm in ARMS if any(arm in scores[s] for s in seeds)]
    for model in models:
        metrics: dict[str, PerSeed] = {"accuracy (best format, score half)": per_seed(scores, model)}
        for fmt in PROMPT_FORMATS:
            metrics[f"accuracy/{fmt} (all problems)"] = {
                s: scores[s][model]["by_format"][fmt] for s in seeds if fmt in scores[s].get(model, {}).get("by_format", {})}
        if model == BASE:
            rooms = {s: room(numbers[s]["outcomes"][BASE], numbers[s].get("samples", {})) for s in seeds}
            rooms = {s: r for s, r in rooms.items() if r}
            if rooms:
                k = next(iter(rooms.values()))["k"]
                metrics[f"pass@{k} (all problems)"] = {s: r["pass"] for s, r in rooms.items()}
        else:
            for key in ("tokens", "flops", "step"):
                metrics[key] = {s: numbers[s]["arms"][model][key] for s in seeds if model in numbers[s]["arms"]}
        result.arms[LABELS[model]] = metrics

    # gates
    acc = {model: per_seed(scores, model) for model in models}
    primary = {s: acc["rlp"][s] - acc[BASE][s] for s in seeds if s in acc.get("rlp", {}) and s in acc[BASE]}
    result.gates = [
        base_thinks_gate({s: numbers[s]["outcomes"].get(BASE, {}) for s in seeds}, bounds),
        room_gate({s: room(numbers[s]["outcomes"].get(BASE, {}), numbers[s].get("samples", {})) for s in seeds}),
        power_gate(primary, n_seeds),
        signal_gate({s: numbers[s].get("signal", {}) for s in seeds}),
    ]

    # contrasts: the primary, the secondary ones (Holm within the claim), descriptive rows
    result.primary = PRIMARY
    prediction = Prediction(1, ACCURACY_MARGIN, ACCURACY_MARGIN_NOTE)
    needs = ("base-thinks", "room-to-elicit", "power", "rlp-signal")
    bounds_of = {"floor": 0.0, "ceiling": 1.0}  # every arm at 0 or at 1 in every seed: nothing to compare
    what = f"greedy accuracy on the scored held-out level-{LEVEL} problems, each model in its best format"
    judged = [("rlp − shuffled", "rlp-shuffled", "RLP minus the same RLP with rewards shuffled across groups"),
              ("rlp − ntp at the same tokens", "ntp-tokens", "RLP minus next-token training on the same batches"),
              ("rlp − ntp at the same FLOPs", "ntp-flops", "RLP minus next-token training for as many FLOPs")]
    contrasts = [Contrast.paired(PRIMARY, f"{what}: RLP at the end of phase 2 minus the base it started from",
                                 acc.get("rlp", {}), acc[BASE], labels=("rlp", BASE), prediction=prediction,
                                 needs=needs, **bounds_of)]
    contrasts += [Contrast.paired(name, f"{what}: {words}", acc.get("rlp", {}), acc.get(other, {}),
                                  labels=("rlp", other), prediction=prediction, needs=needs, **bounds_of)
                  for name, other, words in judged]
    contrasts += [
        Contrast.paired("rlp-paper − shuffled", f"{what}: the paper's RLP (uniform positions, K = 1) minus shuffled "
                        "rewards", acc.get("rlp-paper", {}), acc.get("rlp-shuffled", {})),
        Contrast.paired("rlp − rlp-paper", f"{what}: thought slots and line reward minus the paper's choices",
                        acc.get("rlp", {}), acc.get("rlp-paper", {})),
    ]
    contrasts += [Contrast.paired(f"{arm} − base", f"{what}: end of phase 2 minus its start", acc[arm], acc[BASE])
                  for arm in models if arm not in (BASE, "rlp")]
    contrasts.append(Contrast.paired(
        "rlp − base, `think` format only", "greedy accuracy on the score half, both in stripped text's thought slot "
        "(`Q: 47+38=?<think>`), a spelling the base never trained on (the 2026-12-01 run's score)",
        in_format(numbers, "rlp", "think"), in_format(numbers, BASE, "think")))
    result.contrasts = contrasts

    # figures
    shown = [m for m in models if m != BASE]
    columns = ["best (score half)", *PROMPT_FORMATS]

    def column(model: str, c: str) -> PerSeed:
        return acc[model] if c == columns[0] else result.arms[LABELS[model]][f"accuracy/{c} (all problems)"]

    result.figures = [
        Figure("accuracy_by_arm", f"Greedy accuracy on held-out level-{LEVEL} arithmetic at the end of phase 2: "
               "in each model's best format, and in each format (mean, 95% interval over seeds)", "prompt format",
               "accuracy", columns, {LABELS[m]: [column(m, c) for c in columns] for m in shown},
               {LABELS[BASE]: [column(BASE, c) for c in columns]}, kind="bar"),
    ]

    # notes
    n_scored = next((scores[s][BASE]["n"] for s in seeds if BASE in scores[s]), 0)
    notes = ["Formats each model answered best in (chosen on the choice half): " + "; ".join(
        f"seed {s}: " + ", ".join(f"{m} {scores[s][m]['format']}" for m in models if m in scores[s]) for s in seeds),
        f"Within each seed, on the same {n_scored} scored problems (item sampling only, paired over problems; the "
        "verdicts use the interval over seeds):"]
    notes.append("rlp − base: " + ("; ".join(within_seed(scores, "rlp", BASE)) or "n/a"))
    for name, other, _ in judged:
        notes.append(f"{name}: " + ("; ".join(within_seed(scores, "rlp", other)) or "n/a"))
    notes += [
        f"Problems: level {LEVEL}, drawn per seed (world seed lamina.probes.world_seed(seed, {LEVEL}, '{ITEMS}')), "
        "none in the text of either phase: " + "; ".join(
            f"seed {s}: {numbers[s]['items']['n']} problems, {numbers[s]['items']['training_questions']} training "
            "questions excluded" for s in seeds),
        "ntp-flops runs as many next-token steps as the rlp run's training FLOPs (perf/flops, read from both "
        "checkpoints).",
    ]
    result.notes = notes


def seconds_text(numbers: dict[int, dict]) -> str:
    parts = []
    for seed in sorted(numbers):
        costs = numbers[seed].get("costs", {})
        wall = sum(c["seconds"] for c in costs.values())
        cpu = sum(c.get("cpu_seconds") or 0.0 for c in costs.values())
        each = ", ".join(f"{arm} {c['seconds']:.0f} s" + (f" (CPU {c['cpu_seconds']:.0f} s)" if c.get("cpu_seconds") else "")
                         for arm, c in costs.items())
        parts.append(f"seed {seed}: {wall:.0f} s, CPU {cpu:.0f} s ({each})")
    return "; ".join(parts)


# ---- the study ---------------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (in-process fits and isolated ones alike)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


COST = "rlp-study-cost.json"  # in a run folder: the wall and CPU seconds of the fit that made it


def timed_run(ctx: StudyContext, spec: RunSpec, k: int, n: int) -> tuple[Run, dict]:
    started = cpu_seconds()
    run = ctx.runner.run(spec, k, n)
    path = run.folder / COST
    if run.trained:
        cost = {"seconds": run.seconds, "cpu_seconds": cpu_seconds() - started, "steps": spec.max_steps,
                "load": list(os.getloadavg())}
        path.write_text(json.dumps(cost) + "\n", encoding="utf-8")
    else:
        try:
            cost = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cost = {"seconds": run.seconds, "cpu_seconds": None, "steps": spec.max_steps}
    return run, cost


def stop(ctx: StudyContext, result: ClaimResult, gate: Gate, message: str, setup: dict[str, str]) -> None:
    result.gates = [gate]
    result.stopped = message
    result.setup = setup
    write_report(result, ctx.out)
    raise ConfigError(f"study {NAME}: gate {gate.name} failed: {gate.detail}; report in {ctx.folder / 'report.md'}")


def run_compare(ctx: StudyContext) -> str | None:
    """`lamina compare` over the phase-2 arms into <claim>/compare/; the note on what it wrote."""
    from lamina.compare import main as compare_main

    root = ctx.out / "runs"
    groups = [w for arm in ARMS if (root / arm).is_dir() for w in ("--group", f"{arm}={root / arm}")]
    out = ctx.folder / "compare"
    try:  # each arm a group (its runs are <arm>/seed<s>/version_0: every run is named seed<s>)
        compare_main([*groups, "--out", str(out)])
    except ConfigError as err:
        return f"lamina compare over the arms failed: {err}"
    return f"Training curves of the phase-2 arms (lamina compare, paired by seed): {out / 'report.md'}"


def phase2_steps_of(preset: Preset, paths: dict[str, Path]) -> int:
    """Phase 2's steps: the preset's, else the configs' (every RLP arm's the same)."""
    if preset.phase2_steps:
        return preset.phase2_steps
    steps = yaml_value([paths["phase2"]], "trainer", "max_steps")
    for arm in RLP_ARMS:
        if yaml_value(arm_configs(paths, arm), "trainer", "max_steps") != steps:
            raise ConfigError(f"study {NAME}: arm {arm} sets trainer.max_steps, expected phase 2's {steps}")
    if not isinstance(steps, int):
        raise ConfigError(f"study {NAME}: expected trainer.max_steps in {paths['phase2']}")
    return steps


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
                rlp, ntp = checkpoint_counters(arms["rlp"].checkpoint), checkpoint_counters(arms["ntp-tokens"].checkpoint)
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


def power_so_far(numbers: dict[int, dict], planned: int) -> str:
    """The power gate's numbers from the seeds finished so far (earlier seeds as the pilot)."""
    scores = scores_of(numbers)
    rlp_acc, base_acc = per_seed(scores, "rlp"), per_seed(scores, BASE)
    return power_gate({s: rlp_acc[s] - base_acc[s] for s in rlp_acc if s in base_acc}, planned).detail


def save_numbers(folder: Path, seed: int, numbers: dict) -> None:
    path = folder / "numbers" / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(numbers) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def setup_text(ctx: StudyContext, paths: dict[str, Path], pretrain_steps: int, phase2_steps: int, preset: Preset,
               numbers: dict[int, dict], wall: float, load_start) -> dict[str, str]:
    setup = {
        "preset": f"`{ctx.preset_text}`",
        "configs": (f"phase 1 `{paths['pretrain']}`; phase 2 `{paths['phase2']}` (ntp-tokens, ntp-flops) "
                    f"+ `{paths['rlp'].name}` (rlp), + `{paths['shuffled'].name}` (rlp-shuffled), + "
                    f"`{paths['paper'].name}` (rlp-paper); every phase-2 run from its seed's phase-1 last.ckpt "
                    "(model.init_from)"),
        "steps": f"phase 1 {pretrain_steps}; phase 2 {phase2_steps} per arm (ntp-flops: as many as match rlp's FLOPs"
                 + (": " + ", ".join(f"seed {s} {v['arms']['ntp-flops']['step']}" for s, v in sorted(numbers.items())
                                      if "ntp-flops" in v["arms"]) if numbers else "") + ")",
        "seeds": (f"{', '.join(map(str, ctx.seeds))} (seed_everything = data.seed = model.rlp.seed = the seed for "
                  "every run of it, and the seed of its problems; contrasts are paired by seed)"),
        "items": (f"{preset.problems} held-out level-{LEVEL} problems a seed, drawn per seed and none in either "
                  f"phase's text; formats and k chosen on half of them, the other {preset.problems // 2} scored; "
                  f"every model greedy in {len(PROMPT_FORMATS)} prompt formats ({', '.join(PROMPT_FORMATS)}), the "
                  f"base also {preset.samples} samples a problem at temperature 1 (outside the fits)"),
        "runs": f"under `{ctx.out / 'runs'}` (`lamina compare {ctx.out / 'runs'}/<arm> ...` reads them)",
    }
    if numbers:
        setup["costs"] = seconds_text(numbers)
    load_end = os.getloadavg()
    setup["wall time"] = (f"{wall:.0f} s this call on {os.cpu_count()} CPU(s), load average {load_start[0]:.1f} at "
                          f"its start and {load_end[0]:.1f} at its end (CPU seconds: what the fits and evaluations "
                          "cost this process; on an idle machine the wall time is about that)")
    return setup


CLAIM = Claim(NAME, SENTENCE, run, presets=tuple(PRESETS))

__all__ = [
    "ARMS", "CLAIM", "LEVEL", "GATE_RANGE", "PRESETS", "Preset", "TOY", "arm_configs", "arm_words", "assemble",
    "base_thinks", "base_thinks_gate", "detectable_difference", "flop_matched_steps", "held_out_problems",
    "power_gate", "room", "room_gate", "run", "score", "seed_numbers", "study",
]
