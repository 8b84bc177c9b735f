"""Claim `reasoning-in-pretraining`: RLP (reinforcement as a pretraining objective, arXiv:2510.01265) on text whose
worked reasoning was stripped teaches a pretrained model to think: its greedy thinking accuracy on
held-out arithmetic ends above where it started (the primary contrast, `rlp − base`), above the
same RLP with shuffled rewards, above next-token training at the same tokens and above next-token
training at the same FLOPs (secondary, Holm-corrected).

Per seed s (every run of a seed gets seed_everything = data.seed = s, so the arms of a seed share
their pretraining, their batches and their evaluation problems, and differ only where the arm says):

1. `pretrain` (configs/rlp-study-pretrain.yaml): next-token pretraining of the tiny GPT on world
   arithmetic at levels 1-3 with its worked thoughts (`data.thoughts: keep`, `level_weights: equal`).
2. Gate `base-thinks`: greedy thinking accuracy at level GATE_LEVEL in the run's last
   thought_eval/step<N>.json lies in GATE_RANGE (out of its 256 held-out problems): the model can do
   the task, and not so well that nothing is left to add. Printed per seed; the study stops with one
   line when it is missed.
3. Phase 2, each from that checkpoint (`model.init_from`) on the same arithmetic with the thoughts
   stripped (`data.thoughts: strip`), the same batches and the same lr (rlp-study-phase2.yaml):
   `rlp` (+ rlp-study-rlp.yaml: thoughts at the thought slots, reward over the answer line),
   `rlp-shuffled` (+ rlp-study-shuffled.yaml: rewards moved to another group), `rlp-paper`
   (+ rlp-study-paper.yaml: uniform positions, K = 1), `ntp-tokens` (the phase-2 file alone: next-token
   at the same steps and batches) and `ntp-flops` (next-token for as many steps as match the `rlp`
   run's training FLOPs, read from its checkpoint; its evaluations at the same FLOPs as rlp's).
4. Gates `room-to-elicit` (the base's pass@k at the gate level, from the `rlp` run's step-0
   evaluation, above its greedy accuracy on the same problems: sampling finds answers greedy decoding
   misses, so there is something for RLP to add) and `power` (from the seed-to-seed spread of the
   primary's per-seed differences, the seeds can tell a difference of twice the margin from none).
5. Contrasts, paired by seed, on the greedy thinking accuracy at GATE_LEVEL at the end of phase 2,
   each predicted > 0 with the margin ACCURACY_MARGIN: the primary rlp − base; secondary rlp −
   rlp-shuffled, rlp − ntp-tokens, rlp − ntp-flops; descriptive rows for the paper's RLP, the other
   levels and the other arms against the base. The elicitation share (of the
   problems an arm solves greedily, the share the base already solved in its k samples: the mean of
   the base's unbiased pass@k over them, lamina.rlp.elicitation_share) is reported per arm and level.
6. `lamina compare` over the phase-2 arms (DIR/reasoning-in-pretraining/compare/): thinking accuracy against
   tokens and FLOPs, paired by seed, with the elicitation share.
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
from lamina.rlp.evaluate import elicitation_share, paired_interval, pass_at_k
from lamina.study.claim import GPU as ON_GPU
from lamina.study.claim import Claim, StudyContext, preset_for, shrunk, study_configs, yaml_value
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, PerSeed, write_report
from lamina.study.report import power_gate as power_gate_of
from lamina.study.runs import Run, RunSpec
from lamina.verdict import Prediction, detectable

NAME = "reasoning-in-pretraining"
SENTENCE = (
    "RLP on text whose worked reasoning was stripped teaches a pretrained model to think: its greedy "
    "thinking accuracy on held-out arithmetic ends above where it started, above RLP with shuffled rewards, "
    "above next-token training at the same tokens and above next-token training at the same FLOPs."
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
    "rlp": "RLP (thought slots, line reward)",
    "rlp-shuffled": "RLP, shuffled rewards",
    "rlp-paper": "RLP as the paper (uniform, K = 1)",
    "ntp-tokens": "next-token, same tokens",
    "ntp-flops": "next-token, same FLOPs",
}
BASE = "base"  # the phase-1 model as phase 2 evaluates it (its step-0 evaluation)
GATE_LEVEL = 2
GATE_RANGE = (0.15, 0.85)
# The primary contrast, named before any run: does RLP end above where it started?
PRIMARY = "rlp − base"
# The smallest accuracy difference of interest, fixed before any run: five points of greedy thinking
# accuracy (about 13 of the 256 level-2 problems), a tenth of the gate's middle accuracy (0.5); a
# smaller change in what the model solves is not what "teaches it to think" means. No run's noise.
ACCURACY_MARGIN = 0.05
ACCURACY_MARGIN_NOTE = ("margin 0.05: five points of thinking accuracy (about 13 of 256 problems), a tenth of the "
                        "gate's middle accuracy 0.5")
POWER = 0.8  # the power gate: an effect of twice the margin is supported 80% of the time


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset: CLI words after the configs (every run, phase 1, phase-2 arms, RLP arms
    only), steps (None: the configs' trainer.max_steps) and the gate's accuracy range."""

    every: tuple[str, ...] = ()
    pretrain: tuple[str, ...] = ()
    phase2: tuple[str, ...] = ()
    rlp: tuple[str, ...] = ()
    rlp_only: tuple[str, ...] = ()  # the `rlp` arm alone (after `rlp`)
    pretrain_steps: int | None = None
    phase2_steps: int | None = None
    gate_range: tuple[float, float] = GATE_RANGE


