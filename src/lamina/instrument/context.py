"""Context against memory: on counterfactual prompts, does the model answer from the context or
from what it memorised? (DESIGN.md, "Measures": Context vs memory.)

Each prompt states a fact that contradicts a memorised one and asks for it; it has two candidate
answers, the context's and the memorised (prior) one, and an exposure bin (how often the fact
was seen in training). Both candidates are scored teacher-forced, all rows in batches, one
forward per batch: log p(answer | prompt) summed over the answer's tokens.

- Forced choice (the main measure, robust on a weak model): a prompt *follows* the context when
  log p(context answer) > log p(prior answer), follows the *prior* when it is lower, and is
  *other* on a tie. Shares by bin with Wilson 95% intervals (scipy) and n, and the mean log-prob
  margin with its standard error.
- Greedy exact match, free from the same forward: a candidate is the greedy answer when every
  one of its tokens is the argmax given the tokens before it (what greedy decoding of that many
  tokens would produce). *Other* = neither candidate is the greedy answer.

The two interventions, each scored on held-out prompts against the same prompts unsteered:

- Steering vector: on the fitting half of the prompts (stratified by bin), the mean residual at
  the last prompt position, after block l, of the context-following prompts minus that of the
  prior-following ones. Added (times `alpha`) to block l's output at the last prompt position
  and every position after it (as steering a generation adds it at every new token), through a
  forward hook on the block. The layer is the one whose vector moves the fitting half's follow
  rate most; the held-out half is then scored steered. Its nulls: the same prompts unsteered
  (the gain, paired, with its standard error), a random direction of the same norm at the same
  layer, and `steer_norm_null`, the norm a difference of two group means would have if the
  groups were one population (sqrt(tr(pooled covariance) (1/n_f + 1/n_p))).
- Instruction: the same held-out prompts with `INSTRUCTION` put before them (prompt-only).

The model is read through `GPT.forward(idx, record=...)` and its blocks `model.transformer.h`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from lamina.instrument.precision import model_forward
from lamina.measures import wilson_interval as wilson  # Wilson 95% interval of a share k / n

INSTRUCTION = "Use the context. "
ALL = "all"  # the bin that pools every prompt


@dataclass(frozen=True)
class CounterfactualProbe:
    """Counterfactual prompts as token ids: `prompts` (each ending right before the answer),
    `instructed` (the same with the instruction before them), the two candidates'
    `context_answers` and `prior_answers`, and each prompt's exposure `bins`."""

    prompts: tuple[tuple[int, ...], ...]
    instructed: tuple[tuple[int, ...], ...]
    context_answers: tuple[tuple[int, ...], ...]
    prior_answers: tuple[tuple[int, ...], ...]
    bins: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, rows: Sequence[int]) -> CounterfactualProbe:
        pick = lambda xs: tuple(xs[i] for i in rows)  # noqa: E731
        return CounterfactualProbe(pick(self.prompts), pick(self.instructed), pick(self.context_answers),
                                   pick(self.prior_answers), pick(self.bins))


def _field(item, *names):
    for name in names:
        if isinstance(item, dict) and name in item:
            return item[name]
        if hasattr(item, name):
            return getattr(item, name)
    raise ValueError(f"a counterfactual item needs one of {names}: {item!r}")


def answer_tokens(encode: Callable[[str], list[int]], prompt: str, answer: str) -> tuple[int, ...]:
    """The answer's tokens as they follow the prompt: the tail of encode(prompt + answer) when
    encode(prompt) is its prefix (BPE may merge across the seam otherwise), else encode(answer)."""
    head, whole = list(encode(prompt)), list(encode(prompt + answer))
    if whole[: len(head)] == head and len(whole) > len(head):
        return tuple(whole[len(head) :])
    return tuple(encode(answer))


