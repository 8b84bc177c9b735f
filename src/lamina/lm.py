"""The next-token objective as a LightningModule: optimizer groups, schedule, validation, bits per
byte, and the optimizer step's own work (gradient norm, clipping, the non-finite guard: lamina.step).
lamina.rlp.RLPModel is the subclass whose training step is RLP's; observers of training (throughput,
thinking evaluations, measurements) are Callbacks with config sections of their own.

The anatomy of one optimizer step of A micro-batches (trainer.accumulate_grad_batches), in the order
Lightning 2.6 runs the hooks (loops/training_epoch_loop.py:_TrainingEpochLoop.advance,
loops/optimization/automatic.py, plugins/precision/precision.py:Precision._wrap_closure). Callbacks'
hooks run before the module's hook of the same name; [brackets] are Lightning's own work.

  each micro-batch 1..A-1 (gradients accumulate; under DDP without their all-reduce):
    callbacks/throughput.py:Throughput.on_train_batch_start   the timing window opens
    lm.py:LanguageModel.training_step                         forward and loss (rlp/module.py:RLPModel.training_step
                                                              in RLP runs); _count: tokens_seen, flops_seen;
                                                              _note_loss: the step's loss sum on the device, its lr
    [zero_grad: on micro-batch 1 only, after its forward]
    [backward]
    callbacks/throughput.py:Throughput.on_train_batch_end     the timing window closes (the first callback)
    [the other callbacks' on_train_batch_end: instrument, thought_eval, StopOnSignal, ModelCheckpoint last]
    lm.py:LanguageModel.on_train_batch_end                    nothing to do between an optimizer step's micro-batches

  micro-batch A, the optimizer step:
    callbacks/throughput.py:Throughput.on_train_batch_start
    rlp/module.py:RLPModel.optimizer_step (RLP runs)          wraps Lightning's optimizer_step:
    [optimizer.step(closure)], whose closure is this micro-batch's
      lm.py:LanguageModel.training_step
      [zero_grad when A is 1; backward: DDP all-reduces the gradients, FSDP reduce-scatters them]
    lm.py:LanguageModel.on_before_optimizer_step              step.py:step_grad_norm (once a step), then
                                                              step.py:NonFiniteGuard.check (stop, drop the
                                                              gradients, or found_inf for a fused optimizer)
    lm.py:LanguageModel.configure_gradient_clipping           step.py:clip_by_step_norm, by that same norm
    [the update: AdamW, or optim.py:MuonWithAdamW; skipped on the device when found_inf is set]
    rlp/objective.py:ema_update (RLP runs)                    from RLPModel.optimizer_step, after the update
    [the lr scheduler steps (lm.py:warmup_cosine); global_step += 1]
    callbacks/throughput.py:Throughput.on_train_batch_end     the window closes; perf/* at log steps
    [the other callbacks' on_train_batch_end; ModelCheckpoint's save calls
     lm.py:LanguageModel.on_save_checkpoint                   step.py:NonFiniteGuard.read first: a pending
                                                              non-finite step that stops the run writes nothing]
    lm.py:LanguageModel.on_train_batch_end                    should_stop at max_steps (a last validation);
                                                              step.py:NonFiniteGuard.read_if_due; at log
                                                              steps log_step: train/loss, lr (step.py:host_scalar;
                                                              rlp/module.py:RLPModel.log_step: rlp/*, lr)
    [Lightning writes the logged values at log steps (step.py:ends_logged_step is the same rule)]
    [validation when due: lm.py:LanguageModel.on_validation_epoch_start, validation_step, on_validation_epoch_end;
     cli.py:count_validation_in_optimizer_steps made trainer.val_check_interval count optimizer steps]

Once a fit (loops/fit_loop.py, trainer/trainer.py:Trainer._run): lm.py:LanguageModel.configure_model
(compile), on_load_checkpoint when resuming (counters, the guard's skips, the schedule's horizon),
configure_optimizers, on_fit_start (init_from; rlp/module.py:RLPModel.on_fit_start: its EMA model, think ids),
on_train_start (the guard's count in a row), the steps, on_train_end (the guard's last read).

lm.py imports nothing from lamina.rlp, and nothing that loads the world generator (lamina.data).
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lamina import tags
from lamina.config_types import (
    Activation,
    ClosedUnitInterval,
    Fraction,
    NonNegativeInt,
    NonNegativeNumber,
    PositiveInt,
    PositiveNumber,
    plain,
)
from lamina.errors import ConfigError
from lamina.kernels import wide_dtype
from lamina.model import GPT, GPTConfig
from lamina.optim import OPTIMIZERS, MuonWithAdamW
from lamina.pretrained import load_init_from
from lamina.sharding import check_fsdp, is_fsdp
from lamina.step import (
    NONFINITE_POLICIES,
    NonFiniteGuard,
    clip_by_step_norm,
    ends_logged_step,
    host_scalar,
    step_grad_norm,
)

FUSED_ADAMW_DEVICES = ("cuda", "cpu")


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
        n_layer: PositiveInt = 4,
        n_head: PositiveInt = 4,
        n_embd: PositiveInt = 128,
        block_size: PositiveInt = 256,
        activation: Activation = "gelu",
        vocab_size: PositiveInt = 259,
        mlp_ratio: float = 4.0,  # > 0 with at least one unit: a check across keys (GPTConfig)
        dropout: Fraction = 0.0,
        bias: bool = False,
        rotary: bool = False,
        qk_norm: bool = False,
        tie_embeddings: bool = True,
        zero_init_projections: bool = False,
        logit_softcap: PositiveNumber | None = None,
        lr: NonNegativeNumber = 1e-3,
        min_lr_ratio: ClosedUnitInterval = 0.1,
        warmup_steps: NonNegativeInt = 100,
        weight_decay: NonNegativeNumber = 0.1,
        betas: tuple[Fraction, Fraction] = (0.9, 0.95),
        optimizer: Literal[OPTIMIZERS] = "adamw",
        muon_lr: NonNegativeNumber = 0.02,
        compile: bool = False,
        init_from: str | None = None,
        on_nonfinite: Literal[NONFINITE_POLICIES] = "stop",
        max_nonfinite_skips: PositiveInt = 10,
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
            qk_norm: RMS-normalise each head's queries and keys (no weight) before attention.
            tie_embeddings: the output layer shares the token embedding's matrix (false: a matrix of its own).
            zero_init_projections: start the blocks' residual projections (attention and MLP c_proj) at
                zero, so that each block starts as the identity.
            logit_softcap: cap the logits smoothly at +-cap (cap * tanh(logits / cap)); null: no cap.
            lr: peak learning rate (AdamW's).
            min_lr_ratio: final learning rate as a fraction of lr.
            warmup_steps: linear warmup steps.
            weight_decay: decay of the blocks' weight matrices (never of norms, biases, embeddings, the
                output layer): each step shrinks them by lr x weight_decay (with muon too, at its larger lr).
            betas: AdamW betas.
            optimizer: adamw, or muon: torch.optim.Muon on the blocks' weight matrices, AdamW on the rest
                (not under FSDP).
            muon_lr: Muon's peak learning rate (with optimizer muon), on Muon's own scale (nanochat's 0.02),
                scheduled as lr is.
            compile: torch.compile the model (GPU runs).
            init_from: a lamina checkpoint whose model weights (and nothing else: no optimizer, step or
                counters) the run starts from; a phase on a pretrained model. Ignored when resuming.
            on_nonfinite: a NaN/Inf loss or gradient (lamina.step.NonFiniteGuard): `stop` (one-line
                error naming the step and the last good checkpoint) or `skip` (drop the update, count it
                in train/nonfinite_skips).
            max_nonfinite_skips: with `skip`, stop anyway after this many non-finite steps in a row.
        """
        # The types above are checked when a config is parsed (a call from Python is checked by GPTConfig's
        # shape checks only). Parsing hands restricted numbers over as jsonargparse's own int/float
        # subclasses: builtins from here on, for the hyperparameters and optimizer state in checkpoints.
        n_layer, n_head, n_embd, block_size, vocab_size, warmup_steps, max_nonfinite_skips = map(
            plain, (n_layer, n_head, n_embd, block_size, vocab_size, warmup_steps, max_nonfinite_skips)
        )
        dropout, lr, min_lr_ratio, weight_decay, muon_lr, logit_softcap = map(
            plain, (dropout, lr, min_lr_ratio, weight_decay, muon_lr, logit_softcap)
        )
        betas = tuple(map(plain, betas))
        super().__init__()
        self.save_hyperparameters()
        self.config = GPTConfig(
            vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
            activation=activation, mlp_ratio=mlp_ratio, dropout=dropout, bias=bias, rotary=rotary,
            qk_norm=qk_norm, tie_embeddings=tie_embeddings, zero_init_projections=zero_init_projections,
            logit_softcap=logit_softcap,
        )
        self.model = GPT(self.config)
        self.flops_per_token = self.model.flops_per_token()  # fixed by the shape; not recounted per step
        # Cumulative over the whole run (all ranks), kept in checkpoints: the x axes of `lamina compare`.
        self.tokens_seen = 0
        self.flops_seen = 0.0
        self.guard = NonFiniteGuard(on_nonfinite, max_nonfinite_skips)  # its count of skips is kept in checkpoints
        # The max_steps the learning-rate schedule decays over, kept in checkpoints: a run extended
        # with a larger trainer.max_steps keeps its schedule (configure_optimizers).
        self.schedule_max_steps: int | None = None
        # This optimizer step so far, on the device: the sum of its micro-batches' losses (train/loss is
        # their mean; the guard checks it), and its gradient norm (computed once: clipping, the guard).
        self.step_loss_sum: torch.Tensor | None = None
        self.grad_norm: torch.Tensor | None = None
        self._step_lr = 0.0
        self._restored = False  # set when a checkpoint is loaded: a resumed run keeps its state

    def configure_model(self) -> None:
        if self.hparams.compile:
            self.model.compile()  # in place: state_dict keys stay those of the plain model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, record: dict | None = None):
        return self.model(idx, targets, record)

    # ---- training: no host sync in the step; metrics are read at log steps only ------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        self._count(y.numel(), y.numel() * self.flops_per_token)
        self._note_loss(loss, batch_idx)
        return loss

    def _note_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Add a micro-batch's loss to the step's sum (a device op) and note the step's lr (a host float)."""
        first = batch_idx % self.trainer.accumulate_grad_batches == 0
        loss = loss.detach()
        self.step_loss_sum = loss if first or self.step_loss_sum is None else self.step_loss_sum + loss
        self._step_lr = self.lr_schedulers().get_last_lr()[0]

    def _count(self, tokens: int, flops: float) -> None:
        """Add this rank's batch (times the world size) to the cumulative counters. Counted here, in
        training_step, so that a checkpoint saved at this step (ModelCheckpoint saves in its
        on_train_batch_end, before the module's) already holds them: a resumed run counts exactly."""
        self.tokens_seen += tokens * self.trainer.world_size
        self.flops_seen += flops * self.trainer.world_size

    def on_train_start(self) -> None:
        self.guard.start()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.trainer.global_step >= self.trainer.max_steps:
            # The last optimizer step: asking the trainer to stop here makes Lightning validate now
            # (a stop request validates, `trainer.should_stop`), so every fit ends with a validation
            # at its last step whatever its length, and logs train/loss there too.
            self.trainer.should_stop = True
        self.guard.read_if_due(self.trainer, batch_idx)
        if ends_logged_step(self.trainer, batch_idx) and self.step_loss_sum is not None:
            self.log_step(self.step_loss_sum / self.trainer.accumulate_grad_batches)

    def on_train_end(self) -> None:
        self.guard.read(self.trainer)  # the flags still pending: a stop or the skips' count

    def log_step(self, mean_loss: torch.Tensor) -> None:
        """At a log step: train/loss, the mean over the step's micro-batches and over ranks (one
        all-reduce and one device-to-host copy per logging interval), and the step's lr."""
        loss = host_scalar(self.trainer.strategy.reduce(mean_loss, reduce_op="mean"))
        self.log(tags.TRAIN_LOSS, loss, prog_bar=True)
        self.log(tags.LR, host_scalar(self._step_lr))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.guard.pending:  # raises, and nothing is written, when a pending step stops the run
            self.guard.read(self.trainer)
        checkpoint["lamina"] = {
            "tokens_seen": self.tokens_seen, "flops_seen": self.flops_seen, "nonfinite_skips": self.guard.skips,
            "schedule_max_steps": self.schedule_max_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("lamina", {})
        self.tokens_seen = state.get("tokens_seen", 0)
        self.flops_seen = state.get("flops_seen", 0.0)
        self.guard.skips = state.get("nonfinite_skips", 0)
        self.schedule_max_steps = state.get("schedule_max_steps")  # None in checkpoints of older lamina
        self._restored = True

    # ---- validation -----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_rows = None, 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        _, loss = self.model(x, y)
        # Weighted by rows, summed here and over ranks at the end: exact for a short last batch and
        # for val shards of unequal size under DDP (Lightning's sync_dist mean is not, for those).
        # On the loss's device: under FSDP the module's `device` is not where the shards live.
        if self._val_sum is None:
            self._val_sum = torch.zeros((), dtype=wide_dtype(loss.device), device=loss.device)
        self._val_sum += loss.detach().to(self._val_sum.dtype) * x.size(0)
        self._val_rows += x.size(0)

    def on_validation_epoch_end(self) -> None:
        if self._val_rows == 0 and self.trainer.world_size == 1:
            return
        if self._val_sum is None:  # a rank with no val windows still joins the all-reduce
            device = self.trainer.strategy.root_device
            self._val_sum = torch.zeros((), dtype=wide_dtype(device), device=device)
        loss = self._mean_over_ranks(self._val_sum, self._val_rows).float()
        if self.trainer.sanity_checking and not self._is_step_zero_validation():
            return
        # For the progress bar and callbacks (a checkpoint may monitor val/loss); not for the loggers,
        # which Lightning would write one step early (below).
        self.log(tags.VAL_LOSS, loss, prog_bar=True, logger=False)
        bpb = bits_per_byte(loss, self.trainer.datamodule.val_tokens_per_byte)
        self.log(tags.VAL_BPB, bpb, logger=False)
        self._log_at_global_step({tags.VAL_LOSS: loss, tags.VAL_BPB: bpb})

    def _is_step_zero_validation(self) -> bool:
        """Lightning's sanity pass over the whole val set (`num_sanity_val_steps: -1`, lamina's
        default) is the untrained model's validation, so curves start at step 0: from the same loop,
        dataloader and grad mode as every later validation (one compiled graph, no second copy of
        validation). A partial pass, or one at the start of a resumed run, is not logged."""
        whole = self.trainer.num_sanity_val_steps == float("inf")
        return whole and self.trainer.global_step == 0 and not self._restored

    def _log_at_global_step(self, metrics: dict[str, torch.Tensor]) -> None:
        """Every value lamina logs at step s was measured on the weights after s optimizer steps: the
        validation after the 100th update lands at 100, beside that step's measurements (Lightning
        writes it at 99: its step counter moves after validation). train/loss at s is, likewise, the
        loss on the weights after s updates (of the batch the next update uses), as Lightning logs it."""
        if self.trainer.is_global_zero:
            scalars = {name: float(value) for name, value in metrics.items()}
            for logger in self.loggers:
                logger.log_metrics(scalars, step=self.trainer.global_step)

    def _mean_over_ranks(self, total: torch.Tensor, rows: int) -> torch.Tensor:
        strategy = self.trainer.strategy
        rows = torch.tensor(float(rows), dtype=total.dtype, device=total.device)
        return strategy.reduce(total, reduce_op="sum") / strategy.reduce(rows, reduce_op="sum")

    # ---- optimisation ---------------------------------------------------------------------------

    def configure_optimizers(self):
        if self.trainer.max_steps is None or self.trainer.max_steps < 1:
            raise ConfigError("trainer.max_steps: expected a positive number of steps (training streams endlessly)")
        strategy = self.trainer.strategy
        muon = self.hparams.optimizer == "muon"
        if is_fsdp(self.trainer):
            if muon:  # Muon orthogonalises whole matrices; an FSDP rank holds flat 1-D shards of them
                raise ConfigError(
                    "model.optimizer: muon needs whole weight matrices, which FSDP splits into flat 1-D shards; "
                    "use model.optimizer adamw under FSDP, or muon under DDP"
                )
            check_fsdp(self.trainer)
        # Weight decay on the weight matrices of the blocks' linear layers (attention and MLP
        # projections) and on nothing else: not norms, biases, the embeddings (wte, tied to lm_head;
        # wpe). Chosen by module, not by shape: under FSDP the parameters are 1-D views of flat shards.
        matrices = {id(m.weight) for m in self.model.transformer.h.modules() if isinstance(m, torch.nn.Linear)}
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if id(p) in matrices else no_decay).append(p)
        # Fused AdamW where torch has it (CUDA and the CPU): on the CPU the per-tensor loop costs
        # tiny 3x the fused step (bench/results/throughput-tiny-cpu-*). The strategy's device: a
        # LightningModule's `device` is not updated when FSDP moves it.
        adamw = dict(lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                     fused=strategy.root_device.type in FUSED_ADAMW_DEVICES)
        if not muon:
            groups = [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]
            optimizer = torch.optim.AdamW(groups, **adamw)
        else:
            # Muon (nanochat's and modded-nanogpt's settings: momentum 0.95, Nesterov, the update
            # scaled by sqrt(max(1, rows / columns)), torch's adjust_lr_fn "original") on the matrices,
            # AdamW on the rest, as ONE optimizer (lamina.optim.MuonWithAdamW says why): Lightning's
            # automatic optimization, accumulation, clipping, the guard and resume stay as they are.
            # Its weight decay is scaled so that a matrix shrinks by lr x weight_decay a step, as under
            # AdamW (torch's Muon shrinks by muon_lr x its weight_decay). AdamW's group comes first:
            # the logged `lr` stays model.lr's schedule; the one LambdaLR scales muon_lr by it too.
            # (c_attn's fused q, k, v projection is orthogonalised as one [3C, C] matrix; nanochat and
            # modded-nanogpt orthogonalise the three apart.)
            lr, muon_lr = self.hparams.lr, self.hparams.muon_lr
            muon_decay = self.hparams.weight_decay * lr / muon_lr if muon_lr > 0 else 0.0
            optimizer = MuonWithAdamW(
                [{"params": no_decay, "weight_decay": 0.0}],
                [{"params": decay, "weight_decay": muon_decay}],
                adamw=adamw,
                muon=dict(lr=muon_lr, momentum=0.95, nesterov=True, adjust_lr_fn="original"),
            )
        horizon, warmup, floor = self.schedule_horizon(), self.hparams.warmup_steps, self.hparams.min_lr_ratio
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, horizon, floor))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def schedule_horizon(self) -> int:
        """The step the cosine reaches its floor: trainer.max_steps for a new run; for a resumed one, the
        horizon it was started with, so that a run extended with a larger trainer.max_steps keeps its
        schedule and trains the added steps at the floor lr (lr x min_lr_ratio) instead of jumping back
        up the cosine, and a shortened one stops where its schedule has got to. Said in one line."""
        max_steps, horizon = self.trainer.max_steps, self.schedule_max_steps or self.trainer.max_steps
        self.schedule_max_steps = horizon
        if horizon != max_steps:
            floor = self.hparams.lr * self.hparams.min_lr_ratio
            tail = (f"steps {horizon}-{max_steps} train at its floor, {floor:.3g}" if max_steps > horizon
                    else f"the run stops at step {max_steps}, before the schedule's end")
            rank_zero_info(f"lamina: trainer.max_steps {max_steps} differs from the {horizon} this run was started "
                           f"with: the learning rate keeps its schedule (cosine to step {horizon}); {tail}")
        return horizon

    def on_before_optimizer_step(self, optimizer) -> None:
        """The step's gradient norm, computed once (clipping reads it too), then the non-finite guard."""
        self.grad_norm = step_grad_norm(self.trainer, optimizer)
        if not self.guard.check(self.trainer, optimizer, self.step_loss_sum, self.grad_norm):
            self.grad_norm = None  # the guard dropped the gradients: nothing to clip

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        norm, self.grad_norm = self.grad_norm, None
        clip_by_step_norm(self, optimizer, norm, gradient_clip_val, gradient_clip_algorithm)

    # ---- a phase on a pretrained checkpoint -----------------------------------------------------

    def on_fit_start(self) -> None:
        # A fresh run starts from init_from; a resumed one has restored its model already (or
        # restores it right after this hook, which overwrites what is set here).
        if not self._restored and self.hparams.init_from:
            load_init_from(self.model, self.hparams, self.hparams.init_from)
            rank_zero_info(f"lamina: model weights from {self.hparams.init_from}")
