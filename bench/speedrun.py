"""Speedrun: optimizer steps and wall time to reach a target val bpb, per training recipe; and the
recipe ablation that picked the new recipe.

    python bench/speedrun.py speedrun --corpus world --threads 1 --out bench/results
    python bench/speedrun.py speedrun --corpus text --threads 1 --out bench/results
    python bench/speedrun.py ablation --steps 300 --threads 1 --out bench/results

**speedrun**: on one text and one model shape (configs/tiny.yaml's), three arms:
- `nanogpt`: nanoGPT's 2022 recipe (NANOGPT_RECIPE: AdamW at lr 2e-3, GELU, learned positions, a tied
  head; configs/tiny.yaml's until 2026-12-07), 600 steps;
- `new`: the recipe chosen by the ablation (NEW_RECIPE below), on a shorter schedule (`--new-steps`);
- `plain`: nanoGPT's model and hyperparameters in the plain nanoGPT-style loop (bench/plain_loop.py),
  from the same initial weights and reading the same training windows as `nanogpt`.
The target is nanoGPT's val bpb at its last step, measured in the same run (round 0 runs `nanogpt`
first). Every arm is validated by one evaluator (plain_loop.mean_val_loss over the data module's
fixed val windows, as bits per byte) on the same text, `data.val_source`:
- `--corpus world`: the built-in corpus (tiny's 4 MB); val is the world text that comes after
  the training cap in the same seeded stream (never trained on), written to a .jsonl file, one
  document per row as in training;
- `--corpus text`: a real text every Python ships: the standard library's sources, sorted by
  file name, the first `--text-bytes`; nanoGPT's split: the first 90% is data.source, the last
  10% data.val_source.
Rounds are interleaved in one process (round r runs the arms in a rotated order; round 0 starts
with `nanogpt`). An arm's time is the wall (and CPU) time of its training steps up to the first
validation at or below the target, validations excluded, setup (Trainer, optimizer) excluded;
steps are counted at the validation points (every `--eval-every` steps), so they overshoot the true
crossing by less than that. `new` and `plain` stop at the target; `nanogpt` runs its whole schedule.

**ablation**: tiny's shape on the world corpus, one change at a time from nanoGPT's recipe and all
of them together (ABLATION_ARMS), each trained `--steps` steps (its own schedule of that length)
with one seed (`--seeds` more on the arms named by `--seed-arms`, to size seed noise): val bpb at
the last step; then `--timing-rounds` interleaved rounds of `--timing-steps` steps of every arm for
the wall and CPU time per step, taken as a ratio to `nanogpt` within each round.

Writes `<out>/speedrun-<corpus>-cpu-<date>.json`, or `<out>/recipe-ablation-cpu-<date>.json` and
`.md` (the table). Any other argument is a config override, as with `lamina fit`
(e.g. `--model.n_layer 2` for a toy run; tests/test_speedrun.py runs both at toy size).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import mean_val_loss, train_plain  # noqa: E402
from report import environment, write_result  # noqa: E402
from throughput import build  # noqa: E402

from lamina.callbacks import training_callbacks  # noqa: E402
from lamina.data.sources import iter_passages  # noqa: E402
from lamina.lm import bits_per_byte  # noqa: E402

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")

# nanoGPT's 2022 recipe, under every arm (configs/tiny.yaml's model keys before it took the new recipe):
# each arm's changes are made to it, so the arms mean the same whatever tiny.yaml's recipe is.
NANOGPT_RECIPE = {"optimizer": "adamw", "lr": 2.0e-3, "rotary": False, "activation": "gelu", "qk_norm": False,
                  "tie_embeddings": True, "zero_init_projections": False, "logit_softcap": None}
# One change at a time from nanoGPT's recipe, and all together. Keys are
# LanguageModel's (model.<key>); values as a config file would give them.
CHANGES = {
    "muon": {"optimizer": "muon"},
    "rotary": {"rotary": True},
    "relu2": {"activation": "relu2"},
    "qk_norm": {"qk_norm": True},
    "untied": {"tie_embeddings": False},
    "zero_init": {"zero_init_projections": True},
    "softcap30": {"logit_softcap": 30.0},
    "lr4e-3": {"lr": 4.0e-3},  # AdamW's lr (NANOGPT_RECIPE's is 2e-3); with muon, the lr of the AdamW groups
}
ALL = {k: v for name, change in CHANGES.items() if name != "lr4e-3" for k, v in change.items()}
ABLATION_ARMS = {
    "nanogpt": {},
    **CHANGES,
    "all": ALL,
    "all+lr4e-3": {**ALL, **CHANGES["lr4e-3"]},
    # Follow-ups: all of them less those that did not help alone (zero_init hurt; qk_norm and the
    # soft-cap were within seed noise).
    "all+lr4e-3-zero_init": {k: v for k, v in {**ALL, **CHANGES["lr4e-3"]}.items() if k != "zero_init_projections"},
    "lean": {**CHANGES["muon"], **CHANGES["rotary"], **CHANGES["relu2"], **CHANGES["untied"], **CHANGES["lr4e-3"]},
}
# The new recipe: the ablation's best arm, all+lr4e-3 (bench/results/recipe-ablation-cpu-2026-12-07.md).
NEW_RECIPE = dict(ABLATION_ARMS["all+lr4e-3"])


# ---- the texts --------------------------------------------------------------------------------------


def stdlib_split(folder: Path, n_bytes: int) -> tuple[Path, Path]:
    """The Python standard library's sources (sorted *.py, concatenated up to `n_bytes`), split as
    nanoGPT splits a text: the first 90% (cut at a line end) to train on, the last 10% to validate."""
    chunks, taken = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace") + "\n"
        chunks.append(text)
        taken += len(text.encode())
        if taken >= n_bytes:
            break
    data = "".join(chunks).encode()[:n_bytes].decode("utf-8", errors="ignore")
    cut = data.rfind("\n", 0, int(len(data) * 0.9)) + 1
    folder.mkdir(parents=True, exist_ok=True)
    train, val = folder / f"stdlib-{n_bytes}-train.txt", folder / f"stdlib-{n_bytes}-val.txt"
    train.write_text(data[:cut], encoding="utf-8")
    val.write_text(data[cut:], encoding="utf-8")
    return train, val


def world_after_cap(folder: Path, corpus, max_bytes: int, n_bytes: int) -> Path:
    """The world text that comes after the first `max_bytes` (the training cap) of the same seeded
    stream, `n_bytes` of it, as .jsonl rows (one example, one document, as in training)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"world-after-{max_bytes}-{n_bytes}.jsonl"
    rows, seen, taken = [], 0, 0
    for passage in iter_passages(corpus, 0.5):  # (the split is ignored here)
        seen += passage.n_bytes
        if seen - passage.n_bytes < max_bytes:  # begins within the cap: (some of) it may be trained on
            continue
        rows.append(json.dumps({"text": passage.text}))
        taken += passage.n_bytes
        if taken >= n_bytes:
            break
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def corpus_overrides(corpus: str, overrides: list[str], work: Path, text_bytes: int) -> tuple[list[str], dict]:
    """Config overrides that train on `corpus` and validate on its val text; and a description."""
    if corpus == "text":
        train, val = stdlib_split(work, text_bytes)
        return ["--data.source", str(train), "--data.val_source", str(val), *overrides], {
            "corpus": "text",
            "text": f"Python {sys.version.split()[0]} standard library sources, sorted *.py, first {text_bytes:,} bytes",
            "split": "nanoGPT's: the first 90% trained on (data.source), the last 10% validated on (data.val_source)",
            "data_source": str(train),
            "val_source": str(val),
        }
    _, datamodule, config = build(CONFIG, overrides)  # (the world corpus, as configured)
    max_bytes = int(config.data.max_bytes)
    n_val = 2 * int(config.data.val_tokens) + 4096
    val = world_after_cap(work, datamodule.corpus, max_bytes, n_val)
    return ["--data.val_source", str(val), *overrides], {
        "corpus": "world",
        "text": f"the built-in world corpus (data.seed {config.data.seed}), first {max_bytes:,} bytes",
        "split": f"val: {n_val:,} bytes of the same stream after the {max_bytes:,}-byte training cap (data.val_source)",
        "data_source": "world",
        "val_source": str(val),
    }


