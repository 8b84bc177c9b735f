"""Last-layer measures by arithmetic level (DESIGN.md, "Measures": the last-layer bullet).

Jin et al. (arXiv 2603.03415; code github.com/MingyuJ666/sparsityLLM) read the final hidden state h
(after the last norm) at the last token of the prompt: the position whose output is the model's first
generated token (their `get_last_hidden_state`: the prompt with its generation prompt, the last
attended position, `hidden_states[-1]`), and report that harder / farther-shifted inputs give
sparser h. Here the same measures run beside lamina's own Hoyer on held-out world arithmetic
problems of each level k (1-5), at the same position: the last token of the prompt the model is
given, `Q: 47+38=? <think>` (the text keeps its thoughts: the model writes its thought next) or
`Q: 47+38=? A:` (`thoughts="strip"`: its answer next). Nothing of the worked thought or the answer
is read, and nothing of the question is cut.

The prompt's length grows with the level (with byte tokens 11 tokens at level 1, 14-20 at level 5)
and an untrained network's h already changes with it (one random GPT of the world-v2 shape, up to
128 problems a level: level 1 minus level 5 top-5% energy +0.049 as measured, -0.003 at matched
length), so a level gap is also read at matched length: the per-problem values regressed on one
indicator per level and the prompt's length (least squares; the slope comes from the levels whose
problems differ in length), and the level means compared at one length (`matched_gap`).

- `prompt_positions_probe(...)`: the problems as token rows, each `<|endoftext|>` + the prompt,
  right-padded; the last prompt token's column and the level of each row. A prompt longer than
  `block_size` is skipped and counted (`LastLayerProbe.skipped`), never cut.
- `lastlayer_stats(model, probe, batch_size, device)`: scalars (floats), for each level k,
  `lastlayer/level{k}/<stat>` (mean over problems) and `.../<stat>/se` (std / sqrt(m), ddof=1),
  with <stat> in `STATS`:
    top1_energy, top5_energy, top10_energy: share of sum h^2 held by the ceil(f d) largest h^2,
        f = 1%, 5%, 10% (`lamina.measures.energy_share`; Jin et al.'s code takes max(1, floor(f d)),
        `rounding="floor"` there);
    entropy_rank: exp(H(h^2 / ||h||^2)) / d (`lamina.measures.entropy_rank`);
    hoyer: (sqrt(d) - ||h||_1 / ||h||_2) / (sqrt(d) - 1) (`lamina.measures.hoyer`, lamina's own);
  `lastlayer/level{k}/length`, the mean prompt length in tokens (`<|endoftext|>` included); and
  `lastlayer/skipped`, the prompts left out as longer than the block.
  For each level k above the probe's lowest (level 1 by default): `lastlayer/gap/level{k}/<stat>`
  = lowest-level mean minus level-k mean, `.../se` (Welch: independent problems) and `.../z` =
  gap / se (lengths not matched); and `lastlayer/matched_gap/level{k}/<stat>` with `/se`, `/z`: the
  same difference at matched prompt length (`matched_gap`, heteroskedasticity-robust se), logged
  where the probe's lengths allow it (some level has prompts of two lengths). Two samples of one
  level give |z| < 3 about 99.7% of the time.

Migration: until this version the position was the one before the answer, after the gold worked
thought, and rows longer than the block lost their start; `lastlayer/...` values of runs measured
before it are of that position and are not comparable with these (they lack `matched_gap`).

The model is read through `GPT.forward(idx, record=...)`: h = `transformer.ln_f(record["resid"][-1])`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lamina import measures, tags
from lamina.data import world
from lamina.data.tokenizer import EOT
from lamina.instrument.precision import forward_precision, model_forward, wide

STATS: tuple[str, ...] = ("top1_energy", "top5_energy", "top10_energy", "entropy_rank", "hoyer")
TOP_FRACTIONS = {"top1_energy": 0.01, "top5_energy": 0.05, "top10_energy": 0.10}
PROBLEMS_PER_LEVEL = 64
# Where the prompt ends, by the text's `data.thoughts`: after ` <think>` the model writes its thought,
# after ` A:` (a text without thoughts) its answer (lamina.data.thoughts; lamina.rlp.evaluate's formats).
PROMPT_END = {"keep": f" {world.THINK_OPEN}", "strip": " A:"}


@dataclass(frozen=True)
class LastLayerProbe:
    """Rows of held-out arithmetic problems, grouped by level in the order asked.

    `tokens` [n, T] int64: `<|endoftext|>` + the prompt's tokens, right-padded with `<|endoftext|>`;
    `positions` [n] int64: the column of the last prompt token (the row's last real token, so the
    prompt's length is position + 1); `levels` [n] int64; `problems`: each row's full example text
    (thought and answer included); `skipped`: prompts left out as longer than the block."""

    tokens: torch.Tensor
    positions: torch.Tensor
    levels: torch.Tensor
    problems: tuple[str, ...]
    skipped: int = 0

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def level_values(self) -> tuple[int, ...]:
        """The levels in the probe, in row order."""
        return tuple(dict.fromkeys(self.levels.tolist()))

    @property
    def lengths(self) -> torch.Tensor:
        """Each row's prompt length in tokens, `<|endoftext|>` included."""
        return self.positions + 1


# ---- the probe ---------------------------------------------------------------------------------


def level_seed(seed: int, level: int) -> int:
    """The world seed of one level's problems: a 56-bit hash of (seed, level), so never a small
    training seed (`data.seed`) and independent across levels and seeds."""
    digest = hashlib.sha256(f"lamina/lastlayer/{int(seed)}/level{int(level)}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def prompt_of(text: str, thoughts: str = "keep") -> str:
    """The prompt of an arith example text: its question and the mark after which the model writes
    (`Q: 47+38=? <think>`; `thoughts="strip"`: `Q: 47+38=? A:`)."""
    if thoughts not in PROMPT_END:
        raise ValueError(f"thoughts must be one of {', '.join(PROMPT_END)}, got {thoughts!r}")
    question, sep, _ = text.partition(PROMPT_END["keep"])
    if not sep or not question.startswith("Q: "):
        raise ValueError(f"not an arith example (no `Q: ... {world.THINK_OPEN}`): {text!r}")
    return question + PROMPT_END[thoughts]


def prompts_probe(tokenizer, prompts: Sequence[str], levels: Sequence[int], eot_id: int,
                  block_size: int | None = None, problems: Sequence[str] | None = None) -> LastLayerProbe:
    """The rows of `prompts` (each `<|endoftext|>` + the prompt's tokens, encoded as a decoder is
    given them), with their levels; a row longer than `block_size` (None: no limit) is left out and
    counted, never cut. `problems`: the full texts to keep beside them (default: the prompts)."""
    if len(prompts) != len(levels):
        raise ValueError(f"expected a level for each prompt, got {len(levels)} levels for {len(prompts)} prompts")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    problems = list(prompts) if problems is None else list(problems)
    rows, kept_levels, kept_texts = [], [], []
    for enc, level, text in zip(tokenizer.encode_batch(list(prompts), add_special_tokens=False), levels, problems):
        row = [eot_id, *enc.ids]
        if block_size is not None and len(row) > block_size:
            continue
        rows.append(row)
        kept_levels.append(int(level))
        kept_texts.append(text)
    width = max((len(r) for r in rows), default=1)
    tokens = torch.full((len(rows), width), eot_id, dtype=torch.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    positions = torch.tensor([len(r) - 1 for r in rows], dtype=torch.int64)
    return LastLayerProbe(tokens, positions, torch.tensor(kept_levels, dtype=torch.int64), tuple(kept_texts),
                          skipped=len(prompts) - len(rows))


def prompt_positions_probe(
    tokenizer,
    seed: int,
    levels: Sequence[int] = world.ARITH_LEVELS,
    problems_per_level: int = PROBLEMS_PER_LEVEL,
    block_size: int | None = None,
    eot_id: int | None = None,
    thoughts: str = "keep",
) -> LastLayerProbe:
    """`problems_per_level` world arith problems of each level in `levels`, drawn i.i.d. from
    `world.generate(level_seed(seed, k), ["arith"], levels=[k])` (a stream training never reads;
    in a run pass `probes.world_seed(data.seed, probe_seed, "lastlayer")`), as `prompts_probe` rows
    of their prompts (`prompt_of(text, thoughts)`). A pure function of its arguments. `eot_id`
    defaults to the tokenizer's `<|endoftext|>`."""
    if isinstance(problems_per_level, bool) or not isinstance(problems_per_level, int) or problems_per_level < 2:
        raise ValueError(f"problems_per_level must be an integer >= 2 (for a standard error), got {problems_per_level!r}")
    levels = tuple(int(k) for k in levels)
    if not levels or len(set(levels)) != len(levels):
        raise ValueError(f"levels must be distinct and not empty, got {levels}")
    if eot_id is None:
        eot_id = tokenizer.token_to_id(EOT)
        if eot_id is None:
            raise ValueError(f"the tokenizer has no {EOT} token: pass eot_id")
    texts: list[str] = []
    for level in levels:
        examples = world.generate(level_seed(seed, level), ["arith"], levels=[level])
        texts += [next(examples).text for _ in range(problems_per_level)]
    return prompts_probe(tokenizer, [prompt_of(t, thoughts) for t in texts],
                         [k for k in levels for _ in range(problems_per_level)], eot_id, block_size, texts)


# ---- measuring -------------------------------------------------------------------------------


def prompt_hidden_states(model: torch.nn.Module, probe: LastLayerProbe, batch_size: int,
                         device: torch.device | str) -> torch.Tensor:
    """Final hidden states h = ln_f(last residual) at each row's last prompt token: [n, n_embd] on
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


def z_of(gap: float, se: float) -> float:
    """gap / se; with se 0, 0 for a zero gap and +-inf otherwise (never NaN)."""
    if se > 0:
        return gap / se
    return 0.0 if gap == 0 else math.copysign(math.inf, gap)


def welch_gap(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(mean(a) - mean(b), its Welch standard error sqrt(se_a^2 + se_b^2), z = gap / se) for
    independent samples. With se 0, z is 0 for a zero gap and +-inf otherwise (never NaN)."""
    mean_a, se_a = mean_se(a)
    mean_b, se_b = mean_se(b)
    gap, se = mean_a - mean_b, math.hypot(se_a, se_b)
    return gap, se, z_of(gap, se)


# ---- length matched ------------------------------------------------------------------------------


def matched_gap(values, levels, lengths, first: Sequence[int], second: Sequence[int]) -> tuple[float, float, float]:
    """The mean over the levels `first` minus the mean over `second` of each level's mean value
    at one prompt length, with its standard error and z = gap / se.

    Least squares of the per-problem values on one indicator per level and the length (centred):
    value = b_level + c (length - mean length) + e. The slope c comes from the levels whose problems
    differ in length, so a level's b is its mean moved to the common length along that slope (a
    linear model of length; outside the lengths a level has, an extrapolation). The standard error
    is heteroskedasticity-robust (HC1: White 1980, with n / (n - p)), as the levels' spreads differ.
    (nan, nan, nan) where the slope cannot be told from the levels (no level has two lengths) or
    fewer problems than parameters plus one; (0, 0, 0) where every value is the same; levels absent
    from `levels` are an error."""
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    lv = np.asarray(levels).reshape(-1)
    length = np.asarray(lengths, dtype=np.float64).reshape(-1)
    if not (len(y) == len(lv) == len(length)):
        raise ValueError(f"values, levels and lengths differ in size: {len(y)}, {len(lv)}, {len(length)}")
    present = sorted(set(lv.tolist()))
    missing = [k for k in (*first, *second) if k not in present]
    if missing or not first or not second:
        raise ValueError(f"matched_gap: levels {list(first)} against {list(second)}, the values hold {present}")
    nan = (math.nan, math.nan, math.nan)
    if len(y) and float(np.ptp(y)) == 0:  # one value everywhere (a network blind to its input): no gap, exactly
        return 0.0, 0.0, 0.0
    within = sum(float(np.ptp(length[lv == k])) > 0 for k in present)
    n, p = len(y), len(present) + 1
    if within == 0 or n <= p:
        return nan
    x = np.column_stack([(lv == k).astype(np.float64) for k in present] + [length - length.mean()])
    try:
        xtx_inv = np.linalg.inv(x.T @ x)
    except np.linalg.LinAlgError:
        return nan
    beta = xtx_inv @ x.T @ y
    resid = y - x @ beta
    cov = xtx_inv @ (x.T * resid**2) @ x @ xtx_inv * n / (n - p)
    c = np.zeros(p)
    for k in first:
        c[present.index(k)] += 1 / len(first)
    for k in second:
        c[present.index(k)] -= 1 / len(second)
    gap = float(c @ beta)
    se = float(math.sqrt(max(float(c @ cov @ c), 0.0)))
    return gap, se, z_of(gap, se)


# ---- the scalars ---------------------------------------------------------------------------------


def stats_from_values(values: dict[str, torch.Tensor], levels: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> dict[str, float]:
    """The scalars of `lastlayer_stats` from per-row values (`lastlayer_values`), row levels and
    (for the lengths and the matched gaps) row prompt lengths. A level with fewer than two rows is
    left out."""
    levels = torch.as_tensor(levels).cpu()
    counts = {k: int((levels == k).sum()) for k in sorted(set(levels.tolist()))}
    level_list = [k for k, m in counts.items() if m >= 2]
    per_level = {k: {s: values[s].cpu()[levels == k] for s in STATS} for k in level_list}
    out: dict[str, float] = {}
    for k in level_list:
        for s in STATS:
            mean, se = mean_se(per_level[k][s])
            out[tags.lastlayer(k, s)] = mean
            out[tags.se(tags.lastlayer(k, s))] = se
        if lengths is not None:
            out[tags.lastlayer(k, "length")] = float(torch.as_tensor(lengths).cpu()[levels == k].double().mean())
    if not level_list:
        return out
    ref = level_list[0]
    keep = torch.isin(levels, torch.tensor(level_list))
    for k in level_list[1:]:
        for s in STATS:
            gap, se, z = welch_gap(per_level[ref][s], per_level[k][s])
            out[tags.lastlayer_gap(k, s)] = gap
            out[tags.se(tags.lastlayer_gap(k, s))] = se
            out[tags.z(tags.lastlayer_gap(k, s))] = z
            if lengths is None:
                continue
            gap, se, z = matched_gap(values[s].cpu()[keep], levels[keep], torch.as_tensor(lengths).cpu()[keep],
                                     [ref], [k])
            if math.isfinite(gap):
                out[tags.lastlayer_gap(k, s, matched=True)] = gap
                out[tags.se(tags.lastlayer_gap(k, s, matched=True))] = se
                out[tags.z(tags.lastlayer_gap(k, s, matched=True))] = z
    return out


def lastlayer_stats(model: torch.nn.Module, probe: LastLayerProbe, batch_size: int,
                    device: torch.device | str) -> dict[str, float]:
    """The last-layer scalars of the module docstring for `model` on `probe` (see
    `prompt_hidden_states` for what the caller sets up)."""
    h = wide(prompt_hidden_states(model, probe, batch_size, device))  # (the measures take it to float64)
    out = stats_from_values(lastlayer_values(h), probe.levels, probe.lengths)
    out[tags.LASTLAYER_SKIPPED] = float(probe.skipped)
    return out


__all__ = [
    "PROBLEMS_PER_LEVEL",
    "PROMPT_END",
    "STATS",
    "LastLayerProbe",
    "lastlayer_stats",
    "lastlayer_values",
    "level_seed",
    "matched_gap",
    "prompt_hidden_states",
    "prompt_of",
    "prompt_positions_probe",
    "prompts_probe",
    "stats_from_values",
    "welch_gap",
]
