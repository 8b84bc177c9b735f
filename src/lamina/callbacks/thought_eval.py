"""Thinking evaluations during training (`model.thought_eval.*`, read from the module's hparams):
eval/... at step 0, every thought_eval.every_n_steps optimizer steps and after the last one; pass@k
(the costly part) at step 0 and after the last step only. Each evaluation's results per problem go
to `<run>/thought_eval/step<N>.json` (for lamina.rlp.evaluate.elicitation_share)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

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
        log_dir = trainer.log_dir if trainer.loggers else None  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        at_end = step >= (trainer.max_steps or 0) > 0
        start = time.perf_counter()
        with trainer.precision_plugin.forward_context():
            metrics = self._evaluator.evaluate(pl_module.model, pass_at_k=at_start or at_end)
        metrics["perf/thought_eval_seconds"] = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if log_dir:
            self._write_records(Path(log_dir), step)

    def _write_records(self, log_dir: Path, step: int) -> None:
        """This evaluation's results per problem, written whole (a reader never sees half a file)."""
        if not self._evaluator.records:
            return
        folder = log_dir / "thought_eval"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step{step}.json"
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({str(level): r for level, r in self._evaluator.records.items()}))
        os.replace(tmp, path)

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
            thoughts=datamodule.hparams.get("thoughts", "keep"),
        )
