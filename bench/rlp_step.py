"""Cost of one RLP step relative to one next-token step on the same batch, and the sampling share.

    python bench/rlp_step.py --config configs/rlp-tiny.yaml --out bench/results
    python bench/rlp_step.py --config configs/rlp-tiny.yaml --model.rlp.group_size 8   # overrides

Both arms start from the same weights (model.init_from when the file exists, else the random
init, which the JSON says) and train on the same batch (x, y) `[B, T]` with the same AdamW: the
next-token arm runs forward, backward and the optimizer step; the RLP arm runs `lamina.rlp.rlp_step`
(positions, G thoughts per document sampled with the KV cache, the policy's forward with the
shared context, the EMA scoring), backward, the optimizer step and the EMA update. Each step is
timed with the device synchronised at both ends, after `--warmup` untimed steps; rounds alternate
the arms so that drift in the machine's speed hits both. The sampling time is measured inside the
RLP step (wrapping `sample_thoughts`). Writes JSON: seconds per step of each arm, their ratio (the
paper reports 2.25x an SFT step per RLP step, for its models and settings), the sampling share,
counted FLOPs and tokens of both arms, thought lengths, device, versions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lamina.cli import LaminaCLI, cli_kwargs
from lamina.data import TextDataModule
from lamina.lm import LanguageModel
from lamina.pretrained import load_init_from
from lamina.rlp import objective as rlp
from report import write_result


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SamplingTimer:
    """Wraps rlp.sample_thoughts (looked up by rlp_step at call time) and adds up its wall time."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.original = device, 0.0, rlp.sample_thoughts

    def __call__(self, *args, **kwargs):
        synchronize(self.device)
        start = time.perf_counter()
        out = self.original(*args, **kwargs)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        return out


def optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, fused=next(model.parameters()).is_cuda)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/rlp-tiny.yaml")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per arm and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    args, overrides = parser.parse_known_args()

    cli = LaminaCLI(
        LanguageModel, TextDataModule, run=False, args=["--config", args.config, *overrides], **cli_kwargs()
    )
    module, datamodule, config = cli.model, cli.datamodule, cli.config
    if getattr(module, "rlp_config", None) is None:
        raise SystemExit(f"{args.config}: its model is not lamina.rlp.RLPModel: nothing to compare")
    datamodule.prepare_data()
    datamodule.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator != "cpu" else "cpu")
    init_from = module.hparams.init_from
    started_from = init_from if init_from and os.path.isfile(init_from) else "random init"
    if started_from != "random init":
        load_init_from(module.model, module.hparams, init_from)
    module.to(device)
    module.rlp_ema.load_state_dict(module.model.state_dict())
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    x, y = (t.to(device) for t in next(iter(datamodule.train_dataloader())))
    ids = dict(think_id=datamodule.think_id, end_think_id=datamodule.end_think_id)
    if module.rlp_config.thoughts == "filler":
        ids["filler_id"] = datamodule.tokenizer.encode(module.rlp_config.filler_token).ids[0]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in str(config.trainer.precision))
    lr = module.hparams.lr
    timer = SamplingTimer(device)
    rlp.sample_thoughts = timer

    def ntp_step(model, opt, step):
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {}

    def rlp_step(model, opt, step):
        generator = rlp.step_generator(module.rlp_config.seed, step, 0, device)
        with autocast:
            out = rlp.rlp_step(model, module.rlp_ema, x, y, module.rlp_config, generator=generator,
                               sampler=module.rlp_frozen, **ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        rlp.ema_update(module.rlp_ema, model, module.rlp_config.ema_decay)
        return {"flops": out.flops, "sample_tokens": out.sample_tokens, "train_tokens": out.train_tokens,
                "forward_tokens": out.forward_tokens, "thought_len": out.thoughts.lengths.float().mean().item(),
                "decode_steps": out.thoughts.decode_steps}

    arms = {"ntp": ntp_step, "rlp": rlp_step}
    times = {arm: [] for arm in arms}
    sampling, details = [], []
    for _ in range(args.rounds):
        for arm, fn in arms.items():
            module.model.load_state_dict(initial)
            module.rlp_ema.load_state_dict(initial)
            opt = optimizer(module.model, lr)
            for step in range(args.warmup + args.steps):
                timer.seconds = 0.0
                synchronize(device)
                start = time.perf_counter()
                info = fn(module.model, opt, step)
                synchronize(device)
                if step >= args.warmup:
                    times[arm].append(time.perf_counter() - start)
                    if arm == "rlp":
                        sampling.append(timer.seconds)
                        details.append(info)
    rlp.sample_thoughts = timer.original

    ntp_s, rlp_s = statistics.median(times["ntp"]), statistics.median(times["rlp"])
    ntp_flops = y.numel() * module.model.flops_per_token()
    rlp_flops = statistics.mean(d["flops"] for d in details)
    cfg = module.rlp_config
    result = {
        "benchmark": "rlp_step",
        "config": args.config,
        "overrides": overrides,
        "started_from": started_from,
        "batch": list(x.shape),
        "rlp": {k: getattr(cfg, k) for k in ("group_size", "temperature", "max_thought_tokens", "positions_per_doc",
                                             "thoughts", "ntp_weight")},
        "context_tokens": cfg.context_length(module.config.block_size),
        "params": module.model.num_params(),
        "ntp_step_seconds": ntp_s,
        "rlp_step_seconds": rlp_s,
        "ratio_rlp_over_ntp": rlp_s / ntp_s,
        "sampling_seconds": statistics.median(sampling),
        "sampling_share_of_rlp_step": statistics.median(s / t for s, t in zip(sampling, times["rlp"])),
        "paper_ratio_rlp_over_sft": 2.25,
        "ntp_flops_per_step": ntp_flops,
        "rlp_flops_per_step": rlp_flops,
        "flops_ratio_rlp_over_ntp": rlp_flops / ntp_flops,
        "rlp_sample_tokens_per_step": statistics.mean(d["sample_tokens"] for d in details),
        "rlp_train_tokens_per_step": statistics.mean(d["train_tokens"] for d in details),
        "ntp_train_tokens_per_step": y.numel(),
        "thought_len_mean": statistics.mean(d["thought_len"] for d in details),
        "decode_steps_mean": statistics.mean(d["decode_steps"] for d in details),
        "timed_steps_per_arm": len(times["rlp"]),
        "step_seconds": times,
        "load_average": os.getloadavg(),
        "precision": str(config.trainer.precision),
    }
    write_result(result, args.out, "rlp_step", args.config, device,
                 ("ntp_step_seconds", "rlp_step_seconds", "ratio_rlp_over_ntp", "sampling_share_of_rlp_step",
                  "flops_ratio_rlp_over_ntp", "thought_len_mean"))


if __name__ == "__main__":
    main()
