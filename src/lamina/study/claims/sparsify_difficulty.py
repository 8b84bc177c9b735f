"""Claim `sparsify-difficulty`: harder or unfamiliar input gives sparser states: held-out harder
arithmetic levels give sparser MLP states and a more concentrated last-layer state than the trained
levels, and problems the model gets wrong are sparser than those it gets right.

Design (fixed before any run). The shared world-v2 runs (lamina.study.world_runs) train arithmetic
levels 1-3 and hold out 4 and 5. Per seed, the claim draws up to the preset's `problems` held-out
problems of every level (lamina.study.evaluation.arith_items: problems in the training text left out
where the level has others; level 1's 100 problems all occur in it, so they are its own), decodes
each greedily from the final checkpoint with a thought (exact `A: n`), and reads every state at the
prompt the model is given, `<|endoftext|>Q: 47+38=? <think>`, from one forward of that prompt alone:

- density: the share of MLP units with pre-activation > 0, averaged over every layer and over the
  prompt's own tokens, the positions after the prefix every prompt shares (`<|endoftext|>Q: ` with
  byte tokens: their states are the same in every prompt, and their weight in a mean over all
  tokens would fall as the prompt grows, a length effect with no problem in it);
- last layer: Jin et al.'s measures (arXiv 2603.03415; lamina.instrument.lastlayer) of
  h = ln_f(last residual) at the last prompt token, the position whose output is the first token
  the model writes, where the paper reads it (its `get_last_hidden_state`), with nothing of a
  worked thought or an answer in the input.

Length is confounded with level (with byte tokens a prompt has 11 tokens at level 1 and 12-20 at
levels 3-5), and both measures move with it in an untrained network already. So every level
contrast is read at matched length (lamina.instrument.lastlayer.matched_gap: the per-problem values
regressed on one indicator per level and the prompt's length, the slope from the levels whose
problems differ in length; each level's mean taken at one common length), and right − wrong within
strata of one level and one length.

Primary: `trained − held-out levels`, the density of levels 1-3 minus that of levels 4-5 (each
level's mean at matched length, the levels weighed alike), predicted > 0. It keeps the claim's
words and first contrast; it is read here on the held-out prompts rather than on the runs' level
probes (`sparsity/level/<k>/mean`, 128-token windows of whole worked examples), because in those
windows a held-out level's tokens sit deeper into longer documents (level 5's examples run past
a window, level 1's are about 36 bytes) and their thoughts are gold text the model never writes:
position within a document is there what prompt length is here, and it cannot be matched from the
scalars. That probe's difference stays in the tables, unjudged.

Secondary (Holm within the claim): the last layer's top-5% energy, trained − held-out, predicted
< 0 (a harder level concentrates the final state); its entropy rank, predicted > 0; right − wrong
density, predicted > 0: problems solved minus problems missed within each stratum of one level and
one prompt length (with byte tokens a length is a task), pooled over every stratum that has both,
each weighed by n_right n_wrong / (n_right + n_wrong) (the inverse of its difference's variance at
a common spread). Pooling rather than picking one level: at the cpu preset's 1500 steps level 2 is
solved at 0.91-0.99 (configs/world-v2-tiny.yaml, seeds 1-5), and a 1400-step pilot (seeds 1-3, 64
problems a level) solved 0.52-0.86 of level 3 and none of levels 4-5, so most strata with both sit
at level 3, and a seed whose level 3 is solved at 0.9 still adds what level 2 has; the strata keep a
level's difficulty, and a task's, from passing for a per-problem effect.

Margins (fixed here, never from a run's noise): density differences DENSITY_MARGIN (0.01, see
claims/density_familiarity.py); last-layer shares LASTLAYER_MARGIN (0.02, below).

Gates: the model learns its text; it solves a trained level (lamina.gates.thinking_gate: greedy
level-2 accuracy >= 0.5 on 256 problems; the level contrasts compare familiar with unfamiliar levels
only where the trained ones are learned); right − wrong has enough of both (RIGHT_WRONG_INFO, below:
a model at chance has no right answer, and right − wrong is not tested, each seed's count named);
and for each judged contrast, an untrained network of the run's shape (every weight at a random
initialisation; on the same problems, by the same estimator and, for right − wrong, with the trained
model's outcomes) is read by the rule (lamina.verdict.decide with the contrast's own prediction)
and not supported: where input content and length alone, with no learning, give the predicted
effect, the contrast cannot show that learning does, and is not tested; a null the rule cannot read
clears nothing either.

Cost: the last layer and the untrained network add two forwards of the prompts to the decoding,
about 1.7 s a seed on one thread at the cpu preset (64 problems a level, the 4 x 128 model), beside
about 9 s of greedy decoding and 2 s rebuilding the training text's questions.
"""

from __future__ import annotations

import math
import time

import numpy as np

