"""RLP, reinforcement as a pretraining objective (Hatamizadeh et al., arXiv:2510.01265), on a lamina GPT.

- `lamina.rlp.config`: the settings, `RLPConfig` (`model.rlp.*`) and `ThoughtEvalConfig` (`thought_eval.*`);
- `lamina.rlp.objective`: the objective's math (positions, sampling, rewards, advantages, loss), plain
  functions on torch tensors and GPT models, usable without a Trainer (its docstring states the objective);
- `lamina.rlp.decoding`: what a thought may hold (`ThoughtRules`) and the batched decoder that keeps to it;
- `lamina.rlp.module`: `RLPModel(LanguageModel)`, whose training step is RLP's (configs name it by class
  path, `model: {class_path: lamina.rlp.RLPModel, init_args: {rlp: ...}}`);
- `lamina.rlp.evaluate`: `ThoughtEvaluator`, the evaluations of thinking (run by lamina.callbacks.ThoughtEval).
"""

from __future__ import annotations

from lamina.rlp.config import (
    POSITION_RULES,
    REWARDS,
    THOUGHT_SOURCES,
    RLPConfig,
    ThoughtEvalConfig,
    thought_eval_settings,
)
from lamina.rlp.decoding import ThoughtRules, decode
from lamina.rlp.evaluate import (
    ThoughtEvaluator,
    arith_problems,
    arith_prompt,
    elicitation_share,
    newline_ids,
    paired_interval,
    pass_at_k,
)
from lamina.rlp.module import RLPModel
from lamina.rlp.objective import (
    RLPLoss,
    RLPStep,
    Thoughts,
    candidate_positions,
    clipped_policy_loss,
    ema_model,
    ema_update,
    filler_thoughts,
    gather_contexts,
    gather_targets,
    leave_one_out_advantages,
    no_thought_logprob,
    outside_thoughts,
    pick_positions,
    rlp_loss,
    rlp_step,
    sample_thoughts,
    shuffled_rewards,
    step_flops,
    step_generator,
    thought_scores,
)

frozen_copy = ema_model  # the name before lamina.rlp became a package


__all__ = [
    "POSITION_RULES",
    "REWARDS",
    "RLPConfig",
    "RLPLoss",
    "RLPModel",
    "RLPStep",
    "THOUGHT_SOURCES",
    "ThoughtEvalConfig",
    "ThoughtEvaluator",
    "ThoughtRules",
    "Thoughts",
    "arith_problems",
    "arith_prompt",
    "candidate_positions",
    "clipped_policy_loss",
    "decode",
    "elicitation_share",
    "ema_model",
    "ema_update",
    "filler_thoughts",
    "frozen_copy",
    "gather_contexts",
    "gather_targets",
    "leave_one_out_advantages",
    "newline_ids",
    "no_thought_logprob",
    "outside_thoughts",
    "paired_interval",
    "pass_at_k",
    "pick_positions",
    "rlp_loss",
    "rlp_step",
    "sample_thoughts",
    "shuffled_rewards",
    "step_flops",
    "step_generator",
    "thought_eval_settings",
    "thought_scores",
]