# ---- training with a validation curve ------------------------------------------------------------------


class Curve:
    """Validation every `every` steps (and at the last one) by one evaluator, and the training
    time up to each point with the validations taken out."""

    def __init__(self, evaluate, every: int, steps: int, target: float | None = None, stop_at_target: bool = False):
        self.evaluate, self.every, self.steps = evaluate, every, steps
        self.target, self.stop_at_target = target, stop_at_target
        self.points: list[dict] = []
        self.t0 = self.c0 = None
        self.eval_wall = self.eval_cpu = 0.0

    def start(self) -> None:
        if self.t0 is None:
            self.t0, self.c0 = time.perf_counter(), time.process_time()

    def after_step(self, step: int, model: torch.nn.Module) -> bool:
        if step % self.every and step != self.steps:
            return False
        wall = time.perf_counter() - self.t0 - self.eval_wall
        cpu = time.process_time() - self.c0 - self.eval_cpu
        e0, ec0 = time.perf_counter(), time.process_time()
        bpb = self.evaluate(model)
        self.eval_wall += time.perf_counter() - e0
        self.eval_cpu += time.process_time() - ec0
        self.points.append({"step": step, "val_bpb": bpb, "seconds": wall, "cpu_seconds": cpu})
        return self.stop_at_target and self.target is not None and bpb <= self.target

    def summary(self, target: float | None) -> dict:
        last = self.points[-1]
        hit = next((p for p in self.points if target is not None and p["val_bpb"] <= target), None)
        return {
            "final_step": last["step"],
            "final_val_bpb": last["val_bpb"],
            "train_seconds": last["seconds"],
            "train_cpu_seconds": last["cpu_seconds"],
            "seconds_per_step": last["seconds"] / last["step"],
            "eval_seconds": self.eval_wall,
            "reached_target": hit is not None,
            "steps_to_target": hit["step"] if hit else None,
            "seconds_to_target": hit["seconds"] if hit else None,
            "cpu_seconds_to_target": hit["cpu_seconds"] if hit else None,
            "curve": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in p.items()} for p in self.points],
        }


