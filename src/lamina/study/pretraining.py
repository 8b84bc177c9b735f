"""The claims read off world-v2 pretraining runs: density-familiarity, sparsify-difficulty,
hierarchy, modularity and context-vs-prior.

Per seed s two runs are trained (or reused) once and shared by the five claims:

- `world-v2`: configs/world-v2-tiny.yaml (4 layers, 128 wide; all five world families, arithmetic
  levels 1-3 with 4-5 held out, two string compositions held out, the people roster in exposure
  bins 0/1/10/100, the context family), instrumentation every `every` steps;
- `world-v2-small`: the same data with a smaller model (the preset's `small` words), for the
  hierarchy at a second size.

Every number is the run's own instrumentation (its TensorBoard scalars: the measures beside their
nulls, see DESIGN.md "Measures"), except sparsify-difficulty's per-problem correctness, which
decodes held-out arithmetic problems of every level from the final checkpoint. Contrasts are
per-seed values (paired by seed where they are differences) read by lamina.verdict's rule;
each claim names its primary contrast and fixes its margins (the smallest effects of interest, each
with its reason, never derived from a run's own noise) at the top of its section below.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from lamina.compare.runs import read_scalars
from lamina.data import world
from lamina.finetune.retention import GreedyCompleter, score, token_budget
from lamina.instrument.hierarchy import TIER_ORDER, tier_of
from lamina.pretrained import load_gpt
from lamina.probes import world_seed
from lamina.study.claim import GPU as ON_GPU
from lamina.study.claim import Claim, StudyContext, preset_for, shrunk, study_configs
from lamina.study.finetune import arith_items, device_of, fingerprint, checkpoint_key, training_questions
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, PerSeed
from lamina.study.runs import Run, RunSpec
from lamina.gates import reads_context_gate, strings_gate, thinking_gate
from lamina.verdict import Prediction

CONFIG = "world-v2-tiny.yaml"
ARM, SMALL_ARM = "world-v2", "world-v2-small"
HIGHER_TIERS = ("conceptual", "functional", "output")
NULL_Z = 3.0  # |z| below this on a probe with no structure: no finding (the gates; no margin comes from it)


@dataclass(frozen=True)
class Preset:
    """CLI words for every run, for the small model only, the steps, the instrumentation cadence,
    and the per-problem evaluation's items per arithmetic level."""

    every: tuple[str, ...] = ()
    small: tuple[str, ...] = ("--model.n_layer", "3", "--model.n_embd", "96")
    steps: int = 600
    measure_every: int = 200
    problems: int = 64
    batch_size: int = 64


# cpu: configs/world-v2-tiny.yaml's 1500 steps (where the capability gates pass: lamina.gates; at
# 1000 steps the context was read in 3 of 5 seeds), measured at 0, 500, 1000 and 1500.
CPU = Preset(every=("--trainer.enable_progress_bar", "false"), steps=1500, measure_every=500)
# gpu: one seed of the two runs, the instrumentation and the per-problem decoding in about 2.5 minutes
# of an H100 (all eight claims' one seed: about 6.5 minutes, within one 10-minute device call).
# Reasoning (estimates: no GPU has run these yet):
# - world-v2 at 6 x 256 (8 heads), 4.8M parameters, 31M training FLOPs a token; a step is 32 x 128
#   byte tokens (the config's batch): 1.3e11 FLOPs, 0.3 ms at 40% of 989 TF bf16, so the step is
#   bound by kernel launches and Lightning's loop, about 6 ms (a 4 x 128 step: a few ms): 3000 steps
#   about 18 s; 12.3M tokens, one pass over data.max_bytes 12M (generated on every core: seconds).
# - world-v2-small at 4 x 128 (the cpu preset's model): about 4.5 ms a step, 3000 steps about 14 s.
# - instrumentation at 0, 1000, 2000 and 3000, with the partition and ablations each time (the
#   probes' sizes are the config's): a measurement is thousands of small ops and the CPU-side
#   partition, not FLOPs: about 8 s at 6 layers and 5 s at 4 (the same op count at toy width took
#   8 s and 6 s of a loaded 2-core CPU), 4 x (8 + 5) s = about 52 s.
# - validation every 100 steps (30 x 32768 tokens) and checkpoints every 1000: a few seconds.
# - sparsify-difficulty: 256 held-out problems a level, greedy with a thought in batches of 256:
#   5 x ~80 decode steps of a few ms, and the exclusion set (1.05 x 12 MB generated on one core at
#   about 3 MB/s): about 10 s.
# - process start and CUDA, Lightning's setup of two fits, five reports' figures: about 45 s.
GPU = Preset(
    every=(*ON_GPU, "--model.n_layer", "6", "--model.n_head", "8", "--model.n_embd", "256",
           "--data.max_bytes", "12000000", "--checkpoint.every_n_train_steps", "1000",
           "--trainer.enable_progress_bar", "false"),
    small=("--model.n_layer", "4", "--model.n_head", "4", "--model.n_embd", "128"),
    steps=3000, measure_every=1000, problems=256, batch_size=256,
)
# A handful of steps at toy sizes (the test preset, and a rehearsal of any preset): its words come
# after the preset's, so each key a preset sets for size is set here again (small: all three).
TOY = Preset(
    every=("--data.max_bytes", "120000", "--data.val_tokens", "512", "--data.batch_size", "4",
           "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32",
           "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "2",
           "--checkpoint.every_n_train_steps", "2", "--model.warmup_steps", "0",
           "--instrument.probes.tokens", "1024", "--instrument.modularity.tokens", "256",
           "--instrument.hierarchy.items", "1024", "--instrument.hierarchy.examples", "48",
           "--instrument.context.prompts", "16", "--instrument.lastlayer.problems", "4",
           "--instrument.modularity.null_draws", "8", "--thought_eval.examples_per_level", "8",
           "--thought_eval.batch_size", "16", "--trainer.enable_progress_bar", "false"),
    small=("--model.n_layer", "3", "--model.n_head", "2", "--model.n_embd", "32"),
    steps=4, measure_every=4, problems=4, batch_size=16,
)
PRESETS = {"cpu": CPU, "gpu": GPU, "test": shrunk(CPU, TOY)}