from lamina import tags
from lamina.data import world
from lamina.gates import thinking_gate
from lamina.instrument.lastlayer import matched_gap
from lamina.study.claim import Claim, StudyContext
from lamina.study.claims.density_familiarity import DENSITY_MARGIN, DENSITY_MARGIN_NOTE
from lamina.study.evaluation import device_of
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, PerSeed
from lamina.study.sparsify_evaluation import cached_problems
from lamina.study.world_runs import ARM, at, capability_gate, per_seed, runs_gate, setup, train
from lamina.verdict import NOT_TESTED, SUPPORTED, Prediction, decide

NAME = "sparsify-difficulty"
SENTENCE = (
    "Harder or unfamiliar input gives sparser states: held-out harder arithmetic levels give sparser MLP states "
    "and a more concentrated last-layer state than the trained levels, and problems the model gets wrong are "
    "sparser than those it gets right."
)
PRIMARY = "trained − held-out levels"
# Last-layer shares (top-5% energy and entropy rank / d, both in [0, 1]; a uniform state has 0.05 and
# 1): two points of the share, a fiftieth of its scale. Fixed here, before any run; no run's noise.
LASTLAYER_MARGIN = 0.02
LASTLAYER_MARGIN_NOTE = ("margin 0.02: two points of a share in [0, 1] (top-5% energy; entropy rank over the "
                         "width), a fiftieth of its scale")
# Right − wrong needs right and wrong problems of one level and one length. Its standard error within a
# seed is sd / sqrt(I), I = the sum over strata of n_right n_wrong / (n_right + n_wrong) (16 right against
# 16 wrong in one stratum: I = 8). The per-problem spread of density within a stratum, 0.0025-0.0043 in a
# pilot (world-v2 at 1400 steps, seeds 1-3, levels 2-3, before this claim was run), puts I = 8 at a standard
# error of 0.0009-0.0015, under a sixth of DENSITY_MARGIN: a seed's own sampling leaves the margin reachable.
MIN_RIGHT_AND_WRONG = 16
RIGHT_WRONG_INFO = MIN_RIGHT_AND_WRONG / 2


# ---- the per-seed contrasts ------------------------------------------------------------------------


def measure_of(level: dict, measure: str, net: str = "trained") -> list[float]:
    return level[measure] if net == "trained" else level[net][measure]


def trained_minus_held_out(levels: dict, measure: str, net: str = "trained", matched: bool = True) -> float:
    """The mean over the trained levels minus the mean over the held-out ones of each level's mean
    `measure` (the levels weighed alike), at matched prompt length (`matched_gap`) or as measured;
    nan where either side has no level, or the length cannot be matched."""
    first = [int(k) for k, lv in levels.items() if lv["trained"] and lv["correct"]]
    second = [int(k) for k, lv in levels.items() if not lv["trained"] and lv["correct"]]
    if not first or not second:
        return math.nan
    if not matched:
        mean = {k: float(np.mean(measure_of(levels[str(k)], measure, net))) for k in first + second}
        return float(np.mean([mean[k] for k in first]) - np.mean([mean[k] for k in second]))
    values, ids, lengths = [], [], []
    for k in first + second:
        lv = levels[str(k)]
        values += measure_of(lv, measure, net)
        ids += [k] * len(lv["correct"])
        lengths += lv["length"]
    return matched_gap(values, ids, lengths, first, second)[0]


def right_wrong_strata(levels: dict) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """(level, prompt length, indices of its right problems, of its wrong ones) for every stratum of one
    level and one length that has both."""
    strata = []
    for k, lv in levels.items():
        right, length = np.asarray(lv["correct"], bool), np.asarray(lv["length"])
        for n in sorted(set(length.tolist())):
            here = length == n
            if (here & right).any() and (here & ~right).any():
                strata.append((k, n, np.nonzero(here & right)[0], np.nonzero(here & ~right)[0]))
    return strata


def right_wrong_information(levels: dict) -> float:
    """The sum over (level, length) strata of n_right n_wrong / (n_right + n_wrong): right − wrong's
    standard error is sd / sqrt(this) (16 right against 16 wrong in one stratum: 8)."""
    return float(sum(len(r) * len(w) / (len(r) + len(w)) for _, _, r, w in right_wrong_strata(levels)))


def right_minus_wrong(levels: dict, measure: str = "density", net: str = "trained") -> float:
    """`measure` of problems solved minus problems missed (by the trained model), within each stratum
    of one level and one prompt length, weighed by n_right n_wrong / (n_right + n_wrong) (the inverse
    of the difference's variance at a common spread), so that neither a level's difficulty nor a
    length passes for a per-problem effect; nan where no stratum has both."""
    total = weight = 0.0
    for k, _, right, wrong in right_wrong_strata(levels):
        values = np.asarray(measure_of(levels[k], measure, net), dtype=np.float64)
        w = len(right) * len(wrong) / (len(right) + len(wrong))
        total += w * float(values[right].mean() - values[wrong].mean())
        weight += w
    return total / weight if weight else math.nan


