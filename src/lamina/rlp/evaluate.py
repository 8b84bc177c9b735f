"""Evaluations of thinking: held-out arithmetic with and without a thought (greedy, and pass@k from
sampled thoughts), and the next-token loss with a sampled thought. Plain functions and a class on
GPT models; the ThoughtEval callback (lamina.callbacks) runs them during training."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from lamina import tags
from lamina.data import world
from lamina.errors import ConfigError
from lamina.model import GPT
from lamina.rlp.config import ThoughtEvalConfig
from lamina.rlp.decoding import ThoughtRules, decode
from lamina.rlp.objective import no_thought_logprob, sample_thoughts, thought_scores


def arith_problems(seed: int, level: int, n: int, exclude: frozenset[str] | set[str] = frozenset()
                   ) -> list[tuple[str, str]]:
    """Up to n distinct (question, answer) of world arithmetic at `level`, e.g. ("Q: 47+38=?", "85"),
    none of whose questions is in `exclude` (e.g. corpus_questions of the text a model trained on)."""
    problems: dict[str, str] = {}
    examples = world.generate(seed, families=("arith",), levels=[level])
    for _ in range(50 * n):
        if len(problems) >= n:
            break
        text = next(examples).text
        question, rest = text.split(f" {world.THINK_OPEN}", 1)
        if question not in exclude:
            problems.setdefault(question, rest.rsplit("A: ", 1)[1].strip())
    return list(problems.items())


ARITH_QUESTION = re.compile(r"Q: [0-9+\-*]+=\?")  # as the world corpus writes one, thoughts kept or stripped


def corpus_questions(data: dict) -> set[str]:
    """Every arithmetic question (`Q: 47+38=?`) in the text a data module with these settings (its
    hyperparameters: source, seed, families, levels, level_weights, thoughts, max_bytes, ...) reads,
    both splits, up to its max_bytes as it counts them (stripped text is shorter, so the same cap
    holds more problems): the questions a model trained on it may have seen, with their answers."""
    from lamina.data import TextDataModule  # (here: lamina.data imports the world generator's users)
    from lamina.data.sources import iter_passages

    module = TextDataModule(**data)  # resolves the source; reads nothing
    found: set[str] = set()
    for passage in iter_passages(module.corpus, 0.0, module.hparams.get("max_bytes")):
        found.update(ARITH_QUESTION.findall(passage.text))
    return found


def newline_ids(tokenizer) -> list[int]:
    """Ids whose text holds a line break (an answer ends at the end of its line)."""
    return [i for i in range(tokenizer.get_vocab_size()) if "\n" in tokenizer.decode([i], skip_special_tokens=False)]


# The ways a held-out question can be put to a model: with room for a thought or without, spelled as
# each training text spells it (lamina.data.thoughts). A model trained on one spelling can fail on
# another for the spelling alone, so a comparison across arms trained on different text scores each
# in every format (`FormatScorer`) and reads its best (lamina.rlp.elicitation.best_format).
PROMPT_FORMATS = {
    "think": "stripped text's thought slot (`Q: 47+38=?` then `<think>`, where RLP puts its thoughts)",
    "think-spaced": "the text with its thoughts (`Q: 47+38=? <think>`)",
    "answer": "stripped text, no thought (`Q: 47+38=? A:`)",
    "empty-thought": "the text with its thoughts, an empty one (`Q: 47+38=? <think> </think> A:`)",
}
THINKING_FORMATS = ("think", "think-spaced")  # the model writes a thought, `</think>`, then its answer
FORMAT_OF = {("strip", True): "think", ("strip", False): "answer", ("keep", True): "think-spaced",
             ("keep", False): "empty-thought"}  # (data.thoughts, thinking) -> the format of that text


def format_prompt(tokenizer, question: str, fmt: str, think_id: int) -> list[int]:
    """The prompt of a held-out question in one of PROMPT_FORMATS."""
    if fmt == "think":
        return tokenizer.encode(question).ids + [think_id]
    suffix = {"think-spaced": f" {world.THINK_OPEN}", "answer": " A:",
              "empty-thought": f" {world.THINK_OPEN} {world.THINK_CLOSE} A:"}.get(fmt)
    if suffix is None:
        raise ConfigError(f"prompt format: expected one of {', '.join(PROMPT_FORMATS)}, got {fmt!r}")
    return tokenizer.encode(question + suffix).ids


def arith_prompt(tokenizer, question: str, think: bool, thoughts: str, think_id: int) -> list[int]:
    """The prompt of a held-out question, in the format of the text the model trained on.

    data.thoughts keep (`Q: 47+38=? <think> ... </think> A: 85`): with thinking `Q: 47+38=? <think>`;
    without, an empty thought `Q: 47+38=? <think> </think> A:` (`Q: 47+38=? A:` never occurs there).
    data.thoughts strip (`Q: 47+38=? A: 85`): without thinking `Q: 47+38=? A:`; with thinking the
    question and `<think>`, where RLP's thought slots put it (right before ` A:`).
    """
    return format_prompt(tokenizer, question, FORMAT_OF[(thoughts, think)], think_id)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n - c, k) / C(n, k), as the product 1 - prod_{i = n-c+1}^{n} (1 - k / i)."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def paired_interval(differences) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval (nan bounds with fewer than 2 pairs)."""
    d = np.asarray(differences, dtype=np.float64)
    mean = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def is_correct(continuation: str, answer: str, think: bool) -> bool:
    """Exact match on the continuation's first line: with thinking, `</think>` then exactly `A: 85`
    (a thought never closed is wrong); without, exactly `85`."""
    line = continuation.split("\n", 1)[0].split("<|endoftext|>", 1)[0]
    if think:
        if world.THINK_CLOSE not in line:
            return False
        return line.split(world.THINK_CLOSE, 1)[1].strip() == f"A: {answer}"
    return line.strip() == answer


