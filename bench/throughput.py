"""Training tokens/s of lamina's trainer against a plain PyTorch loop, same model and batches, one process.

    python bench/throughput.py --config configs/tiny.yaml --steps 60 --out bench/results
    python bench/throughput.py --config configs/small.yaml --out bench/results        # on a GPU: + MFU

Both arms start from the same weights and read the same batches from the same data module; each
is timed from step `--warmup` on (after compilation and allocator warm-up), with rounds
alternating so that drift in the machine's speed hits both. Writes JSON: ratio, tokens/s,
device, versions; on a GPU also MFU of each arm.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import train_plain  # noqa: E402
from report import write_result  # noqa: E402

from lamina.callbacks import peak_flops, training_callbacks  # noqa: E402
from lamina.cli import LaminaCLI, cli_kwargs  # noqa: E402
from lamina.data import TextDataModule  # noqa: E402
from lamina.lm import LanguageModel  # noqa: E402


class StepTimer(L.Callback):
    """Wall time and tokens from step `start` to the end of training (device synchronised at both ends)."""

    def __init__(self, start: int):
        self.start, self.t0, self.tokens, self.elapsed = start, None, 0, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.start and self.t0 is None:
            synchronize(module.device)
            self.t0 = time.perf_counter()
        if self.t0 is not None:
            self.tokens += batch[1].numel()

    def on_train_end(self, trainer, module):
        synchronize(module.device)
        self.elapsed = time.perf_counter() - self.t0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(config: str, overrides: list[str]) -> tuple[LanguageModel, TextDataModule, dict]:
    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=["--config", config, *overrides], **cli_kwargs())
    return cli.model, cli.datamodule, cli.config


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
    return {"tokens_per_sec": timer.tokens / timer.elapsed, "seconds": timer.elapsed}


def run_plain(module: LanguageModel, datamodule: TextDataModule, precision: str, steps: int, warmup: int) -> dict:
    model, h = module.model, module.hparams
    if h.compile:
        model.compile()
    device = module.device
    datamodule.trainer = None  # a fresh stream from batch 0, the batches the lamina arm read
    loader = iter(datamodule.train_dataloader())
    batches = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in str(precision))
    with autocast:
        result = train_plain(
            model, batches, steps, lr=h.lr, warmup=h.warmup_steps, min_lr_ratio=h.min_lr_ratio,
            weight_decay=h.weight_decay, betas=tuple(h.betas), timed_from=warmup,
        )
    synchronize(device)
    return {"tokens_per_sec": result["tokens_per_sec"], "seconds": result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. --model.compile=false")
    args = parser.parse_args()

    module, datamodule, config = build(args.config, args.overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator != "cpu" else "cpu")
    initial = copy.deepcopy(module.state_dict())
    arms = {"lamina": [], "plain": []}
    for _ in range(args.rounds):
        for arm in arms:
            module.load_state_dict(initial)
            torch.manual_seed(0)
            if arm == "lamina":
                arms[arm].append(run_lamina(module, datamodule, config.trainer, args.steps, args.warmup))
            else:
                module.to(device)
                arms[arm].append(run_plain(module, datamodule, config.trainer.precision, args.steps, args.warmup))
    best = {arm: max(r["tokens_per_sec"] for r in runs) for arm, runs in arms.items()}
    peak = peak_flops(device, config.trainer.precision)
    flops_per_token = module.model.flops_per_token()
    result = {
        "benchmark": "throughput",
        "config": args.config,
        "overrides": args.overrides,
        "steps": args.steps,
        "timed_from_step": args.warmup,
        "tokens_per_step": config.data.batch_size * config.model.block_size,
        "params": module.model.num_params(),
        "lamina_tokens_per_sec": best["lamina"],
        "plain_tokens_per_sec": best["plain"],
        "ratio_lamina_over_plain": best["lamina"] / best["plain"],
        "rounds": arms,
        "mfu": {arm: (tps * flops_per_token / peak if peak else None) for arm, tps in best.items()},
    }
    write_result(result, args.out, "throughput", args.config, device,
                 ("lamina_tokens_per_sec", "plain_tokens_per_sec", "ratio_lamina_over_plain"))


if __name__ == "__main__":
    main()
