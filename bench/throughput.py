"""Training tokens/s of lamina's trainer against a plain PyTorch loop, same model and batches, one process.

    python bench/throughput.py --config configs/tiny.yaml --steps 60 --out bench/results
    python bench/throughput.py --config configs/small.yaml --out bench/results        # on a GPU: + MFU
    python bench/throughput.py --config configs/small.yaml --model.compile=false --data.batch_size 32
    python bench/throughput.py --config configs/gpt2-124m.yaml --config configs/gpt2-124m-offline.yaml

Any config key can be overridden, in either form (`--key value` or `--key=value`), as with
`lamina fit`. Both arms start from the same weights and read the same batches from the same data
module, with the same model, batch, steps, precision, gradient clipping and schedule, AdamW in both (the
config's model.optimizer is set to adamw: the plain loop is nanoGPT's), measuring off
and no validation in either. The lamina arm is a Lightning Trainer with the callbacks every lamina
run trains with; the plain arm is `plain_loop.train_plain`, a loop as strong as nanoGPT's (fused
AdamW where the device has it, no host sync per step). Each arm is timed from step `--warmup` on
(after compilation and allocator warm-up); rounds alternate which arm runs first, so that drift
in the machine's speed hits both, and the ratio is taken within each round.

Writes JSON (`<out>/throughput-<config stem>-<cpu|cuda>-<date>.json`): per round each arm's
tokens/s, timed seconds (wall, and the process's CPU seconds), warm-up seconds (the steps before
`--warmup`: compilation included) and peak memory, and the round's ratio lamina/plain (by wall
time, and by CPU time: on a shared CPU the steadier of the two); the median ratios and the median
tokens/s of each arm; on a GPU whose peak is known, MFU of each arm; an estimate of the compile time.
The JSON is written after each arm as well (`complete` false until the last round), so a run
stopped by a time limit keeps the arms it finished.
"""

from __future__ import annotations

import argparse
import copy
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import synchronize, train_plain  # noqa: E402
from report import write_result  # noqa: E402

from lamina.callbacks import peak_flops, training_callbacks  # noqa: E402
from lamina.cli import LaminaCLI, cli_kwargs  # noqa: E402
from lamina.data import TextDataModule  # noqa: E402
from lamina.lm import LanguageModel  # noqa: E402


class StepTimer(L.Callback):
    """Wall time and tokens from step `start` to the end of training, and the wall time of the
    steps before it (the device synchronised at each mark)."""

    def __init__(self, start: int):
        self.start, self.t0, self.tokens, self.elapsed = start, None, 0, None
        self.began, self.warmup_seconds = None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.began is None:
            synchronize(module.device)
            self.began = time.perf_counter()
        if trainer.global_step == self.start and self.t0 is None:
            synchronize(module.device)
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()
            self.warmup_seconds = self.t0 - self.began
        if self.t0 is not None:
            self.tokens += batch[1].numel()

    def on_train_end(self, trainer, module):
        synchronize(module.device)
        self.elapsed, self.cpu_seconds = time.perf_counter() - self.t0, time.process_time() - self.cpu0


SAME_OPTIMIZER = ("--model.optimizer", "adamw")  # the optimizer both arms can run


def build(config: str | list[str], overrides: list[str]) -> tuple[LanguageModel, TextDataModule, dict]:
    """The model, data module and config `lamina fit` would make of these config files (in order:
    later ones overlay earlier ones, as `--config A --config B` does) and overrides."""
    configs = [config] if isinstance(config, str) else config
    args = [arg for path in configs for arg in ("--config", path)] + list(overrides)
    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=args, **cli_kwargs())
    return cli.model, cli.datamodule, cli.config


