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
- Without the context (where the probe has each prompt's question alone, `Q: ... A:`): the same
  two candidates scored after the question only. That is what the model prefers from its prior
  alone, the baseline a context-blind model would give whatever the context said: `nocontext_*`
  (its shares; `nocontext_prior/<bin>`: the share preferring the memorised answer, the knows-priors
  gate's number), `pull/<bin>` (follow with the context minus without, paired by prompt: what the
  context itself moves; the reads-context gate's baseline), `win/<bin>` = pull / (1 − the
  no-context follow share): of the prompts the question alone does not already answer from the
  context, the share (net) the context wins, and `shift/<bin>`, the mean change of the log-prob
  margin the context brings. A model that ignores its context has pull, win and shift 0 in every
  bin, however strong its priors.

The two interventions, each scored on held-out prompts against the same prompts unsteered:

- Steering vector, contrastive (Turner et al. 2023, ActAdd; Rimsky et al. 2024, CAA: a difference
  of activations on paired inputs, not of the model's own choices, which here would sort prompts
  by exposure): on the fitting half, the residual after block l at the last prompt position of
  each counterfactual prompt and of its *consistent* twin (the same document stating the true
  value: the context agrees with memory), and the mean over pairs of consistent − counterfactual.
  The fitting half is half of each bin's *people* (their prompts all fit or all score), so the
  held-out prompts are about people the vector never saw. Added (times sign x strength x `alpha`)
  to block l's output at the last prompt position and every position after it (as steering a
  generation adds it at every new token), through a forward hook on the block. The layer and the
  sign are those that raise the fitting half's follow rate most (on its prompts of `steer_bin`) at
  the middle strength of STRENGTHS, then the strength that does at them; the held-out prompts (of
  `steer_bin`) are scored at every strength: the sweep. Its nulls: the same prompts unsteered (the
  gain, paired, with its standard error), a random direction of the same norm at the same layer and strength (steered − random,
  paired), and `steer_norm_null`, the norm the mean of the paired differences would have if the two
  sides were one population (sqrt(tr(covariance of the differences) / n)). It is fitted only once
  the model reads its context (lamina.gates.reads_context_gate on `reads_bin`, its prompt count
  aside): a vector fitted on a model that ignores the context steers nothing worth reading.
- Instruction: the same held-out prompts with `INSTRUCTION` put before them (prompt-only).

The model is read through `GPT.forward(idx, record=...)` and its blocks `model.transformer.h`.
`world_counterfactual_probe` builds a run's probe from the world corpus (the run's data seed deals
the roster into exposure bins: lamina.data.world.counterfactuals).
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

from lamina import tags
from lamina.gates import reads_context_gate
from lamina.instrument.precision import model_forward
from lamina.measures import wilson_interval as wilson  # Wilson 95% interval of a share k / n

INSTRUCTION = "Use the context. "
ALL = "all"  # the bin that pools every prompt
STRENGTHS = (1.0, 4.0, 16.0)  # the steering sweep: multiples of the fitted vector (times alpha)
READS_BIN = "0"  # the bin whose people were never seen: the reading condition for steering
STEER_BIN = "100"  # the bin the steering is fitted for and read on (the strongest priors)
Z95 = 1.959963984540054


@dataclass(frozen=True)
class CounterfactualProbe:
    """Counterfactual prompts as token ids: `prompts` (each ending right before the answer),
    `instructed` (the same with the instruction before them), the two candidates'
    `context_answers` and `prior_answers`, each prompt's exposure `bins`; where known, each
    prompt's `questions` (the question alone: no context), `consistent` twin (the context
    stating the true value) and `entities` (the person asked about: the fitting half is split by
    person)."""

    prompts: tuple[tuple[int, ...], ...]
    instructed: tuple[tuple[int, ...], ...]
    context_answers: tuple[tuple[int, ...], ...]
    prior_answers: tuple[tuple[int, ...], ...]
    bins: tuple[str, ...]
    questions: tuple[tuple[int, ...], ...] | None = None
    consistent: tuple[tuple[int, ...], ...] | None = None
    entities: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, rows: Sequence[int]) -> CounterfactualProbe:
        pick = lambda xs: None if xs is None else tuple(xs[i] for i in rows)  # noqa: E731
        return CounterfactualProbe(pick(self.prompts), pick(self.instructed), pick(self.context_answers),
                                   pick(self.prior_answers), pick(self.bins), pick(self.questions),
                                   pick(self.consistent), pick(self.entities))