# ---- gates -----------------------------------------------------------------------------------------


def right_and_wrong_gate(problems: dict[int, dict]) -> Gate:
    info = {s: right_wrong_information(p) for s, p in problems.items()}
    rows = []
    for s, p in sorted(problems.items()):
        solved = sum(sum(lv["correct"]) for lv in p.values())
        total = sum(len(lv["correct"]) for lv in p.values())
        by_level = ", ".join(f"level {k} {float(np.mean(lv['correct'])):.2f}" for k, lv in p.items() if lv["correct"])
        rows.append(f"seed {s}: {solved} right of {total} ({by_level}), information {info[s]:.1f}")
    return Gate("right-and-wrong", f"are there right and wrong problems at one level and one length, as many as "
                f"{MIN_RIGHT_AND_WRONG} right against {MIN_RIGHT_AND_WRONG} wrong (the sum over those strata of "
                f"n_right n_wrong / (n_right + n_wrong) >= {RIGHT_WRONG_INFO:g}), every seed?",
                bool(info) and all(v >= RIGHT_WRONG_INFO for v in info.values()), "; ".join(rows))


def untrained_gate(name: str, what: str, values: PerSeed, prediction: Prediction, seeds: list[int]) -> Gate:
    """The contrast through the untrained network is read by the rule and not supported: input
    content alone does not give the predicted effect. A null the rule cannot read (a seed without a
    value, no spread) clears nothing: the gate fails."""
    v = decide({s: values.get(s, math.nan) for s in seeds}, sign=prediction.sign, margin=prediction.margin,
               planned=seeds)
    numbers = ", ".join(f"seed {s}: {values[s]:+.4f}" for s in sorted(values))
    return Gate(name, f"{what} through an untrained network of the run's shape (same problems, same estimator): "
                f"read by the rule and not supported ({prediction.words})?", v.verdict not in (SUPPORTED, NOT_TESTED),
                f"{numbers}; the rule: {v.label} ({v.reason})")


# ---- the claim ---------------------------------------------------------------------------------------


LEVEL_CONTRASTS = {  # name -> (measure, prediction, what it reads); the first is the primary
    PRIMARY: ("density", Prediction(1, DENSITY_MARGIN, DENSITY_MARGIN_NOTE),
              "MLP density of the prompt's own tokens, levels 1-3 minus held-out levels 4-5"),
    "last layer top-5% energy: trained − held-out levels": (
        "top5_energy", Prediction(-1, LASTLAYER_MARGIN, LASTLAYER_MARGIN_NOTE),
        "Jin et al.: a harder level concentrates the final state at the last prompt token"),
    "last layer entropy rank: trained − held-out levels": (
        "entropy_rank", Prediction(1, LASTLAYER_MARGIN, LASTLAYER_MARGIN_NOTE),
        "a sparser final state has a lower entropy rank"),
}
RIGHT_WRONG = "right − wrong (same level, same length)"


def judged_contrasts(problems: dict[int, dict], seeds: list[int]) -> tuple[list[Gate], list[Contrast]]:
    """The judged contrasts, each with the gate of its untrained-network null."""
    per = lambda fn: {s: fn(p) for s, p in problems.items()}  # noqa: E731
    gates, contrasts = [], []
    for name, (measure, prediction, what) in LEVEL_CONTRASTS.items():
        gate = f"untrained-quiet: {name}"
        untrained = per(lambda p, m=measure: trained_minus_held_out(p, m, "untrained"))
        gates.append(untrained_gate(gate, name, untrained, prediction, seeds))
        contrasts.append(Contrast.paired(
            name, f"{what}; each level's mean at matched prompt length",
            per(lambda p, m=measure: trained_minus_held_out(p, m)), prediction=prediction,
            needs=("learns-the-text", "thinks", gate)))
    density = LEVEL_CONTRASTS[PRIMARY][1]
    gate = "untrained-quiet: right − wrong"
    untrained = per(lambda p: right_minus_wrong(p, "density", "untrained"))
    gates.append(untrained_gate(gate, "right − wrong density", untrained, density, seeds))
    contrasts.append(Contrast.paired(
        RIGHT_WRONG, "MLP density of the prompt's own tokens, problems solved minus problems missed within each "
        "stratum of one level and one prompt length, weighed by n_right n_wrong / (n_right + n_wrong)",
        per(right_minus_wrong), prediction=density, needs=("learns-the-text", "right-and-wrong", gate)))
    return gates, contrasts


