"""Cost of the in-loop instrumentation: training with it on (every N steps) against off, one process.

    python bench/overhead.py --config configs/tiny.yaml --out bench/results
    python bench/overhead.py --config configs/small.yaml --out bench/results      # on a GPU

Both arms start from the same weights and read the same batches; each round runs both, in
alternating order so that drift in the machine's speed hits both. The timed window is steps
[warmup, warmup + steps): it starts after the step-0 measurement and compilation, and by
default spans one full period of the schedule (the least common multiple of every_n_steps,
modularity_every_n_steps and ablation_every_n_steps), so it holds the measurements a long run
pays per period. The instrument settings are the config's `instrument:` section (`--every`
overrides its every_n_steps).

Writes JSON to `<out>/overhead-<config stem>-<cpu|cuda>-<date>.json`: the wall-time ratio
on/off per round and its best/median, and the seconds of each measurement (with whether it
partitioned and ablated), so the amortised cost can be read apart from the noise of wall
times. It never imports `datasets` for the built-in corpus. Benchmarks are not tests: nothing
here asserts a speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time

import lightning as L
import torch

from lamina.cli import LaminaCLI, cli_kwargs
from lamina.data import TextDataModule
from lamina.instrument import Instrumentation
from lamina.lm import LanguageModel
from report import write_result


class WindowTimer(L.Callback):
    """Wall time from the start of step `start` to the end of step `end` (device synchronised);
    placed before Instrumentation, so the run's final measurement (at step `end`, the last step)
    falls outside the window, and the period's measurements (steps start+1 .. end-1) inside."""

    def __init__(self, start: int, end: int):
        self.start, self.end, self.t0, self.elapsed = start, end, None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.start and self.t0 is None:
            synchronize(module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.end and self.elapsed is None:
            synchronize(module.device)
            self.elapsed = time.perf_counter() - self.t0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(configs: list[str], overrides: list[str]):
    args = [arg for path in configs for arg in ("--config", path)] + list(overrides)
    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=args, **cli_kwargs())
    return cli.model, cli.datamodule, cli.config


def run_arm(module, datamodule, trainer_cfg, instrument: Instrumentation | None, warmup: int, steps: int, logdir: str):
    timer = WindowTimer(warmup, warmup + steps)
    # The timer first: at the last step it stops before the run's final measurement (a one-off per
    # run, hook "end"), so the window holds what a long run pays per period.
    callbacks = [timer] + ([instrument] if instrument is not None else [])
    trainer = L.Trainer(
        accelerator=trainer_cfg.accelerator, devices=1, precision=trainer_cfg.precision, max_steps=warmup + steps,
        limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
        logger=L.pytorch.loggers.TensorBoardLogger(save_dir=logdir, name="overhead"),
        log_every_n_steps=trainer_cfg.log_every_n_steps, gradient_clip_val=trainer_cfg.gradient_clip_val,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )
    trainer.fit(module, datamodule=datamodule)
    # Measurements inside the timed window: those of on_train_batch_end after steps warmup+1 .. warmup+steps
    # (not the run's final one, hook "end", which runs after the timer stopped).
    window = [
        t for t in (instrument.timings if instrument else [])
        if t["hook"] == "batch" and warmup < t["step"] <= warmup + steps
    ]
    return {
        "seconds": timer.elapsed,
        "measurements_in_window": window,
        "instrument_seconds_in_window": sum(t["seconds"] for t in window),
        "all_measurements": instrument.timings if instrument else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--config", action="append", default=None,
                        help="config file (default configs/tiny.yaml); again for an overlay, as with lamina fit")
    parser.add_argument("--every", type=int, default=None,
                        help="instrument.every_n_steps of the 'on' arm (default: the config's)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: one period of the schedule)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", default="bench/results")
    # Everything else is a config override (`--model.compile=false`, `--data.max_bytes 1e7`), passed on
    # in order, after the config files, to the parser `lamina fit` uses.
    args, args.overrides = parser.parse_known_args()
    args.config = args.config or ["configs/tiny.yaml"]
    if args.threads:
        torch.set_num_threads(args.threads)

    module, datamodule, config = build(args.config, args.overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    settings = {**vars(config.instrument), "enabled": True}
    if args.every is not None:
        settings["every_n_steps"] = args.every
    probe = Instrumentation(**settings)  # resolves the defaults (modularity_every_n_steps null -> every)
    cadences = (probe.every_n_steps, probe.modularity_every_n_steps, probe.ablation_every_n_steps)
    period = math.lcm(*(c for c in cadences if c is not None))  # null: only at step 0 and the end
    steps = args.steps or period
    device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator != "cpu" else "cpu")
    initial = copy.deepcopy(module.state_dict())
    logdir = f"/tmp/lamina-bench-{time.strftime('%Y%m%d-%H%M%S')}"
    rounds = []
    for r in range(args.rounds):
        result = {}
        for arm in ("on", "off") if r % 2 == 0 else ("off", "on"):
            module.load_state_dict(initial)
            torch.manual_seed(0)
            instrument = Instrumentation(**settings) if arm == "on" else None
            result[arm] = run_arm(module, datamodule, config.trainer, instrument, args.warmup, steps, logdir)
        result["ratio"] = result["on"]["seconds"] / result["off"]["seconds"]
        # Amortised: the measurements' own wall time over the off arm's time for the same steps.
        result["measured_share"] = result["on"]["instrument_seconds_in_window"] / result["off"]["seconds"]
        rounds.append(result)
        print(json.dumps({"round": r, "ratio": result["ratio"], "measured_share": result["measured_share"],
                          "off_seconds": result["off"]["seconds"], "on_seconds": result["on"]["seconds"]}))
    ratios = [r["ratio"] for r in rounds]
    shares = [r["measured_share"] for r in rounds]
    out = {
        "benchmark": "overhead",
        "config": args.config[-1],
        "configs": args.config,
        "overrides": args.overrides,
        "instrument": settings,
        "schedule_period_steps": period,
        "timed_steps": steps,
        "timed_from_step": args.warmup,
        "tokens_per_step": config.data.batch_size * config.model.init_args.block_size,
        "params": module.model.num_params(),
        "ratio_on_over_off": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)},
        "overhead_pct_median": 100 * (statistics.median(ratios) - 1),
        "measured_share_pct_median": 100 * statistics.median(shares),
        "off_step_seconds_median": statistics.median(r["off"]["seconds"] for r in rounds) / steps,
        "rounds": rounds,
    }
    write_result(out, args.out, "overhead", args.config[-1], device,
                 ("ratio_on_over_off", "overhead_pct_median", "measured_share_pct_median"))


if __name__ == "__main__":
    main()
