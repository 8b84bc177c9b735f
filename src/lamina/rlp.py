"""RLP, reinforcement as a pretraining objective (Hatamizadeh et al., arXiv:2510.01265), on a lamina GPT.

One network is both the thought policy and the scorer. For a document and a position t in it:

1. G thoughts are sampled from the policy after `<think>`, ended by `</think>` (or cut at
   `max_thought_tokens` sampled tokens, then closed with a forced `</think>` that is not trained).
2. Reward of thought i: r_i = log p_theta(x_t | x_<t, <think> c_i </think>) - log p_ema(x_t | x_<t),
   the EMA model scoring without a thought. Rewards are constants: no gradient flows through them.
   log p_theta comes from the same forward that gives the thought tokens' log pi_theta (one update
   per batch: the policy at sampling time).
3. Advantage: A_i = G/(G-1) (r_i - mean_j r_j), the leave-one-out baseline; no std normalisation.
4. Loss: PPO's clipped surrogate on the thought tokens only,
       L = -1/G sum_i 1/|c_i| sum_k min(rho_ik A_i, clip(rho_ik, 1-eps, 1+eps) A_i),
   rho_ik = pi_theta(c_ik) / pi_old(c_ik), averaged per thought, then over thoughts (and documents);
   no KL term and, by default, no next-token loss. The old policy is the policy at sampling time:
   with one update per batch rho = 1 and the gradient is A_i grad log pi_theta(c_ik).
5. After every optimizer step the EMA model moves: phi <- tau phi + (1 - tau) theta (tau = 0.999),
   starting from the weights RLP started from.

Implementation choices (see also README, "RLP"):
- The policy is the tempered distribution it samples from: log pi = log_softmax(logits / temperature)
  over the real vocabulary (padding ids are never sampled). Scores log p(x_t | ...) use the model's
  own distribution (temperature 1, all logits), as the next-token loss and val/loss do.
- Context: the `context_tokens` tokens before x_t (by default as many as fit beside a thought:
  block_size - max_thought_tokens - 2). Every context has the same length, so the B*G group decodes
  together with a KV cache and no padding; positions t are drawn uniformly where a full context fits.
- Each context runs once through the policy (with gradient) and its keys and values are shared by
  its G thoughts (`KVCache.repeat_interleave`): the same numbers as G full sequences, ~G times less
  context compute.
- Controls: `thoughts: filler` replaces each sampled thought by a fixed token repeated to the same
  length; `thoughts: frozen` samples the thoughts from a frozen copy of the starting model. Rewards,
  advantages and the loss (ratio to the current policy at the update) are computed the same way,
  so the runs differ only in where the thought tokens come from.

Everything here is a plain function or class on torch tensors and GPT models, usable without a
Trainer; `LanguageModel` (lm.py) calls it when `model.rlp` is set.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lamina.data import world
from lamina.data.sources import MASK64, splitmix64
from lamina.errors import ConfigError
from lamina.model import GPT, KVCache

THOUGHT_SOURCES = ("policy", "filler", "frozen")


@dataclass
class RLPConfig:
    """The RLP phase (`model.rlp.*`). Defaults follow the paper where it gives a value."""

    group_size: int = 16  # G thoughts per position (paper: 16)
    temperature: float = 0.7  # sampling temperature of thoughts (paper: 0.7)
    max_thought_tokens: int = 32  # cap on the sampled tokens of a thought, its `</think>` included
    positions_per_doc: int = 1  # positions t per document (batch row)
    context_tokens: int | None = None  # tokens before x_t; null: block_size - max_thought_tokens - 2
    clip_eps: float = 0.2  # PPO clip range: ratios outside [1 - eps, 1 + eps] are clipped
    ema_decay: float = 0.999  # tau of the EMA baseline model (paper: 0.999)
    ntp_weight: float = 0.0  # DEVIATION when > 0: adds ntp_weight * next-token loss on the batch
    thoughts: str = "policy"  # policy (RLP) | filler | frozen (controls)
    filler_token: str = "."  # the token a `filler` thought repeats (must be one token)
    seed: int = 0  # seed of positions and thought sampling (mixed with the step: resumes are exact)

    def __post_init__(self) -> None:
        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"model.rlp.{key}: expected {expected}, got {getattr(self, key)!r}")

        if not _is_int(self.group_size) or self.group_size < 2:
            raise bad("group_size", "an integer >= 2 (the leave-one-out baseline needs two thoughts)")
        if not self.temperature > 0:
            raise bad("temperature", "a number > 0")
        if not _is_int(self.max_thought_tokens) or self.max_thought_tokens < 1:
            raise bad("max_thought_tokens", "an integer >= 1")
        if not _is_int(self.positions_per_doc) or self.positions_per_doc < 1:
            raise bad("positions_per_doc", "an integer >= 1")
        if self.context_tokens is not None and (not _is_int(self.context_tokens) or self.context_tokens < 1):
            raise bad("context_tokens", "null or an integer >= 1")
        if not 0 < self.clip_eps < 1:
            raise bad("clip_eps", "a number in (0, 1)")
        if not 0 <= self.ema_decay <= 1:
            raise bad("ema_decay", "a number in [0, 1]")
        if not self.ntp_weight >= 0:
            raise bad("ntp_weight", "a number >= 0")
        if self.thoughts not in THOUGHT_SOURCES:
            raise bad("thoughts", f"one of {', '.join(THOUGHT_SOURCES)}")
        if not _is_int(self.seed):
            raise bad("seed", "an integer")

    def context_length(self, block_size: int) -> int:
        """Tokens of context before x_t: the context, `<think>`, a thought of at most
        max_thought_tokens + 1 tokens (a forced `</think>`) must fit in block_size."""
        fits = block_size - self.max_thought_tokens - 2
        length = fits if self.context_tokens is None else self.context_tokens
        if fits < 1 or length > fits:
            raise ConfigError(
                f"model.rlp.context_tokens: a context of {length} tokens, <think>, and a thought of up to "
                f"model.rlp.max_thought_tokens={self.max_thought_tokens} tokens plus a closing </think> "
                f"do not fit in model.block_size={block_size}"
            )
        return length


@dataclass
class ThoughtEvalConfig:
    """Evaluations of thinking (`model.thought_eval.*`), for RLP runs and their controls alike."""

    every_n_steps: int = 100  # also at step 0 and after the last step; 0: never
    levels: list[int] = field(default_factory=lambda: list(world.ARITH_LEVELS))
    examples_per_level: int = 64  # distinct held-out arithmetic problems per level
    seed: int = 1_000_003  # world seed of the held-out problems (must differ from data.seed)
    max_thought_tokens: int = 160  # greedy thought budget with thinking
    max_answer_tokens: int = 12  # greedy answer budget
    nll_positions: int = 64  # val positions of the next-token loss with a sampled thought; 0: off
    nll_thought_tokens: int | None = None  # null: model.rlp.max_thought_tokens (32 without rlp)
    nll_temperature: float | None = None  # null: model.rlp.temperature (0.7 without rlp)
    batch_size: int = 256  # rows decoded together

    def __post_init__(self) -> None:
        for key in ("every_n_steps", "examples_per_level", "nll_positions"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 0:
                raise ConfigError(f"model.thought_eval.{key}: expected an integer >= 0, got {getattr(self, key)!r}")
        for key in ("max_thought_tokens", "max_answer_tokens", "batch_size"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise ConfigError(f"model.thought_eval.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        for level in self.levels:
            if level not in world.ARITH_LEVELS:
                raise ConfigError(
                    f"model.thought_eval.levels: unknown level {level!r} (expected some of "
                    f"{', '.join(map(str, world.ARITH_LEVELS))})"
                )


# Checkpoints keep these in their hyperparameters; let torch.load(weights_only=True) read them back.
torch.serialization.add_safe_globals([RLPConfig, ThoughtEvalConfig])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- the pieces of the objective ------------------------------------------------------------------


def frozen_copy(model: GPT) -> GPT:
    """A copy of `model` that takes no gradient and never trains (the EMA and frozen models). It is
    left in the module mode Lightning expects; the functions here run it in eval mode."""
    other = copy.deepcopy(model)
    return other.requires_grad_(False)


@torch.no_grad()
def ema_update(ema: GPT, model: GPT, decay: float) -> None:
    """phi <- decay * phi + (1 - decay) * theta, parameter by parameter (buffers are copied)."""
    for phi, theta in zip(ema.parameters(), model.parameters(), strict=True):
        phi.mul_(decay).add_(theta.detach(), alpha=1.0 - decay)
    for mine, theirs in zip(ema.buffers(), model.buffers(), strict=True):
        mine.copy_(theirs)


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """A_i = G/(G-1) (r_i - mean_j r_j) = r_i - mean_{j != i} r_j over the last dim (a group of G).
    Computed in float64, so a group of equal rewards gets exactly zero advantages."""
    G = rewards.size(-1)
    r = rewards.double()
    return (G / (G - 1) * (r - r.mean(dim=-1, keepdim=True))).to(rewards.dtype)


def clipped_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, averaged over each thought's tokens, then over thoughts.

    logp, old_logp, mask: `[R, W]` (R thoughts, W token slots; mask marks the thought's trained
    tokens, at least one per row); advantages: `[R]`. Returns the loss and, over the masked tokens,
    `clip_frac` (share of tokens whose clipped term is the smaller one: no gradient from them) and
    `ratio_mean`.
    """
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.detach().unsqueeze(-1)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    per_token = torch.minimum(unclipped, clipped)
    per_thought = (per_token * mask).sum(-1) / mask.sum(-1)
    loss = -per_thought.mean()
    n = mask.sum()
    with torch.no_grad():
        stats = {
            "clip_frac": ((clipped < unclipped).to(mask.dtype) * mask).sum() / n,
            "ratio_mean": (ratio * mask).sum() / n,
        }
    return loss, stats