class CurveCallback(L.Callback):
    def __init__(self, curve: Curve):
        self.curve = curve

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.curve.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.curve.after_step(trainer.global_step, pl_module.model):
            trainer.should_stop = True


def evaluator(datamodule):
    """Val bpb of a GPT on the data module's fixed val windows: the one evaluator of every arm."""
    loader = datamodule.val_dataloader()
    tokens_per_byte = datamodule.val_tokens_per_byte
    return lambda model: float(bits_per_byte(mean_val_loss(model, loader), tokens_per_byte))


def model_args(config):
    """The model section's arguments, whether the config names the class (`class_path`, `init_args`) or not."""
    return getattr(config.model, "init_args", None) or config.model


def recipe_overrides(recipe: dict) -> list[str]:
    return [arg for key, value in recipe.items()
            for arg in (f"--model.{key}", value if isinstance(value, str) else json.dumps(value))]


def make_module(overrides: list[str], recipe: dict, seed: int | None = None):
    """The model `lamina fit` would build from configs/tiny.yaml, these overrides and the recipe (its
    changes to NANOGPT_RECIPE; its initial weights fixed by seed_everything, tiny's 1337 unless `seed`)."""
    extra = ["--seed_everything", str(seed)] if seed is not None else []
    return build(CONFIG, [*overrides, *recipe_overrides({**NANOGPT_RECIPE, **recipe}), *extra])


def train_lamina(module, datamodule, config, steps: int, curve: Curve, log_dir: Path) -> None:
    """Lamina's trainer as `lamina fit` runs it (its training callbacks, a TensorBoard logger at
    tiny's log interval, gradient clipping), measuring off, the val loop replaced by `curve`."""
    tc = config.trainer
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=tc.precision, max_steps=steps, limit_val_batches=0,
        num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        logger=L.pytorch.loggers.TensorBoardLogger(save_dir=str(log_dir), name="speedrun"),
        log_every_n_steps=tc.log_every_n_steps, gradient_clip_val=tc.gradient_clip_val,
        callbacks=[CurveCallback(curve), *training_callbacks()],
    )
    trainer.fit(module, datamodule=datamodule)


def train_plain_arm(module, datamodule, config, steps: int, curve: Curve) -> None:
    """NanoGPT's model and hyperparameters in the plain nanoGPT-style loop, from the module's initial
    weights, reading the windows lamina's trainer reads (from batch 0)."""
    model, h = module.model, module.hparams
    datamodule.trainer = None
    batches = iter(datamodule.train_dataloader())
    curve.start()
    train_plain(model, batches, steps, lr=h.lr, warmup=h.warmup_steps, min_lr_ratio=h.min_lr_ratio,
                weight_decay=h.weight_decay, betas=tuple(h.betas), grad_clip=config.trainer.gradient_clip_val or 0.0,
                log_every=config.trainer.log_every_n_steps, after_step=lambda n: curve.after_step(n, model))