def counterfactual_probe(items: Iterable, encode: Callable[[str], list[int]], *, instruction: str = INSTRUCTION,
                         bos: int | None = None) -> CounterfactualProbe:
    """Encode counterfactual items: each with `prompt`, `context_answer`, `memorised_answer` (or
    `prior_answer`) and `exposure_bin` (attributes or keys), answers as the text that follows
    the prompt (with its leading space where the corpus has one). `encode` maps text to token
    ids (e.g. `lambda s: tokenizer.encode(s, add_special_tokens=False).ids`); `bos`, when given,
    starts every prompt (`<|endoftext|>`, as the packer separates documents)."""
    prompts, instructed, ctx, prior, bins = [], [], [], [], []
    start = () if bos is None else (int(bos),)
    for item in items:
        prompt = str(_field(item, "prompt"))
        prompts.append(start + tuple(encode(prompt)))
        instructed.append(start + tuple(encode(instruction + prompt)))
        ctx.append(answer_tokens(encode, prompt, str(_field(item, "context_answer"))))
        prior.append(answer_tokens(encode, prompt, str(_field(item, "memorised_answer", "prior_answer"))))
        bins.append(str(_field(item, "exposure_bin")))
    if any(not a for a in ctx + prior):
        raise ValueError("every candidate answer needs at least one token")
    return CounterfactualProbe(tuple(prompts), tuple(instructed), tuple(ctx), tuple(prior), tuple(bins))


# ---- scoring --------------------------------------------------------------------------------


@dataclass
class AnswerScores:
    """Per prompt (CPU): summed log-probs of the two candidates, whether each is the greedy
    answer, and (when asked) the residual after each block at the last prompt position."""

    context_logp: torch.Tensor
    prior_logp: torch.Tensor
    context_greedy: torch.Tensor
    prior_greedy: torch.Tensor
    residuals: list[torch.Tensor] | None = None

    @property
    def follows(self) -> torch.Tensor:
        return self.context_logp > self.prior_logp

    @property
    def prior(self) -> torch.Tensor:
        return self.prior_logp > self.context_logp


@dataclass(frozen=True)
class Steer:
    """Add `vector` ([n_embd], already scaled) to block `layer`'s output."""

    layer: int
    vector: torch.Tensor


@contextmanager
def steering(model: torch.nn.Module, steer: Steer | None, starts: torch.Tensor):
    """While inside, block `steer.layer` adds `steer.vector` at every position >= starts[row]
    of each row (a forward hook on the block; removed on exit, also on error)."""
    if steer is None:
        yield
        return
    block = model.transformer.h[steer.layer]

    def add(module, inputs, output):
        positions = torch.arange(output.shape[1], device=output.device)
        where = (positions[None, :] >= starts.to(output.device)[:, None]).to(output.dtype)
        return output + where[..., None] * steer.vector.to(output.device, output.dtype)

    handle = block.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def _score_rows(model, prompts, answers, device, steer, keep_residuals):
    """One batch: (logp [b], greedy [b], residuals at the last prompt position per layer)."""
    rows = [tuple(p) + tuple(a) for p, a in zip(prompts, answers)]
    width = max(len(r) for r in rows) - 1
    idx = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, rows)):
        idx[i, : len(r) - 1] = torch.tensor(r[:-1])
        targets[i, len(p) - 1 : len(r) - 1] = torch.tensor(r[len(p) :])
    starts = torch.tensor([len(p) - 1 for p in prompts])
    idx, targets = idx.to(device), targets.to(device)
    record: dict | None = {} if keep_residuals else None
    with steering(model, steer, starts):
        logits = model_forward(model, idx, record=record)[0]
    vocab = getattr(getattr(model, "config", None), "vocab_size", logits.shape[-1])
    mask = targets >= 0
    picked = logits[mask][:, :vocab].float()  # only the answer positions, only real tokens
    wanted = targets[mask]
    logp = F.log_softmax(picked, dim=-1).gather(1, wanted[:, None]).squeeze(1)
    row_of = torch.arange(len(rows), device=idx.device)[:, None].expand_as(mask)[mask]
    total = torch.zeros(len(rows), dtype=torch.float64, device=idx.device).index_add_(0, row_of, logp.double())
    misses = torch.zeros(len(rows), device=idx.device).index_add_(0, row_of, (picked.argmax(1) != wanted).float())
    residuals = None
    if record is not None:
        at = starts.to(idx.device)
        residuals = [r[torch.arange(len(rows), device=idx.device), at].float().cpu() for r in record["resid"]]
    return total.cpu(), (misses == 0).cpu(), residuals