# ---- the shared runs ---------------------------------------------------------------------------------


def preset_of(ctx: StudyContext) -> Preset:
    return preset_for(ctx, PRESETS, TOY)


def specs_for(ctx: StudyContext, preset: Preset, seed: int) -> dict[str, RunSpec]:
    config = study_configs(ctx.claim, ctx.configs, {"world": CONFIG})["world"]
    cadence = ("--instrument.every_n_steps", str(preset.measure_every),
               "--instrument.modularity.every_n_steps", str(preset.measure_every),
               "--thought_eval.every_n_steps", str(preset.steps))  # the thinking gate: at step 0 and the end
    words = preset.every + cadence
    return {
        ARM: RunSpec(ARM, (str(config),), seed, preset.steps, words),
        # The small model serves the hierarchy's depth contrast only: no thinking gate to read there.
        SMALL_ARM: RunSpec(SMALL_ARM, (str(config),), seed, preset.steps,
                           words + preset.small + ("--thought_eval.enabled", "false")),
    }


def train(ctx: StudyContext, arms: tuple[str, ...] = (ARM,)) -> tuple[dict[int, dict[str, Run]], Preset, float]:
    """The runs of `arms` for every seed (trained, resumed or reused), and their training seconds."""
    preset = preset_of(ctx)
    runs: dict[int, dict[str, Run]] = {}
    seconds = 0.0
    for k, seed in enumerate(ctx.seeds, 1):
        specs = specs_for(ctx, preset, seed)
        runs[seed] = {arm: ctx.runner.run(specs[arm], k, len(ctx.seeds)) for arm in arms}
        seconds += sum(r.seconds for r in runs[seed].values())
    return runs, preset, seconds


_SCALARS: dict[tuple, dict] = {}