def ready(datamodule) -> None:
    datamodule.prepare_data()
    datamodule.setup("fit")


# ---- speedrun ----------------------------------------------------------------------------------------


def speedrun(args, overrides: list[str]) -> Path:
    work = Path(args.work)
    overrides, about = corpus_overrides(args.corpus, overrides, work, args.text_bytes)
    log_dir = Path(tempfile.mkdtemp(prefix="lamina-speedrun-"))
    arms = {
        "nanogpt": {"recipe": {}, "steps": args.nanogpt_steps, "every": args.nanogpt_eval_every},
        "new": {"recipe": NEW_RECIPE, "steps": args.new_steps, "every": args.eval_every},
        "plain": {"recipe": {}, "steps": args.nanogpt_steps, "every": args.eval_every},
    }
    rounds, target = [], None
    for r in range(args.rounds):
        order = ["nanogpt", "new", "plain"]
        order = order[r % 3:] + order[: r % 3] if r else order  # round 0: nanogpt first (the target)
        result = {"order": order}
        for arm in order:
            spec = arms[arm]
            gc.collect()
            module, datamodule, config = make_module(overrides, spec["recipe"])
            ready(datamodule)
            curve = Curve(evaluator(datamodule), spec["every"], spec["steps"], target, stop_at_target=arm != "nanogpt")
            if arm == "plain":
                train_plain_arm(module, datamodule, config, spec["steps"], curve)
            else:
                train_lamina(module, datamodule, config, spec["steps"], curve, log_dir)
            result[arm] = curve.summary(target)
            if arm == "nanogpt" and target is None:
                target = result[arm]["final_val_bpb"]
                result[arm] = curve.summary(target)
            print(f"speedrun: round {r} {arm}: {json.dumps({k: v for k, v in result[arm].items() if k != 'curve'})}",
                  flush=True)
        for arm in ("new", "plain"):
            a, b = result[arm], result["nanogpt"]
            result[f"{arm}_over_nanogpt_wall"] = a["seconds_to_target"] / b["seconds_to_target"] if a["reached_target"] else None
            result[f"{arm}_over_nanogpt_cpu"] = (
                a["cpu_seconds_to_target"] / b["cpu_seconds_to_target"] if a["reached_target"] else None
            )
        rounds.append(result)
    shutil.rmtree(log_dir, ignore_errors=True)

    def median(key):
        values = [r[key] for r in rounds if r[key] is not None]
        return statistics.median(values) if len(values) == len(rounds) else None

    def median_of(arm, key):
        values = [r[arm][key] for r in rounds]
        return None if None in values else statistics.median(values)

    def arm_summary(arm):
        first = rounds[0][arm]
        return {
            "recipe": arms[arm]["recipe"], "trainer": "plain_loop" if arm == "plain" else "lamina",
            "schedule_steps": arms[arm]["steps"], "steps_to_target": first["steps_to_target"],
            "reached_target": first["reached_target"], "final_val_bpb": first["final_val_bpb"],
            "median_seconds_to_target": median_of(arm, "seconds_to_target"),
            "median_cpu_seconds_to_target": median_of(arm, "cpu_seconds_to_target"),
            "median_seconds_per_step": median_of(arm, "seconds_per_step"),
        }

    _, datamodule, config = make_module(overrides, {})
    result = {
        "benchmark": "speedrun",
        **about,
        "config": "configs/tiny.yaml",
        "overrides": overrides,
        "model_shape": {k: model_args(config)[k] for k in ("n_layer", "n_head", "n_embd", "block_size")},
        "batch_size": config.data.batch_size,
        "tokens_per_step": config.data.batch_size * model_args(config).block_size,
        "val_tokens": config.data.val_tokens,
        "target": "nanoGPT's val bpb at its last step (step %d), measured in this run" % args.nanogpt_steps,
        "target_val_bpb": target,
        "eval_every": args.eval_every,
        "rounds_run": args.rounds,
        "threads": torch.get_num_threads(),
        "arms": {arm: arm_summary(arm) for arm in arms},
        "new_over_nanogpt_wall": median("new_over_nanogpt_wall"),
        "new_over_nanogpt_wall_per_round": [r["new_over_nanogpt_wall"] for r in rounds],
        "new_over_nanogpt_cpu": median("new_over_nanogpt_cpu"),
        "new_over_nanogpt_cpu_per_round": [r["new_over_nanogpt_cpu"] for r in rounds],
        "plain_over_nanogpt_wall": median("plain_over_nanogpt_wall"),
        "plain_over_nanogpt_cpu": median("plain_over_nanogpt_cpu"),
        "goal": "new_over_nanogpt_wall <= 0.5",
        "rounds": rounds,
    }
    result["goal_met"] = result["new_over_nanogpt_wall"] is not None and result["new_over_nanogpt_wall"] <= 0.5
    return write_result(result, args.out, "speedrun", args.corpus, torch.device("cpu"),
                        ("target_val_bpb", "new_over_nanogpt_wall", "new_over_nanogpt_cpu", "plain_over_nanogpt_wall"))


