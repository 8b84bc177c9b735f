"""Thinking evaluations during training (the `thought_eval` section of a config, `thought_eval.enabled`):
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

from lamina import tags
from lamina.cadence import Cadence
from lamina.errors import ConfigError
from lamina.rlp.config import ThoughtEvalConfig, thought_eval_settings
from lamina.rlp.evaluate import ThoughtEvaluator


class ThoughtEval(L.Callback):
    """Runs lamina.rlp.ThoughtEvaluator on global rank zero and logs straight to the loggers (not
    gated by log_every_n_steps). Does nothing unless `thought_eval.enabled` (its settings are
    lamina.rlp.ThoughtEvalConfig's, kept as `config`; None when off)."""

    def __init__(
        self,
        enabled: bool = False,
        every_n_steps: int = 100,
        levels: list[int] | None = None,
        examples_per_level: int = 256,
        seed: int = 1_000_003,
        max_thought_tokens: int | None = None,
        max_answer_tokens: int = 12,
        pass_samples: int = 64,
        pass_problems: int = 64,
        pass_at: tuple[int, ...] = (1, 4, 16, 64),
        nll_positions: int = 64,
        nll_thought_tokens: int | None = None,
        nll_temperature: float | None = None,
        batch_size: int = 256,
    ):
        """
        Args:
            enabled: evaluate thinking during training (held-out arithmetic with and without a thought,
                next-token loss with a sampled thought), for RLP runs and their controls alike.
            every_n_steps: evaluate every this many optimizer steps, at step 0 and after the last step; 0: never.
            levels: arithmetic levels of the held-out problems; null: every level.
            examples_per_level: distinct held-out problems per level (level 1 has 100).
            seed: world seed of the held-out problems (must differ from data.seed).
            max_thought_tokens: greedy thought budget; null: the longest worked thought at `levels`.
            max_answer_tokens: greedy answer budget.
            pass_samples: thoughts sampled per problem (temperature 1) for pass@k; 0: no pass@k.
            pass_problems: problems per level for pass@k (the first of the held-out ones).
            pass_at: the k of eval/pass_at_<k>/level<l>.
            nll_positions: val positions of the next-token loss with a sampled thought; 0: off.
            nll_thought_tokens: its thought length; null: model.rlp's thought cap (32 without RLP).
            nll_temperature: its sampling temperature; null: model.rlp.temperature (0.7 without RLP).
            batch_size: rows decoded together.
        """
        settings = dict(
            every_n_steps=every_n_steps, examples_per_level=examples_per_level, seed=seed,
            max_thought_tokens=max_thought_tokens, max_answer_tokens=max_answer_tokens, pass_samples=pass_samples,
            pass_problems=pass_problems, pass_at=tuple(pass_at), nll_positions=nll_positions,
            nll_thought_tokens=nll_thought_tokens, nll_temperature=nll_temperature, batch_size=batch_size,
        )
        if levels is not None:
            settings["levels"] = list(levels)
        config = ThoughtEvalConfig(**settings)  # checked whether on or off: a wrong key is one line either way
        self.config: ThoughtEvalConfig | None = config if enabled else None
        self._evaluator: ThoughtEvaluator | None = None
        self.cadence = Cadence(config.every_n_steps)  # step 0, every every_n_steps, the end; 0: never

    @classmethod
    def of(cls, config: ThoughtEvalConfig) -> ThoughtEval:
        """The callback that runs the evaluations `config` describes (from Python)."""
        callback = cls()
        callback.config, callback.cadence = config, Cadence(config.every_n_steps)
        return callback

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.config is not None and isinstance(trainer.strategy, FSDPStrategy):
            # Sampling runs the plain model outside the sharded wrapper.
            raise ConfigError("thought_eval: thinking evaluations do not run under FSDP yet; use DDP")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.config is not None and self.config.every_n_steps and self.cadence.starts(trainer):
            self._evaluate(trainer, pl_module, at_start=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.config is not None and self.config.every_n_steps and self.cadence.due(trainer):
            self._evaluate(trainer, pl_module)

    def state_dict(self) -> dict:
        return self.cadence.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.cadence.load_state_dict(state_dict)

    def _evaluate(self, trainer: L.Trainer, pl_module, at_start: bool = False) -> None:
        config, step = self.config, trainer.global_step
        self.cadence.ran(trainer)
        if self._evaluator is None:
            self._evaluator = self._build(trainer, pl_module, config)
        log_dir = trainer.log_dir if trainer.loggers else None  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        at_end = step >= (trainer.max_steps or 0) > 0
        start = time.perf_counter()
        with trainer.precision_plugin.forward_context():
            metrics = self._evaluator.evaluate(pl_module.model, pass_at_k=at_start or at_end)
        metrics[tags.perf("thought_eval_seconds")] = time.perf_counter() - start
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
            raise ConfigError("thought_eval: needs the data module's tokenizer")
        if datamodule.hparams.get("source") == "world" and datamodule.hparams.get("seed") == config.seed:
            raise ConfigError(
                f"thought_eval.seed: {config.seed} is also data.seed; held-out problems need another seed"
            )
        tokens, temperature = thought_eval_settings(getattr(pl_module, "rlp_config", None), config)
        return ThoughtEvaluator(
            config, datamodule.tokenizer, datamodule.think_id, datamodule.end_think_id, datamodule.eot_id,
            pl_module.config.block_size, datamodule.val_data, tokens, temperature,
            thoughts=datamodule.hparams.get("thoughts", "keep"),
        )
