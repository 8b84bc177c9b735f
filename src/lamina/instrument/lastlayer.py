"""Last-layer measures by arithmetic level (DESIGN.md, "Measures": the last-layer bullet).

Jin et al. (arXiv 2603.03415; code github.com/MingyuJ666/sparsityLLM) measure the final hidden
state h (after the last norm) at the position that predicts the first answer token, and report
that harder / farther-shifted inputs give sparser h. Here the same measures run beside lamina's
own Hoyer, on held-out world arithmetic problems of each level k (1-5), with standard errors
over problems and the within-run contrast that makes a difference a finding or not:

- `answer_positions_probe(...)`: the problems as token rows, each `<|endoftext|>` + the problem
  cut at the position before the answer, right-padded; that position and the level of each row.
- `lastlayer_stats(model, probe, batch_size, device)`: scalars (floats), for each level k,
  `lastlayer/level{k}/<stat>` (mean over problems) and `.../<stat>/se` (std / sqrt(m), ddof=1),
  with <stat> in `STATS`:
    top1_energy, top5_energy, top10_energy: share of sum h^2 held by the ceil(f d) largest h^2,
        f = 1%, 5%, 10% (`lamina.measures.energy_share`; Jin et al.'s code takes max(1, floor(f d)),
        `rounding="floor"` there);
    entropy_rank: exp(H(h^2 / ||h||^2)) / d (`lamina.measures.entropy_rank`);
    hoyer: (sqrt(d) - ||h||_1 / ||h||_2) / (sqrt(d) - 1) (`lamina.measures.hoyer`, lamina's own).
  And for each level k above the probe's lowest (level 1 by default) `lastlayer/gap/level{k}/
  <stat>` = lowest-level mean minus level-k mean, `.../se` (Welch: independent problems) and
  `.../z` = gap / se. Two samples of one level give |z| < 3 about 99.7% of the time.

The model is read through `GPT.forward(idx, record=...)`: h = `transformer.ln_f(record["resid"][-1])`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from lamina import measures
from lamina.data import world
from lamina.data.tokenizer import EOT
from lamina.instrument.precision import forward_precision, model_forward, wide

STATS: tuple[str, ...] = ("top1_energy", "top5_energy", "top10_energy", "entropy_rank", "hoyer")
TOP_FRACTIONS = {"top1_energy": 0.01, "top5_energy": 0.05, "top10_energy": 0.10}
PROBLEMS_PER_LEVEL = 64
ANSWER_MARK = "A: "  # arith examples end "</think> A: <answer>\n"


@dataclass(frozen=True)
class LastLayerProbe:
    """Rows of held-out arithmetic problems, grouped by level in the order asked.

    `tokens` [n, T] int64: `<|endoftext|>` + the problem's tokens up to and including the position
    before the answer (cut from the left to block_size), right-padded with `<|endoftext|>`;
    `positions` [n] int64: the column of that position (the row's last real token); `levels` [n]
    int64; `problems`: each row's full example text (answer included)."""

    tokens: torch.Tensor
    positions: torch.Tensor
    levels: torch.Tensor
    problems: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def level_values(self) -> tuple[int, ...]:
        """The levels in the probe, in row order."""
        return tuple(dict.fromkeys(self.levels.tolist()))


# ---- the probe ---------------------------------------------------------------------------------


def level_seed(seed: int, level: int) -> int:
    """The world seed of one level's problems: a 56-bit hash of (seed, level), so never a small
    training seed (`data.seed`) and independent across levels and seeds."""
    digest = hashlib.sha256(f"lamina/lastlayer/{int(seed)}/level{int(level)}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def answer_start(text: str) -> int:
    """Character index of the answer's first character in an arith example text."""
    at = text.rfind(ANSWER_MARK)
    if at < 0:
        raise ValueError(f"not an arith example (no {ANSWER_MARK!r}): {text!r}")
    return at + len(ANSWER_MARK)


def position_before_answer(text: str, offsets: Sequence[tuple[int, int]]) -> int:
    """Index of the token whose next token is the first answer token, from the encoding's
    character offsets: the first answer token is the first whose span ends past the answer's
    start (with BPE it may carry the space before the digits, ` 85`)."""
    start = answer_start(text)
    for i, (_, end) in enumerate(offsets):
        if end > start:
            if i == 0:
                raise ValueError(f"the answer starts at the first token: {text!r}")
            return i - 1
    raise ValueError(f"no token covers the answer: {text!r}")


def answer_positions_probe(
    tokenizer,
    seed: int,
    levels: Sequence[int] = world.ARITH_LEVELS,
    problems_per_level: int = PROBLEMS_PER_LEVEL,
    block_size: int | None = None,
    eot_id: int | None = None,
) -> LastLayerProbe:
    """`problems_per_level` world arith problems of each level in `levels`, drawn i.i.d. from
    `world.generate(level_seed(seed, k), ["arith"], levels=[k])` (a stream training never reads;
    in a run pass `probes.world_seed(data.seed, probe_seed, "lastlayer")`). A pure function of
    its arguments. Tokenised whole as training sees them (`<|endoftext|>` before, as the packer
    separates documents), then cut after the position before the answer; rows longer than
    `block_size` (None: no limit) keep their last block_size tokens. `eot_id` defaults to the
    tokenizer's `<|endoftext|>`."""
    if isinstance(problems_per_level, bool) or not isinstance(problems_per_level, int) or problems_per_level < 2:
        raise ValueError(f"problems_per_level must be an integer >= 2 (for a standard error), got {problems_per_level!r}")
    levels = tuple(int(k) for k in levels)
    if not levels or len(set(levels)) != len(levels):
        raise ValueError(f"levels must be distinct and not empty, got {levels}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    if eot_id is None:
        eot_id = tokenizer.token_to_id(EOT)
        if eot_id is None:
            raise ValueError(f"the tokenizer has no {EOT} token: pass eot_id")

    rows: list[list[int]] = []
    row_levels: list[int] = []
    texts: list[str] = []
    for level in levels:
        examples = world.generate(level_seed(seed, level), ["arith"], levels=[level])
        batch = [next(examples).text for _ in range(problems_per_level)]
        # encode_batch, not encode_batch_fast: the fast path does not track offsets.
        for text, enc in zip(batch, tokenizer.encode_batch(batch, add_special_tokens=False)):
            p = position_before_answer(text, enc.offsets)
            row = [eot_id] + list(enc.ids[: p + 1])
            if block_size is not None and len(row) > block_size:
                row = row[-block_size:]
            rows.append(row)
        row_levels += [level] * problems_per_level
        texts += batch

    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), eot_id, dtype=torch.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    positions = torch.tensor([len(r) - 1 for r in rows], dtype=torch.int64)
    return LastLayerProbe(tokens, positions, torch.tensor(row_levels, dtype=torch.int64), tuple(texts))


# ---- measuring -------------------------------------------------------------------------------


def answer_hidden_states(model: torch.nn.Module, probe: LastLayerProbe, batch_size: int,
                         device: torch.device | str) -> torch.Tensor:
    """Final hidden states h = ln_f(last residual) at each row's position: [n, n_embd] on
    `device`, in the model's output dtype, in the probe's row order.

    Rows run in batches of `batch_size`, shortest first, each batch cut to its longest row
    (right padding after a position cannot change it: attention is causal). Eval mode is the
    caller's; the forward and ln_f run in the measurement's forward precision; this runs under
    no_grad and changes no flag or RNG state."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(probe)
    if n == 0:
        raise ValueError("the probe holds no rows")
    limit = getattr(getattr(model, "config", None), "block_size", None)
    longest = int(probe.positions.max()) + 1
    if limit is not None and longest > limit:
        raise ValueError(f"probe rows of {longest} tokens exceed model.block_size={limit}: "
                         f"build the probe with block_size={limit}")
    order = torch.argsort(probe.positions, stable=True)
    picked = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            pos = probe.positions[rows]
            idx = probe.tokens[rows, : int(pos.max()) + 1].to(device)
            record: dict = {}
            model_forward(model, idx, record=record)
            last = record["resid"][-1]
            del record
            at = last[torch.arange(len(rows), device=last.device), pos.to(last.device)]
            with forward_precision():  # ln_f is the model's own computation, as in its forward
                picked.append(model.transformer.ln_f(at))  # ln_f acts per position: same as on all
    h = torch.cat(picked)
    out = torch.empty_like(h)
    out[order.to(h.device)] = h
    return out


def lastlayer_values(h: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each stat of `STATS` for each vector of h [m, d]: float64 [m] (on h's compute device)."""
    values = {name: measures.energy_share(h, frac) for name, frac in TOP_FRACTIONS.items()}
    values["entropy_rank"] = measures.entropy_rank(h)
    values["hoyer"] = measures.hoyer(h)
    return {name: values[name] for name in STATS}


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error std / sqrt(m) (ddof=1) of the values x [m], m >= 2."""
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if x.numel() < 2:
        raise ValueError(f"a standard error needs at least 2 values, got {x.numel()}")
    return float(x.mean()), float(x.std(correction=1)) / math.sqrt(x.numel())


def welch_gap(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(mean(a) - mean(b), its Welch standard error sqrt(se_a^2 + se_b^2), z = gap / se) for
    independent samples. With se 0, z is 0 for a zero gap and +-inf otherwise (never NaN)."""
    mean_a, se_a = mean_se(a)
    mean_b, se_b = mean_se(b)
    gap, se = mean_a - mean_b, math.hypot(se_a, se_b)
    if se > 0:
        z = gap / se
    else:
        z = 0.0 if gap == 0 else math.copysign(math.inf, gap)
    return gap, se, z


def stats_from_values(values: dict[str, torch.Tensor], levels: torch.Tensor) -> dict[str, float]:
    """The scalars of `lastlayer_stats` from per-row values (`lastlayer_values`) and row levels."""
    levels = torch.as_tensor(levels).cpu()
    level_list = sorted(set(levels.tolist()))
    per_level = {k: {s: values[s].cpu()[levels == k] for s in STATS} for k in level_list}
    out: dict[str, float] = {}
    for k in level_list:
        for s in STATS:
            mean, se = mean_se(per_level[k][s])
            out[f"lastlayer/level{k}/{s}"] = mean
            out[f"lastlayer/level{k}/{s}/se"] = se
    ref = level_list[0]
    for k in level_list[1:]:
        for s in STATS:
            gap, se, z = welch_gap(per_level[ref][s], per_level[k][s])
            out[f"lastlayer/gap/level{k}/{s}"] = gap
            out[f"lastlayer/gap/level{k}/{s}/se"] = se
            out[f"lastlayer/gap/level{k}/{s}/z"] = z
    return out


def lastlayer_stats(model: torch.nn.Module, probe: LastLayerProbe, batch_size: int,
                    device: torch.device | str) -> dict[str, float]:
    """The last-layer scalars of the module docstring for `model` on `probe` (see
    `answer_hidden_states` for what the caller sets up)."""
    h = wide(answer_hidden_states(model, probe, batch_size, device))  # (the measures take it to float64)
    return stats_from_values(lastlayer_values(h), probe.levels)


__all__ = [
    "PROBLEMS_PER_LEVEL",
    "STATS",
    "LastLayerProbe",
    "answer_hidden_states",
    "answer_positions_probe",
    "lastlayer_stats",
    "lastlayer_values",
    "level_seed",
    "position_before_answer",
    "stats_from_values",
    "welch_gap",
]
