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
Trainer; `RLPModel` (lamina.rlp.module) trains on it when `model.rlp` is set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lamina.data.module import MASK64, splitmix64_array
from lamina.errors import ConfigError
from lamina.model import GPT, KVCache
from lamina.rlp.config import RLPConfig

# ---- the pieces of the objective ------------------------------------------------------------------


def ema_model(model: GPT) -> GPT:
    """The EMA baseline model (and the `frozen` control's sampler): a copy of `model` that takes no
    gradient and never trains; it moves only by `ema_update`. It is left in the module mode
    Lightning expects; the functions here run it in eval mode."""
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

    tokens `[R, W]`: each thought's tokens after `<think>` (lengths[r] of them, its `</think>`
    last), then `</think>` padding; lengths `[R]`; trained `[R, W]`: the tokens the policy is
    trained on (those sampled: a forced `</think>` is not); truncated `[R]`: cut at the cap and
    closed by force."""

    tokens: torch.Tensor
    lengths: torch.Tensor
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
        sampled, sampled_lengths = sampler.generate(
            prompts, max_tokens, temperature=temperature, stop_id=end_think_id,
            num_samples=group_size, generator=generator,
        )
    finally:
        sampler.train(was_training)
    R, steps = sampled.shape
    ended = sampled.gather(1, (sampled_lengths - 1).unsqueeze(1)).squeeze(1) == end_think_id
    truncated = ~ended
    lengths = sampled_lengths + truncated.long()  # a cut thought gets a forced `</think>`
    width = int(lengths.max())
    tokens = torch.cat((sampled, sampled.new_full((R, 1), end_think_id)), dim=1)[:, :width]
    slots = torch.arange(width, device=tokens.device)
    tokens = torch.where(slots < lengths.unsqueeze(1), tokens, end_think_id)
    tokens[torch.arange(R, device=tokens.device), lengths - 1] = end_think_id
    trained = slots < sampled_lengths.unsqueeze(1)
    return Thoughts(tokens, lengths, trained, truncated, steps)


def filler_thoughts(thoughts: Thoughts, filler_id: int, end_think_id: int) -> Thoughts:
    """The same lengths and trained slots, every token but the closing `</think>` replaced by filler."""
    slots = torch.arange(thoughts.tokens.size(1), device=thoughts.tokens.device)
    tokens = torch.where(slots < (thoughts.lengths - 1).unsqueeze(1), filler_id, end_think_id)
    return Thoughts(tokens, thoughts.lengths, thoughts.trained, thoughts.truncated, thoughts.decode_steps)


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
    at_end = logits[rows, thoughts.lengths].float()
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
            thought_len_mean=thoughts.lengths.float().mean(),
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
    key = int(splitmix64_array(np.uint64(seed & MASK64)))
    mixed = int(splitmix64_array(np.uint64((key ^ (batch_index * 65_537 + rank)) & MASK64)))
    generator = torch.Generator(device=device)
    generator.manual_seed(mixed & ((1 << 63) - 1))
    return generator

