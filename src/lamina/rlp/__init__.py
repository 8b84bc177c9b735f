"""RLP, reinforcement as a pretraining objective (Hatamizadeh et al., arXiv:2510.01265), on a lamina GPT.

- `lamina.rlp.config`: the settings, `RLPConfig` (`model.rlp.*`) and `ThoughtEvalConfig` (`thought_eval.*`);
- `lamina.rlp.objective`: the objective's math (positions, sampling, rewards, advantages, loss), plain
  functions on torch tensors and GPT models, usable without a Trainer (its docstring states the objective);
- `lamina.rlp.decoding`: what a thought may hold (`ThoughtRules`) and the batched decoder that keeps to it;
- `lamina.rlp.module`: `RLPModel(LanguageModel)`, whose training step is RLP's (configs name it by class
  path, `model: {class_path: lamina.rlp.RLPModel, init_args: {rlp: ...}}`);
- `lamina.rlp.evaluate`: `ThoughtEvaluator`, the evaluations of thinking (run by lamina.callbacks.ThoughtEval),
  and `FormatScorer`, held-out problems in every prompt format outside a fit (`lamina study`);
- `lamina.rlp.elicitation`: reading those outcomes: the choice and score halves, the k of pass@k, a
  model's best format, difficulty strata and the elicited share against its difficulty-matched null.
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
from lamina.rlp.elicitation import arith_stratum, best_format, choose_k, elicited_share, halves, mean_pass
from lamina.rlp.evaluate import (
    PROMPT_FORMATS,
    THINKING_FORMATS,
    FormatScorer,
    ThoughtEvaluator,
    arith_problems,
    arith_prompt,
    corpus_questions,
    elicitation_share,
    format_prompt,
    is_correct,
    newline_ids,
    paired_interval,
    pass_at_k,
    solve,
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
    "FormatScorer",
    "POSITION_RULES",
    "PROMPT_FORMATS",
    "REWARDS",
    "RLPConfig",
    "RLPLoss",
    "RLPModel",
    "RLPStep",
    "THINKING_FORMATS",
    "THOUGHT_SOURCES",
    "ThoughtEvalConfig",
    "ThoughtEvaluator",
    "ThoughtRules",
    "Thoughts",
    "arith_problems",
    "arith_prompt",
    "arith_stratum",
    "best_format",
    "choose_k",
    "candidate_positions",
    "clipped_policy_loss",
    "corpus_questions",
    "decode",
    "elicitation_share",
    "elicited_share",
    "ema_model",
    "ema_update",
    "filler_thoughts",
    "format_prompt",
    "frozen_copy",
    "gather_contexts",
    "gather_targets",
    "halves",
    "is_correct",
    "leave_one_out_advantages",
    "mean_pass",
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
    "solve",
    "step_flops",
    "step_generator",
    "thought_eval_settings",
    "thought_scores",
]