def what_ran(module, config) -> dict:
    """The model's shape and the data path, as resolved from the configs and overrides."""
    c, d = module.model.config, config.data
    return {"model_shape": {k: getattr(c, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
            "data": {"source": d.source, "tokenizer": d.tokenizer, "batch_size": d.batch_size}}


def run_lamina(module: LanguageModel, datamodule: TextDataModule, trainer_cfg, steps: int, warmup: int) -> dict:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator=trainer_cfg.accelerator, devices=1, precision=trainer_cfg.precision, max_steps=steps,
        limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
        logger=L.pytorch.loggers.TensorBoardLogger(save_dir="/tmp/lamina-bench", name="throughput"),
        log_every_n_steps=trainer_cfg.log_every_n_steps, gradient_clip_val=trainer_cfg.gradient_clip_val,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer, *training_callbacks()],
    )
    trainer.fit(module, datamodule=datamodule)
    optimizer = trainer.optimizers[0]
    return {"tokens_per_sec": timer.tokens / timer.elapsed, "seconds": timer.elapsed, "cpu_seconds": timer.cpu_seconds,
            "warmup_seconds": timer.warmup_seconds, "fused_adamw": bool(optimizer.defaults.get("fused"))}


def run_plain(module: LanguageModel, datamodule: TextDataModule, trainer_cfg, steps: int, warmup: int) -> dict:
    model, h = module.model, module.hparams
    if h.compile:
        model.compile()
    device = module.device
    datamodule.trainer = None  # a fresh stream from batch 0, the batches the lamina arm read
    loader = iter(datamodule.train_dataloader())
    batches = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in str(trainer_cfg.precision))
    with autocast:
        result = train_plain(
            model, batches, steps, lr=h.lr, warmup=h.warmup_steps, min_lr_ratio=h.min_lr_ratio,
            weight_decay=h.weight_decay, betas=tuple(h.betas), grad_clip=trainer_cfg.gradient_clip_val or 0.0,
            timed_from=warmup, log_every=trainer_cfg.log_every_n_steps,
        )
    return {k: result[k] for k in ("tokens_per_sec", "seconds", "cpu_seconds", "warmup_seconds", "fused_adamw")}


