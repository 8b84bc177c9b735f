"""RLP, reinforcement as a pretraining objective (Hatamizadeh et al., arXiv:2510.01265), on a lamina GPT.

- `lamina.rlp.config`: the settings, `RLPConfig` (`model.rlp.*`) and `ThoughtEvalConfig` (`model.thought_eval.*`);
- `lamina.rlp.objective`: the objective's math (sampling, rewards, advantages, loss), plain functions
  on torch tensors and GPT models, usable without a Trainer (its docstring states the objective);
- `lamina.rlp.module`: `RLPModel(LanguageModel)`, whose training step is RLP's;
- `lamina.rlp.evaluate`: `ThoughtEvaluator`, the evaluations of thinking (run by lamina.callbacks.ThoughtEval).
"""

from __future__ import annotations

from lamina.rlp.config import THOUGHT_SOURCES, RLPConfig, ThoughtEvalConfig, thought_eval_settings
from lamina.rlp.evaluate import ThoughtEvaluator, arith_problems, newline_ids
from lamina.rlp.objective import (
    RLPLoss,
    RLPStep,
    Thoughts,
    clipped_policy_loss,
    ema_model,
    ema_update,
    filler_thoughts,
    gather_contexts,
    leave_one_out_advantages,
    no_thought_logprob,
    pick_positions,
    rlp_loss,
    rlp_step,
    sample_thoughts,
    step_generator,
    thought_scores,
)

frozen_copy = ema_model  # the name before lamina.rlp became a package


def __getattr__(name: str):
    # RLPModel imports lamina.lm, which imports lamina.rlp.config: loaded on first use, not here.
    if name == "RLPModel":
        from lamina.rlp.module import RLPModel

        return RLPModel
    raise AttributeError(f"module 'lamina.rlp' has no attribute {name!r}")


__all__ = [
    "RLPConfig",
    "RLPLoss",
    "RLPModel",
    "RLPStep",
    "THOUGHT_SOURCES",
    "ThoughtEvalConfig",
    "ThoughtEvaluator",
    "Thoughts",
    "arith_problems",
    "clipped_policy_loss",
    "ema_model",
    "ema_update",
    "filler_thoughts",
    "frozen_copy",
    "gather_contexts",
    "leave_one_out_advantages",
    "newline_ids",
    "no_thought_logprob",
    "pick_positions",
    "rlp_loss",
    "rlp_step",
    "sample_thoughts",
    "step_generator",
    "thought_eval_settings",
    "thought_scores",
]