def score_answers(model: torch.nn.Module, probe: CounterfactualProbe, batch_size: int, device: torch.device | str,
                  *, steer: Steer | None = None, instructed: bool = False,
                  keep_residuals: bool = False) -> AnswerScores:
    """Both candidates of every prompt, teacher-forced, `batch_size` prompts (2 x rows) a forward;
    `instructed` scores the instructed prompts; `keep_residuals` keeps the residual after each
    block at the last prompt position (before any steering of that block). No grad; eval mode is
    the caller's, the forward precision the measurement's (`precision.model_forward`)."""
    prompts = probe.instructed if instructed else probe.prompts
    limit = getattr(getattr(model, "config", None), "block_size", None)
    longest = max(len(p) + max(len(a), len(b)) - 1 for p, a, b in zip(prompts, probe.context_answers,
                                                                     probe.prior_answers))
    if limit is not None and longest > limit:
        raise ValueError(f"counterfactual rows of {longest} tokens exceed model.block_size={limit}")
    ctx_logp, prior_logp, ctx_greedy, prior_greedy, residuals = [], [], [], [], []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            p = list(prompts[start : start + batch_size])
            answers = list(probe.context_answers[start : start + batch_size]) + list(
                probe.prior_answers[start : start + batch_size])
            logp, greedy, resid = _score_rows(model, p + p, answers, device, steer, keep_residuals)
            b = len(p)  # rows 0..b-1 hold the context answers, b..2b-1 the prior ones
            ctx_logp.append(logp[:b]), prior_logp.append(logp[b:])
            ctx_greedy.append(greedy[:b]), prior_greedy.append(greedy[b:])
            if resid is not None:  # the context rows': both candidates share the prompt (causal)
                residuals.append([r[:b] for r in resid])
    layers = [torch.cat(parts) for parts in zip(*residuals)] if keep_residuals else None
    return AnswerScores(torch.cat(ctx_logp), torch.cat(prior_logp), torch.cat(ctx_greedy), torch.cat(prior_greedy),
                        layers)


# ---- the steering vector --------------------------------------------------------------------


