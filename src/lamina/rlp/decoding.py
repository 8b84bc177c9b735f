"""Decoding with thoughts: what a thought may hold, and a batched KV-cache decoder that keeps to it.

A thought (the tokens after `<think>`, up to its `</think>`) holds at least one token, and never
`<|endoftext|>` or a nested `<think>`: those logits are masked while a row is inside its thought,
both when sampling and in the policy's log-probabilities (the policy is the distribution it
samples from).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lamina.model import KVCache


@dataclass(frozen=True)
class ThoughtRules:
    think_id: int
    end_think_id: int
    eot_id: int | None = None  # None: no end-of-text token to keep out

    def banned(self, vocab_size: int, slots: int, device) -> torch.Tensor:
        """`[slots, vocab_size]` True where a token may not stand at that slot of a thought: the
        end of text and `<think>` anywhere, `</think>` as the first token (an empty thought)."""
        mask = torch.zeros(slots, vocab_size, dtype=torch.bool, device=device)
        mask[:, self.think_id] = True
        if self.eot_id is not None:
            mask[:, self.eot_id] = True
        mask[0, self.end_think_id] = True
        return mask


def masked_logits(logits: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(banned, float("-inf"))


def padded_prompts(prompts, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as `[B, T]` ids (a tensor, or lists of ids of any lengths, right-padded with 0) and
    their lengths `[B]`."""
    if isinstance(prompts, torch.Tensor):
        return prompts, torch.full((prompts.size(0),), prompts.size(1), dtype=torch.long, device=prompts.device)
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
    padded = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long, device=device)
    for row, ids in enumerate(prompts):
        padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
    return padded, lengths


@torch.no_grad()
def decode(
    model,
    prompts,
    max_new_tokens: int,
    temperature: float,
    *,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    stop_ids: list[int] | None = None,
    rules: ThoughtRules | None = None,
    compact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continue every prompt by up to `max_new_tokens` tokens, `num_samples` times, as
    `GPT.generate` does (rows b*num_samples ... continue prompt b; sampled from softmax(logits /
    temperature) over the real vocabulary, greedy at temperature 0; one forward per new token, the
    shortest prompt's keys shared by the samples). Prompts (a `[B, T]` tensor, or lists of ids) may
    differ in length: all rows decode together from the shortest, a longer prompt's own tokens fed
    in place of samples until it ends, so every row runs exactly as it would alone. With `rules`,
    prompts end inside a thought (after `<think>`): until a row writes `</think>`, its thought keeps
    to the rules. With `compact`, finished rows leave the batch once they are half of it (less
    compute; sampled rows then draw other random numbers than without). Call it in eval mode.

    Returns (tokens `[B*num_samples, n]`, lengths): row r's continuation is tokens[r, :lengths[r]],
    ending with its first stop token when it wrote one (later positions repeat stop_ids[0]).
    """
    vocab, block = model.config.vocab_size, model.config.block_size
    device = prompts.device if isinstance(prompts, torch.Tensor) else next(model.parameters()).device
    padded, prompt_lengths = padded_prompts(prompts, device)
    start, longest = int(prompt_lengths.min()), int(prompt_lengths.max())
    if max_new_tokens < 1 or longest + max_new_tokens - 1 > block:
        raise ValueError(
            f"decode: a prompt of {longest} tokens and {max_new_tokens} new ones exceed model.block_size={block}"
        )
    stops = None if not stop_ids else torch.as_tensor(stop_ids, device=device)
    filler = int(stops[0]) if stops is not None else 0
    cache = KVCache(model.config.n_layer)
    logits = model(padded[:, :start], kv_cache=cache)[0][:, -1]
    if num_samples > 1:
        logits, cache = logits.repeat_interleave(num_samples, dim=0), cache.repeat_interleave(num_samples)
        padded, prompt_lengths = padded.repeat_interleave(num_samples, 0), prompt_lengths.repeat_interleave(num_samples)
    rows, steps = padded.size(0), longest - start + max_new_tokens
    banned = None if rules is None else rules.banned(vocab, 2, device)  # [first slot, later slots]
    fed = torch.full((rows, steps + max_new_tokens), filler, dtype=torch.long, device=device)
    lengths = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
    # the state of the rows still in the batch (`live`: their row numbers)
    live = torch.arange(rows, device=device)
    in_thought = torch.full((rows,), rules is not None, device=device)
    thought_len = torch.zeros(rows, dtype=torch.long, device=device)
    produced = torch.zeros(rows, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    for step in range(steps):
        position = start + step
        forced = position < prompt_lengths[live]  # still inside its own prompt
        logits = logits[:, :vocab].float()
        if rules is not None:
            logits = masked_logits(logits, banned[thought_len.clamp(max=1)] & (in_thought & ~forced).unsqueeze(1))
        if temperature == 0:
            token = logits.argmax(dim=-1)
        else:
            token = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator).squeeze(1)
        token = torch.where(done, filler, token)  # finished rows repeat a stop id
        token = torch.where(forced, padded[live, min(position, padded.size(1) - 1)], token)
        written = ~forced & ~done
        produced = produced + written.long()
        if stops is not None:
            stopped = written & torch.isin(token, stops)
            lengths[live] = torch.where(stopped, produced, lengths[live])
            done = done | stopped
        done = done | (produced >= max_new_tokens)
        if rules is not None:
            thought_len = thought_len + (written & in_thought).long()
            in_thought = in_thought & ~(written & (token == rules.end_think_id))
        fed[live, step] = token
        if bool(done.all()):
            break
        logits = model(token[:, None], kv_cache=cache)[0][:, -1]
        if compact and 2 * int(done.sum()) >= done.numel() > 1:
            keep = (~done).nonzero().squeeze(1)
            live, logits, in_thought, thought_len, produced, done = (
                t[keep] for t in (live, logits, in_thought, thought_len, produced, done)
            )
            cache.keys = [k[keep] for k in cache.keys]
            cache.values = [v[keep] for v in cache.values]
    n = int(lengths.max())
    columns = (prompt_lengths - start).unsqueeze(1) + torch.arange(n, device=device)
    tokens = fed.gather(1, columns)
    tokens = torch.where(torch.arange(n, device=device) < lengths.unsqueeze(1), tokens, filler)
    return tokens, lengths
