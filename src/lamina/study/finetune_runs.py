"""The runs of `finetune-fragility` (lamina.study.claims.finetune_fragility): its config files, its
presets (CLI words, steps, evaluation sizes) and the run specs of a seed.

Per seed s (every run of a seed gets seed_everything = data.seed = s, so the arms of a seed share
their pretraining and their data and differ only where the arm says):

- `base`: a tiny GPT pretrained on the world's prose (configs/finetune-base.yaml); `small`: half
  the blocks, on the same text (+ finetune-small.yaml);
- `finetuned-base`, `finetuned-small`: each fine-tuned from its pretrained checkpoint
  (`model.init_from`) on world arithmetic mixed with pretraining prose (+ finetune-tune.yaml), the
  small one for as many training FLOPs as the base's (`matched_steps`);
- `continued-base`: the base trained as many more steps on its own prose (+ finetune-continue.yaml).

Why this recipe (the one-seed pilot in finetune-tune.yaml): docs/studies.md, "finetune-fragility:
the design".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lamina.study.claim import Presets, repo_configs, word_value, yaml_value
from lamina.study.runs import Run, RunSpec

STUDY = "finetune-fragility"  # the claim these runs are fitted for; its presets: configs/study/<STUDY>.yaml
CONFIGS = {
    "base": "finetune-base.yaml",
    "small": "finetune-small.yaml",
    "tune": "finetune-tune.yaml",
    "continue": "finetune-continue.yaml",
}


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset: CLI words after the configs (for every run, the base's shape, the small
    one's), steps (None: the configs' trainer.max_steps), evaluation items and the drift probe. The
    presets' values, and the reasoning for each: configs/study/finetune-fragility.yaml (these
    defaults serve code that builds one)."""

    every: tuple[str, ...] = ()
    base: tuple[str, ...] = ()
    small: tuple[str, ...] = ()
    tune: tuple[str, ...] = ()  # CLI words for the fine-tuning runs only (both models)
    pretrain_steps: int | None = None
    tune_steps: int | None = None
    fact_items: int | None = None  # distinct questions per fact family (None: all, 178 and 125)
    arith_items: int = 100  # held-out problems per fine-tuned level
    probe_tokens: int = 4096  # drift: tokens of held-out pretraining windows CKA is computed on
    batch_size: int = 64  # prompts decoded (and choices scored) together
    stop_on_gate: bool = True  # stop before fine-tuning when the base does not know its facts (test: go on)


PRESETS = Presets(STUDY, Preset, repo_configs())  # cpu, gpu, test: configs/study/finetune-fragility.yaml
CPU, GPU, TOY = PRESETS["cpu"], PRESETS["gpu"], PRESETS.toy

# The fine-tuning and continued-pretraining runs without their Drift and Retention callbacks: the
# study measures drift and retention itself after training (lamina.study.finetune_evaluation), on
# every arm alike, and the callbacks would repeat the greedy fact questions and the CKA at step 0 and
# the end of every run (about 10 to 15 s a run on one CPU thread).
MEASURED_AFTER = ("--drift.enabled", "false", "--retention.enabled", "false")


def specs_for(paths: dict[str, Path], preset: Preset, seed: int, steps: tuple[int, int],
              pretrained: dict[str, Run] | None = None) -> dict[str, RunSpec]:
    """A seed's pretraining runs (`pretrained` None), or the runs on its pretrained checkpoints."""
    pretrain, tune = steps
    base = (str(paths["base"]),)
    small = base + (str(paths["small"]),)
    if pretrained is None:
        return {
            "base": RunSpec("base", base, seed, pretrain, preset.every + preset.base),
            "small": RunSpec("small", small, seed, pretrain, preset.every + preset.small),
        }

    def init(arm: str) -> tuple[str, ...]:
        return ("--model.init_from", str(pretrained[arm].checkpoint))

    small_tune = matched_steps(tune, pretrained["base"].checkpoint, pretrained["small"].checkpoint)
    wanted = word_value(preset.every, "checkpoint.every_n_train_steps") or yaml_value(
        [paths["base"], paths["tune"]], "checkpoint", "every_n_train_steps")
    # last.ckpt lands at max_steps only when the checkpoint interval divides it
    small_every = ("--checkpoint.every_n_train_steps", str(checkpoint_every(small_tune, int(wanted or small_tune))))

    return {
        "finetuned-base": RunSpec("finetuned-base", base + (str(paths["tune"]),), seed, tune,
                                  preset.every + preset.base + preset.tune + init("base") + MEASURED_AFTER),
        "finetuned-small": RunSpec("finetuned-small", small + (str(paths["tune"]),), seed, small_tune,
                                   preset.every + preset.small + preset.tune + init("small") + small_every
                                   + MEASURED_AFTER),
        "continued-base": RunSpec("continued-base", base + (str(paths["continue"]),), seed, tune,
                                  preset.every + preset.base + init("base") + MEASURED_AFTER),
    }


def flops_per_token(checkpoint: Path) -> int:
    """Training FLOPs per token of a checkpoint's model shape (lamina.model.GPT.flops_per_token)."""
    from lamina.model import GPT
    from lamina.pretrained import gpt_config, read_checkpoint

    config = gpt_config(dict(read_checkpoint(checkpoint, "model.init_from")["hyper_parameters"]), "model.init_from")
    with torch.device("meta"):
        return GPT(config).flops_per_token()


def checkpoint_every(steps: int, wanted: int) -> int:
    """The divisor of `steps` nearest `wanted` (by ratio): a checkpoint interval that puts the last
    checkpoint at `steps` exactly."""
    divisors = [d for d in range(1, steps + 1) if steps % d == 0]
    return min(divisors, key=lambda d: (abs(math.log(d / max(wanted, 1))), -d))


def matched_steps(steps: int, base: Path, small: Path) -> int:
    """Fine-tuning steps of the small model with the training FLOPs of `steps` steps of the base
    (the same tokens a step): the expert costs what direct fine-tuning costs, not what it saves."""
    return max(1, round(steps * flops_per_token(base) / flops_per_token(small)))


__all__ = ["CONFIGS", "CPU", "GPU", "MEASURED_AFTER", "PRESETS", "Preset", "STUDY", "TOY", "checkpoint_every",
           "matched_steps", "specs_for"]
