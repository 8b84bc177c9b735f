"""Cost of the in-loop instrumentation: training with it on (every N steps) against off, one process.

    python bench/overhead.py --config configs/tiny.yaml --out bench/results
    python bench/overhead.py --config configs/small.yaml --out bench/results      # on a GPU
    python bench/overhead.py --config configs/small.yaml --steps 100 --warmup 10 --rounds 1   # gpu_check.sh

Both arms start from the same weights and read the same batches; each round runs both, in
alternating order so that drift in the machine's speed hits both (round 0: on, then off). The
timed window is steps [warmup, warmup + steps): it starts after the step-0 measurement and
compilation, and by default spans one full period of the schedule (the least common multiple of
every_n_steps, sparsity.light_every_n_steps, modularity.every_n_steps and ablation.every_n_steps), so it holds
the measurements a long run pays per period. The instrument settings are the config's `instrument:` section
(`--every` overrides its every_n_steps). The on arm also measures at step 0 and at its last step
(everything: partition, ablation, hierarchy probes, context), outside the window; the one at the
last step runs after compilation, so its seconds are the clean cost of a full measurement.

Estimates (`estimates` in the JSON), each from the measurements' own seconds (timed after a
device sync) rather than from the noise of two wall times:

- `light_overhead_pct`: one light-tier measurement (instrument.sparsity.light_every_n_steps: the
  familiarity gaps alone) every L steps, as a share of the training time of L steps:
  100 * light seconds / (L * step seconds); `light_share_pct_median`, beside it, is the light
  measurements' seconds in the window over the off arm's;
- `overhead_pct_every_n`: one measurement of the probes (no partition) every N steps, as a share
  of the training time of N steps: 100 * P / (N * step seconds);
- `schedule_overhead_pct_upper_bound`: the config's whole schedule over one period, the
  measurements that partition (and ablate) costed as a full one: an upper bound;
  `schedule_overhead_pct` beside it costs each kind by the window's own measurement of that kind
  where the window holds one (`partition_measurement_seconds`: a partition without the ablation);
- the step seconds come from the off arm, or, before it has run, from the on arm's window less
  the measurements in it (`step_seconds_source` says which).

With `--rounds 1 --steps N`, one pair of arms and one measurement of each kind are enough for
these. The JSON is written after the step-0 measurement and after every arm (`complete` false
until the last), so a run stopped by a time limit leaves what it had measured. Writes
`<out>/overhead-<config stem>-<cpu|cuda>-<date>.json`: per round the wall-time ratio on/off and
the measured share, each measurement's seconds with what it did, the arms' peak memory, and their
best/median. It never imports `datasets` for the built-in corpus. Benchmarks are not tests:
nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

from lamina.cli import LaminaCLI, cli_kwargs
from lamina.data import TextDataModule
from lamina.instrument import Instrumentation
from lamina.lm import LanguageModel
from report import write_result


class WindowTimer(L.Callback):
    """Wall time from the start of step `start` to the end of step `end` (device synchronised),
    and from the start of `fit` to the window; placed before Instrumentation, so the run's final
    measurement (at step `end`, the last step) falls outside the window, and the period's
    measurements (steps start+1 .. end-1) inside."""

    def __init__(self, start: int, end: int):
        self.start, self.end, self.t0, self.elapsed = start, end, None, None
        self.fit_started, self.before_window = None, None

    def on_fit_start(self, trainer, module):
        self.fit_started = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.start and self.t0 is None:
            synchronize(module.device)
            self.t0 = time.perf_counter()
            self.before_window = self.t0 - self.fit_started

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.end and self.elapsed is None:
            synchronize(module.device)
            self.elapsed = time.perf_counter() - self.t0


class AfterStartMeasurement(L.Callback):
    """Placed after Instrumentation: calls `report` once the step-0 measurement is done (outside the
    timed window), so that a run stopped later still leaves its cost."""

    def __init__(self, report):
        self.report = report

    def on_train_start(self, trainer, module):
        self.report()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(configs: list[str], overrides: list[str]):
    args = [arg for path in configs for arg in ("--config", path)] + list(overrides)
    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=args, **cli_kwargs())
    return cli.model, cli.datamodule, cli.config


def what_ran(module, config) -> dict:
    """The model's shape and the data path, as resolved from the configs and overrides."""
    c, d = module.model.config, config.data
    return {"model_shape": {k: getattr(c, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
            "data": {"source": d.source, "tokenizer": d.tokenizer, "batch_size": d.batch_size}}


def run_arm(module, datamodule, trainer_cfg, instrument: Instrumentation | None, warmup: int, steps: int,
            logdir: str, device: torch.device, progress=None):
    timer = WindowTimer(warmup, warmup + steps)
    # The timer first: at the last step it stops before the run's final measurement (a one-off per
    # run, hook "end"), so the window holds what a long run pays per period.
    callbacks = [timer] + ([instrument] if instrument is not None else [])
    if instrument is not None and progress is not None:
        callbacks.append(AfterStartMeasurement(progress))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = L.Trainer(
        accelerator=trainer_cfg.accelerator, devices=1, precision=trainer_cfg.precision, max_steps=warmup + steps,
        limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
        logger=L.pytorch.loggers.TensorBoardLogger(save_dir=logdir, name="overhead"),
        log_every_n_steps=trainer_cfg.log_every_n_steps, gradient_clip_val=trainer_cfg.gradient_clip_val,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )
    trainer.fit(module, datamodule=datamodule)
    timings = instrument.timings if instrument else []
    # Measurements inside the timed window: those of on_train_batch_end after steps warmup+1 .. warmup+steps
    # (not the run's final one, hook "end", which runs after the timer stopped).
    window = [t for t in timings if t["hook"] in ("batch", "light") and warmup < t["step"] <= warmup + steps]
    before = [t for t in timings if t["step"] <= warmup and t["hook"] != "end"]
    result = {
        "seconds": timer.elapsed,
        "seconds_before_window": timer.before_window,
        "measurement_seconds_before_window": sum(t["seconds"] for t in before),
        "measurements_in_window": window,
        "instrument_seconds_in_window": sum(t["seconds"] for t in window),
        "light_seconds_in_window": sum(t["seconds"] for t in window if t["hook"] == "light"),
        "all_measurements": timings,
        # The process's high-water mark so far (Linux reports KiB); on CUDA the device's peak for this arm.
        "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if device.type == "cuda":
        result["peak_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        result["peak_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return result


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def schedule_counts(settings: dict, period: int) -> dict:
    """Measurements per period of the schedule (steps 1..period), by what they do. `settings`: the
    instrument section as a mapping (its sections nested, lamina.instrument.config)."""
    every = settings["every_n_steps"]
    modularity, ablation = cadence(settings, "modularity"), cadence(settings, "ablation")
    modularity = every if modularity is None else modularity

    def multiples(c):
        return set(range(c, period + 1, c)) if c else set()

    partition = multiples(modularity) | multiples(ablation)
    probes_only = (multiples(every) | multiples(cadence(settings, "hierarchy"))
                   | multiples(cadence(settings, "context"))) - partition
    light = multiples(cadence(settings, "sparsity", "light_every_n_steps")) - partition - probes_only
    return {"light": len(light), "probes_only": len(probes_only), "partition": len(partition - multiples(ablation)),
            "partition_and_ablation": len(multiples(ablation))}


def cadence(settings: dict, section: str, key: str = "every_n_steps"):
    """instrument.<section>.<key> of the settings (None where the section or the key is missing)."""
    return (settings.get(section) or {}).get(key)


def estimates(rounds: list[dict], partial: dict, settings: dict, period: int, steps: int,
              running: list[dict] | None = None) -> dict:
    """The overhead read from the measurements' own seconds; see the module's docstring. `running`:
    the measurements so far of an on arm still training."""
    arms = [r[a] for r in rounds for a in ("on", "off")] + list(partial.values())
    on = [r["on"] for r in rounds] + ([partial["on"]] if "on" in partial else [])
    off = [r["off"] for r in rounds] + ([partial["off"]] if "off" in partial else [])
    every = settings["every_n_steps"]
    measured = [m for arm in on for m in arm["all_measurements"]] + list(running or [])
    periodic = [m["seconds"] for arm in on for m in arm["measurements_in_window"]
                if m["hook"] == "batch" and not m["partition"] and not m["ablate"]]
    light = [m["seconds"] for arm in on for m in arm["measurements_in_window"] if m["hook"] == "light"]
    end = [m["seconds"] for m in measured if m["hook"] == "end"]
    start = [m["seconds"] for m in measured if m["hook"] == "start"]
    step_off = median_or_none(a["seconds"] / steps for a in off if a["seconds"])
    step_on = median_or_none((a["seconds"] - a["instrument_seconds_in_window"]) / steps for a in on if a["seconds"])
    step = step_off if step_off is not None else step_on
    periodic_s = median_or_none(periodic)
    light_s = median_or_none(light)
    full_s = median_or_none(end) if end else median_or_none(start)
    counts = schedule_counts(settings, period)
    schedule = None
    if step and full_s is not None and (periodic_s is not None or counts["probes_only"] == 0):
        cost = (counts["light"] * (light_s or 0.0) + counts["probes_only"] * (periodic_s or 0.0)
                + (counts["partition"] + counts["partition_and_ablation"]) * full_s)
        schedule = 100 * cost / (period * step)
    # The same schedule costed by the window's own measurements of each kind where it holds them (a
    # partition without the ablation, at the window's step, is not the end's everything), else as above.
    in_window = [m for arm in on for m in arm["measurements_in_window"] if m["hook"] == "batch"]
    partition_s = median_or_none(m["seconds"] for m in in_window if m["partition"] and not m["ablate"])
    ablation_s = median_or_none(m["seconds"] for m in in_window if m["ablate"])
    schedule_measured = None
    if schedule is not None:
        cost = (counts["light"] * (light_s or 0.0) + counts["probes_only"] * (periodic_s or 0.0)
                + counts["partition"] * (partition_s if partition_s is not None else full_s)
                + counts["partition_and_ablation"] * (ablation_s if ablation_s is not None else full_s))
        schedule_measured = 100 * cost / (period * step)
    first = arms[0] if arms else None
    compile_s = None
    if first is not None and first.get("seconds_before_window") is not None and step:
        # The first arm's time before the window, less its measurements there and its warm-up steps at
        # their steady speed: compilation, with the Trainer's and the probes' setup.
        compile_s = (first["seconds_before_window"] - first["measurement_seconds_before_window"]
                     - step * first.get("warmup_steps", 0))
    peaks = [a.get("peak_memory_allocated_bytes") for a in arms]
    return {
        "every_n_steps": every,
        "step_seconds": step,
        "step_seconds_source": "off arm" if step_off is not None else ("on arm less its measurements" if step_on else None),
        "step_seconds_off": step_off,
        "step_seconds_on_less_measurements": step_on,
        "periodic_measurement_seconds": periodic_s,
        "periodic_measurements": len(periodic),
        "overhead_pct_every_n": 100 * periodic_s / (every * step) if periodic_s is not None and step else None,
        "light_every_n_steps": cadence(settings, "sparsity", "light_every_n_steps"),
        "light_measurement_seconds": light_s,
        "light_measurements": len(light),
        # The light tier's share of training where it runs (every light_every_n_steps steps).
        "light_overhead_pct": (100 * light_s / (cadence(settings, "sparsity", "light_every_n_steps") * step)
                               if light_s is not None and step and cadence(settings, "sparsity", "light_every_n_steps")
                               else None),
        "full_measurement_seconds": full_s,
        "full_measurement_from": "end (after compilation)" if end else ("start (with compilation)" if start else None),
        "start_measurement_seconds": median_or_none(start),
        "schedule_period_steps": period,
        "schedule_measurements_per_period": counts,
        "schedule_overhead_pct_upper_bound": schedule,
        "partition_measurement_seconds": partition_s,
        "schedule_overhead_pct": schedule_measured,
        "compile_seconds_estimate": compile_s,
        "peak_memory_allocated_bytes": {
            arm: max((a.get("peak_memory_allocated_bytes") or 0 for a in group), default=None) or None
            for arm, group in (("on", on), ("off", off))} if any(peaks) else None,
        "process_max_rss_bytes": max((a["process_max_rss_bytes"] for a in arms), default=None),
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
    parser.add_argument("--suffix", default="",
                        help="appended to the JSON's name (overhead-tiny-cpu-<date><suffix>.json): a second run of a day "
                             "beside the first")
    parser.add_argument("--note", default=None, help="a note kept in the JSON (e.g. what else ran on the machine)")
    # Everything else is a config override (`--model.compile=false`, `--data.max_bytes 1e7`), passed on
    # in order, after the config files, to the parser `lamina fit` uses.
    args, args.overrides = parser.parse_known_args()
    args.config = args.config or ["configs/tiny.yaml"]
    if args.threads:
        torch.set_num_threads(args.threads)

    module, datamodule, config = build(args.config, args.overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    settings = {**config.instrument.as_dict(), "enabled": True}  # its sections as nested mappings
    if args.every is not None:
        settings["every_n_steps"] = args.every
    probe = Instrumentation(**settings)  # resolves the defaults (modularity.every_n_steps null -> every_n_steps)
    settings["modularity"] = {**settings["modularity"], "every_n_steps": probe.modularity.every_n_steps}
    cadences = (probe.every_n_steps, probe.modularity.every_n_steps, probe.ablation.every_n_steps,
                probe.sparsity.light_every_n_steps)
    period = math.lcm(*(c for c in cadences if c is not None))  # null: only at step 0 and the end
    steps = args.steps or period
    if not any(s % probe.every_n_steps == 0 for s in range(args.warmup + 1, args.warmup + steps)):
        print(f"overhead: no measurement falls inside the window (steps {args.warmup}+1 .. {args.warmup + steps}, "
              f"every {probe.every_n_steps}): only the measured share of the start and end ones is known", flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator != "cpu" else "cpu")
    initial = copy.deepcopy(module.state_dict())
    logdir = f"/tmp/lamina-bench-{time.strftime('%Y%m%d-%H%M%S')}"
    rounds: list[dict] = []
    partial: dict = {}  # the current round's finished arms

    def report(stage: str, running: Instrumentation | None = None) -> None:
        ratios = [r["ratio"] for r in rounds]
        shares = [r["measured_share"] for r in rounds]
        out = {
            "benchmark": "overhead",
            "complete": stage == "done",
            "stage": stage,
            "config": args.config[-1],
            "configs": args.config,
            "overrides": args.overrides,
            "instrument": settings,
            "schedule_period_steps": period,
            "timed_steps": steps,
            "timed_from_step": args.warmup,
            "rounds_asked": args.rounds,
            "tokens_per_step": config.data.batch_size * config.model.init_args.block_size,
            "params": module.model.num_params(),
            "precision": str(config.trainer.precision),
            "compile": bool(config.model.init_args.compile),
            **what_ran(module, config),
            "estimates": estimates(rounds, partial, settings, period, steps,
                                   running.timings if running is not None else None),
            "ratio_on_over_off": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}
            if ratios else None,
            "overhead_pct_median": 100 * (statistics.median(ratios) - 1) if ratios else None,
            "measured_share_pct_median": 100 * statistics.median(shares) if shares else None,
            "light_share_pct_median": 100 * statistics.median(r["light_share"] for r in rounds) if rounds else None,
            "off_step_seconds_median": statistics.median(r["off"]["seconds"] for r in rounds) / steps if rounds else None,
            "rounds": rounds,
            "partial_round": partial or None,
            "measurements_so_far": list(running.timings) if running is not None else None,
            "command": "python " + " ".join(sys.argv),
            "note": args.note,
        }
        # With a suffix, written aside first: the day's JSON without one is never overwritten.
        folder = Path(args.out) / ".overhead-unsuffixed" if args.suffix else Path(args.out)
        path = write_result(out, folder, "overhead", args.config[-1], device,
                            ("complete", "stage", "ratio_on_over_off", "overhead_pct_median",
                             "measured_share_pct_median", "light_share_pct_median"))
        if args.suffix:
            final = Path(args.out) / f"{path.stem}{args.suffix}{path.suffix}"
            path.replace(final)
            folder.rmdir()
            print(f"moved to {final}")

    for r in range(args.rounds):
        partial = {}
        for arm in ("on", "off") if r % 2 == 0 else ("off", "on"):
            module.load_state_dict(initial)
            torch.manual_seed(0)
            instrument = Instrumentation(**settings) if arm == "on" else None
            progress = None
            if instrument is not None and not rounds and not partial:
                progress = lambda: report(f"round {r}: on arm past its step-0 measurement", instrument)  # noqa: E731
            partial[arm] = run_arm(module, datamodule, config.trainer, instrument, args.warmup, steps, logdir,
                                   device, progress)
            partial[arm]["warmup_steps"] = args.warmup
            if len(partial) < 2:
                report(f"round {r}: {arm} arm done")
        result = {**partial}
        result["ratio"] = result["on"]["seconds"] / result["off"]["seconds"]
        # Amortised: the measurements' own wall time over the off arm's time for the same steps.
        result["measured_share"] = result["on"]["instrument_seconds_in_window"] / result["off"]["seconds"]
        result["light_share"] = result["on"]["light_seconds_in_window"] / result["off"]["seconds"]
        rounds.append(result)
        partial = {}
        print(json.dumps({"round": r, "ratio": result["ratio"], "measured_share": result["measured_share"],
                          "off_seconds": result["off"]["seconds"], "on_seconds": result["on"]["seconds"]}), flush=True)
        if r < args.rounds - 1:
            report(f"round {r} done")
    report("done")


if __name__ == "__main__":
    main()