CPU = Preset()
# gpu: one seed's six fits in about 2 minutes of an H100 (all eight claims' one seed: about 6.5
# minutes, within one 10-minute device call). Reasoning (estimates: no GPU has run these yet):
# - phase 1 as the cpu preset (4 x 128, 800 steps of 32 x 128 tokens): the base-thinks gate was
#   piloted at exactly these settings, so they stay (in bf16-mixed here, the pilots' fp32 there: the
#   gate is read per seed and stops the study in one line if missed). A step is 5.8M FLOPs a token
#   x 4096 tokens, bound by launches: about 4.5 ms, 800 steps about 4 s; its two thought evaluations
#   (612 problems, greedy, one batch of 1024 rows, ~80 decode steps of ~2 ms) under a second each.
#   The rewards are differences of log-probabilities: bf16's rounding of the logits (hundredths of
#   a nat) is small beside their spread (a reward std of about 8.6 at the cpu preset).
# - phase 2: 60 steps (the cpu preset's 30, twice the updates at the same lr) of 16 windows (the
#   cpu preset's 4: 64 positions x 16 thoughts = 1024 thoughts a step, four times the thoughts per
#   update at the same lr, a gradient a quarter as noisy): sampling ~65 decode steps of ~2 ms over
#   1024 rows, then the scoring forwards and one backward (~1e12 FLOPs, milliseconds): about 0.2 s
#   a step, 60 steps about 12 s per RLP arm (three of them); ntp-tokens about 0.3 s.
# - ntp-flops: as many next-token steps as rlp's FLOPs, about 43 a step as at the cpu preset (both
#   grow with the batch): about 2600 steps of ~4.5 ms, about 12 s.
# - evaluations every 20 steps (0, 20, 40, 60; ntp-flops at the same FLOPs), under a second each;
#   the rlp arm's pass@64 at its step 0 (the base) and its end on 128 problems a level (the cpu
#   preset's 32: four times the items the elicitation share's null is read from; level 1 has 100):
#   356 x 64 rows, 23 batches of 1024 x ~80 decode steps of ~2 ms, about 4 s each.
# - data (4 MB of arithmetic, with and without its thoughts, generated on every core), Lightning's
#   setup of six fits, lamina compare over the arms and the two reports' figures: about 45 s.
GPU = Preset(
    every=ON_GPU,
    phase2=("--data.batch_size", "16", "--thought_eval.every_n_steps", "20", "--trainer.val_check_interval", "20",
            "--checkpoint.every_n_train_steps", "20", "--thought_eval.pass_problems", "128"),
    phase2_steps=60,
)
# A handful of steps at toy sizes (the test preset, and a rehearsal of any preset): the code path, not
# a finding. Its words come after the preset's, so each key a preset sets for size is set here again.
TOY = Preset(
    every=("--data.max_bytes", "60000", "--data.val_tokens", "1024", "--model.n_layer", "1", "--model.n_head", "2",
           "--model.n_embd", "16", "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "2",
           "--checkpoint.every_n_train_steps", "2", "--thought_eval.examples_per_level", "6",
           "--thought_eval.max_thought_tokens", "6", "--thought_eval.every_n_steps", "2",
           "--thought_eval.batch_size", "64"),
    pretrain=("--data.batch_size", "4", "--model.warmup_steps", "0"),
    phase2=("--thought_eval.pass_problems", "3", "--model.warmup_steps", "0", "--data.batch_size", "4",
            "--thought_eval.every_n_steps", "2", "--trainer.val_check_interval", "2",
            "--checkpoint.every_n_train_steps", "2"),
    rlp=("--model.rlp.group_size", "2", "--model.rlp.max_thought_tokens", "6",
         "--thought_eval.pass_at", "[1, 2]"),
    rlp_only=("--thought_eval.pass_samples", "2"),
    pretrain_steps=2, phase2_steps=2, gate_range=(0.0, 1.0),
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


def word_value(words: tuple[str, ...], key: str) -> str | None:
    """The value the last `--key value` pair in `words` gives (None: none)."""
    found = None
    for i, word in enumerate(words[:-1]):
        if word == f"--{key}":
            found = words[i + 1]
    return found


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
    """ntp-flops' cadences (evaluations, validation, checkpoints) scaled by its steps over phase 2's, so
    that it evaluates at about the FLOPs the rlp arm evaluates at; its checkpoint lands on its last step."""
    configs = [paths["phase2"]]
    scale = steps / phase2_steps
    extra = []
    for key in ("thought_eval.every_n_steps", "trainer.val_check_interval"):
        every = setting(configs, words, key)
        if every:
            extra += [f"--{key}", str(max(1, round(every * scale)))]
    return tuple(extra) + ("--checkpoint.every_n_train_steps", str(steps))


# ---- what the runs wrote ------------------------------------------------------------------------------


def eval_steps(folder: Path) -> list[int]:
    """The steps of the thought_eval/step<N>.json files of a run folder, in order."""
    found = []
    for path in (folder / "thought_eval").glob("step*.json"):
        digits = path.stem.removeprefix("step")
        if digits.isdigit():
            found.append(int(digits))
    return sorted(found)


def eval_record(folder: Path, step: int | None = None) -> dict[int, dict]:
    """A run's per-problem thought evaluation at `step` (None: its last), {level: record}."""
    steps = eval_steps(folder)
    if not steps:
        raise ConfigError(f"study {NAME}: {folder} holds no thought_eval/step<N>.json (is thought_eval.enabled true?)")
    step = steps[-1] if step is None else step
    path = folder / "thought_eval" / f"step{step}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"study {NAME}: cannot read {path} ({err})") from err
    return {int(level): record for level, record in data.items()}


def accuracy(record: dict, key: str = "think") -> tuple[float, int, int]:
    """(accuracy, correct, problems) of one level's record, greedy with (think) or without (nothink)."""
    outcomes = [int(bool(v)) for v in record.get(key, [])]
    n = len(outcomes)
    return (sum(outcomes) / n if n else math.nan), sum(outcomes), n


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


# ---- gates -------------------------------------------------------------------------------------------------


def fmt3(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def base_thinks(record: dict[int, dict], level: int = GATE_LEVEL, bounds: tuple[float, float] = GATE_RANGE
                ) -> tuple[bool, str]:
    """Phase 1's gate on one seed's last evaluation: greedy thinking accuracy at `level` within `bounds`."""
    lo, hi = bounds
    if level not in record:
        return False, f"no level-{level} problems in the evaluation"
    value, correct, n = accuracy(record[level])
    passed = n > 0 and lo <= value <= hi
    return passed, f"level-{level} thinking accuracy {fmt3(value)} ({correct}/{n}), needs {lo:.2f}-{hi:.2f}"


def base_thinks_gate(records: dict[int, dict[int, dict]], level: int = GATE_LEVEL,
                     bounds: tuple[float, float] = GATE_RANGE) -> Gate:
    checks = {seed: base_thinks(records[seed], level, bounds) for seed in sorted(records)}
    passed = bool(checks) and all(ok for ok, _ in checks.values())
    return Gate("base-thinks", f"does phase 1 think at level {level} (greedy accuracy with a thought, keep-format "
                f"prompts, in [{bounds[0]:.2f}, {bounds[1]:.2f}], every seed)?", passed,
                "; ".join(f"seed {s}: {text}" for s, (_, text) in checks.items()))


def room(record: dict, k: int | None = None) -> dict:
    """The base's room to elicit at one level: its mean pass@k (k: all its samples) and its greedy
    thinking accuracy on the same problems (the first `pass_problems` of the level)."""
    counts = record.get("pass_correct")
    if not counts:
        return {}
    samples = int(record["pass_samples"])
    k = samples if k is None else k
    greedy = [int(bool(v)) for v in record["think"][: len(counts)]]
    passed = float(np.mean([pass_at_k(samples, c, k) for c in counts]))
    return {"pass": passed, "greedy": float(np.mean(greedy)), "n": len(counts), "k": k}


def room_gate(rooms: dict[int, dict], level: int = GATE_LEVEL) -> Gate:
    per, passed = [], bool(rooms)
    for seed in sorted(rooms):
        r = rooms[seed]
        if not r:
            passed = False
            per.append(f"seed {seed}: no pass@k in the rlp run's step-0 evaluation")
            continue
        ok = r["pass"] > r["greedy"]
        passed &= ok
        per.append(f"seed {seed}: pass@{r['k']} {fmt3(r['pass'])} vs greedy {fmt3(r['greedy'])} on {r['n']} problems")
    return Gate("room-to-elicit", f"does the base solve more level-{level} problems in k samples than greedily "
                "(so a better thought policy has something to add), every seed?", passed, "; ".join(per))


def detectable_difference(sd: float, seeds: int) -> float:
    """The smallest true difference beyond a bound that the 95% t-interval over `seeds` seeds clears
    with probability POWER, from the seed-to-seed standard deviation `sd` of the per-seed differences
    (earlier seeds or a pilot): (t(0.975, k - 1) + t(POWER, k - 1)) sd / sqrt(k). The items are the
    same in every seed, so item sampling is not what the interval over seeds is made of."""
    return detectable(sd, seeds, POWER)


def power_gate(differences: PerSeed, seeds: int, level: int = GATE_LEVEL, margin: float = ACCURACY_MARGIN) -> Gate:
    """Can `seeds` seeds tell a difference of twice the margin from none, from the seed-to-seed spread
    of the primary's per-seed differences (rlp − base at `level`)?"""
    return power_gate_of("power", f"can {seeds} seed(s) tell an rlp − base difference of twice the margin from "
                         f"none at level {level} (seed-to-seed spread of the per-seed differences, {POWER:.0%} power, "
                         "two-sided 5%)?", differences, margin, seeds)


def power_so_far(numbers: dict[int, dict], planned: int, level: int = GATE_LEVEL) -> str:
    """The power gate's numbers from the seeds finished so far (earlier seeds as the pilot)."""
    rlp_acc, base_acc = per_seed(numbers, "rlp", level), per_seed(numbers, BASE, level)
    diffs = {s: rlp_acc[s] - base_acc[s] for s in rlp_acc if s in base_acc}
    return power_gate(diffs, planned, level).detail


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


def seed_numbers(pretrain: Run, arms: dict[str, Run], costs: dict[str, dict]) -> dict:
    """Every number of one seed (JSON-able): phase 1's gate, the base at phase 2's start (the rlp
    arm's step-0 evaluation), and per arm its last evaluation, its elicitation share, its counters."""
    gate_record = eval_record(pretrain.folder)
    base_record = eval_record(arms["rlp"].folder, 0)
    levels = sorted(base_record)
    numbers: dict = {
        "gate": {str(lv): dict(zip(("think", "correct", "n"), accuracy(r))) for lv, r in gate_record.items()},
        "gate_step": eval_steps(pretrain.folder)[-1],
        "levels": levels,
        "base": {}, "arms": {}, "signal": rlp_signal(arms["rlp"].folder),
        "costs": costs,
    }
    for level in levels:
        record = base_record[level]
        numbers["base"][str(level)] = {
            "think": accuracy(record)[0], "nothink": accuracy(record, "nothink")[0], "n": accuracy(record)[2],
            "think_items": [int(bool(v)) for v in record["think"]], "room": room(record),
        }
    for arm, run in arms.items():
        record = eval_record(run.folder)
        counters = checkpoint_counters(run.checkpoint)
        k = next((int(r["pass_samples"]) for r in base_record.values() if r.get("pass_correct")), None)
        shares = elicitation_share(record, base_record, k) if k else {}
        numbers["arms"][arm] = {
            "step": eval_steps(run.folder)[-1], **counters,
            "levels": {str(lv): {"think": accuracy(r)[0], "nothink": accuracy(r, "nothink")[0], "n": accuracy(r)[2],
                                 "think_items": [int(bool(v)) for v in r["think"]], "room": room(r)}
                       for lv, r in record.items()},
            "elicitation": {str(lv): {"share": share, "solved": solved} for lv, (share, solved) in shares.items()},
            "k": k,
        }
    return numbers


# ---- the result --------------------------------------------------------------------------------------------


def per_seed(numbers: dict[int, dict], arm: str, level: int, key: str = "think") -> PerSeed:
    out = {}
    for seed, v in numbers.items():
        source = v["base"] if arm == BASE else v["arms"].get(arm, {}).get("levels", {})
        cell = source.get(str(level))
        if cell is not None and cell.get(key) is not None and math.isfinite(cell[key]):
            out[seed] = float(cell[key])
    return out


def mean_of(values: PerSeed) -> float:
    st = summarize([values[s] for s in sorted(values)])
    return st.mean if st.n else math.nan


def within_seed(numbers: dict[int, dict], a: str, b: str, level: int) -> list[str]:
    """Per seed, a − b on the same problems with its 95% t-interval paired over problems (item sampling only)."""
    out = []
    for seed in sorted(numbers):
        ia = numbers[seed]["arms"].get(a, {}).get("levels", {}).get(str(level), {}).get("think_items")
        ib = (numbers[seed]["base"] if b == BASE else numbers[seed]["arms"].get(b, {}).get("levels", {})) \
            .get(str(level), {}).get("think_items")
        if ia and ib and len(ia) == len(ib):
            mean, lo, hi = paired_interval(np.array(ia, dtype=float) - np.array(ib, dtype=float))
            out.append(f"seed {seed}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(ia)} problems")
    return out


def assemble(result: ClaimResult, numbers: dict[int, dict], n_seeds: int, level: int = GATE_LEVEL,
             bounds: tuple[float, float] = GATE_RANGE) -> None:
    """Arms, gates, contrasts, figures and notes of the result from every seed's numbers."""
    seeds = sorted(numbers)
    levels = [int(lv) for lv in numbers[seeds[0]]["levels"]]
    arms = [BASE] + [arm for arm in ARMS if any(arm in numbers[s]["arms"] for s in seeds)]
    for arm in arms:
        metrics: dict[str, PerSeed] = {}
        for lv in levels:
            metrics[f"think/level{lv}"] = per_seed(numbers, arm, lv)
            metrics[f"nothink/level{lv}"] = per_seed(numbers, arm, lv, "nothink")
            both = per_seed(numbers, arm, lv, "nothink")
            metrics[f"think_gain/level{lv}"] = {s: v - both[s] for s, v in metrics[f"think/level{lv}"].items() if s in both}
        if arm == BASE:
            for lv in levels:
                rooms = {s: numbers[s]["base"][str(lv)]["room"] for s in seeds if numbers[s]["base"][str(lv)]["room"]}
                if rooms:
                    k = next(iter(rooms.values()))["k"]
                    metrics[f"pass@{k}/level{lv}"] = {s: r["pass"] for s, r in rooms.items()}
        else:
            for lv in levels:
                shares = {s: numbers[s]["arms"][arm]["elicitation"][str(lv)]["share"] for s in seeds
                          if str(lv) in numbers[s]["arms"].get(arm, {}).get("elicitation", {})}
                if shares:
                    metrics[f"elicitation/level{lv}"] = shares
                    metrics[f"elicitation_problems/level{lv}"] = {  # the problems the share is over
                        s: numbers[s]["arms"][arm]["elicitation"][str(lv)]["solved"] for s in shares}
            for lv in levels:  # where the arm measured pass@k at its end (the rlp arm): did RL narrow it?
                rooms = {s: numbers[s]["arms"][arm]["levels"][str(lv)].get("room") for s in seeds
                         if str(lv) in numbers[s]["arms"].get(arm, {}).get("levels", {})}
                rooms = {s: r for s, r in rooms.items() if r}
                if rooms:
                    metrics[f"pass@{next(iter(rooms.values()))['k']}/level{lv}"] = {s: r["pass"] for s, r in rooms.items()}
            for key in ("tokens", "flops", "step"):
                metrics[key] = {s: numbers[s]["arms"][arm][key] for s in seeds if arm in numbers[s]["arms"]}
        result.arms[LABELS.get(arm, arm)] = metrics

    # gates
    gate_records = {s: {int(lv): {"think": [1] * c["correct"] + [0] * (c["n"] - c["correct"])}
                        for lv, c in numbers[s]["gate"].items()} for s in seeds}
    rooms = {s: numbers[s]["base"].get(str(level), {}).get("room", {}) for s in seeds}
    bases = {s: numbers[s]["base"][str(level)] for s in seeds if str(level) in numbers[s]["base"]}
    acc = {arm: per_seed(numbers, arm, level) for arm in arms}
    primary = {s: acc["rlp"][s] - acc[BASE][s] for s in seeds if s in acc["rlp"] and s in acc[BASE]}
    result.gates = [base_thinks_gate(gate_records, level, bounds), room_gate(rooms, level),
                    power_gate(primary, n_seeds, level),
                    signal_gate({s: numbers[s].get("signal", {}) for s in seeds})]

    # contrasts: the primary, the secondary ones (Holm within the claim), descriptive rows
    result.primary = PRIMARY
    prediction = Prediction(1, ACCURACY_MARGIN, ACCURACY_MARGIN_NOTE)
    needs = ("base-thinks", "room-to-elicit", "power", "rlp-signal")
    bounds_of = {"floor": 0.0, "ceiling": 1.0}  # every arm at 0 or at 1 in every seed: nothing to compare
    judged = [("rlp − shuffled", "rlp-shuffled", "RLP minus the same RLP with rewards shuffled across groups"),
              ("rlp − ntp at the same tokens", "ntp-tokens", "RLP minus next-token training on the same batches"),
              ("rlp − ntp at the same FLOPs", "ntp-flops", "RLP minus next-token training for as many FLOPs")]
    contrasts = [Contrast.paired(PRIMARY, f"greedy thinking accuracy at level {level}: RLP at the end of phase 2 "
                                 "minus the base it started from (phase 2's step 0)", acc["rlp"], acc[BASE],
                                 labels=("rlp", BASE), prediction=prediction, needs=needs, **bounds_of)]
    contrasts += [Contrast.paired(name, f"greedy thinking accuracy at level {level}, end of phase 2: {what}",
                                  acc["rlp"], acc.get(other, {}), labels=("rlp", other), prediction=prediction,
                                  needs=needs, **bounds_of)
                  for name, other, what in judged]
    contrasts += [
        Contrast.paired("rlp-paper − shuffled", f"thinking accuracy at level {level}: the paper's RLP (uniform "
                        "positions, K = 1) minus shuffled rewards", acc.get("rlp-paper", {}), acc.get("rlp-shuffled", {})),
        Contrast.paired("rlp − rlp-paper", f"thinking accuracy at level {level}: thought slots and line reward minus "
                        "the paper's choices", acc["rlp"], acc.get("rlp-paper", {})),
    ]
    contrasts += [Contrast.paired(f"{arm} − base", f"thinking accuracy at level {level}: end of phase 2 minus its start",
                                  acc[arm], acc[BASE]) for arm in arms if arm not in (BASE, "rlp")]
    for lv in levels:
        if lv != level:
            contrasts.append(Contrast.paired(f"rlp − shuffled, level {lv}", f"thinking accuracy at level {lv}",
                                             per_seed(numbers, "rlp", lv), per_seed(numbers, "rlp-shuffled", lv)))
    result.contrasts = contrasts

    # figures
    shown = [arm for arm in arms if arm != BASE]
    result.figures = [
        Figure("thinking_accuracy_by_arm", "Greedy thinking accuracy at the end of phase 2 (mean, 95% interval "
               "over seeds)", "arithmetic level", "accuracy with a thought", [str(lv) for lv in levels],
               {LABELS[a]: [per_seed(numbers, a, lv) for lv in levels] for a in shown},
               {"base (phase-2 start)": [per_seed(numbers, BASE, lv) for lv in levels]}, kind="bar"),
    ]
    with_share = [a for a in shown if any(f"elicitation/level{lv}" in result.arms[LABELS[a]] for lv in levels)]
    if with_share:
        result.figures.append(Figure(
            "elicitation_share_by_arm", "Elicitation share: of the problems an arm solves greedily, the share the "
            "base solved in its k samples", "arithmetic level", "elicitation share", [str(lv) for lv in levels],
            {LABELS[a]: [result.arms[LABELS[a]].get(f"elicitation/level{lv}", {}) for lv in levels] for a in with_share},
            kind="bar"))

    # notes
    notes = [f"Within each seed, on the same {bases and next(iter(bases.values()))['n']} level-{level} problems "
             "(item sampling only, paired over problems; the verdicts use the interval over seeds):"]
    notes.append("rlp − base: " + ("; ".join(within_seed(numbers, "rlp", BASE, level)) or "n/a"))
    for name, other, _ in judged:
        notes.append(f"{name}: " + ("; ".join(within_seed(numbers, "rlp", other, level)) or "n/a"))
    notes += [
        "Prompts: phase 1's gate reads phase 1's own evaluation (text with thoughts: `Q: 47+38=? <think>`); phase 2 "
        "evaluates in the format of its stripped text (`Q: 47+38=?` then `<think>`, where the thought slots put "
        "RLP's thoughts), so the base arm is the phase-1 model in that format (the rlp run's step-0 evaluation).",
        "Elicitation share: lamina.rlp.elicitation_share of each arm's last evaluation against the base's pass@k "
        "(the rlp run's step-0 evaluation, k = all its samples, on the first pass_problems problems of each "
        "level): near 1, the arm solves what the base could already reach by sampling (elicitation); lower, new "
        "solutions.",
        "ntp-flops runs as many next-token steps as the rlp run's training FLOPs (perf/flops, read from both "
        "checkpoints), its evaluations scaled to the same FLOPs.",
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
        parts.append(f"seed {seed}: {wall:.0f} s of fits, CPU {cpu:.0f} s ({each})")
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
    return out


def run(ctx: StudyContext) -> ClaimResult:
    preset = preset_for(ctx, PRESETS, TOY)
    started, load_start = time.perf_counter(), os.getloadavg()
    paths = config_paths(ctx.configs)
    pretrain_steps = preset.pretrain_steps or yaml_value([paths["pretrain"]], "trainer", "max_steps")
    phase2_steps = preset.phase2_steps or yaml_value([paths["phase2"]], "trainer", "max_steps")
    for arm in ("rlp", "rlp-shuffled", "rlp-paper"):
        steps = preset.phase2_steps or yaml_value(arm_configs(paths, arm), "trainer", "max_steps")
        if steps != phase2_steps:
            raise ConfigError(f"study {NAME}: arm {arm} sets trainer.max_steps {steps}, expected phase 2's {phase2_steps}")
    if not (isinstance(pretrain_steps, int) and isinstance(phase2_steps, int)):
        raise ConfigError(f"study {NAME}: expected trainer.max_steps in {paths['pretrain']} and {paths['phase2']}")
    n = len(ctx.seeds)
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds), primary=PRIMARY)  # named before it runs
    numbers: dict[int, dict] = {}
    gate_records: dict[int, dict] = {}

    def setup(wall: float) -> dict[str, str]:
        return setup_text(ctx, paths, pretrain_steps, phase2_steps, numbers, wall, load_start)

    for k, seed in enumerate(ctx.seeds, 1):
        costs: dict[str, dict] = {}
        spec = RunSpec("pretrain", arm_configs(paths, "pretrain"), seed, pretrain_steps,
                       arm_words(preset, "pretrain", seed, None))
        pretrain, costs["pretrain"] = timed_run(ctx, spec, k, n)
        gate_records[seed] = eval_record(pretrain.folder)
        passed, detail = base_thinks(gate_records[seed], GATE_LEVEL, preset.gate_range)
        ctx.progress(f"seed {seed}: gate base-thinks: {detail}: {'passed' if passed else 'FAILED'}")
        if not passed:
            stop(ctx, result, base_thinks_gate(gate_records, GATE_LEVEL, preset.gate_range),
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
            if arm == "rlp":
                base = eval_record(arms["rlp"].folder, 0).get(GATE_LEVEL, {})
                r = room(base) if base else {}
                value, _, items = accuracy(base) if base else (math.nan, 0, 0)
                ctx.progress(f"seed {seed}: base at phase 2's start, level {GATE_LEVEL}: thinking {fmt3(value)} on "
                             f"{items} problems; pass@{r.get('k', '?')} {fmt3(r.get('pass'))} vs greedy "
                             f"{fmt3(r.get('greedy'))} on {r.get('n', 0)}")
        numbers[seed] = seed_numbers(pretrain, arms, costs)
        save_numbers(ctx.folder, seed, numbers[seed])
        ctx.progress(f"seed {seed}: power from the seeds so far: {power_so_far(numbers, n)}")
    assemble(result, numbers, n, GATE_LEVEL, preset.gate_range)
    if ctx.unit:  # lamina compare reads every seed's runs: the report's pass does it
        return result
    compared = run_compare(ctx)
    if isinstance(compared, Path):
        for stem, what in (("arith_acc_level2", f"thinking accuracy at level {GATE_LEVEL}"),
                           ("think_acc_gain_level2", f"thinking minus no-thinking accuracy at level {GATE_LEVEL}")):
            files = [f"![{what} vs {axis}](compare/{stem}_vs_{axis}.png)" for axis in ("tokens", "flops")
                     if (compared / f"{stem}_vs_{axis}.png").is_file()]
            if files:
                result.notes.append(f"{what.capitalize()} against training tokens and FLOPs (lamina compare, mean "
                                    f"± 1 std over seeds; the full report, paired by seed, in compare/report.md): "
                                    + " ".join(files))
    elif compared:
        result.notes.append(compared)
    result.setup = setup(time.perf_counter() - started)
    return result


def save_numbers(folder: Path, seed: int, numbers: dict) -> None:
    path = folder / "numbers" / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(numbers) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def setup_text(ctx: StudyContext, paths: dict[str, Path], pretrain_steps: int, phase2_steps: int,
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
                  "every run of it; contrasts are paired by seed)"),
        "runs": f"under `{ctx.out / 'runs'}` (`lamina compare {ctx.out / 'runs'}/<arm> ...` reads them)",
    }
    if numbers:
        some = numbers[sorted(numbers)[0]]
        setup["items"] = ("greedy thinking evaluation on held-out world arithmetic (thought_eval.seed), "
                          + "; ".join(f"level {lv}: {c['n']} problems" for lv, c in some["base"].items())
                          + "; every arm the same problems; pass@k in the rlp arm only (the base at its step 0)")
        setup["fits"] = seconds_text(numbers)
    load_end = os.getloadavg()
    setup["wall time"] = (f"{wall:.0f} s this call on {os.cpu_count()} CPU(s), load average {load_start[0]:.1f} at "
                          f"its start and {load_end[0]:.1f} at its end (CPU seconds: what the fits cost this process; "
                          "on an idle machine the wall time is about that)")
    return setup


CLAIM = Claim(NAME, SENTENCE, run, presets=tuple(PRESETS))

__all__ = [
    "ARMS", "CLAIM", "GATE_LEVEL", "GATE_RANGE", "PRESETS", "Preset", "TOY", "arm_configs", "arm_words", "assemble",
    "base_thinks", "base_thinks_gate", "detectable_difference", "flop_matched_steps", "power_gate", "room",
    "room_gate", "run", "seed_numbers",
]
