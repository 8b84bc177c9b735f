"""The world-v2 pretraining runs that five claims read (lamina.study.claims: density-familiarity,
sparsify-difficulty, hierarchy, modularity and context-vs-prior), and the readers of their scalars.

Per seed s two runs are trained (or reused) once and shared by the five claims:

- `world-v2`: configs/world-v2-tiny.yaml (4 layers, 128 wide; all five world families, arithmetic
  levels 1-3 with 4-5 held out, two string compositions held out, the people roster in exposure
  bins 0/1/10/100, the context family), instrumentation every `every` steps;
- `world-v2-small`: the same data with a smaller model (the preset's `small` words), for the
  hierarchy at a second size.

Every number is the run's own instrumentation (its TensorBoard scalars: the measures beside their
nulls, see docs/design.md "Measures"), except what a claim decodes itself from the final checkpoint
(sparsify-difficulty's per-problem correctness). Contrasts are per-seed values (paired by seed where
they are differences) read by lamina.verdict's rule; each claim's file names its primary contrast and
fixes its margins (the smallest effects of interest, each with its reason, never derived from a run's
own noise) at its top.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from lamina import tags
from lamina.compare.runs import read_scalars
from lamina.study.claim import Presets, StudyContext, preset_for, repo_configs, study_configs
from lamina.study.report import Gate, PerSeed
from lamina.study.runs import Run, RunSpec

CONFIG = "world-v2-tiny.yaml"
ARM, SMALL_ARM = "world-v2", "world-v2-small"
NULL_Z = 3.0  # |z| below this on a probe with no structure: no finding (the gates; no margin comes from it)


@dataclass(frozen=True)
class Preset:
    """CLI words for every run, for the small model only, the steps, the instrumentation cadence,
    and the per-problem evaluation's items per arithmetic level and batch. The presets' values, and
    the reasoning for each: configs/study/world-v2.yaml (these defaults serve code that builds one)."""

    every: tuple[str, ...] = ()
    small: tuple[str, ...] = ("--model.n_layer", "3", "--model.n_embd", "96")
    steps: int = 600
    measure_every: int = 200
    problems: int = 64
    batch_size: int = 64


PRESETS = Presets(ARM, Preset, repo_configs())  # cpu, gpu, test: configs/study/world-v2.yaml
CPU, GPU, TOY = PRESETS["cpu"], PRESETS["gpu"], PRESETS.toy


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
        SMALL_ARM: RunSpec(SMALL_ARM, (str(config),), seed, preset.steps, words + preset.small + SMALL_ONLY),
    }


# The small model serves the hierarchy's second size only, read at the final measurement: measured at
# step 0 and the end, no light tier, and none of the instruments or gates no claim reads of it.
SMALL_ONLY = ("--instrument.every_n_steps", "1000000", "--instrument.sparsity.light_every_n_steps", "null",
              "--instrument.modularity.enabled", "false", "--instrument.ablation.enabled", "false",
              "--instrument.context.enabled", "false", "--instrument.lastlayer.enabled", "false",
              "--thought_eval.enabled", "false")


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
        start, end = at(by_arm[arm], tags.VAL_BPB, 0), at(by_arm[arm], tags.VAL_BPB)
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