def level_tables(runs, problems: dict[int, dict]) -> dict[str, PerSeed]:
    """The unjudged numbers: per level, and the differences the judged ones are read beside."""
    levels = [str(k) for k in world.ARITH_LEVELS]
    per = lambda fn: {s: fn(p) for s, p in problems.items()}  # noqa: E731

    def by_level(label: str, fn) -> dict[str, PerSeed]:
        return {label.format(k): {s: fn(p[k]) for s, p in problems.items() if k in p and p[k]["correct"]}
                for k in levels}

    run_probes = lambda r: (np.mean([at(r, tags.density(f"level/{k}")) for k in (1, 2, 3)])  # noqa: E731
                            - np.mean([at(r, tags.density(f"ood/level/{k}")) for k in (4, 5)]))
    return {
        **by_level("accuracy level {}", lambda lv: float(np.mean(lv["correct"]))),
        **by_level("prompt length level {} (tokens)", lambda lv: float(np.mean(lv["length"]))),
        **by_level("density level {}", lambda lv: float(np.mean(lv["density"]))),
        **by_level("last layer top-5% energy level {}", lambda lv: float(np.mean(lv["top5_energy"]))),
        "density trained − held-out, lengths not matched": per(
            lambda p: trained_minus_held_out(p, "density", matched=False)),
        "top-5% energy trained − held-out, lengths not matched": per(
            lambda p: trained_minus_held_out(p, "top5_energy", matched=False)),
        "untrained: density trained − held-out (matched)": per(
            lambda p: trained_minus_held_out(p, "density", "untrained")),
        "untrained: top-5% energy trained − held-out (matched)": per(
            lambda p: trained_minus_held_out(p, "top5_energy", "untrained")),
        "right − wrong information": per(right_wrong_information),
        "run's level probes: density levels 1-3 − 4-5 (128-token windows, not matched)": per_seed(runs, run_probes),
    }


def level_figures(tables: dict[str, PerSeed]) -> list[Figure]:
    levels = [str(k) for k in world.ARITH_LEVELS]
    series = lambda label: {ARM: [tables[label.format(k)] for k in levels]}  # noqa: E731
    return [
        Figure("density_by_level", "MLP density of the prompt's own tokens by level (1-3 trained, 4-5 held out; "
               "lengths not matched)", "level", "density", levels, series("density level {}"), kind="bar"),
        Figure("top5_energy_by_level", "Last-layer top-5% energy at the last prompt token by level (lengths not "
               "matched)", "level", "top-5% energy", levels, series("last layer top-5% energy level {}"), kind="bar"),
        Figure("length_by_level", "Prompt length by level (tokens, <|endoftext|> included)", "level", "tokens",
               levels, series("prompt length level {} (tokens)"), kind="bar"),
        Figure("accuracy_by_level", "Greedy accuracy (with its thought) by level", "level", "accuracy", levels,
               series("accuracy level {}"), kind="bar"),
    ]


NOTES = [
    "Per-problem numbers: up to the preset's problems per level from a held-out stream (problems in the training "
    "text left out where the level has others), decoded greedily with a thought and scored by exact `A: n`. Every "
    "state is read from one forward of the prompt alone (`<|endoftext|>Q: 47+38=? <think>`): density over the "
    "prompt's own tokens (after the prefix every prompt shares), every layer; the last-layer measures (Jin et al. "
    "arXiv 2603.03415) at its last token.",
    "Matched length: the per-problem values regressed on one indicator per level and the prompt's length "
    "(lamina.instrument.lastlayer.matched_gap); each level's mean is read at one common length, the slope coming "
    "from the levels whose problems differ in length (a linear model of length). The unmatched differences and the "
    "untrained network's are in the tables.",
    "The untrained network: the run's shape at a random initialisation (projections included), on the same "
    "problems; its contrasts have input content but no learning in them, and gate the judged ones.",
]


def run(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    device = device_of(ctx.device)
    problems = {seed: cached_problems(ctx, by_arm[ARM], seed, preset, device) for seed, by_arm in runs.items()}
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds), primary=PRIMARY, notes=list(NOTES))
    nulls, result.contrasts = judged_contrasts(problems, list(ctx.seeds))
    result.gates = [
        runs_gate(runs),
        capability_gate(runs, thinking_gate, "thinks",
                        "does the model solve a trained level: greedy accuracy with a thought at level 2 >= 0.5 "
                        "on >= 256 held-out problems (thought_eval), every seed?"),
        right_and_wrong_gate(problems),
        *nulls,
    ]
    result.arms[ARM] = tables = level_tables(runs, problems)
    result.figures = level_figures(tables)
    result.setup = setup(ctx, preset, runs, seconds, started, problems=f"{preset.problems} per level, levels "
                         f"{', '.join(map(str, world.ARITH_LEVELS))}")
    return result


CLAIM = Claim(NAME, SENTENCE, run, group=ARM, primary=PRIMARY, margin=DENSITY_MARGIN)
