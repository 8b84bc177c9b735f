"""The evaluation of `reasoning-in-pretraining` (lamina.study.claims.reasoning_in_pretraining; the
`elicitation` claim reads the same numbers): each seed's held-out problems, every model scored on
them outside its fit, one seed's numbers, and the report's rows, figure, notes and setup.

- The problems (`held_out_problems`): `Preset.problems` distinct level-LEVEL problems from a world
  stream whose seed follows the study's seed (`world_seed`), none of which occurs in the text of
  either phase (lamina.rlp.corpus_questions, both splits, up to each one's data.max_bytes). Their
  odd positions are the *choice* half, their even positions the *score* half
  (lamina.rlp.elicitation.halves).
- Every model (the phase-1 checkpoint, `base`, and each phase-2 arm's last checkpoint) answers
  greedily in each prompt format of lamina.rlp.PROMPT_FORMATS (lamina.rlp.FormatScorer), kept in its
  run folder (EVAL); the base also answers each problem `Preset.samples` times at temperature 1 in
  its best thinking format.
- A model's **score** (`score`): its greedy accuracy on the score half in the format it answers best
  on the choice half. The base's **room** (`room`): its pass@n over its n samples against its greedy
  accuracy in the format it sampled in.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from lamina import tags
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
from lamina.study.claim import StudyContext
from lamina.study.evaluation import cached_json, checkpoint_key, fingerprint
from lamina.study.report import Figure, PerSeed
from lamina.study.rlp_runs import ARMS, STUDY, Preset, checkpoint_counters, cpu_seconds, seconds_text
from lamina.study.runs import Run

BASE = "base"  # the phase-1 model, where every phase-2 arm starts
LABELS = {
    "base": "base (phase 1)",
    "rlp": "RLP (thought slots, line reward)",
    "rlp-shuffled": "RLP, shuffled rewards",
    "rlp-paper": "RLP as the paper (uniform, K = 1)",
    "ntp-tokens": "next-token, same tokens",
    "ntp-flops": "next-token, same FLOPs",
}
LEVEL = 2  # the arithmetic level of the problems (phase 1 trains levels 1-3; level 1 has 100 problems in all)
ITEMS = "study/rlp/arith"  # the purpose the problems' world seed is derived for (lamina.probes.world_seed)


# ---- the problems and their evaluation -----------------------------------------------------------------------


def held_out_problems(seed: int, n: int, phases: list[dict]) -> tuple[list[tuple[str, str]], dict]:
    """n level-LEVEL problems for seed `seed` that occur in none of the phases' texts (`phases`: each
    phase's data settings, lamina.study.rlp_runs.phase_data), and what was checked."""
    seen: set[str] = set()
    for data in phases:
        seen |= corpus_questions(data)
    items_seed = world_seed(seed)
    problems = arith_problems(items_seed, LEVEL, n, frozenset(seen))
    if len(problems) < n:
        raise ConfigError(f"study {STUDY}: expected {n} level-{LEVEL} problems outside the training text, found "
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
        raise ConfigError(f"study {STUDY}: the runs' tokenizer has no {', '.join(k for k, v in ids.items() if v is None)}")
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

    def compute() -> dict:
        started, cpu = time.perf_counter(), cpu_seconds()
        loaded = load_gpt(checkpoint, f"study {STUDY}: {run.spec.arm}")
        model = loaded.model.to(device).eval()
        scorer = scorer_for(problems, preset, loaded.tokenizer)
        found = {"outcomes": scorer.greedy(model)}
        if sample:
            choice, _ = halves(len(problems))
            fmt = best_format({f: found["outcomes"][f] for f in THINKING_FORMATS}, choice)
            found["samples"] = {"format": fmt, "n": preset.samples,
                                "counts": scorer.sampled(model, fmt, preset.samples, world_seed(run.spec.seed))}
        found["cost"] = {"seconds": time.perf_counter() - started, "cpu_seconds": cpu_seconds() - cpu}
        return found

    return cached_json(run.folder / EVAL, key, "evaluation", compute)


# ---- scores --------------------------------------------------------------------------------------------------


def score(outcomes: dict[str, list[int]]) -> dict:
    """A model's format-neutral score: its format (the best on the choice half) and its greedy
    accuracy on the score half in it, with every format's accuracy on all the problems."""
    n = len(next(iter(outcomes.values())))
    choice, scored = halves(n)
    fmt = best_format(outcomes, choice)
    return {"format": fmt, "accuracy": accuracy_on(outcomes[fmt], scored), "n": len(scored),
            "items": [outcomes[fmt][i] for i in scored],
            "by_format": {f: accuracy_on(v, range(n)) for f, v in outcomes.items()}}


def room(outcomes: dict[str, list[int]], samples: dict) -> dict:
    """The base's room to elicit: its pass@n over all problems (n: all its samples) and its greedy
    accuracy on the same problems in the format it sampled in."""
    if not samples or not samples.get("counts"):
        return {}
    n, counts = int(samples["n"]), samples["counts"]
    greedy = outcomes[samples["format"]]
    return {"pass": mean_pass(counts, n, n), "greedy": float(np.mean(greedy)), "n": len(counts), "k": n,
            "format": samples["format"]}


# ---- one seed's numbers ---------------------------------------------------------------------------------


def rlp_signal(folder: Path) -> dict:
    """Means over the logged steps of rlp/reward_std, rlp/advantage_abs_mean, rlp/zero_variance_frac."""
    from lamina.compare.runs import read_scalars

    scalars = read_scalars(folder)
    return {tag.removeprefix(tags.rlp("")): float(np.mean(scalars[tag][1])) for tag in tags.RLP_SIGNAL
            if tag in scalars}


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


def save_numbers(folder: Path, seed: int, numbers: dict) -> None:
    path = folder / "numbers" / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(numbers) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---- every seed's numbers read back: the report's rows, figure and notes -------------------------------------


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


def within_seed(scores: dict[int, dict[str, dict]], a: str, b: str) -> list[str]:
    """Per seed, a − b on the same scored problems with its 95% t-interval paired over problems (item sampling only)."""
    out = []
    for seed in sorted(scores):
        sa, sb = scores[seed].get(a), scores[seed].get(b)
        if sa and sb and len(sa["items"]) == len(sb["items"]):
            mean, lo, hi = paired_interval(np.array(sa["items"], dtype=float) - np.array(sb["items"], dtype=float))
            out.append(f"seed {seed}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(sa['items'])} problems")
    return out


def scored_models(scores: dict[int, dict[str, dict]]) -> list[str]:
    """The base and every arm scored in some seed, in the order the arms run."""
    return [BASE] + [arm for arm in ARMS if any(arm in scores[s] for s in sorted(scores))]


def model_rows(numbers: dict[int, dict], scores: dict[int, dict[str, dict]], model: str) -> dict[str, PerSeed]:
    """A model's rows per seed: its score, its accuracy in each format on all the problems, and the
    base's pass@n (room) or an arm's tokens, FLOPs and steps."""
    seeds = sorted(numbers)
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
    return metrics


def accuracy_figure(arms: dict[str, dict[str, PerSeed]], acc: dict[str, PerSeed], models: list[str]) -> Figure:
    """Each model's score and its accuracy in each format (`arms`: the report's rows by label)."""
    shown = [m for m in models if m != BASE]
    columns = ["best (score half)", *PROMPT_FORMATS]

    def column(model: str, c: str) -> PerSeed:
        return acc[model] if c == columns[0] else arms[LABELS[model]][f"accuracy/{c} (all problems)"]

    return Figure("accuracy_by_arm", f"Greedy accuracy on held-out level-{LEVEL} arithmetic at the end of phase 2: "
                  "in each model's best format, and in each format (mean, 95% interval over seeds)", "prompt format",
                  "accuracy", columns, {LABELS[m]: [column(m, c) for c in columns] for m in shown},
                  {LABELS[BASE]: [column(BASE, c) for c in columns]}, kind="bar")


def notes(numbers: dict[int, dict], scores: dict[int, dict[str, dict]], models: list[str],
          within: list[tuple[str, str]]) -> list[str]:
    """The report's notes: each model's format per seed, each (contrast name, arm) of `within` as
    rlp − arm within each seed (paired over problems), the problems, FLOP matching."""
    seeds = sorted(numbers)
    n_scored = next((scores[s][BASE]["n"] for s in seeds if BASE in scores[s]), 0)
    out = ["Formats each model answered best in (chosen on the choice half): " + "; ".join(
        f"seed {s}: " + ", ".join(f"{m} {scores[s][m]['format']}" for m in models if m in scores[s]) for s in seeds),
        f"Within each seed, on the same {n_scored} scored problems (item sampling only, paired over problems; the "
        "verdicts use the interval over seeds):"]
    for name, other in within:
        out.append(f"{name}: " + ("; ".join(within_seed(scores, "rlp", other)) or "n/a"))
    out += [
        f"Problems: level {LEVEL}, drawn per seed (world seed lamina.probes.world_seed(seed, {LEVEL}, '{ITEMS}')), "
        "none in the text of either phase: " + "; ".join(
            f"seed {s}: {numbers[s]['items']['n']} problems, {numbers[s]['items']['training_questions']} training "
            "questions excluded" for s in seeds),
        "ntp-flops runs as many next-token steps as the rlp run's training FLOPs (perf/flops, read from both "
        "checkpoints).",
    ]
    return out


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


__all__ = ["BASE", "EVAL", "ITEMS", "LABELS", "LEVEL", "accuracy_figure", "evaluation", "held_out_problems",
           "in_format", "model_rows", "notes", "per_seed", "room", "save_numbers", "score", "scored_models",
           "scores_of", "seed_numbers", "setup_text", "within_seed", "world_seed"]