def steering_vector(residuals: torch.Tensor, follows: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(mean residual of the following prompts - mean of the prior ones, its null norm). The null
    norm is what the difference's norm would be in expectation if both groups were drawn from
    one population: sqrt(tr(pooled within-group covariance) (1/n_f + 1/n_p)). A zero vector and
    nan when a group is empty."""
    x = residuals.double()
    n_f, n_p = int(follows.sum()), int(prior.sum())
    if n_f == 0 or n_p == 0:
        return torch.zeros(x.shape[1], dtype=torch.float64), float("nan")
    m_f, m_p = x[follows].mean(0), x[prior].mean(0)
    if n_f + n_p <= 2:
        return m_f - m_p, float("nan")
    spread = (x[follows] - m_f).square().sum() + (x[prior] - m_p).square().sum()
    pooled = float(spread) / (n_f + n_p - 2)
    return m_f - m_p, math.sqrt(pooled * (1 / n_f + 1 / n_p))


def fit_split(bins: Sequence[str], seed: int = 0) -> torch.Tensor:
    """[n] bool, True = fitting half: half of each bin's prompts (floor), chosen at random."""
    gen = torch.Generator().manual_seed(int(seed))
    fit = torch.zeros(len(bins), dtype=torch.bool)
    for b in dict.fromkeys(bins):
        rows = torch.tensor([i for i, x in enumerate(bins) if x == b])
        fit[rows[torch.randperm(len(rows), generator=gen)[: len(rows) // 2]]] = True
    return fit


@dataclass
class ContextResult:
    """What `context_vs_prior` measured: `base` on every prompt; on the held-out half
    (`heldout` rows) the instructed, steered and random-direction scores (None without a
    vector); the chosen `layer` (-1: none) and each layer's follow-rate gain on the fitting half."""

    bins: tuple[str, ...]
    base: AnswerScores
    heldout: torch.Tensor
    instructed: AnswerScores
    steered: AnswerScores | None
    random: AnswerScores | None
    layer: int
    fit_gains: dict[int, float]
    vector_norm: float
    vector_norm_null: float
    fit_follow_n: int
    fit_prior_n: int


def choose_layer(model: torch.nn.Module, probe: CounterfactualProbe, follows: torch.Tensor,
                 vectors: dict[int, torch.Tensor], alpha: float, batch_size: int,
                 device: torch.device | str) -> tuple[int, dict[int, float]]:
    """(the layer whose vector, times alpha, raises `probe`'s follow rate most, -1 when no layer
    has a vector; each layer's gain over the unsteered `follows`). Ties go to the earlier layer."""
    gains = {}
    for layer, vector in vectors.items():
        if bool(vector.any()):
            steered = score_answers(model, probe, batch_size, device, steer=Steer(layer, alpha * vector.float()))
            gains[layer] = float(steered.follows.double().mean() - follows.double().mean())
    best = max(gains, key=lambda layer: (gains[layer], -layer), default=-1)
    return best, gains


def random_direction(like: torch.Tensor, norm: float, seed: int) -> torch.Tensor:
    """A seeded random direction of the given norm (the steering vector's null)."""
    direction = torch.randn(like.shape[0], generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (norm * direction / direction.norm()).float()


def context_vs_prior(model: torch.nn.Module, probe: CounterfactualProbe, batch_size: int,
                     device: torch.device | str, *, alpha: float = 1.0, seed: int = 0,
                     layers: Sequence[int] | None = None) -> ContextResult:
    """Score every prompt; fit a steering vector per layer of `layers` (None: all) on the
    fitting half; pick the layer that moves the fitting half's follow rate most
    (`choose_layer`); score the held-out half instructed, steered and along a random direction
    of the same norm. `seed` fixes the split and the random direction."""
    base = score_answers(model, probe, batch_size, device, keep_residuals=True)
    fit = fit_split(probe.bins, seed)
    fit_probe = probe.subset(fit.nonzero().squeeze(1).tolist())
    held_probe = probe.subset((~fit).nonzero().squeeze(1).tolist())
    follows, prior = base.follows[fit], base.prior[fit]
    layers = range(len(base.residuals)) if layers is None else layers
    fitted = {layer: steering_vector(base.residuals[layer][fit], follows, prior) for layer in layers}
    vectors = {layer: vector for layer, (vector, _) in fitted.items()}
    layer, gains = choose_layer(model, fit_probe, follows, vectors, alpha, batch_size, device)
    instructed = score_answers(model, held_probe, batch_size, device, instructed=True)
    steered = random = None
    norm, norm_null = 0.0, float("nan")
    if layer >= 0:
        vector, norm_null = fitted[layer]
        norm = float(vector.norm())
        steered = score_answers(model, held_probe, batch_size, device, steer=Steer(layer, alpha * vector.float()))
        random = score_answers(model, held_probe, batch_size, device,
                               steer=Steer(layer, random_direction(vector, alpha * norm, (int(seed) + 1) % 2**63)))
    return ContextResult(probe.bins, base, ~fit, instructed, steered, random, layer, gains, norm, norm_null,
                         int(follows.sum()), int(prior.sum()))


# ---- scalars and the picture ----------------------------------------------------------------


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    se = float(x.std(correction=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return float(x.mean()), se


def _bins(bins: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(bins)) + [ALL]


def _in_bin(bins: Sequence[str], b: str) -> torch.Tensor:
    return torch.tensor([b == ALL or x == b for x in bins], dtype=torch.bool)


def context_scalars(result: ContextResult, prefix: str = "eval/context") -> dict[str, float]:
    """Tags, for each exposure bin and `all`: `follow/<bin>` (with `/lo`, `/hi`: Wilson 95%),
    `prior/<bin>`, `other/<bin>` (ties), `n/<bin>`, `margin/<bin>` (mean log p(context) - log
    p(prior), with `/se`), `greedy_follow|greedy_prior|greedy_other/<bin>`; on the held-out half
    `follow_heldout/<bin>` (unsteered), `follow_instructed/<bin>` and `instruct_gain/<bin>` (paired,
    with `/se`), and with a vector `follow_steered/<bin>`, `steer_gain/<bin>` (with `/se`),
    `follow_steered_random/<bin>`. Once: `steer_layer` (-1: no vector, a group was empty),
    `steer_norm`, `steer_norm_null`, `steer_fit_gain`, `steer_fit_follow_n`, `steer_fit_prior_n`."""
    out: dict[str, float] = {}
    base, bins = result.base, result.bins
    held_bins = [b for b, h in zip(bins, result.heldout.tolist()) if h]
    for b in _bins(bins):
        rows = _in_bin(bins, b)
        n = int(rows.sum())
        if n == 0:
            continue
        follow, prior = int(base.follows[rows].sum()), int(base.prior[rows].sum())
        out[f"{prefix}/follow/{b}"] = follow / n
        out[f"{prefix}/follow/{b}/lo"], out[f"{prefix}/follow/{b}/hi"] = wilson(follow, n)
        out[f"{prefix}/prior/{b}"] = prior / n
        out[f"{prefix}/other/{b}"] = (n - follow - prior) / n
        out[f"{prefix}/n/{b}"] = float(n)
        out[f"{prefix}/margin/{b}"], out[f"{prefix}/margin/{b}/se"] = _mean_se(
            base.context_logp[rows] - base.prior_logp[rows])
        g_follow = base.context_greedy[rows] & ~base.prior_greedy[rows]
        g_prior = base.prior_greedy[rows] & ~base.context_greedy[rows]
        out[f"{prefix}/greedy_follow/{b}"] = float(g_follow.double().mean())
        out[f"{prefix}/greedy_prior/{b}"] = float(g_prior.double().mean())
        out[f"{prefix}/greedy_other/{b}"] = float((~g_follow & ~g_prior).double().mean())
        held = _in_bin(held_bins, b)
        if not bool(held.any()):
            continue
        unsteered = base.follows[result.heldout][held].double()
        out[f"{prefix}/follow_heldout/{b}"] = float(unsteered.mean())
        instructed = result.instructed.follows[held].double()
        out[f"{prefix}/follow_instructed/{b}"] = float(instructed.mean())
        out[f"{prefix}/instruct_gain/{b}"], out[f"{prefix}/instruct_gain/{b}/se"] = _mean_se(instructed - unsteered)
        if result.steered is not None:
            steered = result.steered.follows[held].double()
            out[f"{prefix}/follow_steered/{b}"] = float(steered.mean())
            out[f"{prefix}/steer_gain/{b}"], out[f"{prefix}/steer_gain/{b}/se"] = _mean_se(steered - unsteered)
            out[f"{prefix}/follow_steered_random/{b}"] = float(result.random.follows[held].double().mean())
    out[f"{prefix}/steer_layer"] = float(result.layer)
    out[f"{prefix}/steer_norm"] = result.vector_norm
    if not math.isnan(result.vector_norm_null):
        out[f"{prefix}/steer_norm_null"] = result.vector_norm_null
    if result.layer >= 0:
        out[f"{prefix}/steer_fit_gain"] = result.fit_gains[result.layer]
    out[f"{prefix}/steer_fit_follow_n"] = float(result.fit_follow_n)
    out[f"{prefix}/steer_fit_prior_n"] = float(result.fit_prior_n)
    return out


def context_figure(scalars: dict[str, float], prefix: str = "eval/context", step: int | None = None) -> Figure:
    """Follow rate by exposure bin: all prompts (Wilson 95% bars) and, on the held-out half,
    unsteered, instructed, steered and along a random direction, from `context_scalars`' tags."""
    bins = [t[len(prefix) + len("/n/"):] for t in scalars if t.startswith(f"{prefix}/n/")]
    series = [("follow", "all prompts"), ("follow_heldout", "held-out"), ("follow_instructed", "instructed"),
              ("follow_steered", "steered"), ("follow_steered_random", "random direction")]
    fig = Figure(figsize=(6.0, 3.5), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.88)
    ax = fig.add_subplot()
    ax.set_title("share following the context, by exposure bin" + ("" if step is None else f", step {step}"),
                 fontsize=8)
    width = 0.8 / len(series)
    x = np.arange(len(bins))
    for j, (key, label) in enumerate(series):
        values = np.array([scalars.get(f"{prefix}/{key}/{b}", np.nan) for b in bins])
        if np.all(np.isnan(values)):
            continue
        err = None
        if key == "follow":
            lo = np.array([scalars[f"{prefix}/follow/{b}/lo"] for b in bins])
            hi = np.array([scalars[f"{prefix}/follow/{b}/hi"] for b in bins])
            err = np.vstack([values - lo, hi - values])
        ax.bar(x + (j - (len(series) - 1) / 2) * width, values, width, yerr=err, label=label, capsize=2)
    ax.set_xticks(x, bins, fontsize=7)
    ax.set_ylim(0, 1.25)  # room for the legend above the shares
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.tick_params(axis="y", labelsize=7)
    ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_ylabel("follow share", fontsize=8)
    ax.legend(fontsize=6, ncols=5, loc="upper center", frameon=False)
    return fig


__all__ = [
    "ALL",
    "INSTRUCTION",
    "AnswerScores",
    "ContextResult",
    "CounterfactualProbe",
    "Steer",
    "answer_tokens",
    "choose_layer",
    "context_figure",
    "context_scalars",
    "context_vs_prior",
    "counterfactual_probe",
    "fit_split",
    "random_direction",
    "score_answers",
    "steering",
    "steering_vector",
    "wilson",
]
