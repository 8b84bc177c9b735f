"""The next-token objective as a LightningModule: optimizer, schedule, bits per byte, throughput, MFU."""

from __future__ import annotations

import math
import os
import time

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from lamina.checkpointing import last_good_checkpoint
from lamina.errors import ConfigError
from lamina.model import GPT, GPTConfig
from lamina.rlp import (
    RLPConfig,
    ThoughtEvalConfig,
    ThoughtEvaluator,
    ema_update,
    frozen_copy,
    rlp_step,
    step_generator,
    thought_eval_settings,
)
from lamina.user_errors import first_sentence

NONFINITE_POLICIES = ("stop", "skip")

# Dense peak FLOP/s per device for the dtype of the matmuls; MFU is only reported where it is known.
PEAK_FLOPS = {
    ("H100", "bf16"): 989e12,
    ("H200", "bf16"): 989e12,
    ("A100", "bf16"): 312e12,
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s from the table, or None (CPU, unknown card, or a precision the table does not hold)."""
    if device.type != "cuda":
        return None
    dtype = "bf16" if "bf16" in str(precision) else None
    name = torch.cuda.get_device_name(device)
    return next((flops for (card, dt), flops in PEAK_FLOPS.items() if card in name and dt == dtype), None)


class NonFiniteError(ConfigError):
    """Training produced a NaN/Inf and the policy is to stop: one line for the user, not a traceback."""


def _scaler_owns_infs(precision) -> bool:
    """fp16 mixed precision: the GradScaler skips overflowing steps and lowers its scale itself."""
    return str(precision) in ("16-mixed", "16")


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to `min_lr_ratio` at `max_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def bits_per_byte(loss_nats: torch.Tensor | float, tokens_per_byte: float) -> torch.Tensor | float:
    """Mean next-token loss (nats per token) as bits per byte of raw text: comparable across tokenizers."""
    return loss_nats / math.log(2) * tokens_per_byte


class LanguageModel(L.LightningModule):
    def __init__(
        self,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int = 256,
        activation: str = "gelu",
        vocab_size: int = 259,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        bias: bool = False,
        rotary: bool = False,
        lr: float = 1e-3,
        min_lr_ratio: float = 0.1,
        warmup_steps: int = 100,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        compile: bool = False,
        peak_flops: float | None = None,
        init_from: str | None = None,
        rlp: RLPConfig | None = None,
        thought_eval: ThoughtEvalConfig | None = None,
        on_nonfinite: str = "stop",
        max_nonfinite_skips: int = 10,
    ):
        """
        Args:
            n_layer: transformer blocks.
            n_head: attention heads; must divide n_embd.
            n_embd: width of the residual stream.
            block_size: the one context length (the data module gets it by a link).
            activation: MLP activation: gelu, relu, relu2, silu, swiglu, geglu.
            vocab_size: tokenizer vocabulary (linked from the data module).
            mlp_ratio: MLP width over n_embd (gated activations keep the parameter count).
            dropout: dropout probability (0 for pretraining from scratch).
            bias: biases in linear layers and layer norms.
            rotary: rotary position embeddings instead of learned positions.
            lr: peak learning rate.
            min_lr_ratio: final learning rate as a fraction of lr.
            warmup_steps: linear warmup steps.
            weight_decay: AdamW decay on matrices (never on norms, biases, embeddings).
            betas: AdamW betas.
            compile: torch.compile the model (GPU runs).
            peak_flops: device peak FLOP/s for MFU, overriding the built-in table.
            init_from: a lamina checkpoint whose model weights (and nothing else: no optimizer, step or
                counters) the run starts from; a phase on a pretrained model. Ignored when resuming.
            rlp: train with the RLP objective (reinforcement as a pretraining objective) instead of
                next-token prediction; see lamina.rlp.RLPConfig for its keys (`model.rlp.group_size`, ...).
            thought_eval: evaluate thinking every N steps (held-out arithmetic with and without a
                thought, next-token loss with a sampled thought); see lamina.rlp.ThoughtEvalConfig.
            on_nonfinite: a NaN/Inf loss or gradient: `stop` (one-line error naming the step and the
                last good checkpoint) or `skip` (drop the update, count it in train/nonfinite_skips).
            max_nonfinite_skips: with `skip`, stop anyway after this many non-finite steps in a row.
        """
        super().__init__()
        self.save_hyperparameters()
        self.config = GPTConfig(
            vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
            activation=activation, mlp_ratio=mlp_ratio, dropout=dropout, bias=bias, rotary=rotary,
        )
        for key, value in (("lr", lr), ("weight_decay", weight_decay), ("min_lr_ratio", min_lr_ratio)):
            if not value >= 0:
                raise ConfigError(f"model.{key}: expected a non-negative number, got {value}")
        if not min_lr_ratio <= 1:
            raise ConfigError(f"model.min_lr_ratio: expected a number in [0, 1] (a fraction of lr), got {min_lr_ratio}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"model.betas: expected two numbers in [0, 1), got {list(betas)}")
        if peak_flops is not None and not peak_flops > 0:
            raise ConfigError(f"model.peak_flops: expected null or a number of FLOP/s > 0, got {peak_flops}")
        if warmup_steps < 0:
            raise ConfigError(f"model.warmup_steps: expected >= 0, got {warmup_steps}")
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"model.on_nonfinite: expected one of {', '.join(NONFINITE_POLICIES)}, got {on_nonfinite!r}")
        if isinstance(max_nonfinite_skips, bool) or not isinstance(max_nonfinite_skips, int) or max_nonfinite_skips < 1:
            raise ConfigError(f"model.max_nonfinite_skips: expected an integer >= 1, got {max_nonfinite_skips!r}")
        self.model = GPT(self.config)
        self.flops_per_token = self.model.flops_per_token()  # fixed by the shape; not recounted per step
        self._interval_start: float | None = None
        self._tokens_since = 0  # this rank's training tokens since the interval started
        self._peak_flops: float | None = None
        self._last_logged_step = -1
        # Cumulative over the whole run (all ranks), kept in checkpoints: the x axes of `lamina compare`.
        self.tokens_seen = 0
        self.flops_seen = 0.0
        # RLP: the EMA baseline model (and, for the `frozen` control, the starting model) are
        # submodules that never train, kept in checkpoints; both start as copies of the start weights.
        self.rlp_config, self.thought_eval_config = rlp, thought_eval
        self.rlp_ema = frozen_copy(self.model) if rlp is not None else None
        self.rlp_frozen = frozen_copy(self.model) if rlp is not None and rlp.thoughts == "frozen" else None
        self.rlp_sample_tokens = 0  # cumulative, all ranks: forward tokens spent sampling thoughts
        self._rlp_ids: dict | None = None
        self._restored = False  # set when a checkpoint is loaded: a resumed run keeps its EMA model
        self._evaluator: ThoughtEvaluator | None = None
        self._last_eval_step = -1
        # The non-finite guard: this step's losses (micro-batches) are checked with the gradients.
        self._step_loss_finite: torch.Tensor | None = None
        self.nonfinite_skips = 0  # cumulative, kept in checkpoints
        self._nonfinite_in_a_row = 0

    def configure_model(self) -> None:
        if self.hparams.compile:
            self.model.compile()  # in place: state_dict keys stay those of the plain model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, record: dict | None = None):
        return self.model(idx, targets, record)

    # ---- training -------------------------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.rlp_config is not None:
            return self._rlp_training_step(batch, batch_idx)
        x, y = batch
        _, loss = self.model(x, y)
        # The mean over ranks (an all-reduce queued on the device, no host sync): under DDP the
        # curve is the global batch's loss, the same as one process with that batch.
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("lr", self.lr_schedulers().get_last_lr()[0])
        self._tokens_since += y.numel()
        self._count(y.numel(), y.numel() * self.flops_per_token)
        self._note_loss(loss)
        return loss

    def _note_loss(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach())
        self._step_loss_finite = finite if self._step_loss_finite is None else self._step_loss_finite & finite

    def _count(self, tokens: int, flops: float) -> None:
        """Add this rank's batch (times the world size) to the cumulative counters. Counted here, in
        training_step, so that a checkpoint saved at this step (ModelCheckpoint saves in its
        on_train_batch_end, before the module's) already holds them: a resumed run counts exactly."""
        self.tokens_seen += tokens * self.trainer.world_size
        self.flops_seen += flops * self.trainer.world_size

    def on_train_start(self) -> None:
        self._peak_flops = self.hparams.peak_flops or peak_flops(self.device, self.trainer.precision)
        if self._peak_flops is None:
            rank_zero_info(
                f"lamina: no MFU logged: peak FLOP/s unknown for {self.device} at precision "
                f"{self.trainer.precision} (set model.peak_flops to report it)"
            )
        if self.global_step == 0 and self.trainer.datamodule is not None and self.trainer.limit_val_batches != 0:
            self._validate_before_training()
        if self.thought_eval_config is not None:
            self._evaluate_thinking(at_start=True)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.thought_eval_config is not None:
            self._evaluate_thinking()
        # Time over the logging interval, never per step: no device synchronisation in the hot path.
        if self._interval_start is None:  # the first step pays for warm-up and compilation: not timed
            self._interval_start, self._tokens_since = time.perf_counter(), 0
            return
        if self.global_step % self.trainer.log_every_n_steps or self.global_step == self._last_logged_step:
            return  # (micro-batches of one accumulated step share its global_step)
        self._last_logged_step = self.global_step
        elapsed = time.perf_counter() - self._interval_start
        tokens_per_sec = self._tokens_since * self.trainer.world_size / elapsed
        self.log("perf/tokens_per_sec", tokens_per_sec, rank_zero_only=True)
        self.log("perf/tokens_seen", float(self.tokens_seen), rank_zero_only=True)
        self.log("perf/flops", self.flops_seen, rank_zero_only=True)
        if self.rlp_config is not None:
            self.log("perf/rlp_sample_tokens", float(self.rlp_sample_tokens), rank_zero_only=True)
        if self._peak_flops:
            mfu = tokens_per_sec * self.flops_per_token / (self._peak_flops * self.trainer.world_size)
            self.log("perf/mfu", mfu, rank_zero_only=True)
        self._interval_start, self._tokens_since = time.perf_counter(), 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lamina"] = {
            "tokens_seen": self.tokens_seen, "flops_seen": self.flops_seen, "nonfinite_skips": self.nonfinite_skips
        }
        if self.rlp_config is not None:
            checkpoint["lamina"]["rlp_sample_tokens"] = self.rlp_sample_tokens

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("lamina", {})
        self.tokens_seen = state.get("tokens_seen", 0)
        self.flops_seen = state.get("flops_seen", 0.0)
        self.nonfinite_skips = state.get("nonfinite_skips", 0)
        self.rlp_sample_tokens = state.get("rlp_sample_tokens", 0)
        self._restored = True
        if self.rlp_config is not None and not any(k.startswith("rlp_ema.") for k in checkpoint["state_dict"]):
            raise ConfigError(
                "ckpt_path: the checkpoint holds no RLP EMA model (it is not from an RLP run); to start RLP "
                "from a pretrained checkpoint, pass it as model.init_from instead"
            )

    # ---- validation -----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_rows = torch.zeros((), dtype=_sum_dtype(self.device), device=self.device), 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        _, loss = self.model(x, y)
        # Weighted by rows, summed here and over ranks at the end: exact for a short last batch and
        # for val shards of unequal size under DDP (Lightning's sync_dist mean is not, for those).
        self._val_sum += loss.detach().to(self._val_sum.dtype) * x.size(0)
        self._val_rows += x.size(0)

    def on_validation_epoch_end(self) -> None:
        if self._val_rows == 0 and self.trainer.world_size == 1:
            return
        loss = self._mean_over_ranks(self._val_sum, self._val_rows).float()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/bpb", bits_per_byte(loss, self._tokens_per_byte()))

    def _mean_over_ranks(self, total: torch.Tensor, rows: int) -> torch.Tensor:
        strategy = self.trainer.strategy
        rows = torch.tensor(float(rows), dtype=total.dtype, device=total.device)
        return strategy.reduce(total, reduce_op="sum") / strategy.reduce(rows, reduce_op="sum")

    def _tokens_per_byte(self) -> float:
        return self.trainer.datamodule.val_tokens_per_byte

    @torch.no_grad()
    def _validate_before_training(self) -> None:
        """val/loss and val/bpb of the untrained model at step 0, so curves start from the beginning."""
        was_training = self.training
        self.eval()
        total, rows = torch.zeros((), dtype=_sum_dtype(self.device), device=self.device), 0
        for x, y in self.trainer.datamodule.val_dataloader():
            x, y = x.to(self.device), y.to(self.device)
            with self.trainer.precision_plugin.forward_context():
                _, loss = self.model(x, y)
            total += loss.to(total.dtype) * x.size(0)
            rows += x.size(0)
        loss = self._mean_over_ranks(total, rows).float()
        metrics = {"val/loss": loss.item(), "val/bpb": bits_per_byte(loss.item(), self._tokens_per_byte())}
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=0)
        self.train(was_training)

    # ---- optimisation ---------------------------------------------------------------------------

    def configure_optimizers(self):
        if self.trainer.max_steps is None or self.trainer.max_steps < 1:
            raise ConfigError("trainer.max_steps: expected a positive number of steps (training streams endlessly)")
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            is_embedding = name.startswith(("transformer.wte", "transformer.wpe", "lm_head"))
            (decay if p.dim() >= 2 and not is_embedding else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(
            groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas), fused=self.device.type == "cuda"
        )
        max_steps, warmup, floor = self.trainer.max_steps, self.hparams.warmup_steps, self.hparams.min_lr_ratio
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, max_steps, floor))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ---- a phase on a pretrained checkpoint: init_from, the RLP objective, thinking evaluations -------

    def on_fit_start(self) -> None:
        if isinstance(self.trainer.strategy, FSDPStrategy) and (self.rlp_config or self.thought_eval_config):
            # Sampling runs the plain model outside the sharded wrapper, and the EMA copy is not sharded.
            key = "model.rlp" if self.rlp_config else "model.thought_eval"
            raise ConfigError(f"{key}: RLP and thinking evaluations do not run under FSDP yet; use DDP")
        # A fresh run starts from init_from; a resumed one has restored its model, EMA and frozen
        # models already (or restores them right after this hook, which overwrites what is set here).
        if not self._restored:
            if self.hparams.init_from:
                self._load_init_from(self.hparams.init_from)
            for other in (self.rlp_ema, self.rlp_frozen):
                if other is not None:
                    other.load_state_dict(self.model.state_dict())
        if self.rlp_config is not None:
            self._rlp_ids = self._think_ids()

    def _load_init_from(self, path: str) -> None:
        """Copy the model weights of a lamina checkpoint into this model; nothing else."""
        if not os.path.isfile(path):
            raise ConfigError(f"model.init_from: no such checkpoint file {path!r}")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise ConfigError(
                f"model.init_from: cannot read {path!r} as a lamina checkpoint ({first_sentence(str(err))})"
            ) from err
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if not state:
            raise ConfigError(f"model.init_from: {path!r} is not a lamina checkpoint (no state_dict)")
        weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        own = self.model.state_dict()
        bad = sorted(own.keys() ^ weights.keys()) + sorted(
            k for k in own.keys() & weights.keys() if own[k].shape != weights[k].shape
        )
        if bad:
            saved = checkpoint.get("hyper_parameters", {})
            keys = (
                "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "activation", "mlp_ratio", "bias", "rotary"
            )
            differ = [
                f"model.{k} is {saved[k]} there, {self.hparams[k]} here"
                for k in keys
                if k in saved and saved[k] != self.hparams[k]
            ]
            raise ConfigError(
                f"model.init_from: the weights in {path!r} do not fit this model: "
                + ("; ".join(differ) if differ else f"{len(bad)} tensors differ, e.g. {bad[0]}")
            )
        self.model.load_state_dict(weights)
        rank_zero_info(f"lamina: model weights from {path}")

    def _think_ids(self) -> dict[str, int]:
        datamodule = self.trainer.datamodule
        if datamodule is None or getattr(datamodule, "think_id", None) is None:
            raise ConfigError("model.rlp: needs the data module's tokenizer with <think> and </think> tokens")
        ids = {"think_id": datamodule.think_id, "end_think_id": datamodule.end_think_id}
        if max(ids.values()) >= self.config.vocab_size:
            raise ConfigError(f"model.vocab_size: {self.config.vocab_size} has no room for the think tokens {ids}")
        if self.rlp_config.thoughts == "filler":
            filler = datamodule.tokenizer.encode(self.rlp_config.filler_token).ids
            if len(filler) != 1:
                raise ConfigError(
                    f"model.rlp.filler_token: {self.rlp_config.filler_token!r} is {len(filler)} tokens, expected one"
                )
            ids["filler_id"] = filler[0]
        return ids

    def _rlp_training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        accumulate = self.trainer.accumulate_grad_batches
        generator = step_generator(
            self.rlp_config.seed, self.global_step * accumulate + batch_idx % accumulate, self.global_rank, self.device
        )
        step = rlp_step(
            self.model, self.rlp_ema, x, y, self.rlp_config,
            generator=generator, sampler=self.rlp_frozen, **self._rlp_ids,
        )
        for name, value in step.metrics.items():
            self.log(f"rlp/{name}", value, prog_bar=name == "reward_mean")
        self.log("lr", self.lr_schedulers().get_last_lr()[0])
        self._tokens_since += y.numel()
        # tokens_seen counts the batch's data tokens, as for next-token training; flops_seen all the
        # step's compute: sampling, EMA scoring, and the policy's forward and backward
        self._count(y.numel(), step.flops)
        self.rlp_sample_tokens += step.sample_tokens * self.trainer.world_size
        self._note_loss(step.loss)
        return step.loss

    # ---- the non-finite guard ---------------------------------------------------------------------

    def on_before_optimizer_step(self, optimizer) -> None:
        """After backward (gradients all-reduced under DDP), before clipping and the update: one
        host sync per optimizer step decides whether the loss and every gradient are finite."""
        finite = self._step_loss_finite
        self._step_loss_finite = None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not _scaler_owns_infs(self.trainer.precision):
            grads_finite = torch.isfinite(torch.nn.utils.get_total_norm(grads))
            finite = grads_finite if finite is None else finite & grads_finite.to(finite.device)
        ok = True if finite is None else bool(finite)
        if self.trainer.world_size > 1:  # a NaN on one rank is a NaN for all: they must agree
            ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        if ok:
            self._nonfinite_in_a_row = 0
            return
        self._on_nonfinite(optimizer)

    def _on_nonfinite(self, optimizer) -> None:
        step = self.global_step
        self.nonfinite_skips += 1
        self._nonfinite_in_a_row += 1
        if self.hparams.on_nonfinite == "stop" or self._nonfinite_in_a_row > self.hparams.max_nonfinite_skips:
            why = (
                "model.on_nonfinite is stop" if self.hparams.on_nonfinite == "stop"
                else f"{self._nonfinite_in_a_row} in a row, more than model.max_nonfinite_skips"
            )
            raise NonFiniteError(
                f"train: non-finite loss or gradient at step {step} ({why}); "
                f"{last_good_checkpoint(self.trainer)}; try a lower model.lr or model.on_nonfinite skip"
            )
        optimizer.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
        if self.trainer.is_global_zero:  # straight to the loggers: only at the steps that skipped
            for logger in self.loggers:
                logger.log_metrics({"train/nonfinite_skips": float(self.nonfinite_skips)}, step=step)
        rank_zero_info(f"lamina: step {step}: non-finite loss or gradient, update skipped")

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.rlp_ema is not None:  # once per optimizer step (not per accumulated micro-batch)
            ema_update(self.rlp_ema, self.model, self.rlp_config.ema_decay)

    def _evaluate_thinking(self, at_start: bool = False) -> None:
        """eval/... at step 0, every thought_eval.every_n_steps optimizer steps and after the last one;
        on global rank zero, logged straight to the loggers (not gated by log_every_n_steps)."""
        config, step = self.thought_eval_config, self.global_step
        if not config.every_n_steps or step == self._last_eval_step or (at_start and step != 0):
            return
        if not at_start and step % config.every_n_steps and step < (self.trainer.max_steps or 0):
            return
        self._last_eval_step = step
        if self._evaluator is None:
            self._evaluator = self._build_evaluator()
        if not self.trainer.is_global_zero:
            return
        start = time.perf_counter()
        with self.trainer.precision_plugin.forward_context():
            metrics = self._evaluator.evaluate(self.model)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
        if self._interval_start is not None:  # evaluation time is not training time
            self._interval_start += time.perf_counter() - start

    def _build_evaluator(self) -> ThoughtEvaluator:
        datamodule, config = self.trainer.datamodule, self.thought_eval_config
        if datamodule is None or getattr(datamodule, "tokenizer", None) is None:
            raise ConfigError("model.thought_eval: needs the data module's tokenizer")
        if datamodule.hparams.get("source") == "world" and datamodule.hparams.get("seed") == config.seed:
            raise ConfigError(
                f"model.thought_eval.seed: {config.seed} is also data.seed; held-out problems need another seed"
            )
        tokens, temperature = thought_eval_settings(self.rlp_config, config)
        return ThoughtEvaluator(
            config, datamodule.tokenizer, datamodule.think_id, datamodule.end_think_id, datamodule.eot_id,
            self.config.block_size, datamodule.val_data, tokens, temperature,
        )
