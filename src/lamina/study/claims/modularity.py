"""Claim `modularity`: compositional tasks live in separable modules: co-activation modules form
above their null, ablating one damages some tasks more than others beyond chance, and the same
task-damage profiles recur across seeds.

Read off the shared world-v2 run (lamina.study.world_runs): the co-activation partition's Newman Q
(lamina.instrument.modularity) against the same network with its weight matrices' entries shuffled
(Filan et al. 2021, arXiv 2103.03386), with step 0 as the reference; ablation specificity against
random partitions (lamina.instrument.ablation); damage profiles matched across seeds (Hungarian)
against a task-permutation null. Primary: Q above its shuffled-weights null, end − step 0. The
permutation-null rows are descriptive (an untrained network clears that null too). Gates: the model
learns its text; it has learned at least 3 string tasks (so that damage can differ between tasks).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from lamina import tags
from lamina.gates import strings_gate
from lamina.probes import world_seed
from lamina.study.claim import Claim, StudyContext
from lamina.study.report import ClaimResult, Contrast, Figure
from lamina.study.runs import Run
from lamina.study.world_runs import ARM, at, capability_gate, curve_series, per_seed, runs_gate, scalars, setup, train
from lamina.verdict import PermutationTest, Prediction

NAME = "modularity"
SENTENCE = (
    "Compositional tasks live in separable modules: co-activation modules form above their null, ablating one "
    "damages some tasks more than others beyond chance, and the same task-damage profiles recur across seeds."
)
# The primary: what training adds to Q above its null (step 0 as the reference). "Q above its null"
# and "held-out Q above its null" are descriptive: the permutation null erases what any network
# inherits from structured input, so an untrained one clears it too (they cannot fail).
PRIMARY = "learned: Q above its shuffled-weights null, end − step 0"
# Newman Q of about 0.3 and above is the usual mark of clear community structure (Newman & Girvan
# 2004): a tenth of that is the smallest change of interest. Specificity is a loss increase (nats
# per token): 0.05 nats is about a 5% change in the task's per-token probability. Matching is a
# correlation in [-1, 1]: a tenth of a perfect match. Fixed here, before any run; no run's noise.
Q_MARGIN = 0.03
Q_MARGIN_NOTE = "margin 0.03: a tenth of the Q (about 0.3) that marks clear community structure (Newman & Girvan 2004)"
SPECIFICITY_MARGIN = 0.05
SPECIFICITY_MARGIN_NOTE = ("margin 0.05 nats: about a 5% change in a task's per-token probability when its module "
                           "is ablated, beyond the other tasks'")
MATCH_MARGIN = 0.1
MATCH_MARGIN_NOTE = "margin 0.1: a tenth of a perfect match of the damage profiles (correlation 1)"


def layers_of(run: Run) -> int:
    i = 0
    while math.isfinite(at(run, tags.q(i))):
        i += 1
    return i


def mean_over_layers(run: Run, fn) -> float:
    values = [fn(run, i) for i in range(layers_of(run))]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def damage_profiles(run: Run, layer: int) -> tuple[np.ndarray, list[str]]:
    """[modules, tasks] loss increase of ablating each module of `layer` at the final measurement."""
    prefix = tags.ablation_prefix(layer)
    cells = {}
    for tag in scalars(run):
        if tag.startswith(prefix):
            module, task = tag[len(prefix):].split("/", 1)
            cells[(int(module), task)] = at(run, tag)
    if not cells:
        return np.zeros((0, 0)), []
    tasks = sorted({t for _, t in cells})
    modules = sorted({m for m, _ in cells})
    return np.array([[cells.get((m, t), np.nan) for t in tasks] for m in modules]), tasks


def match_score(a: np.ndarray, b: np.ndarray) -> float:
    """Mean correlation of the damage profiles of matched modules (Hungarian, best total correlation)."""
    def rows(x):
        x = x - x.mean(1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    corr = rows(a) @ rows(b).T
    r, c = linear_sum_assignment(-corr)
    return float(corr[r, c].mean())


def profile_match(a: np.ndarray, b: np.ndarray, draws: int, seed: int) -> tuple[float, float, float]:
    """Matched-profile correlation of two seeds' modules, and its null: the same with the tasks of
    `b` permuted (one permutation for all its modules), `draws` times: (score, null mean, null std)."""
    rng = np.random.default_rng(seed)
    observed = match_score(a, b)
    null = [match_score(a, b[:, rng.permutation(b.shape[1])]) for _ in range(draws)]
    return observed, float(np.mean(null)), float(np.std(null, ddof=1))


def usable_profiles(runs: dict[int, dict[str, Run]]) -> dict[int, dict[int, np.ndarray]]:
    """seed -> layer -> damage profiles [modules, tasks], for the seeds that have any and the layers
    all of those can be matched on (the same tasks, at least 2 modules and 3 tasks, every cell a number)."""
    profiles: dict[int, dict[int, tuple[np.ndarray, list[str]]]] = {}
    for s in sorted(runs):
        layers = {layer: damage_profiles(runs[s][ARM], layer) for layer in range(layers_of(runs[s][ARM]))}
        layers = {layer: p for layer, p in layers.items()
                  if p[0].shape[0] >= 2 and p[0].shape[1] >= 3 and not np.isnan(p[0]).any()}
        if layers:
            profiles[s] = layers
    seeds = sorted(profiles)
    if not seeds:
        return {}
    layers = [layer for layer, (_, tasks) in profiles[seeds[0]].items()
              if all(layer in profiles[s] and profiles[s][layer][1] == tasks for s in seeds)]
    return {s: {layer: profiles[s][layer][0] for layer in layers} for s in seeds} if layers else {}


def cross_seed_matches(runs: dict[int, dict[str, Run]], draws: int = 200) -> dict[str, dict]:
    """Per pair of seeds, the layer-averaged match minus its task-permutation null mean, and each
    layer's numbers (descriptive: the pairs share seeds; `matching_test` judges)."""
    profiles = usable_profiles(runs)
    seeds = sorted(profiles)
    out = {}
    for i, s in enumerate(seeds):
        for t in seeds[i + 1:]:
            layers = []
            for layer, a in profiles[s].items():
                score, null_mean, null_std = profile_match(a, profiles[t][layer], draws,
                                                           world_seed(s * 1000 + t, layer, "study/match"))
                layers.append({"layer": layer, "score": score, "null_mean": null_mean, "null_std": null_std})
            out[f"{s}-{t}"] = {"excess": float(np.mean([x["score"] - x["null_mean"] for x in layers])),
                               "null_std": float(np.mean([x["null_std"] for x in layers])), "layers": layers}
    return out