def _field(item, *names, default=ValueError):
    for name in names:
        if isinstance(item, dict) and name in item:
            return item[name]
        if hasattr(item, name):
            return getattr(item, name)
    if default is ValueError:
        raise ValueError(f"a counterfactual item needs one of {names}: {item!r}")
    return default


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
    the prompt (with its leading space where the corpus has one), and optionally
    `question_prompt`, `consistent_prompt` and `entity` (kept when every item has it). `encode`
    maps text to token ids (e.g. `lambda s: tokenizer.encode(s, add_special_tokens=False).ids`);
    `bos`, when given, starts every prompt (`<|endoftext|>`, as the packer separates documents)."""
    prompts, instructed, ctx, prior, bins, questions, consistent, entities = [], [], [], [], [], [], [], []
    start = () if bos is None else (int(bos),)
    for item in items:
        prompt = str(_field(item, "prompt"))
        prompts.append(start + tuple(encode(prompt)))
        instructed.append(start + tuple(encode(instruction + prompt)))
        ctx.append(answer_tokens(encode, prompt, str(_field(item, "context_answer"))))
        prior.append(answer_tokens(encode, prompt, str(_field(item, "memorised_answer", "prior_answer"))))
        bins.append(str(_field(item, "exposure_bin")))
        question, twin = _field(item, "question_prompt", default=""), _field(item, "consistent_prompt", default="")
        questions.append(start + tuple(encode(question)) if question else None)
        consistent.append(start + tuple(encode(twin)) if twin else None)
        entities.append(_field(item, "entity", default=None))
    if any(not a for a in ctx + prior):
        raise ValueError("every candidate answer needs at least one token")
    whole = lambda xs: tuple(xs) if xs and all(x is not None for x in xs) else None  # noqa: E731
    return CounterfactualProbe(tuple(prompts), tuple(instructed), tuple(ctx), tuple(prior), tuple(bins),
                               whole(questions), whole(consistent), whole([None if e is None else str(e)
                                                                           for e in entities]))


def world_counterfactual_probe(tokenizer, eot_id: int, *, data_seed: int, probe_seed: int, prompts: int,
                               exposure_bins: Sequence[int] | None = None, level: int = 1) -> CounterfactualProbe:
    """A run's counterfactual probe from the world corpus: `prompts` counterfactual contexts about
    the roster as data seed `data_seed` (the run's data.seed) deals it into `exposure_bins`, their
    stream drawn from the probe seed, each with its question alone, its consistent twin and its
    person. The corpus writes `A: <answer>`: the candidates are the text after the prompt's `A:`."""
    from lamina.data import world  # (here: the instrument imports this module before the data package)
    from lamina.probes import world_seed

    items = [
        {"prompt": c.prompt, "context_answer": " " + c.context_answer, "memorised_answer": " " + c.memorised_answer,
         "exposure_bin": c.bin, "question_prompt": c.question_prompt, "consistent_prompt": c.consistent_prompt,
         "entity": c.entity}
        for c in world.counterfactuals(world_seed(data_seed, probe_seed, "context"), prompts, exposure_bins, level,
                                       data_seed=data_seed)
    ]
    return counterfactual_probe(items, lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
                                bos=eot_id)


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

    @property
    def margin(self) -> torch.Tensor:
        return self.context_logp - self.prior_logp


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


PROMPT_KINDS = ("context", "instructed", "question")  # which prompts of a probe score_answers reads


def score_answers(model: torch.nn.Module, probe: CounterfactualProbe, batch_size: int, device: torch.device | str,
                  *, steer: Steer | None = None, instructed: bool = False, which: str = "context",
                  keep_residuals: bool = False) -> AnswerScores:
    """Both candidates of every prompt, teacher-forced, `batch_size` prompts (2 x rows) a forward;
    `which`: the prompts with their context (`context`), with the instruction before them
    (`instructed`; also `instructed=True`) or the question alone (`question`); `keep_residuals`
    keeps the residual after each block at the last prompt position (before any steering of that
    block). No grad; eval mode is the caller's, the forward precision the measurement's
    (`precision.model_forward`)."""
    which = "instructed" if instructed else which
    prompts = {"context": probe.prompts, "instructed": probe.instructed, "question": probe.questions}[which]
    if prompts is None:
        raise ValueError(f"score_answers: the probe has no {which} prompts")
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


def prompt_residuals(model: torch.nn.Module, prompts: Sequence[Sequence[int]], batch_size: int,
                     device: torch.device | str) -> list[torch.Tensor]:
    """Per layer, [n, n_embd]: the residual after the block at each prompt's last position."""
    parts: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            rows = [list(p) for p in prompts[start : start + batch_size]]
            idx = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
            for i, row in enumerate(rows):
                idx[i, : len(row)] = torch.tensor(row)
            record: dict = {}
            model_forward(model, idx.to(device), record=record)
            last = torch.tensor([len(row) - 1 for row in rows], device=idx.device)
            parts.append([r[torch.arange(len(rows)), last.to(r.device)].float().cpu() for r in record["resid"]])
    return [torch.cat(layer) for layer in zip(*parts)]


# ---- the steering vector --------------------------------------------------------------------


def contrastive_vector(consistent: torch.Tensor, counterfactual: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(mean over pairs of consistent − counterfactual residuals, its null norm): the norm the mean
    difference would have in expectation if the two sides were one population, sqrt(tr(covariance
    of the paired differences) / n) (nan with fewer than two pairs)."""
    d = consistent.double() - counterfactual.double()
    if len(d) < 2:
        return d.mean(0) if len(d) else torch.zeros(d.shape[1], dtype=torch.float64), float("nan")
    spread = float((d - d.mean(0)).square().sum()) / (len(d) - 1)
    return d.mean(0), math.sqrt(spread / len(d))


def fit_split(bins: Sequence[str], seed: int = 0, groups: Sequence[str] | None = None) -> torch.Tensor:
    """[n] bool, True = fitting half. Without `groups`: half of each bin's prompts (floor), chosen
    at random. With `groups` (each prompt's person): half of each bin's persons (floor, at least
    one left to score where a bin has two), chosen at random; all of a person's prompts go where
    the person goes, so the scored prompts are about persons the fit never saw."""
    gen = torch.Generator().manual_seed(int(seed))
    fit = torch.zeros(len(bins), dtype=torch.bool)
    keys = list(bins) if groups is None else [f"{b}\x00{g}" for b, g in zip(bins, groups)]
    for b in dict.fromkeys(bins):
        units = list(dict.fromkeys(k for k, x in zip(keys, bins) if x == b)) if groups is not None else None
        if units is None:
            rows = torch.tensor([i for i, x in enumerate(bins) if x == b])
            fit[rows[torch.randperm(len(rows), generator=gen)[: len(rows) // 2]]] = True
            continue
        chosen = {units[i] for i in torch.randperm(len(units), generator=gen)[: len(units) // 2].tolist()}
        for i, k in enumerate(keys):
            if k in chosen:
                fit[i] = True
    return fit


def random_direction(like: torch.Tensor, norm: float, seed: int) -> torch.Tensor:
    """A seeded random direction of the given norm (the steering vector's null)."""
    direction = torch.randn(like.shape[0], generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (norm * direction / direction.norm()).float()


@dataclass(frozen=True)
class SteerChoice:
    """The vector fitted at `layer` (unscaled), the sign and strength chosen on the fitting half,
    and its gain there (follow rate steered − unsteered)."""

    layer: int
    sign: int
    strength: float
    vector: torch.Tensor
    fit_gain: float
    norm_null: float

    def steer(self, strength: float, alpha: float) -> Steer:
        return Steer(self.layer, (self.sign * strength * alpha * self.vector).float())


def choose_steer(model: torch.nn.Module, probe: CounterfactualProbe, follows: torch.Tensor,
                 fitted: dict[int, tuple[torch.Tensor, float]], strengths: Sequence[float], alpha: float,
                 batch_size: int, device: torch.device | str) -> tuple[SteerChoice | None, dict[tuple, float]]:
    """The (layer, sign, strength) whose vector raises `probe`'s follow rate most over the
    unsteered `follows`, in two steps (a third of the forwards of trying every triple): the layer
    and sign at the middle strength (ties: the earlier layer, the + sign), then the strength at
    them (ties: the smaller). None when no layer has a vector; and every candidate's gain."""
    gains: dict[tuple, float] = {}

    def gain(layer: int, sign: int, strength: float) -> float:
        if (layer, sign, strength) not in gains:
            steer = Steer(layer, (sign * strength * alpha * fitted[layer][0]).float())
            steered = score_answers(model, probe, batch_size, device, steer=steer)
            gains[(layer, sign, strength)] = float(steered.follows.double().mean() - follows.double().mean())
        return gains[(layer, sign, strength)]

    middle = sorted(strengths)[len(strengths) // 2]
    candidates = [(layer, sign) for layer, (vector, _) in fitted.items() if bool(vector.any()) for sign in (1, -1)]
    if not candidates:
        return None, gains
    layer, sign = max(candidates, key=lambda c: (gain(*c, middle), -c[0], c[1]))
    strength = max(strengths, key=lambda s: (gain(layer, sign, s), -s))
    vector, null = fitted[layer]
    return SteerChoice(layer, sign, strength, vector, gains[(layer, sign, strength)], null), gains


@dataclass
class ContextResult:
    """What `context_vs_prior` measured: `base` (with the context) and `question` (the question
    alone; None where the probe has no questions) on every prompt; on the held-out half
    (`heldout` rows) the instructed scores; `read`: whether the model read its context (the
    condition for steering); with a vector, `choice`, the held-out prompts it steered
    (`steered_rows`, indexes into the held-out ones) and, per strength, their steered and
    random-direction scores."""

    bins: tuple[str, ...]
    base: AnswerScores
    heldout: torch.Tensor
    instructed: AnswerScores
    question: AnswerScores | None = None
    read: bool = False
    choice: SteerChoice | None = None
    steered_rows: torch.Tensor | None = None
    steered: dict[float, AnswerScores] | None = None
    random: dict[float, AnswerScores] | None = None
    fit_n: int = 0


def context_vs_prior(model: torch.nn.Module, probe: CounterfactualProbe, batch_size: int,
                     device: torch.device | str, *, alpha: float = 1.0, seed: int = 0,
                     layers: Sequence[int] | None = None, strengths: Sequence[float] = STRENGTHS,
                     reads_bin: str | None = READS_BIN, steer_bin: str | None = STEER_BIN) -> ContextResult:
    """Score every prompt with its context and (where the probe has them) with its question alone;
    split the prompts by person (`fit_split`); score the held-out half instructed. Where the model
    reads its context on `reads_bin` (lamina.gates.reads_context_gate, its prompt count aside; None:
    always) and the probe has consistent twins, fit the contrastive vector per layer of `layers`
    (None: all) on the fitting half, choose layer, sign and strength on the fitting prompts of
    `steer_bin` (None or absent: all of them), and score the held-out prompts of `steer_bin` at
    every strength, along the vector and along a random direction of its norm. `alpha` scales
    every strength; `seed` fixes the split and the random direction."""
    base = score_answers(model, probe, batch_size, device, keep_residuals=True)
    question = score_answers(model, probe, batch_size, device, which="question") if probe.questions else None
    fit = fit_split(probe.bins, seed, probe.entities)
    held_probe = probe.subset((~fit).nonzero().squeeze(1).tolist())
    instructed = score_answers(model, held_probe, batch_size, device, instructed=True)
    result = ContextResult(probe.bins, base, ~fit, instructed, question)
    if reads_bin is None or reads_bin not in probe.bins:
        result.read = True
    else:  # the gate's rule on this measurement alone (no step 0 to read against; any prompt count)
        result.read = bool(reads_context_gate(context_scalars(result), min_prompts=0, bin=reads_bin).passed)
    if not result.read or probe.consistent is None or not bool(fit.any()) or not bool((~fit).any()):
        return result
    fit_rows = fit.nonzero().squeeze(1)
    twins = prompt_residuals(model, [probe.consistent[i] for i in fit_rows.tolist()], batch_size, device)
    layers = range(len(base.residuals)) if layers is None else layers
    fitted = {layer: contrastive_vector(twins[layer], base.residuals[layer][fit]) for layer in layers}
    in_bin = lambda rows: [i for i in rows if steer_bin is None or steer_bin not in probe.bins  # noqa: E731
                           or probe.bins[i] == steer_bin]
    choose, held_rows = in_bin(fit_rows.tolist()), (~fit).nonzero().squeeze(1).tolist()
    steered_at = in_bin(held_rows)
    if not choose or not steered_at:  # steer_bin's people all on one side: nothing to choose or to read
        return result
    choice, _ = choose_steer(model, probe.subset(choose), base.follows[choose], fitted, strengths, alpha,
                             batch_size, device)
    result.fit_n = len(fit_rows)
    if choice is None:
        return result
    result.choice = choice
    result.steered_rows = torch.tensor([held_rows.index(i) for i in steered_at], dtype=torch.long)
    target = probe.subset(steered_at)
    direction = random_direction(choice.vector, float(choice.vector.norm()), (int(seed) + 1) % 2**63)
    result.steered, result.random = {}, {}
    for strength in strengths:
        result.steered[strength] = score_answers(model, target, batch_size, device,
                                                 steer=choice.steer(strength, alpha))
        result.random[strength] = score_answers(model, target, batch_size, device,
                                                steer=Steer(choice.layer, strength * alpha * direction))
    return result


# ---- scalars and the picture ----------------------------------------------------------------


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    se = float(x.std(correction=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return float(x.mean()), se


def _bins(bins: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(bins)) + [ALL]


def _in_bin(bins: Sequence[str], b: str) -> torch.Tensor:
    return torch.tensor([b == ALL or x == b for x in bins], dtype=torch.bool)


def context_scalars(result: ContextResult, prefix: str = tags.CONTEXT) -> dict[str, float]:
    """Tags, for each exposure bin and `all`: `follow/<bin>` (with `/lo`, `/hi`: Wilson 95%),
    `prior/<bin>`, `other/<bin>` (ties), `n/<bin>`, `margin/<bin>` (mean log p(context) - log
    p(prior), with `/se`), `greedy_follow|greedy_prior|greedy_other/<bin>`; with the question
    alone, `nocontext_follow/<bin>` and `nocontext_prior/<bin>` (with `/lo`, `/hi`), `pull/<bin>`
    (follow with − without the context, paired, with `/se` and `/lo` = value − 1.96 se),
    `win/<bin>` (pull / (1 − nocontext_follow)), `shift/<bin>` (the margin's mean change, with
    `/se`); on the held-out half `follow_heldout/<bin>` (unsteered), `follow_instructed/<bin>` and
    `instruct_gain/<bin>` (paired, with `/se`). With a vector, on the held-out prompts it steered:
    per strength s of the sweep `follow_steered/s<s>/<bin>`, `follow_steered_random/s<s>/<bin>`,
    `steer_gain/s<s>/<bin>` and `steer_vs_random/s<s>/<bin>` (paired, with `/se`), and the same
    four without `s<s>/` at the strength chosen on the fitting half. Once: `steer_read` (1: the
    model read its context, so a vector was fitted), `steer_layer` (-1: no vector), `steer_sign`,
    `steer_strength`, `steer_norm`, `steer_norm_null`, `steer_fit_gain`, `steer_fit_n` (pairs the
    vector was fitted on), `steer_heldout_n` (held-out prompts steered)."""
    out: dict[str, float] = {}
    base, bins = result.base, result.bins
    held_bins = [b for b, h in zip(bins, result.heldout.tolist()) if h]
    for b in _bins(bins):
        rows = _in_bin(bins, b)
        n = int(rows.sum())
        if n == 0:
            continue
        follow, prior = int(base.follows[rows].sum()), int(base.prior[rows].sum())
        tag = lambda stat: tags.context(stat, b, prefix=prefix)  # noqa: E731
        out[tag("follow")] = follow / n
        out[tags.lo(tag("follow"))], out[tags.hi(tag("follow"))] = wilson(follow, n)
        out[tag("prior")] = prior / n
        out[tag("other")] = (n - follow - prior) / n
        out[tag("n")] = float(n)
        out[tag("margin")], out[tags.se(tag("margin"))] = _mean_se(base.margin[rows])
        g_follow = base.context_greedy[rows] & ~base.prior_greedy[rows]
        g_prior = base.prior_greedy[rows] & ~base.context_greedy[rows]
        out[tag("greedy_follow")] = float(g_follow.double().mean())
        out[tag("greedy_prior")] = float(g_prior.double().mean())
        out[tag("greedy_other")] = float((~g_follow & ~g_prior).double().mean())
        if result.question is not None:
            out.update(_without_context(result.base, result.question, rows, prefix, b))
        held = _in_bin(held_bins, b)
        if not bool(held.any()):
            continue
        unsteered = base.follows[result.heldout][held].double()
        out[tag("follow_heldout")] = float(unsteered.mean())
        instructed = result.instructed.follows[held].double()
        out[tag("follow_instructed")] = float(instructed.mean())
        out[tag("instruct_gain")], out[tags.se(tag("instruct_gain"))] = _mean_se(instructed - unsteered)
    out[tags.context("steer_read", prefix=prefix)] = float(result.read)
    out[tags.context("steer_layer", prefix=prefix)] = float(result.choice.layer if result.choice is not None else -1)
    if result.choice is not None:
        out.update(_steering_scalars(result, prefix))
    return out


def _without_context(base: AnswerScores, question: AnswerScores, rows: torch.Tensor, prefix: str,
                     b: str) -> dict[str, float]:
    n = int(rows.sum())
    out = {}
    tag = lambda stat: tags.context(stat, b, prefix=prefix)  # noqa: E731
    nc_follow, nc_prior = int(question.follows[rows].sum()), int(question.prior[rows].sum())
    for name, k in (("nocontext_follow", nc_follow), ("nocontext_prior", nc_prior)):
        out[tag(name)] = k / n
        out[tags.lo(tag(name))], out[tags.hi(tag(name))] = wilson(k, n)
    pull, se = _mean_se(base.follows[rows].double() - question.follows[rows].double())
    out[tag("pull")], out[tags.se(tag("pull"))], out[tags.lo(tag("pull"))] = pull, se, pull - Z95 * se
    left = 1 - nc_follow / n  # the share the question alone leaves to the context
    out[tag("win")] = pull / left if left > 0 else math.nan
    out[tag("shift")], out[tags.se(tag("shift"))] = _mean_se(base.margin[rows] - question.margin[rows])
    return out


def _steering_scalars(result: ContextResult, prefix: str) -> dict[str, float]:
    choice, out = result.choice, {}
    held_bins = [b for b, h in zip(result.bins, result.heldout.tolist()) if h]
    steered_bins = [held_bins[i] for i in result.steered_rows.tolist()]
    unsteered_all = result.base.follows[result.heldout][result.steered_rows].double()
    for strength in result.steered:
        # each strength's own tags (`.../s<strength>/<bin>`), and the chosen one's also without it
        named = [strength] + ([None] if strength == choice.strength else [])
        for b in _bins(steered_bins):
            rows = _in_bin(steered_bins, b)
            unsteered = unsteered_all[rows]
            steered = result.steered[strength].follows[rows].double()
            random = result.random[strength].follows[rows].double()
            for tag_strength in named:
                tag = lambda stat: tags.context(stat, b, strength=tag_strength, prefix=prefix)  # noqa: E731
                out[tag("follow_steered")] = float(steered.mean())
                out[tag("follow_steered_random")] = float(random.mean())
                out[tag("steer_gain")], out[tags.se(tag("steer_gain"))] = _mean_se(steered - unsteered)
                out[tag("steer_vs_random")], out[tags.se(tag("steer_vs_random"))] = _mean_se(steered - random)
    once = lambda stat: tags.context(stat, prefix=prefix)  # noqa: E731
    out[once("steer_sign")] = float(choice.sign)
    out[once("steer_strength")] = float(choice.strength)
    out[once("steer_norm")] = float(choice.vector.norm())
    if not math.isnan(choice.norm_null):
        out[once("steer_norm_null")] = choice.norm_null
    out[once("steer_fit_gain")] = choice.fit_gain
    out[once("steer_fit_n")] = float(result.fit_n)
    out[once("steer_heldout_n")] = float(len(result.steered_rows))
    return out


def context_figure(scalars: dict[str, float], prefix: str = tags.CONTEXT, step: int | None = None) -> Figure:
    """Follow rate by exposure bin: all prompts (Wilson 95% bars), the question alone (no
    context) and, on the held-out half, unsteered, instructed, steered and along a random direction
    (at the chosen strength), from `context_scalars`' tags."""
    counts = tags.context("n", "", prefix=prefix)  # `<prefix>/n/`: one tag a bin
    bins = [t[len(counts):] for t in scalars if t.startswith(counts)]
    series = [("follow", "all prompts"), ("nocontext_follow", "no context"), ("follow_heldout", "held-out"),
              ("follow_instructed", "instructed"), ("follow_steered", "steered"),
              ("follow_steered_random", "random direction")]
    fig = Figure(figsize=(6.0, 3.5), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.88)
    ax = fig.add_subplot()
    ax.set_title("share following the context, by exposure bin" + ("" if step is None else f", step {step}"),
                 fontsize=8)
    width = 0.8 / len(series)
    x = np.arange(len(bins))
    for j, (key, label) in enumerate(series):
        values = np.array([scalars.get(tags.context(key, b, prefix=prefix), np.nan) for b in bins])
        if np.all(np.isnan(values)):
            continue
        err = None
        if key in ("follow", "nocontext_follow"):
            lo = np.array([scalars[tags.lo(tags.context(key, b, prefix=prefix))] for b in bins])
            hi = np.array([scalars[tags.hi(tags.context(key, b, prefix=prefix))] for b in bins])
            err = np.vstack([values - lo, hi - values])
        ax.bar(x + (j - (len(series) - 1) / 2) * width, values, width, yerr=err, label=label, capsize=2)
    ax.set_xticks(x, bins, fontsize=7)
    ax.set_ylim(0, 1.25)  # room for the legend above the shares
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.tick_params(axis="y", labelsize=7)
    ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_ylabel("follow share", fontsize=8)
    ax.legend(fontsize=6, ncols=6, loc="upper center", frameon=False)
    return fig


__all__ = [
    "ALL",
    "INSTRUCTION",
    "STRENGTHS",
    "AnswerScores",
    "ContextResult",
    "CounterfactualProbe",
    "Steer",
    "SteerChoice",
    "answer_tokens",
    "choose_steer",
    "context_figure",
    "context_scalars",
    "context_vs_prior",
    "contrastive_vector",
    "counterfactual_probe",
    "fit_split",
    "prompt_residuals",
    "random_direction",
    "score_answers",
    "steering",
    "wilson",
    "world_counterfactual_probe",
]