# ---- ablation ----------------------------------------------------------------------------------------


def time_steps(module, datamodule, config, steps: int, skip: int, log_dir: Path) -> tuple[float, float]:
    """Wall and CPU seconds per step over steps skip+1..steps of a short lamina run."""
    marks = {}

    class Mark(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == skip:
                marks["t"], marks["c"] = time.perf_counter(), time.process_time()

    curve = Curve(lambda model: 0.0, steps + 1, steps + 1)  # no validation
    tc = config.trainer
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=tc.precision, max_steps=steps, limit_val_batches=0,
        num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        logger=L.pytorch.loggers.TensorBoardLogger(save_dir=str(log_dir), name="timing"),
        log_every_n_steps=tc.log_every_n_steps, gradient_clip_val=tc.gradient_clip_val,
        callbacks=[Mark(), CurveCallback(curve), *training_callbacks()],
    )
    trainer.fit(module, datamodule=datamodule)
    n = steps - skip
    return (time.perf_counter() - marks["t"]) / n, (time.process_time() - marks["c"]) / n


def ablation(args, overrides: list[str]) -> Path:
    work = Path(args.work)
    overrides, about = corpus_overrides("world", overrides, work, args.text_bytes)
    log_dir = Path(tempfile.mkdtemp(prefix="lamina-ablation-"))
    prior = json.loads(Path(args.merge).read_text()) if args.merge else None
    names = args.arms or list(ABLATION_ARMS)
    if prior is not None:  # the earlier table's arms first, then the new ones
        names = [row["arm"] for row in prior["table"]] + [n for n in names if n not in {r["arm"] for r in prior["table"]}]
    runs = list(prior["runs"]) if prior else []
    done = {(run["arm"], run["seed"]) for run in runs}
    began, began_cpu = time.perf_counter(), time.process_time()
    jobs = [(name, 1337) for name in names] + [(name, seed) for name in args.seed_arms for seed in args.seeds]
    for name, seed in jobs:
        if (name, seed) in done:
            continue
        done.add((name, seed))
        gc.collect()
        module, datamodule, config = make_module(overrides, ABLATION_ARMS[name], seed)
        ready(datamodule)
        curve = Curve(evaluator(datamodule), args.eval_every, args.steps)
        train_lamina(module, datamodule, config, args.steps, curve, log_dir)
        run = {"arm": name, "recipe": ABLATION_ARMS[name], "seed": seed, **curve.summary(None)}
        for k in ("reached_target", "steps_to_target", "seconds_to_target", "cpu_seconds_to_target"):
            run.pop(k)
        runs.append(run)
        print(f"ablation: {name} seed {run['seed']}: val bpb {run['final_val_bpb']:.4f} at step {run['final_step']}, "
              f"{run['seconds_per_step']:.3f} s/step", flush=True)

    # Time per step: interleaved rounds of every arm not timed before, with nanogpt in each (the ratios
    # are taken within a round, so rounds of an earlier invocation and of this one combine).
    timing = list(prior["timing_rounds"]) if prior else []
    timed = {name for row in timing for name in row["order"]}
    to_time = ["nanogpt"] + [n for n in names if n != "nanogpt" and n not in timed]
    for r in range(args.timing_rounds if len(to_time) > 1 or not timed else 0):
        order = to_time[r % len(to_time):] + to_time[: r % len(to_time)]
        row = {"order": order}
        for name in order:
            gc.collect()
            module, datamodule, config = make_module(overrides, ABLATION_ARMS[name])
            ready(datamodule)
            row[name] = dict(zip(("seconds_per_step", "cpu_seconds_per_step"),
                                 time_steps(module, datamodule, config, args.timing_steps, args.timing_skip, log_dir)))
        for name in order:
            row[name]["wall_ratio_to_nanogpt"] = row[name]["seconds_per_step"] / row["nanogpt"]["seconds_per_step"]
            row[name]["cpu_ratio_to_nanogpt"] = row[name]["cpu_seconds_per_step"] / row["nanogpt"]["cpu_seconds_per_step"]
        timing.append(row)
        print(f"ablation: timing round {len(timing) - 1}: " + ", ".join(
            f"{n} {row[n]['cpu_ratio_to_nanogpt']:.3f}" for n in order), flush=True)
    shutil.rmtree(log_dir, ignore_errors=True)

    first = {run["arm"]: run for run in runs if run["seed"] == 1337}
    seed_spread = {}
    for name in dict.fromkeys([*(prior["seed_noise"] if prior else {}), *args.seed_arms]):
        chosen = [run for run in runs if run["arm"] == name]
        values = [run["final_val_bpb"] for run in chosen]
        seed_spread[name] = {"seeds": [run["seed"] for run in chosen], "val_bpb": values,
                             "range": max(values) - min(values),
                             "sd": statistics.stdev(values) if len(values) > 1 else None}
    noise = max((s["range"] for s in seed_spread.values() if len(s["seeds"]) > 1), default=None)
    base = first["nanogpt"]["final_val_bpb"] if "nanogpt" in first else None
    table = []
    for name in names:
        run = first[name]
        rows = [row[name] for row in timing if name in row]
        table.append({
            "arm": name,
            "recipe": ABLATION_ARMS[name],
            "val_bpb": run["final_val_bpb"],
            "minus_nanogpt": run["final_val_bpb"] - base if base is not None else None,
            "within_seed_noise": (abs(run["final_val_bpb"] - base) <= noise) if noise is not None and base is not None
            else None,
            "seconds_per_step": statistics.median(t["seconds_per_step"] for t in rows) if rows else run["seconds_per_step"],
            "cpu_seconds_per_step": statistics.median(t["cpu_seconds_per_step"] for t in rows) if rows else None,
            "cpu_time_per_step_vs_nanogpt": statistics.median(t["cpu_ratio_to_nanogpt"] for t in rows) if rows else None,
            "wall_time_per_step_vs_nanogpt": statistics.median(t["wall_ratio_to_nanogpt"] for t in rows) if rows else None,
            "timing_rounds": len(rows),
            "train_seconds": run["train_seconds"],
        })
    _, datamodule, config = make_module(overrides, {})
    result = {
        "benchmark": "recipe-ablation",
        **about,
        "config": "configs/tiny.yaml",
        "overrides": overrides,
        "model_shape": {k: model_args(config)[k] for k in ("n_layer", "n_head", "n_embd", "block_size")},
        "steps": args.steps,
        "schedule": f"each arm's own warmup-cosine schedule over {args.steps} steps (tiny's warmup_steps, min_lr_ratio)",
        "val_tokens": config.data.val_tokens,
        "seed": "one seed per arm: seed_everything 1337 (tiny's; the initial weights); the text and the training "
                "windows (data.seed 0) are the same in every run",
        "seed_noise": seed_spread,
        "seed_noise_range": noise,
        "timing": f"interleaved rounds of {args.timing_steps} steps of every arm (with nanogpt in each), timed after "
                  f"{args.timing_skip}; ratios to nanogpt within each round, medians",
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "table": table,
        "runs": runs,
        "timing_rounds": timing,
        "invocations": (prior.get("invocations", ["first invocation"]) if prior else []) + [sys.argv[1:] if argv_is_cli() else "in-process"],
        "total_wall_minutes": (time.perf_counter() - began) / 60 + (prior["total_wall_minutes"] if prior else 0),
        "total_cpu_minutes": (time.process_time() - began_cpu) / 60 + (prior["total_cpu_minutes"] if prior else 0),
    }
    result = {**result, **environment(torch.device("cpu"))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"recipe-ablation-cpu-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2))
    path.with_suffix(".md").write_text(ablation_markdown(result))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return path


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name == "speedrun.py"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def ablation_markdown(result: dict) -> str:
    noise = result["seed_noise_range"]
    shape = result["model_shape"]
    lines = [
        f"# Recipe ablation, tiny's shape on the world corpus ({result['date']})",
        "",
        f"`bench/speedrun.py ablation`: configs/tiny.yaml's shape ({shape['n_layer']} layers x {shape['n_embd']}, "
        f"{shape['n_head']} heads, block {shape['block_size']}, byte tokens), {result['steps']} steps per arm "
        f"({result['schedule']}); val bpb at the last step on {result['val_tokens']:,} tokens of the world text "
        f"after the training cap (data.val_source). {result['seed'].capitalize()}. "
        f"Machine: {result.get('cpu', result['device'])}, {result['threads']} thread, a 2-core CPU shared with "
        f"other work; torch {result['versions']['torch']}. Time per step: {result['timing']}.",
        "",
        "| arm | change from nanogpt | val bpb | minus nanogpt | beyond seed noise | CPU time / step vs nanogpt "
        "| wall time / step vs nanogpt |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["table"]:
        change = ", ".join(f"{k}={v}" for k, v in row["recipe"].items()) or "(configs/tiny.yaml's model)"
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        beyond = "-" if row["within_seed_noise"] is None or row["arm"] == "nanogpt" else (
            "no" if row["within_seed_noise"] else "yes")
        lines.append(f"| {row['arm']} | {change} | {row['val_bpb']:.4f} | {fmt(row['minus_nanogpt'], '+.4f')} | {beyond} "
                     f"| {fmt(row['cpu_time_per_step_vs_nanogpt'], '.3f')} | {fmt(row['wall_time_per_step_vs_nanogpt'], '.3f')} |")
    lines.append("")
    for name, s in result["seed_noise"].items():
        lines.append(f"Seed noise, `{name}` over initial-weight seeds {s['seeds']}: val bpb "
                     f"{', '.join(f'{v:.4f}' for v in s['val_bpb'])} (range {s['range']:.4f}).")
    if noise is not None:
        lines.append(f"An arm is beyond seed noise when it differs from nanogpt by more than {noise:.4f}, the "
                     f"largest range above (measured on one arm only).")
    lines.append(f"Whole ablation: {result['total_wall_minutes']:.1f} wall minutes, "
                 f"{result['total_cpu_minutes']:.1f} CPU minutes.")
    return "\n".join(lines) + "\n"


# ---- command line ------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("speedrun", "ablation"):
        p = sub.add_parser(name, allow_abbrev=False)
        p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
        p.add_argument("--out", default="bench/results")
        p.add_argument("--work", default=".cache/lamina/bench", help="folder for the written texts")
        p.add_argument("--text-bytes", type=int, default=4_000_000, help="bytes of the stdlib text (train + val)")
        p.add_argument("--eval-every", type=int, default=25 if name == "speedrun" else 50)
        if name == "speedrun":
            p.add_argument("--corpus", choices=("world", "text"), default="world")
            p.add_argument("--rounds", type=int, default=2)
            p.add_argument("--nanogpt-steps", type=int, default=600, help="nanoGPT's schedule (configs/tiny.yaml's)")
            p.add_argument("--nanogpt-eval-every", type=int, default=100)
            p.add_argument("--new-steps", type=int, default=300, help="the new recipe's schedule")
        else:
            p.add_argument("--steps", type=int, default=300)
            p.add_argument("--arms", nargs="*", default=None, choices=list(ABLATION_ARMS))
            p.add_argument("--seed-arms", nargs="*", default=["nanogpt"], choices=list(ABLATION_ARMS))
            p.add_argument("--seeds", nargs="*", type=int, default=[1, 2], help="more seed_everything values")
            p.add_argument("--timing-rounds", type=int, default=3)
            p.add_argument("--timing-steps", type=int, default=25)
            p.add_argument("--timing-skip", type=int, default=5)
            p.add_argument("--merge", default=None,
                           help="an earlier recipe-ablation JSON: keep its runs and timings, run only what it lacks")
    return parser.parse_known_args(argv)


def main(argv=None) -> Path:
    args, overrides = parse_args(argv)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # (build() is given args)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["--instrument.enabled", "false", *overrides]  # measuring off: training alone is timed
    return speedrun(args, overrides) if args.command == "speedrun" else ablation(args, overrides)


if __name__ == "__main__":
    main()