def pick_positions(
    batch: int, window: int, context: int, per_doc: int, generator: torch.Generator | None, device
) -> torch.Tensor:
    """`[batch, per_doc]` distinct positions t per row, uniform in [context, window - 1]: the
    positions of a window of `window` tokens that have `context` tokens before them."""
    choices = window - context
    if choices < per_doc:
        raise ConfigError(
            f"model.rlp.positions_per_doc: {per_doc} positions per document, but only {choices} positions "
            f"have a full context of {context} tokens"
        )
    order = torch.rand(batch, choices, generator=generator, device=device).argsort(dim=1)
    return order[:, :per_doc] + context


def gather_contexts(
    windows: torch.Tensor, positions: torch.Tensor, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contexts `[B*k, context]` (the tokens before each position) and targets `[B*k]` (x_t)."""
    B, k = positions.shape
    offsets = positions.unsqueeze(-1) - context + torch.arange(context, device=windows.device)
    contexts = windows.gather(1, offsets.view(B, k * context)).view(B * k, context)
    return contexts, windows.gather(1, positions).view(B * k)


@dataclass
class Thoughts:
    """R = N*G thoughts; rows g*G ... g*G + G - 1 belong to context g.

    tokens `[R, W]`: each thought's n tokens after `<think>`, its `</think>` last, then `</think>`
    padding; n `[R]`; trained `[R, W]`: the tokens the policy is trained on (those sampled: a forced
    `</think>` is not); truncated `[R]`: cut at the cap and closed by force."""

    tokens: torch.Tensor
    n: torch.Tensor
    trained: torch.Tensor
    truncated: torch.Tensor
    decode_steps: int  # decoding steps the sampler ran (for the cost accounting)


@torch.no_grad()
def sample_thoughts(
    sampler: GPT,
    contexts: torch.Tensor,
    group_size: int,
    max_tokens: int,
    temperature: float,
    think_id: int,
    end_think_id: int,
    generator: torch.Generator | None = None,
) -> Thoughts:
    """G thoughts per context from `sampler` after `<think>`: the whole N*G group decodes together."""
    was_training = sampler.training
    sampler.eval()
    try:
        prompts = torch.cat((contexts, contexts.new_full((contexts.size(0), 1), think_id)), dim=1)
        sampled, lengths = sampler.generate(
            prompts, max_tokens, temperature=temperature, stop_id=end_think_id,
            num_samples=group_size, generator=generator,
        )
    finally:
        sampler.train(was_training)
    R, steps = sampled.shape
    ended = sampled.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1) == end_think_id
    truncated = ~ended
    n = lengths + truncated.long()  # a cut thought gets a forced `</think>`
    width = int(n.max())
    tokens = torch.cat((sampled, sampled.new_full((R, 1), end_think_id)), dim=1)[:, :width]
    slots = torch.arange(width, device=tokens.device)
    tokens = torch.where(slots < n.unsqueeze(1), tokens, end_think_id)
    tokens[torch.arange(R, device=tokens.device), n - 1] = end_think_id
    trained = slots < lengths.unsqueeze(1)
    return Thoughts(tokens, n, trained, truncated, steps)


def filler_thoughts(thoughts: Thoughts, filler_id: int, end_think_id: int) -> Thoughts:
    """The same lengths and trained slots, every token but the closing `</think>` replaced by filler."""
    slots = torch.arange(thoughts.tokens.size(1), device=thoughts.tokens.device)
    tokens = torch.where(slots < (thoughts.n - 1).unsqueeze(1), filler_id, end_think_id)
    return Thoughts(tokens, thoughts.n, thoughts.trained, thoughts.truncated, thoughts.decode_steps)


def thought_scores(
    policy: GPT,
    contexts: torch.Tensor,
    targets: torch.Tensor,
    thoughts: Thoughts,
    temperature: float,
    think_id: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One forward of the policy over [context, <think>, thought] (with gradient).

    Returns the tempered log-probabilities of the thought tokens `[R, W]` (log pi_theta, for the
    loss), the scores log p_theta(x_t | context, thought) `[R]` (temperature 1, all logits), and
    the tokens run with gradient. Each context runs once; its G thoughts share its keys and values.
    """
    R, W = thoughts.tokens.shape
    G = R // contexts.size(0)
    cache = KVCache(policy.config.n_layer)
    policy(contexts, kv_cache=cache)  # fills the cache; the context's own logits are not used
    cache = cache.repeat_interleave(G)
    tail = torch.cat((thoughts.tokens.new_full((R, 1), think_id), thoughts.tokens), dim=1)  # [R, W + 1]
    logits, _ = policy(tail, kv_cache=cache)
    policy_logp = F.log_softmax(logits[:, :W, : policy.config.vocab_size].float() / temperature, dim=-1)
    logp = policy_logp.gather(-1, thoughts.tokens.unsqueeze(-1)).squeeze(-1)
    # x_t is predicted at the `</think>`: tail index n (tail[0] is `<think>`, tail[j] thought token j-1).
    rows = torch.arange(R, device=tail.device)
    at_end = logits[rows, thoughts.n].float()
    score = F.log_softmax(at_end, dim=-1).gather(-1, targets.repeat_interleave(G).unsqueeze(-1)).squeeze(-1)
    return logp, score, contexts.numel() + tail.numel()


@torch.no_grad()
def no_thought_logprob(model: GPT, contexts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) `[N]` under `model`, no thought, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(contexts)
    finally:
        model.train(was_training)
    return F.log_softmax(logits[:, -1].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@dataclass
class RLPLoss:
    loss: torch.Tensor  # the clipped surrogate (backward trains the policy)
    rewards: torch.Tensor  # [N, G] r_i, constants
    advantages: torch.Tensor  # [N*G] leave-one-out advantages
    scores: torch.Tensor  # [N*G] log p_theta(x_t | x_<t, thought), detached
    baseline: torch.Tensor  # [N] log p_ema(x_t | x_<t)
    stats: dict[str, torch.Tensor]  # clip_frac, ratio_mean
    train_tokens: int  # tokens run forward and backward


def rlp_loss(
    policy: GPT,
    ema: GPT,
    contexts: torch.Tensor,
    targets: torch.Tensor,
    thoughts: Thoughts,
    config: RLPConfig,
    think_id: int,
    old_logp: torch.Tensor | None = None,
) -> RLPLoss:
    """The RLP loss of G given thoughts per context. `old_logp` `[R, W]` is log pi_old of the thought
    tokens; by default the policy at sampling time, i.e. the current one (ratio 1)."""
    G = thoughts.tokens.size(0) // contexts.size(0)
    logp, scores, train_tokens = thought_scores(policy, contexts, targets, thoughts, config.temperature, think_id)
    baseline = no_thought_logprob(ema, contexts, targets)
    rewards = (scores.detach() - baseline.repeat_interleave(G)).view(-1, G)
    advantages = leave_one_out_advantages(rewards).view(-1)
    old = logp.detach() if old_logp is None else old_logp
    loss, stats = clipped_policy_loss(logp, old, advantages, thoughts.trained, config.clip_eps)
    return RLPLoss(loss, rewards, advantages, scores.detach(), baseline, stats, train_tokens)


@dataclass
class RLPStep:
    loss: torch.Tensor  # what backward trains on: the RLP loss (+ ntp_weight * next-token loss)
    metrics: dict[str, torch.Tensor]  # the rlp/<name> scalars of this step
    parts: RLPLoss
    thoughts: Thoughts
    contexts: torch.Tensor  # [N, L]
    targets: torch.Tensor  # [N]
    sample_tokens: int  # forward tokens spent sampling thoughts (prompts once + one per decode step)
    forward_tokens: int  # forward-only tokens: sampling and the EMA scoring
    train_tokens: int  # tokens run forward and backward
    flops: float  # forward tokens at 2N (+attention), trained tokens at 6N (+attention)


def rlp_step(
    policy: GPT,
    ema: GPT,
    x: torch.Tensor,
    y: torch.Tensor,
    config: RLPConfig,
    think_id: int,
    end_think_id: int,
    generator: torch.Generator | None = None,
    sampler: GPT | None = None,
    filler_id: int | None = None,
) -> RLPStep:
    """The RLP loss of one batch (x, y) `[B, T]` of documents; backward on `.loss` trains the policy.

    `sampler` writes the thoughts (default: the policy itself; the frozen starting model for the
    `frozen` control); `filler_id` is needed for the `filler` control.
    """
    G, T = config.group_size, x.size(1)
    L = config.context_length(policy.config.block_size)
    windows = torch.cat((x, y[:, -1:]), dim=1)  # the T + 1 tokens of each window
    positions = pick_positions(x.size(0), T + 1, L, config.positions_per_doc, generator, x.device)
    contexts, targets = gather_contexts(windows, positions, L)
    N = contexts.size(0)

    thoughts = sample_thoughts(
        sampler if sampler is not None else policy, contexts, G, config.max_thought_tokens,
        config.temperature, think_id, end_think_id, generator,
    )
    if config.thoughts == "filler":
        if filler_id is None:
            raise ValueError("rlp_step: thoughts='filler' needs filler_id")
        thoughts = filler_thoughts(thoughts, filler_id, end_think_id)

    parts = rlp_loss(policy, ema, contexts, targets, thoughts, config, think_id)
    loss, train_tokens = parts.loss, parts.train_tokens
    metrics = {"loss": loss.detach()}
    if config.ntp_weight > 0:  # DEVIATION from the paper (off by default): a mixed next-token term
        _, ntp_loss = policy(x, y)
        loss = loss + config.ntp_weight * ntp_loss
        metrics["ntp_loss"] = ntp_loss.detach()
        train_tokens += y.numel()

    with torch.no_grad():
        rewards = parts.rewards
        spread = rewards.max(dim=1).values - rewards.min(dim=1).values
        metrics.update(
            reward_mean=rewards.mean(),
            reward_std=rewards.std(unbiased=False),
            advantage_abs_mean=parts.advantages.abs().mean(),
            zero_variance_frac=(spread <= 1e-6).float().mean(),
            thought_len_mean=thoughts.n.float().mean(),
            truncated_frac=thoughts.truncated.float().mean(),
            clip_frac=parts.stats["clip_frac"],
            ratio_mean=parts.stats["ratio_mean"],
            logp_think_mean=parts.scores.mean(),
            logp_ema_mean=parts.baseline.mean(),
        )
    sample_tokens = N * (L + 1) + N * G * (thoughts.decode_steps - 1)
    forward_tokens = sample_tokens + N * L
    per_token = policy.flops_per_token()  # 6N + attention: one forward is a third of it
    flops = forward_tokens * per_token / 3 + train_tokens * per_token
    return RLPStep(
        loss, metrics, parts, thoughts, contexts, targets, sample_tokens, forward_tokens, train_tokens, float(flops)
    )


def step_generator(seed: int, batch_index: int, rank: int, device) -> torch.Generator:
    """The generator of one batch's positions and thoughts: a pure function of (seed, batch, rank),
    so a resumed run samples what an uninterrupted one would."""
    mixed = splitmix64((splitmix64(seed & MASK64) ^ (batch_index * 65_537 + rank)) & MASK64)
    generator = torch.Generator(device=device)
    generator.manual_seed(mixed & ((1 << 63) - 1))
    return generator


# ---- evaluations ------------------------------------------------------------------------------------


def arith_problems(seed: int, level: int, n: int) -> list[tuple[str, str]]:
    """Up to n distinct (question, answer) of world arithmetic at `level`, e.g. ("Q: 47+38=?", "85")."""
    problems: dict[str, str] = {}
    examples = world.generate(seed, families=("arith",), levels=[level])
    for _ in range(50 * n):
        if len(problems) >= n:
            break
        text = next(examples).text
        question, rest = text.split(f" {world.THINK_OPEN}", 1)
        problems.setdefault(question, rest.rsplit("A: ", 1)[1].strip())
    return list(problems.items())


def newline_ids(tokenizer) -> list[int]:
    """Ids whose text holds a line break (an answer ends at the end of its line)."""
    return [i for i in range(tokenizer.get_vocab_size()) if "\n" in tokenizer.decode([i], skip_special_tokens=False)]


class ThoughtEvaluator:
    """Held-out arithmetic accuracy, with and without thinking, and the next-token loss with a
    sampled thought. Built once per run; the problems and positions never change, so curves compare.

    Arithmetic protocol (exact match, greedy, KV cache, prompts of one length decoded together):
    - with thinking (`eval/arith_acc/level<k>`): prompt `Q: 47+38=? <think>`; the model writes its
      thought, `</think>` and its answer; correct when the line after the first `</think>` is
      exactly `A: 85` (a thought never closed within the budget is wrong).
    - without (`eval/arith_acc_nothink/level<k>`): prompt `Q: 47+38=? A:` (the one-hop question
      format of the world's prose); correct when the rest of the line is exactly `85`.
    Problems come from the world generator at `seed`, disjoint from the training stream's seed (the
    problems of the lowest levels are few, so some also occur in training text).

    Next-token loss with a thought, at `nll_positions` fixed val positions (consecutive windows of
    the val split, x_t after a context of the RLP length): `eval/think_nll` = -log p(x_t | context,
    thought) with one thought sampled from the model (fixed seed: the same random numbers at every
    evaluation), `eval/nothink_nll` = -log p(x_t | context), `eval/think_gain` their difference.
    """

    def __init__(
        self,
        config: ThoughtEvalConfig,
        tokenizer,
        think_id: int,
        end_think_id: int,
        eot_id: int,
        block_size: int,
        val_tokens: np.ndarray | None = None,
        thought_tokens: int = 32,
        temperature: float = 0.7,
    ):
        self.config, self.tokenizer = config, tokenizer
        self.think_id, self.end_think_id, self.block_size = think_id, end_think_id, block_size
        self.stop_ids = sorted(set(newline_ids(tokenizer)) | {eot_id})
        self.thought_tokens, self.temperature = thought_tokens, temperature
        self.problems = {
            level: arith_problems(config.seed, level, config.examples_per_level) for level in config.levels
        }
        self.nll_windows = None
        if config.nll_positions and val_tokens is not None:
            context = block_size - thought_tokens - 2  # as in RLP: <think>, thought, forced </think>
            if context < 1:
                raise ConfigError(
                    f"model.thought_eval.nll_thought_tokens: thoughts of {thought_tokens} tokens leave no "
                    f"context in model.block_size={block_size}"
                )
            span = context + 1
            count = min(config.nll_positions, len(val_tokens) // span)
            if count:
                rows = np.asarray(val_tokens[: count * span], dtype=np.int64).reshape(count, span)
                self.nll_windows = torch.from_numpy(rows)

    @torch.no_grad()
    def evaluate(self, model: GPT) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            metrics = {}
            for level, problems in self.problems.items():
                if not problems:
                    continue
                metrics[f"eval/arith_acc/level{level}"] = self._accuracy(model, problems, think=True)
                metrics[f"eval/arith_acc_nothink/level{level}"] = self._accuracy(model, problems, think=False)
            if self.nll_windows is not None:
                metrics.update(self._thought_nll(model))
            return metrics
        finally:
            model.train(was_training)

    def _accuracy(self, model: GPT, problems: list[tuple[str, str]], think: bool) -> float:
        device = next(model.parameters()).device
        suffix = f" {world.THINK_OPEN}" if think else " A:"
        budget = self.config.max_answer_tokens + (self.config.max_thought_tokens if think else 0)
        by_length = defaultdict(list)
        for question, answer in problems:
            ids = self.tokenizer.encode(question + suffix).ids
            by_length[len(ids)].append((ids, answer))
        correct = 0
        for length, items in by_length.items():
            new = min(budget, self.block_size - length + 1)
            for start in range(0, len(items), self.config.batch_size):
                chunk = items[start : start + self.config.batch_size]
                if new < 1:
                    continue  # the prompt alone fills the context: no room to answer
                prompts = torch.tensor([ids for ids, _ in chunk], device=device)
                tokens, lengths = model.generate(prompts, new, temperature=0, stop_id=self.stop_ids)
                for row, (_, answer) in enumerate(chunk):
                    text = self.tokenizer.decode(tokens[row, : lengths[row]].tolist(), skip_special_tokens=False)
                    correct += self._is_correct(text, answer, think)
        return correct / len(problems)

    @staticmethod
    def _is_correct(continuation: str, answer: str, think: bool) -> bool:
        line = continuation.split("\n", 1)[0].split("<|endoftext|>", 1)[0]
        if think:
            if world.THINK_CLOSE not in line:
                return False
            return line.split(world.THINK_CLOSE, 1)[1].strip() == f"A: {answer}"
        return line.strip() == answer

    def _thought_nll(self, model: GPT) -> dict[str, float]:
        device = next(model.parameters()).device
        windows = self.nll_windows.to(device)
        contexts, targets = windows[:, :-1], windows[:, -1]
        generator = torch.Generator(device=device)
        generator.manual_seed(self.config.seed)
        nothink = no_thought_logprob(model, contexts, targets)
        thoughts = sample_thoughts(
            model, contexts, 1, self.thought_tokens, self.temperature, self.think_id, self.end_think_id, generator
        )
        _, think, _ = thought_scores(model, contexts, targets, thoughts, self.temperature, self.think_id)
        think_nll, nothink_nll = -think.mean().item(), -nothink.mean().item()
        return {
            "eval/think_nll": think_nll,
            "eval/nothink_nll": nothink_nll,
            "eval/think_gain": nothink_nll - think_nll,
            "eval/think_len_mean": thoughts.n.float().mean().item(),
        }


def thought_eval_settings(rlp: RLPConfig | None, config: ThoughtEvalConfig) -> tuple[int, float]:
    """(thought tokens, temperature) of the thought-NLL evaluation: its own, else the RLP run's."""
    tokens = config.nll_thought_tokens or (rlp.max_thought_tokens if rlp else 32)
    temperature = config.nll_temperature or (rlp.temperature if rlp else 0.7)
    if not tokens >= 1 or not temperature > 0:
        raise ConfigError("model.thought_eval: nll_thought_tokens must be >= 1 and nll_temperature > 0")
    return tokens, temperature


__all__ = [
    "RLPConfig",
    "RLPLoss",
    "RLPStep",
    "THOUGHT_SOURCES",
    "ThoughtEvalConfig",
    "ThoughtEvaluator",
    "Thoughts",
    "arith_problems",
    "clipped_policy_loss",
    "ema_update",
    "filler_thoughts",
    "frozen_copy",
    "gather_contexts",
    "leave_one_out_advantages",
    "no_thought_logprob",
    "pick_positions",
    "rlp_loss",
    "rlp_step",
    "sample_thoughts",
    "step_generator",
    "thought_scores",
]
