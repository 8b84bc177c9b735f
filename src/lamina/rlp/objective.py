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
  over the real vocabulary (padding ids are never sampled), under the thought rules
  (lamina.rlp.decoding: a thought holds at least one token, never `<|endoftext|>` or a nested
  `<think>`). Scores log p(x_t | ...) use the model's own distribution (temperature 1, all logits),
  as the next-token loss and val/loss do.
- Context: the `context_tokens` tokens before x_t (by default as many as fit beside a thought and
  the scored tokens). Every context has the same length, so the N*G group decodes together with a
  KV cache and no padding.
- Positions (`positions`): `uniform` (the paper) draws t uniformly where a full context fits, never
  on `<think>` or inside a thought of the text; `thought_slots` (a DEVIATION) only where a stripped
  thought stood (lamina.data.thoughts.ThoughtSlots), a row without one giving no position.
- Scored tokens (`reward_tokens`): K = 1 is the paper; K > 1 (a DEVIATION) scores x_t ... x_{t+K-1}
  teacher-forced after the thought, r = sum_k [log p_theta(x_{t+k} | x_<t, thought, x_t..x_{t+k-1})
  - log p_ema(x_{t+k} | x_<t, x_t..x_{t+k-1})]; `line` the same up to the end of the line.
- Each context runs once through the policy (with gradient) and its keys and values are shared by
  its G thoughts (`KVCache.repeat_interleave`): the same numbers as G full sequences, ~G times less
  context compute. `step_flops` counts both ways: as run, and unshared.
- Controls: `thoughts: filler` replaces each sampled thought by a fixed token repeated to the same
  length; `thoughts: frozen` samples the thoughts from a frozen copy of the starting model;
  `reward: shuffled` moves each group's rewards to another group of the batch (same compute, no
  information about the thought). Rewards, advantages and the loss (ratio to the current policy at
  the update) are computed the same way, so the runs differ only in where thoughts or rewards come from.

Everything here is a plain function or class on torch tensors and GPT models, usable without a
Trainer; `RLPModel` (lamina.rlp.module, the model class `lamina.rlp.RLPModel`) trains on it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lamina.data.module import MASK64, splitmix64_array
from lamina.errors import ConfigError
from lamina.model import GPT, KVCache
from lamina.rlp.config import RLPConfig
from lamina.rlp.decoding import ThoughtRules, decode, masked_logits

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


def outside_thoughts(windows: torch.Tensor, think_id: int, end_think_id: int) -> torch.Tensor:
    """`[B, T]` True at tokens that are neither `<think>` nor inside a thought of the text (after a
    `<think>`, up to its `</think>` included; a window may begin inside one, ended by a `</think>`
    before any `<think>`)."""
    opens, closes = (windows == think_id).long(), (windows == end_think_id).long()
    first_marker_closes = _first_true(closes.bool() | opens.bool(), closes.bool())
    depth = (opens - closes).cumsum(dim=1) - (opens - closes) + first_marker_closes.long().unsqueeze(1)
    return (depth <= 0) & (windows != think_id)


