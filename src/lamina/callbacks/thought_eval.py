"""Thinking evaluations during training (`model.thought_eval.*`, read from the module's hparams):
eval/... at step 0, every thought_eval.every_n_steps optimizer steps and after the last one."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy

from lamina.errors import ConfigError
from lamina.rlp.config import thought_eval_settings
from lamina.rlp.evaluate import ThoughtEvaluator


class ThoughtEval(L.Callback):
    """Runs lamina.rlp.ThoughtEvaluator on global rank zero and logs straight to the loggers (not
    gated by log_every_n_steps). Does nothing unless `model.thought_eval` is set (the module keeps it
    as `thought_eval_config`)."""

    def __init__(self):
        self._evaluator: ThoughtEvaluator | None = None
        self._last_step = -1

    @staticmethod
    def _config(pl_module):
        return getattr(pl_module, "thought_eval_config", None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._config(pl_module) is not None and isinstance(trainer.strategy, FSDPStrategy):
            # Sampling runs the plain model outside the sharded wrapper.
            raise ConfigError("model.thought_eval: RLP and thinking evaluations do not run under FSDP yet; use DDP")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._config(pl_module) is not None:
            self._evaluate(trainer, pl_module, at_start=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._config(pl_module) is not None:
            self._evaluate(trainer, pl_module)

    def _evaluate(self, trainer: L.Trainer, pl_module, at_start: bool = False) -> None:
        config, step = self._config(pl_module), trainer.global_step
        if not config.every_n_steps or step == self._last_step or (at_start and step != 0):
            return
        if not at_start and step % config.every_n_steps and step < (trainer.max_steps or 0):
            return
        self._last_step = step
        if self._evaluator is None:
            self._evaluator = self._build(trainer, pl_module, config)
        if not trainer.is_global_zero:
            return
        with trainer.precision_plugin.forward_context():
            metrics = self._evaluator.evaluate(pl_module.model)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    @staticmethod
    def _build(trainer: L.Trainer, pl_module, config) -> ThoughtEvaluator:
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "tokenizer", None) is None:
            raise ConfigError("model.thought_eval: needs the data module's tokenizer")
        if datamodule.hparams.get("source") == "world" and datamodule.hparams.get("seed") == config.seed:
            raise ConfigError(
                f"model.thought_eval.seed: {config.seed} is also data.seed; held-out problems need another seed"
            )
        tokens, temperature = thought_eval_settings(getattr(pl_module, "rlp_config", None), config)
        return ThoughtEvaluator(
            config, datamodule.tokenizer, datamodule.think_id, datamodule.end_think_id, datamodule.eot_id,
            pl_module.config.block_size, datamodule.val_data, tokens, temperature,
        )