def solve(model: GPT, tokenizer, prompts: list[list[int]], answers: list[str], think: bool, budget: int,
          batch_size: int, rules: ThoughtRules, stop_ids: list[int], samples: int = 1,
          generator: torch.Generator | None = None) -> list[int]:
    """Correct answers per prompt out of `samples` (greedy when samples is 1, else at temperature 1):
    prompts of near lengths decode together, `batch_size` rows at a time, up to `budget` new tokens
    (a thought, `</think>` and the answer line with thinking, the answer line without); thoughts keep
    to `rules`. A prompt that fills the context alone scores 0. Call it in eval mode."""
    correct = [0] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    per_batch = max(1, batch_size // samples)
    block = model.config.block_size
    for start in range(0, len(order), per_batch):
        chunk = [i for i in order[start : start + per_batch] if len(prompts[i]) <= block]
        if not chunk:
            continue  # the prompt alone fills the context: no room to answer
        new = min(budget, block - len(prompts[chunk[-1]]) + 1)
        tokens, lengths = decode(
            model, [prompts[i] for i in chunk], new, 1.0 if samples > 1 else 0.0, num_samples=samples,
            generator=generator, stop_ids=stop_ids, rules=rules if think else None, compact=True,
        )
        tokens, lengths = tokens.tolist(), lengths.tolist()
        for row, i in enumerate(chunk):
            for r in range(row * samples, (row + 1) * samples):
                text = tokenizer.decode(tokens[r][: lengths[r]], skip_special_tokens=False)
                correct[i] += is_correct(text, answers[i], think)
    return correct


class FormatScorer:
    """Held-out problems put to a model in each prompt format (PROMPT_FORMATS), outside a fit: greedy
    correctness per problem and format, and correct counts out of n sampled answers (temperature 1,
    a generator seeded by `seed`) for pass@k. The same problems, formats and budgets for every model
    scored, so that arms trained on differently spelled text compare on what they solve in the format
    that suits each (lamina.study.claims.reasoning_in_pretraining)."""

    def __init__(self, tokenizer, think_id: int, end_think_id: int, eot_id: int, problems: list[tuple[str, str]],
                 thought_budget: int, answer_budget: int = 12, batch_size: int = 256):
        self.tokenizer, self.problems = tokenizer, list(problems)
        self.rules = ThoughtRules(think_id, end_think_id, eot_id)
        self.stop_ids = sorted(set(newline_ids(tokenizer)) | {eot_id})
        self.thought_budget, self.answer_budget, self.batch_size = thought_budget, answer_budget, batch_size

    def _run(self, model: GPT, fmt: str, samples: int = 1, generator: torch.Generator | None = None) -> list[int]:
        think = fmt in THINKING_FORMATS
        prompts = [format_prompt(self.tokenizer, q, fmt, self.rules.think_id) for q, _ in self.problems]
        budget = self.answer_budget + (self.thought_budget if think else 0)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return solve(model, self.tokenizer, prompts, [a for _, a in self.problems], think, budget,
                             self.batch_size, self.rules, self.stop_ids, samples, generator)
        finally:
            model.train(was_training)

    def greedy(self, model: GPT, formats=tuple(PROMPT_FORMATS)) -> dict[str, list[int]]:
        """{format: [1 where the greedy answer is right, else 0] per problem}."""
        return {fmt: self._run(model, fmt) for fmt in formats}

    def sampled(self, model: GPT, fmt: str, samples: int, seed: int) -> list[int]:
        """Correct answers out of `samples` per problem, sampled at temperature 1 in format `fmt`."""
        generator = torch.Generator(device=next(model.parameters()).device)
        generator.manual_seed(seed)
        return self._run(model, fmt, samples, generator)


def elicitation_share(rl: dict, base: dict, k: int = 64) -> dict[int, tuple[float, int]]:
    """For the compare report: per level, the share of the problems the RL model solves greedily
    (with thinking) that the base model already solved in k samples, i.e. the mean over them of the
    base model's unbiased pass@k, and how many problems that is. `rl` and `base` are
    ThoughtEvaluator records ({level: {"questions", "think", "pass_correct", "pass_samples"}}), e.g.
    the last and the step-0 evaluation of one RLP run; problems are matched by question."""
    shares = {}
    for level, record in rl.items():
        other = base.get(level)
        if not other or not other.get("pass_correct"):
            continue
        if other["pass_samples"] < k:
            raise ValueError(f"elicitation_share: the base model has {other['pass_samples']} samples, fewer than k={k}")
        correct = dict(zip(other["questions"], other["pass_correct"]))
        solved = [q for q, ok in zip(record["questions"], record["think"]) if ok and q in correct]
        if solved:
            share = float(np.mean([pass_at_k(other["pass_samples"], correct[q], k) for q in solved]))
            shares[int(level)] = (share, len(solved))
    return shares


@dataclass
class _Item:
    level: int
    index: int
    prompt: list[int]
    answer: str


class ThoughtEvaluator:
    """Held-out arithmetic accuracy, with and without thinking, pass@k with sampled thoughts, and the
    next-token loss with a sampled thought. Built once per run; the problems and positions never
    change, so curves compare.

    Arithmetic protocol (exact match, KV cache, prompts of one length decoded together, all levels
    at once; prompts: `arith_prompt`, in the format of the text trained on, `data.thoughts`):
    - with thinking (`eval/arith_acc/level<k>`, greedy): the model writes its thought, `</think>` and
      its answer; correct when the line after the first `</think>` is exactly `A: 85` (a thought
      never closed within the budget is wrong). Thoughts keep to the thought rules (lamina.rlp.decoding).
    - without (`eval/arith_acc_nothink/level<k>`, greedy): correct when the rest of the line is `85`.
    - `eval/think_acc_gain/level<k>`: with minus without, and `/lo`, `/hi`, its 95% t-interval paired
      over problems.
    - with `pass_at_k`: `pass_samples` thoughts per problem at temperature 1 for the first
      `pass_problems` problems, `eval/pass_at_<k>/level<l>` the unbiased pass@k (Chen et al. 2021).
    Problems come from the world generator at `seed`, another stream than the training text's, not
    other problems: the low levels' problems are few, so many also occur in training text (206 of
    the 256 level-2 problems of seed 1_000_003 are in the 4 MB arithmetic text of data.seed 1; `lamina
    study` holds its own out with `corpus_questions`). `records` holds the last evaluation's results
    per problem (for `elicitation_share`).

    Next-token loss with a thought, at `nll_positions` fixed val positions (consecutive windows of
    the val split, x_t after a context of the RLP length): `eval/think_nll` = -log p(x_t | context,
    thought) with one thought sampled from the model (fixed seed: the same random numbers at every
    evaluation), `eval/nothink_nll` = -log p(x_t | context), `eval/think_gain` their difference,
    with `/lo`, `/hi` its 95% t-interval paired over positions.
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
        thoughts: str = "keep",
    ):
        self.config, self.tokenizer = config, tokenizer
        self.rules = ThoughtRules(think_id, end_think_id, eot_id)
        self.block_size = block_size
        self.stop_ids = sorted(set(newline_ids(tokenizer)) | {eot_id})
        self.thought_tokens, self.temperature = thought_tokens, temperature
        self.problems = {
            level: arith_problems(config.seed, level, config.examples_per_level) for level in config.levels
        }
        self.prompts = {
            think: [
                _Item(level, i, arith_prompt(tokenizer, q, think, thoughts, think_id), a)
                for level, problems in self.problems.items()
                for i, (q, a) in enumerate(problems)
            ]
            for think in (True, False)
        }
        self.records: dict[int, dict] = {}
        self.nll_windows = None
        if config.nll_positions and val_tokens is not None:
            context = block_size - thought_tokens - 2  # as in RLP: <think>, thought, forced </think>
            if context < 1:
                raise ConfigError(
                    f"thought_eval.nll_thought_tokens: thoughts of {thought_tokens} tokens leave no "
                    f"context in model.block_size={block_size}"
                )
            span = context + 1
            count = min(config.nll_positions, len(val_tokens) // span)
            if count:
                rows = np.asarray(val_tokens[: count * span], dtype=np.int64).reshape(count, span)
                self.nll_windows = torch.from_numpy(rows)

    @torch.no_grad()
    def evaluate(self, model: GPT, pass_at_k: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            metrics = self._arithmetic(model, pass_at_k and self.config.pass_samples > 0)
            if self.nll_windows is not None:
                metrics.update(self._thought_nll(model))
            return metrics
        finally:
            model.train(was_training)

    def _arithmetic(self, model: GPT, pass_at_k: bool) -> dict[str, float]:
        think = self._solve(model, self.prompts[True], think=True)
        nothink = self._solve(model, self.prompts[False], think=False)
        metrics, self.records = {}, {}
        for level, problems in self.problems.items():
            if not problems:
                continue
            with_, without = np.array(think[level], dtype=float), np.array(nothink[level], dtype=float)
            metrics[tags.arith_acc(level)] = float(with_.mean())
            metrics[tags.arith_acc(level, thought=False)] = float(without.mean())
            metrics[tags.arith_n(level)] = float(len(with_))  # problems scored (the gates need >= 256)
            metrics.update(_with_interval(tags.think_acc_gain(level), with_ - without))
            self.records[level] = {"questions": [q for q, _ in problems], "answers": [a for _, a in problems],
                                   "think": think[level], "nothink": nothink[level]}
        if pass_at_k:
            metrics.update(self._pass_at_k(model))
        return metrics

    def _pass_at_k(self, model: GPT) -> dict[str, float]:
        n = self.config.pass_samples
        items = [item for item in self.prompts[True] if item.index < self.config.pass_problems]
        generator = torch.Generator(device=next(model.parameters()).device)
        generator.manual_seed(self.config.seed)
        counts = self._solve(model, items, think=True, samples=n, generator=generator)
        metrics = {}
        for level, correct in counts.items():
            for k in self.config.pass_at:
                metrics[tags.pass_at(k, level)] = float(np.mean([pass_at_k(n, c, k) for c in correct]))
            self.records[level].update(pass_samples=n, pass_correct=correct)
        return metrics

    def _solve(
        self, model: GPT, items: list[_Item], think: bool, samples: int = 1, generator: torch.Generator | None = None
    ) -> dict[int, list[int]]:
        """Correct answers per problem (out of `samples`; greedy when samples is 1), by level."""
        budget = self.config.max_answer_tokens + (self.config.thought_budget if think else 0)
        counts = solve(model, self.tokenizer, [item.prompt for item in items], [item.answer for item in items], think,
                       budget, self.config.batch_size, self.rules, self.stop_ids, samples, generator)
        correct = {level: [0] * count for level, count in Counter(item.level for item in items).items()}
        for item, count in zip(items, counts):
            correct[item.level][item.index] = count
        return correct

    @staticmethod
    def _is_correct(continuation: str, answer: str, think: bool) -> bool:
        return is_correct(continuation, answer, think)

    def _thought_nll(self, model: GPT) -> dict[str, float]:
        device = next(model.parameters()).device
        windows = self.nll_windows.to(device)
        contexts, targets = windows[:, :-1], windows[:, -1]
        generator = torch.Generator(device=device)
        generator.manual_seed(self.config.seed)
        nothink = no_thought_logprob(model, contexts, targets)
        rules = self.rules
        thoughts = sample_thoughts(
            model, contexts, 1, self.thought_tokens, self.temperature, rules.think_id, rules.end_think_id,
            generator, eot_id=rules.eot_id,
        )
        _, think, _ = thought_scores(model, contexts, targets, thoughts, self.temperature, rules)
        return {
            "eval/think_nll": -think.mean().item(),
            "eval/nothink_nll": -nothink.mean().item(),
            **_with_interval("eval/think_gain", (think - nothink).cpu().numpy()),
            "eval/think_len_mean": thoughts.lengths.float().mean().item(),
        }


def _with_interval(tag: str, differences) -> dict[str, float]:
    """tag: the mean of paired differences; tag/lo, tag/hi: its 95% t-interval (where it has one)."""
    mean, lo, hi = paired_interval(differences)
    bounds = {f"{tag}/lo": lo, f"{tag}/hi": hi} if math.isfinite(lo) else {}
    return {tag: mean, **bounds}