def scalars(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The run's TensorBoard scalars, read once per state of its event files (five claims read them)."""
    events = tuple(sorted((p.name, p.stat().st_size) for p in run.folder.glob("events.out.tfevents.*")))
    key = (str(run.folder), events)
    if key not in _SCALARS:
        _SCALARS[key] = read_scalars(run.folder)
    return _SCALARS[key]


def at(run: Run, tag: str, step: int | None = None) -> float:
    """The value of `tag` at `step` (None: its last step); nan where the run has none."""
    curve = scalars(run).get(tag)
    if curve is None or not len(curve[0]):
        return float("nan")
    steps, values = curve
    if step is None:
        return float(values[-1])
    hit = np.nonzero(steps == step)[0]
    return float(values[hit[-1]]) if len(hit) else float("nan")


def steps_of(run: Run, tag: str) -> list[int]:
    curve = scalars(run).get(tag)
    return [int(s) for s in curve[0]] if curve is not None else []


def per_seed(runs: dict[int, dict[str, Run]], fn, arm: str = ARM) -> PerSeed:
    """Per seed, fn of its run; a value that is missing or not finite stays (as nan), so that a
    contrast names the seed that drops out (tables and figures read the finite ones)."""
    values = {seed: fn(by_arm[arm]) for seed, by_arm in runs.items() if arm in by_arm}
    return {s: (float(v) if isinstance(v, (int, float)) else math.nan) for s, v in values.items()}


def has_values(values: PerSeed) -> bool:
    return any(math.isfinite(v) for v in values.values())


def setup(ctx: StudyContext, preset: Preset, runs: dict[int, dict[str, Run]], seconds: float, started: float,
          **extra: str) -> dict[str, str]:
    arms = sorted({arm for by_arm in runs.values() for arm in by_arm})
    text = {
        "preset": ctx.preset_text,
        "seeds": ", ".join(map(str, ctx.seeds)),
        "runs": ", ".join(f"`{ctx.out / 'runs' / arm}/seed<s>`" for arm in arms),
        "config": f"configs/{CONFIG}, then " + (" ".join(preset.every) or "nothing else")
                  + f"; {preset.steps} steps; instrumentation every {preset.measure_every} steps (and at 0 and the end)",
    }
    if SMALL_ARM in arms:
        text["second size"] = " ".join(preset.small)
    text.update(extra)
    text["wall time"] = (f"{time.perf_counter() - started:.0f} s this call; the runs' own training "
                         f"{seconds:.0f} s (when they were trained)")
    return text


def runs_gate(runs: dict[int, dict[str, Run]], arm: str = ARM) -> Gate:
    """The model learns its text: validation bpb at the end at most 3/4 of that at step 0, every seed."""
    rows, passed = [], True
    for seed, by_arm in sorted(runs.items()):
        start, end = at(by_arm[arm], "val/bpb", 0), at(by_arm[arm], "val/bpb")
        ok = math.isfinite(start) and math.isfinite(end) and end <= 0.75 * start
        passed &= ok
        rows.append(f"seed {seed}: {start:.3f} -> {end:.3f}")
    return Gate("learns-the-text", f"does {arm} learn its text (val bpb at the end <= 3/4 of step 0's, every seed)?",
                passed, "; ".join(rows))


def last_values(run: Run) -> dict[str, float]:
    """The last value of every tag the run logged (what lamina.gates reads at the end of a fit)."""
    return {tag: float(values[-1]) for tag, (_, values) in scalars(run).items() if len(values)}


def start_values(run: Run) -> dict[str, float]:
    """The value of every tag the run logged at step 0."""
    return {tag: float(values[steps == 0][-1]) for tag, (steps, values) in scalars(run).items()
            if bool(np.any(steps == 0))}


def capability_gate(runs: dict[int, dict[str, Run]], check, name: str, question: str, arm: str = ARM) -> Gate:
    """One of lamina.gates' capability gates (`check`: e.g. lamina.gates.reads_context_gate), every
    seed: the same thresholds a fit prints at its end."""
    results = {seed: check(last_values(by_arm[arm]), start_values(by_arm[arm])) for seed, by_arm in sorted(runs.items())}
    return Gate(name, question, all(r.passed for r in results.values()),
                "; ".join(f"seed {s}: {r.word}, {r.detail}" for s, r in results.items()))


def null_probe_gate(runs: dict[int, dict[str, Run]], tag: str, what: str, arm: str = ARM) -> Gate:
    """The null probe shows no finding: |z| < 3 at the end in every seed."""
    zs = {seed: at(by_arm[arm], tag) for seed, by_arm in sorted(runs.items())}
    passed = all(math.isfinite(z) and abs(z) < NULL_Z for z in zs.values())
    return Gate("null-probe-quiet", f"{what}: |z| < {NULL_Z:g} at the end, every seed?", passed,
                "; ".join(f"seed {s}: z = {z:+.2f}" for s, z in zs.items()))


def curve_series(runs: dict[int, dict[str, Run]], tags: dict[str, str], arm: str = ARM) -> tuple[list[str], dict]:
    """x = the steps every seed measured; per label the per-seed values of its tag at each."""
    first = next(iter(runs.values()))[arm]
    steps = steps_of(first, next(iter(tags.values())))
    series = {label: [per_seed(runs, lambda r, t=tag, s=s: at(r, t, s), arm) for s in steps]
              for label, tag in tags.items()}
    return [str(s) for s in steps], series


# ---- density-familiarity -----------------------------------------------------------------------------


DENSITY = "density-familiarity"
DENSITY_SENTENCE = (
    "Density is learned with exposure: MLP states grow denser on familiar text than on unfamiliar text over "
    "training, and denser on entities seen often than on entities never seen."
)
DENSITY_PRIMARY = "familiar − random tokens"
# The smallest density difference of interest: one point of the share of active MLP units, about a
# twentieth of the change training itself brings to mean density (0.50 at initialisation, under the
# sign rule, to about 0.26 at the cpu preset's end). Fixed here, before any run; no run's noise.
DENSITY_MARGIN = 0.01
DENSITY_MARGIN_NOTE = ("margin 0.01: one point of the share of active MLP units, about a twentieth of the fall "
                       "training brings to mean density (0.50 at initialisation to about 0.26)")


def density_familiarity(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    result = ClaimResult(DENSITY, DENSITY_SENTENCE, {}, list(ctx.seeds))
    result.gates = [runs_gate(runs), null_probe_gate(runs, "sparsity/gap/id_b/z", "id − id_b (two samples of the "
                                                     "training distribution)")]
    result.primary = DENSITY_PRIMARY
    pred = Prediction(1, DENSITY_MARGIN, DENSITY_MARGIN_NOTE)
    gap = lambda probe, step=None: (lambda r: at(r, f"sparsity/gap/{probe}", step))  # noqa: E731
    density = lambda probe: (lambda r: at(r, f"sparsity/{probe}/mean"))  # noqa: E731
    bins = [b for b in ("0", "1", "10", "100") if has_values(per_seed(runs, density(f"exposure/{b}")))]
    result.arms[ARM] = {
        **{f"density/{p}": per_seed(runs, density(p)) for p in ("id", "id_b", "random", "shuffled", "novel")},
        **{f"density/exposure/{b}": per_seed(runs, density(f"exposure/{b}")) for b in bins},
        "density/id at step 0": per_seed(runs, lambda r: at(r, "sparsity/id/mean", 0)),
        "density/random at step 0": per_seed(runs, lambda r: at(r, "sparsity/random/mean", 0)),
    }
    needs = ("learns-the-text", "null-probe-quiet")
    random_end, random_start = per_seed(runs, gap("random")), per_seed(runs, gap("random", 0))
    result.contrasts = [
        Contrast.paired(DENSITY_PRIMARY, "density of id minus random (uniform over the vocabulary "
                        "the data uses), at the end", random_end, prediction=pred, needs=needs),
        Contrast.paired("familiar − shuffled", "density of id minus the same windows shuffled (same tokens, no "
                        "order), at the end", per_seed(runs, gap("shuffled")), prediction=pred, needs=needs),
        Contrast.paired("learned: (familiar − random) end − step 0", "growth of the id − random gap over "
                        "training; descriptive: every probe is 0.50 dense at initialisation under the sign rule, "
                        "so this is familiar − random counted again, not a test of its own", random_end,
                        random_start),
        Contrast.paired("seen often − never seen (exposure 100 − novel)", "density on bios of people with 100 "
                        "mentions minus people never in the text", per_seed(runs, gap("novel")),
                        per_seed(runs, gap("exposure/100")), prediction=pred, needs=needs),
        Contrast.paired("id − id_b (the null)", "two samples of the training distribution: should hold 0",
                        per_seed(runs, gap("id_b"))),
    ]
    if "0" in bins and "100" in bins:
        result.contrasts.append(Contrast.paired(
            "exposure 100 − exposure 0", "density on bios of people with 100 relative mentions minus the "
            "roster's bin 0 (in the text, rarely)", per_seed(runs, gap("exposure/0")),
            per_seed(runs, gap("exposure/100"))))
    x, series = curve_series(runs, {p: f"sparsity/{p}/mean" for p in ("id", "shuffled", "novel")})
    _, reference = curve_series(runs, {p: f"sparsity/{p}/mean" for p in ("id_b", "random")})
    result.figures = [
        Figure("density_over_training", "Density (share of MLP units active) over training, by probe", "step",
               "density", x, series, reference),
        Figure("density_by_exposure", "Density at the end by the entity's exposure", "probe", "density",
               [f"exposure/{b}" for b in bins] + ["novel"],
               {ARM: [result.arms[ARM][f"density/exposure/{b}"] for b in bins] + [result.arms[ARM]["density/novel"]]},
               kind="bar"),
    ]
    result.notes = [
        "Density: `sparsity/<probe>/mean`, the share of MLP units whose pre-activation is > 0, averaged over "
        "tokens and layers; each gap is the run's `sparsity/gap/<probe>` (id minus the probe) with its "
        "within-run standard error. The id_b gap (two samples of the training distribution) is the null "
        "probe: its gate asks that it show nothing; the margin is fixed in the claim's code "
        f"({DENSITY_MARGIN:g}), not taken from any run's standard error.",
    ]
    result.setup = setup(ctx, preset, runs, seconds, started)
    return result


# ---- sparsify-difficulty -----------------------------------------------------------------------------


DIFFICULTY = "sparsify-difficulty"
DIFFICULTY_SENTENCE = (
    "Harder or unfamiliar input gives sparser states: held-out harder arithmetic levels give sparser MLP states "
    "and a more concentrated last-layer state than the trained levels, and problems the model gets wrong are "
    "sparser than those it gets right."
)
DIFFICULTY_PRIMARY = "trained − held-out levels"
# MLP density differences: DENSITY_MARGIN, for the same reason (density-familiarity above).
# Last-layer shares (top-5% energy and entropy rank / d, both in [0, 1]; a uniform state has 0.05 and
# 1): two points of the share, a fiftieth of its scale. Fixed here, before any run; no run's noise.
LASTLAYER_MARGIN = 0.02
LASTLAYER_MARGIN_NOTE = ("margin 0.02: two points of a share in [0, 1] (top-5% energy; entropy rank over the "
                         "width), a fiftieth of its scale")


@torch.no_grad()
def prompt_density(model, tokenizer, prompts: list[str], eot: int, device, batch_size: int) -> list[float]:
    """Per prompt, the share of MLP units with pre-activation > 0 over its tokens and every layer."""
    ids = [[eot, *e.ids][-model.config.block_size:] for e in tokenizer.encode_batch(prompts, add_special_tokens=False)]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        by_length.setdefault(len(row), []).append(i)
    out = [float("nan")] * len(prompts)
    for rows in by_length.values():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            record: dict = {}
            model(torch.tensor([ids[i] for i in chunk], device=device), record=record)
            active = torch.stack([(pre > 0).float().mean(dim=(1, 2)) for pre in record["mlp_pre"]]).mean(0)
            for r, i in enumerate(chunk):
                out[i] = float(active[r])
    return out


def evaluate_problems(run: Run, seed: int, preset: Preset, device) -> dict:
    """Held-out problems of every level: each one's greedy correctness (with its thought) and density."""
    loaded = load_gpt(str(run.checkpoint), run.spec.arm)
    model = loaded.model.to(device).eval()
    tokenizer = loaded.tokenizer
    eot = tokenizer.token_to_id("<|endoftext|>")
    exclude = training_questions(loaded.data_hparams)
    trained = set(loaded.data_hparams.get("levels") or world.ARITH_LEVELS)
    complete = GreedyCompleter.for_model(model, tokenizer, eot, preset.batch_size)
    levels = {}
    for level in world.ARITH_LEVELS:
        items, info = arith_items(world_seed(seed, level, "study/difficulty/arith"), level, preset.problems, exclude)
        if not items:
            continue
        acc = score(complete, items, token_budget(items, tokenizer))
        dens = prompt_density(model, tokenizer, [it.prompt for it in items], eot, device, preset.batch_size)
        levels[str(level)] = {"correct": [bool(o) for o in acc.outcomes], "density": dens,
                              "trained": level in trained, "held_out": info["held_out"]}
    return levels


def cached_problems(ctx: StudyContext, run: Run, seed: int, preset: Preset, device) -> dict:
    key = fingerprint(checkpoint_key(run.checkpoint), preset.problems, seed, "difficulty/v1")
    path = ctx.folder / f"problems-seed{seed}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved["levels"]
    except (OSError, json.JSONDecodeError):
        pass
    ctx.progress(f"seed {seed}: decoding held-out problems of every level")
    levels = evaluate_problems(run, seed, preset, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "levels": levels}) + "\n", encoding="utf-8")
    return levels


