"""The runs of `reasoning-in-pretraining` (lamina.study.claims.reasoning_in_pretraining; `elicitation`
reads the same): its config files, its presets, each arm's configs and CLI words, the FLOP matching
of `ntp-flops`, and what each fit cost.

Per seed s (every fit of a seed gets seed_everything = data.seed = s; the arms of a seed share their
pretraining and their batches, and differ only where the arm says):

- `pretrain` (configs/rlp-study-pretrain.yaml): next-token pretraining of the tiny GPT on world
  arithmetic at levels 1-3 with its worked thoughts (`data.thoughts: keep`): the base;
- phase 2, each from the phase-1 checkpoint (`model.init_from`) on the same arithmetic with its
  thoughts stripped (`data.thoughts: strip`), the same batches and the same lr
  (rlp-study-phase2.yaml): `rlp` (+ rlp-study-rlp.yaml: thoughts at the thought slots, reward over
  the answer line), `rlp-shuffled` (+ rlp-study-shuffled.yaml: rewards moved to another group),
  `rlp-paper` (+ rlp-study-paper.yaml: uniform positions, K = 1), `ntp-tokens` (the phase-2 file
  alone: next-token at the same steps and batches) and `ntp-flops` (next-token for as many steps as
  match the `rlp` run's training FLOPs, read from its checkpoint).

Phase 2's length and lr come from a measurement: see rlp-study-phase2.yaml's comments.
"""

from __future__ import annotations

import json
import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import ConfigError
from lamina.study.claim import Presets, StudyContext, repo_configs, study_configs, word_value, yaml_value
from lamina.study.runs import Run, RunSpec

STUDY = "reasoning-in-pretraining"  # the claim these runs are fitted for: its messages and its folder name it
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
# The base-thinks gate (lamina.study.claims.reasoning_in_pretraining): the base's score in this range
# in every seed, where it can do the task with room above; a preset may widen it (the toy one).
GATE_RANGE = (0.15, 0.85)


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset: CLI words after the configs (every run, phase 1, phase-2 arms, RLP arms
    only), steps (None: the configs' trainer.max_steps), the gate's accuracy range, and the
    evaluation outside the fits (problems per seed, the base's samples per problem, the thought
    budget: None, the longest worked thought at the problems' level; rows decoded together). The
    presets' values, and the reasoning for each: configs/study/reasoning-in-pretraining.yaml (these
    defaults serve code that builds one)."""

    every: tuple[str, ...] = ()
    pretrain: tuple[str, ...] = ()
    phase2: tuple[str, ...] = ()
    rlp: tuple[str, ...] = ()
    rlp_only: tuple[str, ...] = ()  # the `rlp` arm alone (after `rlp`)
    pretrain_steps: int | None = None
    phase2_steps: int | None = None
    gate_range: tuple[float, float] = GATE_RANGE
    problems: int = 512  # held-out problems per seed: half choose formats and k, half are scored
    samples: int = 16  # the base's sampled answers per problem (pass@k for k <= samples)
    thought_budget: int | None = None
    eval_batch: int = 1024


PRESETS = Presets(STUDY, Preset, repo_configs())  # cpu, gpu, test: configs/study/reasoning-in-pretraining.yaml
CPU, GPU, TOY = PRESETS["cpu"], PRESETS["gpu"], PRESETS.toy


# ---- each arm's configs, words and steps -------------------------------------------------------------------


def config_paths(folder: Path) -> dict[str, Path]:
    return study_configs(STUDY, folder, CONFIGS)


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


def phase2_steps_of(preset: Preset, paths: dict[str, Path]) -> int:
    """Phase 2's steps: the preset's, else the configs' (every RLP arm's the same)."""
    if preset.phase2_steps:
        return preset.phase2_steps
    steps = yaml_value([paths["phase2"]], "trainer", "max_steps")
    for arm in RLP_ARMS:
        if yaml_value(arm_configs(paths, arm), "trainer", "max_steps") != steps:
            raise ConfigError(f"study {STUDY}: arm {arm} sets trainer.max_steps, expected phase 2's {steps}")
    if not isinstance(steps, int):
        raise ConfigError(f"study {STUDY}: expected trainer.max_steps in {paths['phase2']}")
    return steps


def flop_matched_steps(rlp_flops: float, ntp_flops: float, ntp_steps: int) -> int:
    """Next-token steps whose training FLOPs reach the RLP run's: ceil(rlp / (ntp per step))."""
    if not (rlp_flops > 0 and ntp_flops > 0 and ntp_steps > 0):
        raise ConfigError(f"study {STUDY}: cannot match FLOPs (rlp {rlp_flops}, next-token {ntp_flops} in {ntp_steps} steps)")
    return max(1, math.ceil(rlp_flops / (ntp_flops / ntp_steps) - 1e-9))


def ntp_flops_words(paths, words: tuple[str, ...], steps: int, phase2_steps: int) -> tuple[str, ...]:
    """ntp-flops' validation cadence scaled by its steps over phase 2's (it validates at about the
    FLOPs the rlp arm validates at); its checkpoint lands on its last step."""
    configs = [paths["phase2"]]
    every = setting(configs, words, "trainer.val_check_interval")
    extra = ["--trainer.val_check_interval", str(max(1, round(every * steps / phase2_steps)))] if every else []
    return tuple(extra) + ("--checkpoint.every_n_train_steps", str(steps))


def checkpoint_counters(path: Path) -> dict:
    """global_step, tokens seen and training FLOPs of a lamina checkpoint."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a torn or foreign file is the study's to report
        raise ConfigError(f"study {STUDY}: cannot read {path} ({err})") from err
    state = checkpoint.get("lamina", {})
    return {"step": int(checkpoint.get("global_step", 0)), "tokens": float(state.get("tokens_seen", 0)),
            "flops": float(state.get("flops_seen", 0.0))}


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


# ---- what the fits cost, and lamina compare over them ----------------------------------------------------


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


__all__ = ["ARMS", "CONFIGS", "COST", "CPU", "GATE_RANGE", "GPU", "PRESETS", "Preset", "RLP_ARMS", "STUDY", "TOY",
           "arm_configs", "arm_words", "checkpoint_counters", "config_paths", "cpu_seconds", "flop_matched_steps",
           "ntp_flops_words", "phase2_steps_of", "phase_data", "run_compare", "seconds_text", "timed_run"]
