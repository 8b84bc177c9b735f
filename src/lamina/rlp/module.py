"""RLPModel: the LanguageModel whose training step is RLP's. A config names it by class path, with the
RLP settings among its arguments:

    model:
      class_path: lamina.rlp.RLPModel
      init_args: {rlp: {group_size: 16, ...}, n_layer: 4, ...}   # LanguageModel's keys beside rlp

(`--model lamina.rlp.RLPModel --model.rlp.group_size 16` on the command line). Validation, optimizer,
schedule, init_from and the optimizer step's guard are the LanguageModel's (lamina.lm lists a step's hooks)."""

from __future__ import annotations

import dataclasses

import torch
from lightning.pytorch.strategies import FSDPStrategy

from lamina import tags
from lamina.data.thoughts import DEFAULT_THOUGHT_TOKENS, ThoughtSlots, longest_thought_tokens
from lamina.errors import ConfigError
from lamina.lm import LanguageModel
from lamina.rlp.config import RLPConfig
from lamina.rlp.evaluate import newline_ids
from lamina.rlp.objective import ema_model, ema_update, rlp_step, step_generator
from lamina.step import host_scalar

PROGRESS_BAR = ("reward_std", "advantage_abs_mean", "zero_variance_frac")  # what can show learning


class RLPModel(LanguageModel):
    def __init__(self, *args, rlp: RLPConfig | None = None, **kwargs):
        """
        Args:
            rlp: the RLP settings (required): see lamina.rlp.RLPConfig for its keys (`model.rlp.group_size`,
                ...); the other arguments are LanguageModel's.
        """
        if rlp is None:
            raise ConfigError(
                "model.rlp: lamina.rlp.RLPModel needs the RLP settings (model.init_args.rlp, or --model.rlp.* "
                "on the command line)"
            )
        super().__init__(*args, **kwargs)
        self.rlp_config = rlp
        # The EMA baseline model (and, for the `frozen` control, the starting model) are submodules
        # that never train, kept in checkpoints; both start as copies of the start weights.
        self.rlp_ema = ema_model(self.model)
        self.rlp_frozen = ema_model(self.model) if self.rlp_config.thoughts == "frozen" else None
        self.rlp_sample_tokens = 0  # cumulative, all ranks: forward tokens spent sampling thoughts
        self.rlp_flops_unshared = 0.0  # cumulative, all ranks: the step FLOPs counted without a shared context
        self._rlp_ids: dict | None = None
        self._step_metrics: dict[str, torch.Tensor] = {}

    def on_fit_start(self) -> None:
        if isinstance(self.trainer.strategy, FSDPStrategy):
            # Sampling runs the plain model outside the sharded wrapper, and the EMA copy is not sharded.
            raise ConfigError("model.rlp: RLP and thinking evaluations do not run under FSDP yet; use DDP")
        super().on_fit_start()
        if not self._restored:  # a resumed run has restored its EMA and frozen models
            for other in (self.rlp_ema, self.rlp_frozen):
                if other is not None:
                    other.load_state_dict(self.model.state_dict())
        self.rlp_config = self._resolved_thought_cap(self.rlp_config)
        self._rlp_ids = self._think_ids()

    def _resolved_thought_cap(self, config: RLPConfig) -> RLPConfig:
        """max_thought_tokens null: the longest worked thought at the families and levels the data
        trains on (the world corpus; DEFAULT_THOUGHT_TOKENS for other sources)."""
        if config.max_thought_tokens is not None:
            return config
        data = getattr(self.trainer.datamodule, "hparams", {}) or {}
        if data.get("source", "world") == "world":
            cap = longest_thought_tokens(data.get("families"), data.get("levels"))
        else:
            cap = DEFAULT_THOUGHT_TOKENS
        return dataclasses.replace(config, max_thought_tokens=cap)

    def _think_ids(self) -> dict:
        """The keyword arguments of rlp_step that come from the data: token ids, line ends, slot finder."""
        datamodule = self.trainer.datamodule
        if datamodule is None or getattr(datamodule, "think_id", None) is None:
            raise ConfigError("model.rlp: needs the data module's tokenizer with <think> and </think> tokens")
        ids = {"think_id": datamodule.think_id, "end_think_id": datamodule.end_think_id, "eot_id": datamodule.eot_id}
        if max(ids.values()) >= self.config.vocab_size:
            raise ConfigError(f"model.vocab_size: {self.config.vocab_size} has no room for the think tokens {ids}")
        if self.rlp_config.reward_tokens == "line":
            ids["line_end_ids"] = sorted(set(newline_ids(datamodule.tokenizer)) | {datamodule.eot_id})
        if self.rlp_config.positions == "thought_slots":
            if datamodule.hparams.get("thoughts", "keep") != "strip":
                raise ConfigError(
                    "model.rlp.positions: thought_slots needs data.thoughts: strip (a slot is where a stripped "
                    "thought stood; kept text has none)"
                )
            ids["slots"] = ThoughtSlots(datamodule.tokenizer, self.config.vocab_size)
        if self.rlp_config.thoughts == "filler":
            filler = datamodule.tokenizer.encode(self.rlp_config.filler_token).ids
            if len(filler) != 1:
                raise ConfigError(
                    f"model.rlp.filler_token: {self.rlp_config.filler_token!r} is {len(filler)} tokens, expected one"
                )
            ids["filler_id"] = filler[0]
        return ids

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        accumulate = self.trainer.accumulate_grad_batches
        generator = step_generator(
            self.rlp_config.seed, self.global_step * accumulate + batch_idx % accumulate, self.global_rank, self.device
        )
        step = rlp_step(
            self.model, self.rlp_ema, x, y, self.rlp_config,
            generator=generator, sampler=self.rlp_frozen, **self._rlp_ids,
        )
        self._step_metrics = step.metrics  # rlp/<name>: the step's last micro-batch, logged at log steps
        # tokens_seen counts the batch's data tokens, as for next-token training; flops_seen all the
        # step's compute: sampling, EMA scoring, and the policy's forward and backward
        self._count(y.numel(), step.flops)
        self.rlp_sample_tokens += step.sample_tokens * self.trainer.world_size
        self.rlp_flops_unshared += step.flops_unshared * self.trainer.world_size
        self._note_loss(step.loss, batch_idx)
        return step.loss

    def log_step(self, mean_loss: torch.Tensor) -> None:
        """rlp/<name> of the step's last micro-batch (this rank's) and lr (the counters
        perf/rlp_sample_tokens and perf/flops_unshared: Throughput)."""
        for name, value in self._step_metrics.items():
            self.log(tags.rlp(name), host_scalar(value), prog_bar=name in PROGRESS_BAR)
        self.log(tags.LR, host_scalar(self._step_lr))

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # once per optimizer step (not per accumulated micro-batch); a skipped step moves it as well
        ema_update(self.rlp_ema, self.model, self.rlp_config.ema_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lamina"]["rlp_sample_tokens"] = self.rlp_sample_tokens
        checkpoint["lamina"]["rlp_flops_unshared"] = self.rlp_flops_unshared

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.rlp_sample_tokens = checkpoint.get("lamina", {}).get("rlp_sample_tokens", 0)
        self.rlp_flops_unshared = checkpoint.get("lamina", {}).get("rlp_flops_unshared", 0.0)
        if not any(k.startswith("rlp_ema.") for k in checkpoint["state_dict"]):
            raise ConfigError(
                "ckpt_path: the checkpoint holds no RLP EMA model (it is not from an RLP run); to start RLP "
                "from a pretrained checkpoint, pass it as model.init_from instead"
            )