MIN_OUTCOMES = 10  # problems right and wrong a level needs before their densities are compared


def mixed_levels(levels: dict, minimum: int = MIN_OUTCOMES) -> list[str]:
    """The levels with at least `minimum` problems right and `minimum` wrong."""
    return [k for k, lv in levels.items()
            if minimum <= sum(lv["correct"]) <= len(lv["correct"]) - minimum]


def correct_minus_wrong(levels: dict, minimum: int = MIN_OUTCOMES) -> float:
    """Density when right minus when wrong, within each level with `minimum` of each, averaged over
    those levels (so that a level's difficulty does not pass for a per-problem effect)."""
    diffs = []
    for k in mixed_levels(levels, minimum):
        dens, right = np.asarray(levels[k]["density"]), np.asarray(levels[k]["correct"], bool)
        diffs.append(float(dens[right].mean() - dens[~right].mean()))
    return float(np.mean(diffs)) if diffs else float("nan")


def sparsify_difficulty(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    device = device_of(ctx.device)
    problems = {seed: cached_problems(ctx, by_arm[ARM], seed, preset, device) for seed, by_arm in runs.items()}
    result = ClaimResult(DIFFICULTY, DIFFICULTY_SENTENCE, {}, list(ctx.seeds))
    trained = lambda r: float(np.mean([at(r, f"sparsity/level/{k}/mean") for k in (1, 2, 3)]))  # noqa: E731
    held = lambda r: float(np.mean([at(r, f"sparsity/ood/level/{k}/mean") for k in (4, 5)]))  # noqa: E731
    mixed = {s: len(mixed_levels(p)) for s, p in problems.items()}
    solved = {s: sum(sum(lv["correct"]) for lv in p.values()) for s, p in problems.items()}
    result.gates = [
        runs_gate(runs),
        null_probe_gate(runs, "sparsity/gap/id_b/z", "id − id_b"),
        Gate("right-and-wrong", f"does the model get at least {MIN_OUTCOMES} problems right and {MIN_OUTCOMES} wrong "
             "within some level (so that their densities can be compared), every seed?",
             all(m > 0 for m in mixed.values()),
             "; ".join(f"seed {s}: {solved[s]} right of {sum(len(lv['correct']) for lv in problems[s].values())}, "
                       f"{mixed[s]} level(s) with {MIN_OUTCOMES} of each" for s in sorted(problems))),
        capability_gate(runs, thinking_gate, "thinks",
                        "does the model solve arithmetic by thinking: greedy accuracy with a thought at level 2 >= 0.5 "
                        "on >= 256 held-out problems (thought_eval), every seed?"),
    ]
    result.primary = DIFFICULTY_PRIMARY
    pred = Prediction(1, DENSITY_MARGIN, DENSITY_MARGIN_NOTE)
    ll = lambda stat: (lambda r: at(r, f"lastlayer/gap/level5/{stat}"))  # noqa: E731
    metrics = {
        "density trained levels 1-3": per_seed(runs, trained),
        "density held-out levels 4-5": per_seed(runs, held),
        **{f"accuracy level {k}": {s: float(np.mean(p[k]["correct"])) for s, p in problems.items() if k in p}
           for k in map(str, world.ARITH_LEVELS)},
        **{f"density level {k} (decoded problems)": {s: float(np.mean(p[k]["density"])) for s, p in problems.items()
                                                     if k in p} for k in map(str, world.ARITH_LEVELS)},
    }
    for stat in ("top5_energy", "entropy_rank", "hoyer"):
        metrics[f"last layer {stat} level 1 − level 5"] = per_seed(runs, ll(stat))
    result.arms[ARM] = metrics
    needs = ("learns-the-text", "null-probe-quiet")
    result.contrasts = [
        Contrast.paired(DIFFICULTY_PRIMARY, "MLP density on arithmetic of levels 1-3 minus held-out levels "
                        "4-5 (the runs' level probes)", per_seed(runs, trained), per_seed(runs, held),
                        prediction=pred, needs=needs),
        Contrast.paired("last layer top-5% energy, level 1 − level 5", "Jin et al.: a harder level concentrates "
                        "the final state (more energy in its top 5%)", per_seed(runs, ll("top5_energy")),
                        prediction=Prediction(-1, LASTLAYER_MARGIN, LASTLAYER_MARGIN_NOTE), needs=needs),
        Contrast.paired("last layer entropy rank, level 1 − level 5", "a sparser final state has a lower entropy "
                        "rank", per_seed(runs, ll("entropy_rank")),
                        prediction=Prediction(1, LASTLAYER_MARGIN, LASTLAYER_MARGIN_NOTE), needs=needs),
        Contrast.paired("right − wrong (within a level)", "per-problem density of problems solved minus problems "
                        "missed, within each level that has both, averaged over levels",
                        {s: correct_minus_wrong(p) for s, p in problems.items()}, prediction=pred,
                        needs=needs + ("right-and-wrong", "thinks")),
    ]
    levels = [str(k) for k in world.ARITH_LEVELS]
    result.figures = [
        Figure("density_by_level", "Per-problem MLP density by arithmetic level (1-3 trained, 4-5 held out)",
               "level", "density", levels, {ARM: [metrics[f"density level {k} (decoded problems)"] for k in levels]},
               kind="bar"),
        Figure("accuracy_by_level", "Greedy accuracy (with its thought) by level", "level", "accuracy", levels,
               {ARM: [metrics[f"accuracy level {k}"] for k in levels]}, kind="bar"),
    ]
    result.notes = [
        "Per-problem numbers: up to the preset's problems per level from a held-out stream (problems in the "
        "training text left out where the level has others), decoded greedily with a thought and scored by "
        "exact `A: n`; a problem's density is that of its prompt's tokens, every layer. The within-level "
        "difference keeps a level's difficulty from passing for a per-problem effect.",
        "Last-layer measures (`lastlayer/gap/level5/<stat>`: level 1's mean minus level 5's, Jin et al. arXiv "
        "2603.03415) on the instrument's own held-out problems.",
    ]
    result.setup = setup(ctx, preset, runs, seconds, started, problems=f"{preset.problems} per level, levels "
                         f"{', '.join(levels)}")
    return result


# ---- hierarchy ---------------------------------------------------------------------------------------


HIERARCHY = "hierarchy"
HIERARCHY_SENTENCE = (
    "Features climb a hierarchy across layers: what a linear probe reads beyond its control task sits higher in "
    "the network for conceptual, functional and output labels than for lexical ones, at two model sizes."
)
HIERARCHY_PRIMARY = f"higher tiers − lexical ({ARM})"
# Depth runs from 0 (first block) to 1 (last): a tenth of the network's depth, less than one block of
# the 4-layer model, is the smallest difference of interest. Fixed here, before any run.
DEPTH_MARGIN = 0.1
DEPTH_MARGIN_NOTE = "margin 0.1: a tenth of the network's depth (less than one of the 4-layer model's blocks)"


def label_depths(run: Run) -> dict[str, float]:
    """Per probe label, the selectivity-weighted mean depth (0: first block, 1: last) of its positive
    selectivity; labels with none anywhere are left out."""
    names = sorted({t.split("/")[2] for t in scalars(run) if t.startswith("layers/probe/") and t.endswith("/peak_layer")})
    depths = {}
    for name in names:
        sel = []
        i = 0
        while math.isfinite(v := at(run, f"layers/layer{i}/probe/{name}/selectivity")):
            sel.append(max(v, 0.0))
            i += 1
        if len(sel) > 1 and sum(sel) > 0:
            depths[name] = float(np.dot(np.arange(len(sel)) / (len(sel) - 1), sel) / sum(sel))
    return depths


def tier_depth(run: Run, tiers: tuple[str, ...]) -> float:
    values = [d for name, d in label_depths(run).items() if tier_of(name) in tiers]
    return float(np.mean(values)) if values else float("nan")


def readable(run: Run, tiers: tuple[str, ...]) -> bool:
    """Some label of `tiers` is read beyond its control at its peak layer (selectivity / se > 3)."""
    for tag in scalars(run):
        if tag.startswith("layers/probe/") and tag.endswith("/peak_layer") and tier_of(tag.split("/")[2]) in tiers:
            name, peak = tag.split("/")[2], int(at(run, tag))
            sel = at(run, f"layers/layer{peak}/probe/{name}/selectivity")
            se = at(run, f"layers/layer{peak}/probe/{name}/selectivity_se")
            if se > 0 and sel / se > NULL_Z:
                return True
    return False


def hierarchy(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx, (ARM, SMALL_ARM))
    result = ClaimResult(HIERARCHY, HIERARCHY_SENTENCE, {}, list(ctx.seeds))
    result.gates = [runs_gate(runs, ARM), runs_gate(runs, SMALL_ARM)]
    result.gates[1].name = "learns-the-text-small"
    for arm in (ARM, SMALL_ARM):
        rows = {seed: (readable(b[arm], ("lexical",)), readable(b[arm], HIGHER_TIERS)) for seed, b in runs.items()}
        result.gates.append(Gate(
            f"probes-read-{arm}", f"in {arm}, does the probe read a lexical label and a higher-tier label beyond its "
            f"control (selectivity / se > {NULL_Z:g} at the peak layer), every seed?",
            all(a and b for a, b in rows.values()),
            "; ".join(f"seed {s}: lexical {'yes' if a else 'no'}, higher {'yes' if b else 'no'}" for s, (a, b) in rows.items())))
    result.primary = HIERARCHY_PRIMARY
    pred = Prediction(1, DEPTH_MARGIN, DEPTH_MARGIN_NOTE)
    for arm in (ARM, SMALL_ARM):
        metrics = {f"depth/{tier}": per_seed(runs, lambda r, t=tier: tier_depth(r, (t,)), arm)
                   for tier in TIER_ORDER[:-1]}
        result.arms[arm] = metrics
        needs = ("learns-the-text" if arm == ARM else "learns-the-text-small", f"probes-read-{arm}")
        result.contrasts.append(Contrast.paired(
            f"higher tiers − lexical ({arm})", "selectivity-weighted depth of conceptual, functional and output "
            "labels minus lexical ones (0: first block, 1: last)",
            per_seed(runs, lambda r: tier_depth(r, HIGHER_TIERS), arm), per_seed(runs, lambda r: tier_depth(r, ("lexical",)), arm),
            prediction=pred, needs=needs))
    tiers = list(TIER_ORDER[:-1])
    result.figures = [Figure("depth_by_tier", "Selectivity-weighted depth of each tier's labels (0: first block, "
                             "1: last)", "tier", "depth", tiers,
                             {arm: [result.arms[arm][f"depth/{t}"] for t in tiers] for arm in (ARM, SMALL_ARM)},
                             kind="bar")]
    result.notes = [
        "Per label (token, digit: lexical; entity, attribute, town: conceptual; operator, carry, task: functional; "
        "answer: output), the final measurement's selectivity per layer (probe accuracy minus its Hewitt & Liang "
        "control task's, lamina.instrument.hierarchy); its depth is the mean layer position weighted by the "
        "positive selectivity; a tier's depth is the mean of its labels'. Read against the control task, a label "
        "that is only memorised token identity gives no selectivity and no depth.",
    ]
    result.setup = setup(ctx, preset, runs, seconds, started)
    return result


# ---- modularity --------------------------------------------------------------------------------------


MODULARITY = "modularity"
MODULARITY_SENTENCE = (
    "Compositional tasks live in separable modules: co-activation modules form above their null, ablating one "
    "damages some tasks more than others beyond chance, and the same task-damage profiles recur across seeds."
)
# The primary: what training adds to Q above its null (step 0 as the reference). "Q above its null"
# and "held-out Q above its null" are descriptive: the permutation null erases what any network
# inherits from structured input, so an untrained one clears it too (they cannot fail).
MODULARITY_PRIMARY = "learned: Q above its shuffled-weights null, end − step 0"
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
    while math.isfinite(at(run, f"modularity/layer{i}/q")):
        i += 1
    return i


def mean_over_layers(run: Run, fn) -> float:
    values = [fn(run, i) for i in range(layers_of(run))]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def damage_profiles(run: Run, layer: int) -> tuple[np.ndarray, list[str]]:
    """[modules, tasks] loss increase of ablating each module of `layer` at the final measurement."""
    prefix = f"modularity/layer{layer}/ablation/m"
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


def cross_seed_matches(runs: dict[int, dict[str, Run]], draws: int = 200) -> dict[str, dict]:
    """Per pair of seeds, the layer-averaged match minus its null mean, and each layer's numbers."""
    seeds = sorted(runs)
    out = {}
    for i, s in enumerate(seeds):
        for t in seeds[i + 1:]:
            layers = []
            for layer in range(layers_of(runs[s][ARM])):
                a, tasks_a = damage_profiles(runs[s][ARM], layer)
                b, tasks_b = damage_profiles(runs[t][ARM], layer)
                if tasks_a != tasks_b or min(a.shape[0], b.shape[0]) < 2 or a.shape[1] < 3 or np.isnan(a).any() or np.isnan(b).any():
                    continue
                score, null_mean, null_std = profile_match(a, b, draws, world_seed(s * 1000 + t, layer, "study/match"))
                layers.append({"layer": layer, "score": score, "null_mean": null_mean, "null_std": null_std})
            if layers:
                out[f"{s}-{t}"] = {"excess": float(np.mean([x["score"] - x["null_mean"] for x in layers])),
                                   "null_std": float(np.mean([x["null_std"] for x in layers])), "layers": layers}
    return out


def modularity(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    result = ClaimResult(MODULARITY, MODULARITY_SENTENCE, {}, list(ctx.seeds))
    q_excess = lambda r: mean_over_layers(r, lambda r, i: at(r, f"modularity/layer{i}/q") -  # noqa: E731
                                          at(r, f"modularity/layer{i}/q_null_hi"))
    heldout_excess = lambda r: mean_over_layers(r, lambda r, i: at(r, f"modularity/layer{i}/q_heldout") -  # noqa: E731
                                                at(r, f"modularity/layer{i}/q_null_hi"))
    spec_excess = lambda r: mean_over_layers(r, lambda r, i: at(r, f"modularity/layer{i}/specificity") - (  # noqa: E731
        at(r, f"modularity/layer{i}/specificity_null_mean") + 2 * at(r, f"modularity/layer{i}/specificity_null_std")))
    result.gates = [
        runs_gate(runs),
        capability_gate(runs, strings_gate, "tasks-learned",
                        "has the model learned at least 3 string tasks (loss below 0.5 x the task's chance loss), "
                        "so that an ablation's damage can differ between tasks, every seed?"),
    ]
    matches = cross_seed_matches(runs) if len(runs) > 1 else {}
    pair_keys = {k: i for i, k in enumerate(matches, 1)}
    # Filan et al. 2021 (arXiv 2103.03386): the same network with each weight matrix's entries shuffled
    # (lamina.instrument.modularity): what Q an arrangement of these weights gets by chance. At step 0
    # the weights are exchangeable with their shuffles, so the step-0 excess is ~0 by construction,
    # and the end's excess over it is what training arranged.
    shuffled_excess = lambda step: (lambda r: mean_over_layers(r, lambda r, i: at(  # noqa: E731
        r, f"modularity/layer{i}/q", step) - at(r, f"modularity/layer{i}/q_shuffled_mean", step)))
    shuffled_z = lambda r: mean_over_layers(r, lambda r, i: at(r, f"modularity/layer{i}/q_shuffled_z"))  # noqa: E731
    result.arms[ARM] = {
        "Q − shuffled-weights null mean, mean over layers": per_seed(runs, shuffled_excess(None)),
        "Q at step 0 − shuffled-weights null mean": per_seed(runs, shuffled_excess(0)),
        "z against the shuffled-weights null, mean over layers": per_seed(runs, shuffled_z),
        "Q − permutation null top (2 sd), mean over layers": per_seed(runs, q_excess),
        "held-out Q − permutation null top": per_seed(runs, heldout_excess),
        "specificity − null top (2 sd)": per_seed(runs, spec_excess),
    }
    needs = ("learns-the-text",)
    result.primary = MODULARITY_PRIMARY
    n_pairs = len(runs) * (len(runs) - 1) // 2
    result.contrasts = [
        Contrast.paired(MODULARITY_PRIMARY, "Q minus the mean Q of the same network with each weight matrix's "
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
        Contrast("modules match across seeds", "per pair of seeds (keys: pairs, not seeds), the mean correlation "
                 "of matched modules' task-damage profiles minus its task-permutation null, averaged over layers; "
                 "the pairs share seeds, so the interval is optimistic",
                 {pair_keys[k]: v["excess"] for k, v in matches.items()},
                 prediction=Prediction(1, MATCH_MARGIN, MATCH_MARGIN_NOTE), needs=needs + ("tasks-learned",),
                 planned=tuple(range(1, n_pairs + 1))),
    ]
    x, series = curve_series(runs, {f"layer{i} Q": f"modularity/layer{i}/q" for i in range(layers_of(
        next(iter(runs.values()))[ARM]))})
    _, reference = curve_series(runs, {f"layer{i} shuffled weights": f"modularity/layer{i}/q_shuffled_mean"
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
        "correlations; the null permutes the tasks of one seed (200 draws). Pairs: "
        + ("; ".join(f"{k}: {v['excess']:+.3f} (null sd {v['null_std']:.3f})" for k, v in matches.items()) or "none")
        + ".",
    ]
    result.setup = setup(ctx, preset, runs, seconds, started)
    return result


# ---- context-vs-prior --------------------------------------------------------------------------------


CONTEXT = "context-vs-prior"
CONTEXT_SENTENCE = (
    "Strong priors override context: a fact the model has seen often is followed less when the context "
    "contradicts it than a fact it has rarely seen, and a steering vector moves it back toward the context."
)
CONTEXT_PRIMARY = "follow: exposure 100 − exposure 0"
# Follow rates are shares of prompts: five points (about 1 in 20 prompts answered the other way) is the
# smallest change of interest. Fixed here, before any run; no run's noise.
FOLLOW_MARGIN = 0.05
FOLLOW_MARGIN_NOTE = "margin 0.05: five points of follow rate (about 1 in 20 prompts answered the other way)"


def context_vs_prior(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    result = ClaimResult(CONTEXT, CONTEXT_SENTENCE, {}, list(ctx.seeds))
    tag = lambda name: (lambda r: at(r, f"eval/context/{name}"))  # noqa: E731
    bins = [b for b in ("0", "1", "10", "100") if has_values(per_seed(runs, tag(f"follow/{b}")))]
    knows = {s: at(b[ARM], "eval/context/greedy_prior/100") for s, b in runs.items()}
    norms = {s: (at(b[ARM], "eval/context/steer_norm"), at(b[ARM], "eval/context/steer_norm_null")) for s, b in runs.items()}
    result.gates = [
        runs_gate(runs),
        capability_gate(runs, reads_context_gate, "reads-context",
                        "does the model read its context: on counterfactual contexts about people it has never seen "
                        "(exposure bin 0, no prior to override), does it prefer the context's answer beyond the "
                        "forced choice's chance and beyond the untrained network's rate at step 0 (follow/0 Wilson "
                        "lower bound > 0.5 and > the step-0 rate, on >= 256 prompts), every seed?"),
        Gate("knows-priors", "without a contradicting context, does the model hold a prior at exposure 100 (greedy "
             "gives the memorised answer on some prompts), every seed?",
             all(math.isfinite(v) and v > 0 for v in knows.values()),
             "; ".join(f"seed {s}: {v:.3f}" for s, v in knows.items())),
        Gate("steering-vector", "is there a direction to steer along: the fitted vector's norm above the norm a "
             "difference of group means has when the groups are one population (`steer_norm_null`), every seed?",
             all(norm > null for norm, null in norms.values()),
             "; ".join(f"seed {s}: {norm:.3f} vs null {null:.3f}" for s, (norm, null) in norms.items())),
    ]
    result.arms[ARM] = {**{f"follow/{b}": per_seed(runs, tag(f"follow/{b}")) for b in bins},
                        **{f"follow steered/{b}": per_seed(runs, tag(f"follow_steered/{b}")) for b in bins},
                        **{f"follow steered random/{b}": per_seed(runs, tag(f"follow_steered_random/{b}")) for b in bins},
                        "steer norm": per_seed(runs, tag("steer_norm")),
                        "steer norm null": per_seed(runs, tag("steer_norm_null"))}
    needs = ("learns-the-text", "reads-context", "knows-priors")
    result.primary = CONTEXT_PRIMARY
    margin = Prediction(-1, FOLLOW_MARGIN, FOLLOW_MARGIN_NOTE)
    result.contrasts = [
        Contrast.paired(CONTEXT_PRIMARY, "share of counterfactual prompts answered from the "
                        "context, people seen 100x minus people of bin 0", per_seed(runs, tag("follow/100")),
                        per_seed(runs, tag("follow/0")), prediction=margin, needs=needs),
        Contrast.paired("steering gain at exposure 100", "follow rate with the context-following vector added minus "
                        "without, on the held-out half", per_seed(runs, tag("steer_gain/100")),
                        prediction=Prediction(1, FOLLOW_MARGIN, FOLLOW_MARGIN_NOTE),
                        needs=needs + ("steering-vector",)),
        Contrast.paired("steered − random vector at exposure 100", "the vector against a random one of the same norm",
                        per_seed(runs, tag("follow_steered/100")), per_seed(runs, tag("follow_steered_random/100")),
                        prediction=Prediction(1, FOLLOW_MARGIN, FOLLOW_MARGIN_NOTE),
                        needs=needs + ("steering-vector",)),
    ]
    result.figures = [Figure("follow_by_exposure", "Follow rate (answer from the context) by exposure bin", "exposure bin",
                             "follow rate", bins, {
                                 "unsteered": [result.arms[ARM][f"follow/{b}"] for b in bins],
                                 "steered": [result.arms[ARM][f"follow steered/{b}"] for b in bins],
                                 "random vector": [result.arms[ARM][f"follow steered random/{b}"] for b in bins]},
                             kind="bar")]
    result.notes = ["Counterfactual prompts (lamina.instrument.context): a context states an attribute of a person "
                    "that contradicts the bios the model was trained on; follow = the context's answer scores above "
                    "the memorised one. Steering: the mean residual difference between following and not, fitted on "
                    "one half, applied to the other; against a random vector of the same norm."]
    result.setup = setup(ctx, preset, runs, seconds, started)
    return result


DENSITY_CLAIM = Claim(DENSITY, DENSITY_SENTENCE, density_familiarity, group=ARM)
DIFFICULTY_CLAIM = Claim(DIFFICULTY, DIFFICULTY_SENTENCE, sparsify_difficulty, group=ARM)
HIERARCHY_CLAIM = Claim(HIERARCHY, HIERARCHY_SENTENCE, hierarchy, group=ARM)
MODULARITY_CLAIM = Claim(MODULARITY, MODULARITY_SENTENCE, modularity, group=ARM)
CONTEXT_CLAIM = Claim(CONTEXT, CONTEXT_SENTENCE, context_vs_prior, group=ARM)
CLAIMS = (DENSITY_CLAIM, DIFFICULTY_CLAIM, HIERARCHY_CLAIM, MODULARITY_CLAIM, CONTEXT_CLAIM)

__all__ = ["CLAIMS", "PRESETS", "Preset", "TOY", "cross_seed_matches", "label_depths", "match_score", "profile_match",
           "prompt_density", "specs_for"]