def _first_true(marks: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per row, values at the first True of marks (False where the row has none)."""
    first = marks.long().argmax(dim=1)
    return marks.any(dim=1) & values.gather(1, first.unsqueeze(1)).squeeze(1)


def pick_positions(
    allowed: torch.Tensor, per_doc: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `per_doc` distinct positions t per row, uniform among those `allowed` `[B, T]`:
    (rows `[N]`, positions `[N]`), row by row. A row with fewer allowed positions gives them all."""
    B, T = allowed.shape
    draw = torch.rand(B, T, generator=generator, device=allowed.device).masked_fill(~allowed, 2.0)
    order = draw.argsort(dim=1)[:, :per_doc]
    keep = allowed.gather(1, order)
    rows = torch.arange(B, device=allowed.device).unsqueeze(1).expand_as(order)
    return rows[keep], order[keep]


def candidate_positions(
    windows: torch.Tensor,
    config: RLPConfig,
    context: int,
    think_id: int,
    end_think_id: int,
    slots: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`[B, T + 1]` the positions t RLP may pick: a full context before, the scored tokens after,
    never `<think>` or inside a thought of the text; under `thought_slots`, only the slots."""
    length = windows.size(1)
    first, last = context, length - config.scored_tokens  # x_t ... x_{t+K-1} lie in the window
    if last < first + config.positions_per_doc - 1:
        raise ConfigError(
            f"model.rlp.positions_per_doc: {config.positions_per_doc} positions per document, but only "
            f"{max(last - first + 1, 0)} positions have a full context of {context} tokens and "
            f"{config.scored_tokens} scored token(s) in a window of {length}"
        )
    index = torch.arange(length, device=windows.device)
    allowed = ((index >= first) & (index <= last)).unsqueeze(0) & outside_thoughts(windows, think_id, end_think_id)
    if config.positions == "thought_slots":
        if slots is None:
            raise ValueError("candidate_positions: positions='thought_slots' needs a slot finder")
        allowed &= slots(windows)
    return allowed


def gather_contexts(
    windows: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, context: int
) -> torch.Tensor:
    """Contexts `[N, context]`: the tokens before each (row, position)."""
    offsets = positions.unsqueeze(1) - context + torch.arange(context, device=windows.device)
    return windows[rows.unsqueeze(1), offsets]


def gather_targets(
    windows: torch.Tensor,
    rows: torch.Tensor,
    positions: torch.Tensor,
    count: int,
    line_end_ids: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scored tokens x_t ... x_{t+count-1} `[N, count]` and their weights `[N, count]`: all 1,
    or with `line_end_ids` 1 up to the first line end (included) and 0 after: the rest of the line."""
    offsets = positions.unsqueeze(1) + torch.arange(count, device=windows.device)
    targets = windows[rows.unsqueeze(1), offsets]
    weights = torch.ones_like(targets, dtype=torch.float32)
    if line_end_ids:
        ends = torch.isin(targets, torch.as_tensor(line_end_ids, device=targets.device)).long()
        before_end = (ends.cumsum(dim=1) - ends) == 0  # no line end before this token
        weights = before_end.float()
    return targets, weights


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
    eot_id: int | None = None,
) -> Thoughts:
    """G thoughts per context from `sampler` after `<think>`: the whole N*G group decodes together,
    each thought at least one token and never the end of text or a nested `<think>`."""
    was_training = sampler.training
    sampler.eval()
    try:
        prompts = torch.cat((contexts, contexts.new_full((contexts.size(0), 1), think_id)), dim=1)
        sampled, sampled_lengths = decode(
            sampler, prompts, max_tokens, temperature, num_samples=group_size, generator=generator,
            stop_ids=[end_think_id], rules=ThoughtRules(think_id, end_think_id, eot_id),
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


def _as_targets(targets: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets `[N, K]` and weights `[N, K]` (a `[N]` target is K = 1, weight 1)."""
    if targets.dim() == 1:
        targets = targets.unsqueeze(1)
    return targets, torch.ones_like(targets, dtype=torch.float32) if weights is None else weights.float()


def thought_scores(
    policy: GPT,
    contexts: torch.Tensor,
    targets: torch.Tensor,
    thoughts: Thoughts,
    temperature: float,
    rules: ThoughtRules,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One forward of the policy over [context, <think>, thought, x_t ... x_{t+K-2}] (with gradient).

    `targets` `[N, K]` (or `[N]`) are the scored tokens x_t ..., `weights` `[N, K]` which count.
    Returns the tempered log-probabilities of the thought tokens `[R, W]` (log pi_theta, for the
    loss, under the thought rules), the scores sum_k w_k log p_theta(x_{t+k} | context, thought,
    x_t ... x_{t+k-1}) `[R]` (temperature 1, all logits), and the tokens run with gradient. Each
    context runs once; its G thoughts share its keys and values.
    """
    targets, weights = _as_targets(targets, weights)
    R, W = thoughts.tokens.shape
    G, K = R // contexts.size(0), targets.size(1)
    cache = KVCache(policy.config.n_layer)
    policy(contexts, kv_cache=cache)  # fills the cache; the context's own logits are not used
    cache = cache.repeat_interleave(G)
    row_targets, row_weights = targets.repeat_interleave(G, dim=0), weights.repeat_interleave(G, dim=0)
    rows = torch.arange(R, device=contexts.device).unsqueeze(1)
    # tail[0] is `<think>`, tail[j] thought token j-1 (its `</think>` at tail[n]), then x_t ... x_{t+K-2}
    tail = thoughts.tokens.new_full((R, W + K), rules.end_think_id)
    tail[:, 0] = rules.think_id
    tail[:, 1 : W + 1] = thoughts.tokens
    after = thoughts.lengths.unsqueeze(1) + torch.arange(K, device=tail.device)  # predict x_t, x_{t+1}, ...
    tail[rows, after[:, : K - 1] + 1] = row_targets[:, : K - 1]
    logits, _ = policy(tail, kv_cache=cache)
    vocab = policy.config.vocab_size
    thought_logits = masked_logits(logits[:, :W, :vocab].float(), rules.banned(vocab, W, tail.device))
    logp = F.log_softmax(thought_logits / temperature, dim=-1).gather(-1, thoughts.tokens.unsqueeze(-1)).squeeze(-1)
    scored = F.log_softmax(logits[rows, after].float(), dim=-1).gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
    return logp, (scored * row_weights).sum(dim=1), contexts.numel() + tail.numel()


@torch.no_grad()
def no_thought_logprob(
    model: GPT, contexts: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_k w_k log p(x_{t+k} | x_<t, x_t ... x_{t+k-1}) `[N]` under `model`, no thought, in eval mode."""
    targets, weights = _as_targets(targets, weights)
    K, L = targets.size(1), contexts.size(1)
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(torch.cat((contexts, targets[:, : K - 1]), dim=1))
    finally:
        model.train(was_training)
    scored = F.log_softmax(logits[:, L - 1 :].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (scored * weights).sum(dim=1)


def shuffled_rewards(rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The `shuffled` control: the `[N, G]` rewards moved to other groups (rolled by a random 1 ...
    N - 1 rows, so that no group keeps its own; a batch of one group keeps it), then permuted within
    each group. Every number is kept (same compute, same spread), but it no longer belongs to the
    thought it scores."""
    N, G = rewards.shape
    shift = int(torch.randint(1, N, (1,), generator=generator, device=rewards.device)) if N > 1 else 0
    order = torch.rand(N, G, generator=generator, device=rewards.device).argsort(dim=1)
    return rewards.roll(shift, dims=0).gather(1, order)


@dataclass
class RLPLoss:
    loss: torch.Tensor  # the clipped surrogate (backward trains the policy)
    rewards: torch.Tensor  # [N, G] the rewards r_i the advantages use, constants
    info_gain: torch.Tensor  # [N, G] log p_theta(x | x_<t, thought) - log p_ema(x | x_<t) (= rewards unless shuffled)
    advantages: torch.Tensor  # [N*G] leave-one-out advantages
    scores: torch.Tensor  # [N*G] log p_theta(x_t ... | x_<t, thought), detached
    baseline: torch.Tensor  # [N] log p_ema(x_t ... | x_<t)
    stats: dict[str, torch.Tensor]  # clip_frac, ratio_mean
    train_tokens: int  # tokens run forward and backward


def rlp_loss(
    policy: GPT,
    ema: GPT,
    contexts: torch.Tensor,
    targets: torch.Tensor,
    thoughts: Thoughts,
    config: RLPConfig,
    rules: ThoughtRules,
    old_logp: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> RLPLoss:
    """The RLP loss of G given thoughts per context. `targets` (`[N, K]`, with `weights`) are the
    scored tokens; `old_logp` `[R, W]` is log pi_old of the thought tokens; by default the policy at
    sampling time, i.e. the current one (ratio 1). `generator` draws the `shuffled` permutation."""
    G = thoughts.tokens.size(0) // contexts.size(0)
    logp, scores, train_tokens = thought_scores(policy, contexts, targets, thoughts, config.temperature, rules, weights)
    baseline = no_thought_logprob(ema, contexts, targets, weights)
    info_gain = (scores.detach() - baseline.repeat_interleave(G)).view(-1, G)
    rewards = shuffled_rewards(info_gain, generator) if config.reward == "shuffled" else info_gain
    advantages = leave_one_out_advantages(rewards).view(-1)
    old = logp.detach() if old_logp is None else old_logp
    loss, stats = clipped_policy_loss(logp, old, advantages, thoughts.trained, config.clip_eps)
    return RLPLoss(loss, rewards, info_gain, advantages, scores.detach(), baseline, stats, train_tokens)


@dataclass
class RLPStep:
    loss: torch.Tensor  # what backward trains on: the RLP loss (+ ntp_weight * next-token loss)
    metrics: dict[str, torch.Tensor]  # the rlp/<name> scalars of this step
    parts: RLPLoss | None  # None when the batch held no position (thought_slots)
    thoughts: Thoughts | None
    rows: torch.Tensor  # [N] the batch row of each position
    positions: torch.Tensor  # [N] t in its window of T + 1 tokens
    contexts: torch.Tensor  # [N, L]
    targets: torch.Tensor  # [N, K] x_t ... x_{t+K-1}
    weights: torch.Tensor  # [N, K] which targets the reward counts
    sample_tokens: int  # forward tokens spent sampling thoughts (prompts once + one per decode step)
    forward_tokens: int  # forward-only tokens: sampling and the EMA scoring
    train_tokens: int  # tokens run forward and backward
    flops: float  # as run: forward tokens at 2N (+attention), trained tokens at 6N (+attention)
    flops_unshared: float  # as if each thought ran its own full sequence (no shared context, see step_flops)


def step_flops(
    policy: GPT, N: int, G: int, L: int, K: int, thoughts: Thoughts, train_tokens: int
) -> tuple[float, float]:
    """(FLOPs as run, FLOPs unshared) of one RLP step of N contexts of L tokens, G thoughts each.

    As run (perf/flops): the sampler's prompts once per context (their keys shared by the G
    thoughts) and one token per thought per decode step, and the EMA scoring, at 2N per token
    (+attention, a third of flops_per_token); the policy's forward and backward at 6N (+attention)
    on the tokens it ran. Unshared: the count of an implementation without a shared context, each
    thought a sequence of its own: G * (context + <think>) prompt tokens, the EMA scoring once per
    thought, and G full sequences (context, thought, scored tokens) trained.
    """
    per_token = policy.flops_per_token()  # 6N + attention: one forward is a third of it
    steps = thoughts.decode_steps
    sample = N * (L + 1) + N * G * (steps - 1)
    forward = sample + N * (L + K - 1)
    as_run = forward * per_token / 3 + train_tokens * per_token
    width = thoughts.tokens.size(1)
    unshared_forward = N * G * (L + 1) + N * G * (steps - 1) + N * G * (L + K - 1)
    unshared_train = N * G * (L + 1 + width + K - 1)
    return float(as_run), float(unshared_forward * per_token / 3 + unshared_train * per_token)


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
    eot_id: int | None = None,
    line_end_ids: list[int] | None = None,
    slots: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RLPStep:
    """The RLP loss of one batch (x, y) `[B, T]` of documents; backward on `.loss` trains the policy.

    `sampler` writes the thoughts (default: the policy itself; the frozen starting model for the
    `frozen` control); `filler_id` is needed for the `filler` control, `line_end_ids` (the ids
    that end a line, and the end of text) for `reward_tokens: line`, `slots` (a
    lamina.data.thoughts.ThoughtSlots) for `positions: thought_slots`; `eot_id` is kept out of thoughts.
    """
    G, K = config.group_size, config.scored_tokens
    L = config.context_length(policy.config.block_size)
    windows = torch.cat((x, y[:, -1:]), dim=1)  # the T + 1 tokens of each window
    allowed = candidate_positions(windows, config, L, think_id, end_think_id, slots)
    rows, positions = pick_positions(allowed, config.positions_per_doc, generator)
    contexts = gather_contexts(windows, rows, positions, L)
    line = line_end_ids if config.reward_tokens == "line" else None
    if config.reward_tokens == "line" and not line_end_ids:
        raise ValueError("rlp_step: reward_tokens='line' needs line_end_ids")
    targets, weights = gather_targets(windows, rows, positions, K, line)
    N = contexts.size(0)
    if N == 0:  # thought_slots, and no slot in the batch: nothing to train, a zero loss on the graph
        zero = sum(p.sum() for p in policy.parameters()) * 0.0
        return RLPStep(zero, {"loss": zero.detach(), "positions": torch.tensor(0.0)}, None, None, rows, positions,
                       contexts, targets, weights, 0, 0, 0, 0.0, 0.0)

    thoughts = sample_thoughts(
        sampler if sampler is not None else policy, contexts, G, config.thought_cap,
        config.temperature, think_id, end_think_id, generator, eot_id=eot_id,
    )
    if config.thoughts == "filler":
        if filler_id is None:
            raise ValueError("rlp_step: thoughts='filler' needs filler_id")
        thoughts = filler_thoughts(thoughts, filler_id, end_think_id)

    rules = ThoughtRules(think_id, end_think_id, eot_id)
    parts = rlp_loss(policy, ema, contexts, targets, thoughts, config, rules, weights=weights, generator=generator)
    loss, train_tokens = parts.loss, parts.train_tokens
    metrics = {"loss": loss.detach()}
    if config.ntp_weight > 0:  # DEVIATION from the paper (off by default): a mixed next-token term
        _, ntp_loss = policy(x, y)
        loss = loss + config.ntp_weight * ntp_loss
        metrics["ntp_loss"] = ntp_loss.detach()
        train_tokens += y.numel()
    metrics.update(step_metrics(parts, thoughts, N))
    sample_tokens = N * (L + 1) + N * G * (thoughts.decode_steps - 1)
    forward_tokens = sample_tokens + N * (L + K - 1)
    flops, flops_unshared = step_flops(policy, N, G, L, K, thoughts, parts.train_tokens)
    if config.ntp_weight > 0:
        extra = y.numel() * policy.flops_per_token()
        flops, flops_unshared = flops + extra, flops_unshared + extra
    return RLPStep(
        loss, metrics, parts, thoughts, rows, positions, contexts, targets, weights, sample_tokens, forward_tokens,
        train_tokens, flops, flops_unshared,
    )


@torch.no_grad()
def step_metrics(parts: RLPLoss, thoughts: Thoughts, positions: int) -> dict[str, torch.Tensor]:
    """The rlp/<name> scalars of a step. Under leave-one-out advantages the EMA term cancels, so
    the reward's spread and the advantages show learning; the reward mean cannot."""
    rewards = parts.rewards
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values
    return dict(
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
        positions=torch.tensor(float(positions)),
    )


def step_generator(seed: int, batch_index: int, rank: int, device) -> torch.Generator:
    """The generator of one batch's positions and thoughts: a pure function of (seed, batch, rank),
    so a resumed run samples what an uninterrupted one would."""
    key = int(splitmix64_array(np.uint64(seed & MASK64)))
    mixed = int(splitmix64_array(np.uint64((key ^ (batch_index * 65_537 + rank)) & MASK64)))
    generator = torch.Generator(device=device)
    generator.manual_seed(mixed & ((1 << 63) - 1))
    return generator

