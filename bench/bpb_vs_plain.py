"""Bits per byte reached by lamina's trainer vs a plain nanoGPT-style loop on the same text file.

    python bench/bpb_vs_plain.py --text my_notes.txt --steps 300 --out bench/results

Same model shape, same initial weights, same token budget and the same training windows (both
read the data module's stream); both are scored by one evaluator on lamina's fixed validation
windows. Without --text it trains on the Python standard library's source, a real text that is
on every machine. Writes JSON with both bpb values and their difference.
"""

from __future__ import annotations

import argparse
import copy
import sys
import sysconfig
import tempfile
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import mean_val_loss, train_plain  # noqa: E402
from report import write_result  # noqa: E402
from throughput import SAME_OPTIMIZER, build  # noqa: E402

from lamina.lm import bits_per_byte  # noqa: E402


def stdlib_text(max_bytes: int) -> Path:
    """Python's standard library sources, concatenated: real text available offline everywhere."""
    out = Path(tempfile.mkdtemp()) / "stdlib.txt"
    written = 0
    with out.open("w", encoding="utf-8") as f:
        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            f.write(text + "\n")
            written += len(text.encode())
            if written >= max_bytes:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--text", help="plain-text file (default: the Python standard library's source)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    text = Path(args.text) if args.text else stdlib_text(6_000_000)
    overrides = [
        "--data.source", str(text), "--data.tokenizer", "byte", "--data.max_bytes", "6000000",
        "--trainer.max_steps", str(args.steps), "--trainer.enable_progress_bar", "false",
        "--trainer.val_check_interval", str(args.steps), "--trainer.logger", "false",
    ]
    module, datamodule, config = build(args.config, [*overrides, *SAME_OPTIMIZER])  # AdamW in both arms
    datamodule.prepare_data()
    datamodule.setup("fit")
    initial = copy.deepcopy(module.model.state_dict())
    tc = config.trainer

    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator=tc.accelerator, devices=1, precision=tc.precision, max_steps=args.steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=tc.gradient_clip_val,
    )
    trainer.fit(module, datamodule=datamodule)
    lamina_model = module.model

    plain_model = copy.deepcopy(lamina_model)
    plain_model.load_state_dict(initial)
    datamodule.trainer = None  # the same stream of windows from batch 0
    batches = iter(datamodule.train_dataloader())
    h = module.hparams
    train_plain(plain_model, batches, args.steps, lr=h.lr, warmup=h.warmup_steps, min_lr_ratio=h.min_lr_ratio,
                weight_decay=h.weight_decay, betas=tuple(h.betas))

    tpb = datamodule.val_tokens_per_byte
    bpb = {
        name: bits_per_byte(mean_val_loss(m, datamodule.val_dataloader()), tpb)
        for name, m in (("lamina", lamina_model), ("plain", plain_model))
    }
    result = {
        "benchmark": "bpb_vs_plain",
        "text": str(text) if args.text else "python stdlib sources",
        "train_bytes": datamodule.meta["splits"]["train"]["bytes"],
        "steps": args.steps,
        "tokens": args.steps * config.data.batch_size * config.model.init_args.block_size,
        "params": lamina_model.num_params(),
        "lamina_val_bpb": bpb["lamina"],
        "plain_val_bpb": bpb["plain"],
        "lamina_minus_plain": bpb["lamina"] - bpb["plain"],
    }
    device = torch.device("cuda" if torch.cuda.is_available() and tc.accelerator != "cpu" else "cpu")
    write_result(result, args.out, "bpb_vs_plain", args.config, device,
                 ("lamina_val_bpb", "plain_val_bpb", "lamina_minus_plain"))


if __name__ == "__main__":
    main()