def run_arm(arm: str, module, datamodule, config, device, steps: int, warmup: int) -> dict:
    gc.collect()  # the other arm's trainer, optimizer and loader go now, not inside this arm's window
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    if arm == "lamina":
        result = run_lamina(module, datamodule, config.trainer, steps, warmup)
    else:
        module.to(device)
        result = run_plain(module, datamodule, config.trainer, steps, warmup)
    if device.type == "cuda":
        result["peak_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        result["peak_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    # The process's high-water mark so far (Linux reports KiB): on the CPU the only memory figure.
    result["process_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--config", action="append", default=None,
                        help="config file (default configs/tiny.yaml); again for an overlay, as with lamina fit")
    parser.add_argument("--steps", type=int, default=60, help="steps per arm and round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both arms, alternating which runs first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", default="bench/results")
    # Everything else is a config override (`--model.compile=false`, `--data.batch_size 32`), passed
    # on in order, after the config files, to the same parser `lamina fit` uses.
    args, overrides = parser.parse_known_args(argv)
    args.config = args.config or ["configs/tiny.yaml"]
    args.overrides = overrides
    return args, overrides


def main(argv=None) -> Path:
    args, overrides = parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        raise SystemExit(f"throughput: --warmup {args.warmup} must be below --steps {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Both arms step AdamW (the plain loop is nanoGPT's, AdamW only), whatever model.optimizer says.
    module, datamodule, config = build(args.config, [*overrides, *SAME_OPTIMIZER])
    datamodule.prepare_data()
    datamodule.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator != "cpu" else "cpu")
    initial = copy.deepcopy(module.state_dict())
    rounds: list[dict] = []

    def report(current: dict | None) -> Path:
        """Write what is known so far: the finished rounds, and the arms of `current` (the round
        under way) that have run; `complete` once every round has."""
        return write_result(summarise(args, module, config, device, rounds, current), args.out, "throughput",
                            args.config[-1], device,
                            ("complete", "lamina_tokens_per_sec", "plain_tokens_per_sec", "ratio_lamina_over_plain"))

    for r in range(args.rounds):
        order = ("lamina", "plain") if r % 2 == 0 else ("plain", "lamina")
        result = {"order": list(order)}
        for arm in order:
            module.load_state_dict(initial)
            torch.manual_seed(0)
            result[arm] = run_arm(arm, module, datamodule, config, device, args.steps, args.warmup)
            if arm == order[0]:
                report(result)  # a run stopped later keeps this arm's figures
        result["ratio"] = result["lamina"]["tokens_per_sec"] / result["plain"]["tokens_per_sec"]
        # Same tokens in both arms: the ratio of their CPU seconds is the ratio of tokens per CPU second,
        # which other processes on a shared CPU disturb far less than wall time (one thread: OMP_NUM_THREADS=1).
        result["cpu_time_ratio"] = result["plain"]["cpu_seconds"] / result["lamina"]["cpu_seconds"]
        rounds.append(result)
        print(f"throughput: round {r} ({' then '.join(order)}): lamina {result['lamina']['tokens_per_sec']:.0f} "
              f"plain {result['plain']['tokens_per_sec']:.0f} tokens/s, ratio {result['ratio']:.4f} "
              f"(by CPU time {result['cpu_time_ratio']:.4f})", flush=True)
        if r < args.rounds - 1:
            report(None)
    return report(None)


def summarise(args, module, config, device, rounds: list[dict], current: dict | None) -> dict:
    """The JSON of the rounds run so far (and of the finished arms of `current`, a round under way)."""
    every = rounds + ([current] if current else [])
    ratios = [r["ratio"] for r in rounds]
    median_tps = {arm: (statistics.median(r[arm]["tokens_per_sec"] for r in every if arm in r)
                        if any(arm in r for r in every) else None) for arm in ("lamina", "plain")}
    peak = peak_flops(device, config.trainer.precision)
    flops_per_token = module.model.flops_per_token()
    tokens_per_step = config.data.batch_size * config.model.init_args.block_size
    timed = args.steps - args.warmup
    first = every[0][every[0]["order"][0]]  # the first arm run: it paid for compilation
    steady_step = tokens_per_step / first["tokens_per_sec"]
    result = {
        "benchmark": "throughput",
        "complete": current is None and len(rounds) == args.rounds,
        "config": args.config[-1],
        "configs": args.config,
        "overrides": args.overrides,
        "steps": args.steps,
        "timed_from_step": args.warmup,
        "timed_steps": timed,
        "rounds_asked": args.rounds,
        "tokens_per_step": tokens_per_step,
        "params": module.model.num_params(),
        "flops_per_token": flops_per_token,
        "precision": str(config.trainer.precision),
        "compile": bool(config.model.init_args.compile),
        **what_ran(module, config),
        "lamina_tokens_per_sec": median_tps["lamina"],
        "plain_tokens_per_sec": median_tps["plain"],
        "ratio_lamina_over_plain": statistics.median(ratios) if ratios else None,
        "ratio_per_round": ratios,
        "ratio_min_max": [min(ratios), max(ratios)] if ratios else None,
        "cpu_time_ratio_lamina_over_plain": (statistics.median(r["cpu_time_ratio"] for r in rounds)
                                             if rounds else None),
        "cpu_time_ratio_per_round": [r["cpu_time_ratio"] for r in rounds],
        "threads": torch.get_num_threads(),
        "peak_flops": peak,
        "mfu": {arm: (tps * flops_per_token / peak if peak and tps else None) for arm, tps in median_tps.items()},
        "mfu_note": None if peak else f"peak FLOP/s unknown for {device} at {config.trainer.precision}: no MFU",
        # The first arm's warm-up steps less what they would take at its steady speed: compilation
        # (with model.compile) and allocator warm-up.
        "compile_seconds_estimate": first["warmup_seconds"] - args.warmup * steady_step,
        "compile_seconds_from": every[0]["order"][0],
        "rounds": rounds,
        "partial_round": current,
    }
    if device.type == "cuda":
        result["peak_memory_allocated_bytes"] = {
            arm: max((r[arm]["peak_memory_allocated_bytes"] for r in every if arm in r), default=None)
            for arm in ("lamina", "plain")}
    return result


if __name__ == "__main__":
    main()