def matching_statistic(profiles: dict[int, dict[int, np.ndarray]]) -> float:
    """Mean over pairs of seeds and layers of the matched modules' profile correlation."""
    seeds = sorted(profiles)
    scores = [match_score(profiles[s][layer], profiles[t][layer])
              for i, s in enumerate(seeds) for t in seeds[i + 1:] for layer in profiles[s]]
    return float(np.mean(scores))


def shared_and_specific(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A layer's damage profiles [modules, tasks], each centred, split into the part every module
    shares (the first singular component: tasks that any ablation damages more, in proportion) and
    the rest, what is specific to each module."""
    x = x - x.mean(1, keepdims=True)
    u, sv, vt = np.linalg.svd(x, full_matrices=False)
    shared = sv[0] * np.outer(u[:, 0], vt[0])
    return shared, x - shared


def matching_test(runs: dict[int, dict[str, Run]], draws: int = 1000) -> PermutationTest | None:
    """Cross-seed matching judged by one permutation test over every seed at once. The statistic is
    the mean matched-profile correlation over all pairs of seeds and layers. Most of a layer's
    damage profiles is a profile every module shares (in the 2026-12-08 study its first component
    held 64-99% of their variance): tasks that any ablation damages more. Two seeds with no module
    in common match on it too, so the null keeps it: a draw relabels the tasks of each seed's
    module-specific part (`shared_and_specific`) by a permutation of the seed's own (the same for
    all its layers) and adds the shared part back. The null then has the confound (the shared
    vulnerability) and not the effect (module-specific damage that recurs across seeds). The pairs
    share seeds, so they are no independent sample: the permutation over seeds is what makes the
    test exact. None: fewer than two seeds with usable profiles."""
    profiles = usable_profiles(runs)
    if len(profiles) < 2:
        return None
    seeds = sorted(profiles)
    parts = {s: {layer: shared_and_specific(x) for layer, x in layers.items()} for s, layers in profiles.items()}
    tasks = next(iter(profiles[seeds[0]].values())).shape[1]
    rng = np.random.default_rng(world_seed(len(seeds), tasks, "study/matching-test"))

    def draw() -> float:
        perms = {s: rng.permutation(tasks) for s in seeds}
        return matching_statistic({s: {layer: shared + specific[:, perms[s]] for layer, (shared, specific)
                                       in parts[s].items()} for s in seeds})

    null = tuple(draw() for _ in range(draws))
    return PermutationTest(matching_statistic(profiles), null, tuple(seeds))


def run(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds))
    q_excess = lambda r: mean_over_layers(r, lambda r, i: at(r, tags.q(i)) -  # noqa: E731
                                          at(r, tags.q_null(i, "hi")))
    heldout_excess = lambda r: mean_over_layers(r, lambda r, i: at(r, tags.modularity(i, "q_heldout")) -  # noqa: E731
                                                at(r, tags.q_null(i, "hi")))
    spec_excess = lambda r: mean_over_layers(r, lambda r, i: at(r, tags.specificity(i)) - (  # noqa: E731
        at(r, tags.specificity(i, "null_mean")) + 2 * at(r, tags.specificity(i, "null_std"))))
    result.gates = [
        runs_gate(runs),
        capability_gate(runs, strings_gate, "tasks-learned",
                        "has the model learned at least 3 string tasks (loss below 0.5 x the task's chance loss), "
                        "so that an ablation's damage can differ between tasks, every seed?"),
    ]
    matches = cross_seed_matches(runs) if len(runs) > 1 else {}
    matching = matching_test(runs)
    # Filan et al. 2021 (arXiv 2103.03386): the same network with each weight matrix's entries shuffled
    # (lamina.instrument.modularity): what Q an arrangement of these weights gets by chance. At step 0
    # the weights are exchangeable with their shuffles, so the step-0 excess is ~0 by construction,
    # and the end's excess over it is what training arranged.
    shuffled_excess = lambda step: (lambda r: mean_over_layers(r, lambda r, i: at(  # noqa: E731
        r, tags.q(i), step) - at(r, tags.q_shuffled(i, "mean"), step)))
    shuffled_z = lambda r: mean_over_layers(r, lambda r, i: at(r, tags.q_shuffled(i, "z")))  # noqa: E731
    result.arms[ARM] = {
        "Q − shuffled-weights null mean, mean over layers": per_seed(runs, shuffled_excess(None)),
        "Q at step 0 − shuffled-weights null mean": per_seed(runs, shuffled_excess(0)),
        "z against the shuffled-weights null, mean over layers": per_seed(runs, shuffled_z),
        "Q − permutation null top (2 sd), mean over layers": per_seed(runs, q_excess),
        "held-out Q − permutation null top": per_seed(runs, heldout_excess),
        "specificity − null top (2 sd)": per_seed(runs, spec_excess),
    }
    needs = ("learns-the-text",)
    result.primary = PRIMARY
    result.contrasts = [
        Contrast.paired(PRIMARY, "Q minus the mean Q of the same network with each weight matrix's "
                        "entries shuffled (Filan et al. 2021), averaged over layers, at the end minus at step 0: "
                        "what training arranged beyond what weights of these values give by chance",
                        result.arms[ARM]["Q − shuffled-weights null mean, mean over layers"],
                        result.arms[ARM]["Q at step 0 − shuffled-weights null mean"],
                        prediction=Prediction(1, Q_MARGIN, Q_MARGIN_NOTE), needs=needs),
        Contrast.paired("Q above its permutation null", "Q minus the top of its per-unit permutation null's band "
                        "(mean + 2 sd), averaged over layers, at the end; descriptive: that null erases what any "
                        "network inherits from structured input, so an untrained network clears it too",
                        result.arms[ARM]["Q − permutation null top (2 sd), mean over layers"]),
        Contrast.paired("held-out Q above its permutation null", "the partition chosen on id scored on id_b's "
                        "co-activations; descriptive, for the same reason",
                        result.arms[ARM]["held-out Q − permutation null top"]),
        Contrast.paired("ablation specificity above its null", "specificity minus the top of its random-partition "
                        "null's band, averaged over layers, at the end",
                        result.arms[ARM]["specificity − null top (2 sd)"],
                        prediction=Prediction(1, SPECIFICITY_MARGIN, SPECIFICITY_MARGIN_NOTE),
                        needs=needs + ("tasks-learned",)),
        Contrast("modules match across seeds", "the mean correlation of matched modules' task-damage profiles "
                 "over every pair of seeds and layer, minus its null (the profile every module of a layer shares "
                 "kept, each seed's module-specific part relabelled by a permutation of its own, 1000 draws); the "
                 "verdict reads the permutation test's interval, the per-pair values (keys: pairs of seeds, "
                 "against a null that relabels whole profiles) only describe",
                 {k: v["excess"] for k, v in matches.items()} if matching else {}, permutation=matching,
                 prediction=Prediction(1, MATCH_MARGIN, MATCH_MARGIN_NOTE), needs=needs + ("tasks-learned",)),
    ]
    x, series = curve_series(runs, {f"layer{i} Q": tags.q(i) for i in range(layers_of(
        next(iter(runs.values()))[ARM]))})
    _, reference = curve_series(runs, {f"layer{i} shuffled weights": tags.q_shuffled(i, "mean")
                                       for i in range(layers_of(next(iter(runs.values()))[ARM]))})
    result.figures = [Figure("q_over_training", "Modularity Q by layer over training, beside the mean Q of its "
                             "shuffled-weights copies",
                             "step", "Q", x, series, reference)]
    result.notes = [
        "Q: Newman modularity of the co-activation partition (lamina.instrument.modularity) against the same "
        "network with its weight matrices' entries shuffled (Filan et al. 2021; instrument.modularity.shuffled_draws "
        "copies), and, descriptive, its per-unit permutation null; specificity: how unevenly a module's ablation damages the tasks, against random "
        "partitions of the same sizes (lamina.instrument.ablation).",
        "Matching across seeds: each module's damage profile (loss increase per task when it is ablated) is "
        "centred; the modules of two seeds' same layer are matched by the Hungarian assignment on their "
        "correlations. The verdict: one permutation test over every seed (the profile every module of a layer "
        "shares kept, each seed's module-specific part relabelled by its own permutation, 1000 draws; "
        + (f"observed {matching.observed:.3f}, null mean {matching.null_mean:.3f}, p {matching.p:.3g}"
           if matching else "not run: fewer than two seeds with usable profiles")
        + "). Per pair, against a null that permutes one seed's tasks (200 draws): "
        + ("; ".join(f"{k}: {v['excess']:+.3f} (null sd {v['null_std']:.3f})" for k, v in matches.items()) or "none")
        + ".",
    ]
    result.setup = setup(ctx, preset, runs, seconds, started)
    return result


CLAIM = Claim(NAME, SENTENCE, run, group=ARM, primary=PRIMARY, margin=Q_MARGIN)
