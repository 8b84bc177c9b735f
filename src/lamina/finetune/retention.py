"""Knowledge retained: exact-match accuracy on the world's fact questions and on a task's
(prompt, answer) pairs, greedy, batched, each with its Wilson interval, its n and a chance level.

Fact questions (`eval/facts/one_hop`, `eval/facts/two_hop`) are the world's prose questions:
- one-hop: prompt `Q: Where does Mira live? A:`, correct when the rest of the line is `Osk` (or
  `Osk.`, the corpus's form);
- two-hop: prompt `Q: What does Mira's pet eat? <think>`, the model writes its thought; correct
  when the line after the first `</think>` is `A: mice` (or `A: mice.`). A thought that never
  closes within the budget is wrong.

Held-out-ness. The world is fixed: every seed writes questions about the same 16 people, 12
towns and 10 animals, so there are 178 distinct one-hop and 125 distinct two-hop questions in all,
and every one of them also occurs in training text (which is the point: this measures whether
trained knowledge survives). What a seed disjoint from `data.seed` changes is only which ones are
drawn first. The evaluation takes the *distinct* questions (all of them unless `items` caps it),
never repeats: a repeated question is answered the same way under greedy decoding, so counting it
twice would shrink the interval without adding evidence. n is therefore at most 178 and 125.

Chance (`/chance`): the accuracy of a model that knows each question form and the form's most
common answer but no fact (the question with its entity names blanked is the form; `Where does _
live?` -> the commonest town). For a task file it is the share of its commonest answer.

A prompt is fed after `<|endoftext|>`, as a document starts in training.

Forced choice (`choice_items`, `choice_accuracy`): exact match needs the answer's format as well as
the fact, so a model that lost the format (a fine-tuned one that writes arithmetic after `A:`)
scores 0 whatever it still knows. Read by log-probability instead, each question is a choice among
the answers its form takes in the world (`Where does _ live?`: the 12 towns people live in), each
written as the corpus writes the right one (one-hop ` Osk.\n`; two-hop the whole thought and answer,
with the answer put in wherever the right continuation writes it, so the choices share the thought's
first fact and differ in the chained fact and the answer). The model's choice is the continuation
with the highest summed log-probability after the prompt (the standard multiple-choice reading, e.g.
the `acc` of EleutherAI's lm-evaluation-harness); tied best choices share the credit. Its chance is the
higher of two guessers' that know no fact: one choosing uniformly (the mean of 1/choices) and one
choosing the form's commonest answer (`form_chance`).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from lamina import tags
from lamina.data import world
from lamina.cadence import Cadence
from lamina.errors import ConfigError
from lamina.measures import wilson_interval

FACT_FAMILIES = ("one_hop", "two_hop")
QUESTION_DRAWS = 20_000  # world questions drawn to find the distinct ones (all appear within ~5000)
ONE_HOP = re.compile(r"^Q: (?P<question>.+?) A: (?P<answer>.+)\.\n$")
TWO_HOP = re.compile(
    rf"^Q: (?P<question>.+?) {world.THINK_OPEN} (?P<thought>.+) {world.THINK_CLOSE} A: (?P<answer>.+)\.\n$"
)

# A completer continues each prompt (a string) by up to a token budget and returns the text it
# wrote: GreedyCompleter for one model, lamina.finetune.proxy for a proxy-tuned trio, a dict for tests.
Completer = Callable[[list[str], int], list[str]]


@dataclass(frozen=True)
class EvalItem:
    """One question: the prompt the model continues, the answer it must give, and how it is read
    (`line`: the rest of the line is the answer; `think`: a thought, `</think>`, then `A: answer`)."""

    prompt: str
    answer: str
    form: str = "line"  # line | think
    gold: str = ""  # the continuation the corpus writes (for budgets and stub completers)

    def is_correct(self, continuation: str) -> bool:
        line = continuation.split("\n", 1)[0].split("<|endoftext|>", 1)[0]
        if self.form == "think":
            if world.THINK_CLOSE not in line:
                return False
            return line.split(world.THINK_CLOSE, 1)[1].strip() in (f"A: {self.answer}", f"A: {self.answer}.")
        return line.strip() in (self.answer, self.answer + ".")


@dataclass
class Accuracy:
    """Exact-match accuracy with its 95% Wilson interval, n, a chance level and each item's outcome."""

    correct: int | float  # (forced choice: tied best choices share the credit, so a sum of shares)
    n: int
    chance: float = float("nan")
    outcomes: list[bool] = field(default_factory=list)

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(round(self.correct), self.n)

    def scalars(self, tag: str) -> dict[str, float]:
        lo, hi = self.interval
        return {
            tag: self.value, f"{tag}/lo": lo, f"{tag}/hi": hi, f"{tag}/n": float(self.n), f"{tag}/chance": self.chance
        }

    def summary(self) -> dict:
        """Plain numbers for JSON (None where undefined, e.g. n = 0)."""
        lo, hi = self.interval
        numbers = {"accuracy": self.value, "lo": lo, "hi": hi, "chance": self.chance}
        return {**{k: (v if v == v else None) for k, v in numbers.items()}, "n": self.n, "correct": self.correct}


# ---- the questions --------------------------------------------------------------------------------


def fact_items(family: str, seed: int, limit: int | None = None) -> list[EvalItem]:
    """The distinct world fact questions of `family` (one_hop | two_hop) in the order a world
    stream of `seed` first writes them, at most `limit` of them."""
    if family not in FACT_FAMILIES:
        raise ConfigError(f"family: expected one of {', '.join(FACT_FAMILIES)}, got {family!r}")
    level = 1 if family == "one_hop" else 2
    examples = world.generate(seed, ["prose"], tasks=["question"])
    items: dict[str, EvalItem] = {}
    for _ in range(QUESTION_DRAWS):
        example = next(examples)
        if example.level == level and example.text not in items:
            items[example.text] = _parse_question(example.text, family)
            if limit is not None and len(items) >= limit:
                break
    return list(items.values())


def _parse_question(text: str, family: str) -> EvalItem:
    if family == "one_hop":
        m = ONE_HOP.match(text)
        return EvalItem(f"Q: {m['question']} A:", m["answer"], "line", f" {m['answer']}.\n")
    m = TWO_HOP.match(text)
    gold = f" {m['thought']} {world.THINK_CLOSE} A: {m['answer']}.\n"
    return EvalItem(f"Q: {m['question']} {world.THINK_OPEN}", m["answer"], "think", gold)


ENTITY_WORDS = re.compile(
    r"\b("
    + "|".join(
        sorted(
            {p.name for p in world.PEOPLE} | set(world.TOWNS) | set(world.ANIMALS)
            | {p.job for p in world.PEOPLE} | {p.thing for p in world.PEOPLE},
            key=len,
            reverse=True,
        )
    )
    + r")\b"
)


def question_form(prompt: str) -> str:
    """The question with its entity names blanked: `Where does _ live?`."""
    return ENTITY_WORDS.sub("_", prompt)


def form_chance(
    items: Sequence[EvalItem], population: Sequence[EvalItem] | None = None, form: Callable[[str], str] = question_form
) -> float:
    """Accuracy on `items` of answering every question with its form's commonest answer in
    `population` (default: the items themselves), which knows the forms and no fact; where several
    answers tie for commonest it picks one of them at random (its expected accuracy: each of the t
    tied answers is right 1/t of the time), so a form whose answers are all distinct scores 1/n.
    Take the population from all the questions, not a small sample of them: a form seen once in a
    sample has its one answer as its commonest."""
    if not items:
        return float("nan")
    by_form: dict[str, Counter] = defaultdict(Counter)
    for item in items if population is None else population:
        by_form[form(item.prompt)][item.answer] += 1
    commonest: dict[str, set[str]] = {}
    for f, counts in by_form.items():
        top = max(counts.values())
        commonest[f] = {answer for answer, count in counts.items() if count == top}
    right = [commonest.get(form(item.prompt), set()) for item in items]
    return sum((item.answer in top) / len(top) for item, top in zip(items, right) if top) / len(items)


def task_items(path: str | Path, key: str = "task_files") -> list[EvalItem]:
    """(prompt, answer) pairs of a task: a .jsonl file of {"prompt": ..., "answer": ...} lines."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: expected a .jsonl file of prompt/answer pairs, got {str(path)!r} (no such file)")
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompt, answer = row["prompt"], row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConfigError(
                    f"{key}: expected JSON lines with 'prompt' and 'answer', got line {number} of {str(path)!r}: "
                    f"{line.strip()[:60]!r}"
                ) from err
            if not isinstance(prompt, str) or not isinstance(answer, str) or "\n" in answer or not answer.strip():
                raise ConfigError(
                    f"{key}: expected a one-line, non-empty string answer and a string prompt, got line {number} of "
                    f"{str(path)!r}"
                )
            items.append(EvalItem(prompt, answer.strip(), "line", f" {answer.strip()}\n"))
    if not items:
        raise ConfigError(f"{key}: expected at least one prompt/answer pair, got an empty {str(path)!r}")
    return items


def task_chance(items: Sequence[EvalItem]) -> float:
    """Share of the commonest answer: what one constant answer scores."""
    return form_chance(items, form=lambda prompt: "")


# ---- scoring ---------------------------------------------------------------------------------------


def token_budget(items: Sequence[EvalItem], tokenizer, slack: int = 4) -> int:
    """New tokens enough for the longest gold continuation, plus `slack`."""
    lengths = [len(e.ids) for e in tokenizer.encode_batch([item.gold for item in items], add_special_tokens=False)]
    return max(lengths, default=1) + slack


def score(complete: Completer, items: Sequence[EvalItem], budget: int, chance: float = float("nan")) -> Accuracy:
    """Exact-match accuracy of `complete` on `items`."""
    continuations = complete([item.prompt for item in items], budget) if items else []
    outcomes = [item.is_correct(text) for item, text in zip(items, continuations, strict=True)]
    return Accuracy(sum(outcomes), len(outcomes), chance, outcomes)


class GreedyCompleter:
    """Continues prompts with a decoder over token ids (`decode(idx, max_new_tokens, stop_ids)` ->
    (tokens, lengths), e.g. a GPT's greedy `generate`): prompts of one token length decode
    together, `batch_size` rows at a time, each ends at its first line break or `<|endoftext|>`."""

    def __init__(self, decode, tokenizer, eot_id: int, block_size: int, device, batch_size: int = 64):
        self.decode, self.tokenizer, self.eot_id = decode, tokenizer, eot_id
        self.block_size, self.device, self.batch_size = block_size, device, batch_size
        self.stop_ids = sorted(set(line_break_ids(tokenizer)) | {eot_id})

    @classmethod
    def for_model(cls, model, tokenizer, eot_id: int, batch_size: int = 64) -> GreedyCompleter:
        def decode(idx, max_new_tokens, stop_ids):
            return model.generate(idx, max_new_tokens, temperature=0, stop_id=stop_ids)

        device = next(model.parameters()).device
        return cls(decode, tokenizer, eot_id, model.config.block_size, device, batch_size)

    @torch.no_grad()
    def __call__(self, prompts: list[str], budget: int) -> list[str]:
        encoded = self.tokenizer.encode_batch(prompts, add_special_tokens=False)
        by_length: dict[int, list[int]] = defaultdict(list)
        ids = [[self.eot_id, *e.ids] for e in encoded]
        for i, row in enumerate(ids):
            by_length[len(row)].append(i)
        out = [""] * len(prompts)
        for length, rows in by_length.items():
            new = min(budget, self.block_size - length + 1)
            if new < 1:
                continue  # the prompt alone fills the context: no room to answer (counted wrong)
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                idx = torch.tensor([ids[i] for i in chunk], dtype=torch.long, device=self.device)
                tokens, lengths = self.decode(idx, new, self.stop_ids)
                for r, i in enumerate(chunk):
                    out[i] = self.tokenizer.decode(tokens[r, : lengths[r]].tolist(), skip_special_tokens=False)
        return out


def line_break_ids(tokenizer) -> list[int]:
    """Ids whose text holds a line break (an answer ends at the end of its line)."""
    return [i for i in range(tokenizer.get_vocab_size()) if "\n" in tokenizer.decode([i], skip_special_tokens=False)]


# ---- forced choice ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoiceItem:
    """One question read by forced choice: the prompt, the continuations it chooses among (each
    written as the corpus writes the right one), and the index of the right one."""

    prompt: str
    choices: tuple[str, ...]
    answer: int


def swap_answer(gold: str, answer: str, other: str) -> str:
    """`gold` with `other` written wherever `gold` writes `answer` as a whole word or phrase."""
    return re.sub(rf"(?<!\w){re.escape(answer)}(?!\w)", lambda _: other, gold)


def form_answers(population: Sequence[EvalItem], form: Callable[[str], str] = question_form) -> dict[str, list[str]]:
    """Each question form's distinct answers in `population`, in the order they first occur."""
    answers: dict[str, dict[str, None]] = defaultdict(dict)
    for item in population:
        answers[form(item.prompt)].setdefault(item.answer)
    return {f: list(found) for f, found in answers.items()}


def choice_items(items: Sequence[EvalItem], population: Sequence[EvalItem] | None = None,
                 form: Callable[[str], str] = question_form) -> list[ChoiceItem]:
    """Each item as a choice among the answers its form takes in `population` (default: the items;
    take the whole question set, as for `form_chance`): the item's gold continuation with each of
    those answers in place of its own."""
    answers = form_answers(items if population is None else population, form)
    out = []
    for item in items:
        options = answers.get(form(item.prompt), [])
        options = options if item.answer in options else [*options, item.answer]
        choices = tuple(swap_answer(item.gold, item.answer, other) for other in options)
        out.append(ChoiceItem(item.prompt, choices, options.index(item.answer)))
    return out


def choice_chance(items: Sequence[EvalItem], population: Sequence[EvalItem] | None = None,
                  form: Callable[[str], str] = question_form) -> float:
    """Forced-choice accuracy of the better of two guessers that know no fact: the uniform one
    (the mean of 1 / choices) and the one that picks its form's commonest answer (`form_chance`)."""
    if not items:
        return float("nan")
    choices = choice_items(items, population, form)
    uniform = sum(1 / len(c.choices) for c in choices) / len(choices)
    return max(uniform, form_chance(items, population, form))


Logits = Callable[[torch.Tensor], dict[str, torch.Tensor]]
"""Token ids [B, T] -> {reader: next-token logits [B, T, vocab] over the real vocabulary}: one or
more models (or a proxy's combination of them, lamina.finetune.proxy.sweep_logits) read on one batch."""


def model_logits(models: dict[str, torch.nn.Module]) -> Logits:
    """`Logits` of GPTs, each under its own name (padding ids dropped, float32)."""

    def logits(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: m(idx)[0][..., : m.config.vocab_size].float() for name, m in models.items()}

    return logits


@torch.no_grad()
def continuation_log_probs(logits_of: Logits, pairs: Sequence[tuple[str, str]], tokenizer, eot_id: int,
                           block_size: int, device, batch_size: int = 64) -> dict[str, list[float]]:
    """Per reader of `logits_of`, the summed log-probability of each (prompt, continuation) pair's
    continuation after `<|endoftext|>` and the prompt (teacher-forced, one forward a batch); -inf
    for a pair longer than the context (block_size + 1 tokens). Rows of a batch are right-padded:
    a causal model's earlier positions never see the padding."""
    prompts = tokenizer.encode_batch([p for p, _ in pairs], add_special_tokens=False) if pairs else []
    ends = tokenizer.encode_batch([c for _, c in pairs], add_special_tokens=False) if pairs else []
    rows = [([eot_id, *p.ids, *c.ids], len(c.ids)) for p, c in zip(prompts, ends, strict=True)]
    fits = sorted((i for i, (ids, n) in enumerate(rows) if n and len(ids) - 1 <= block_size),
                  key=lambda i: len(rows[i][0]))
    out: dict[str, list[float]] = {}
    if not fits:  # (the readers' names, from a batch of one token)
        names = logits_of(torch.full((1, 1), eot_id, dtype=torch.long, device=device))
        return {name: [float("-inf")] * len(rows) for name in names}
    for start in range(0, len(fits), batch_size):
        chunk = fits[start : start + batch_size]
        width = max(len(rows[i][0]) for i in chunk) - 1
        idx = torch.full((len(chunk), width), eot_id, dtype=torch.long)
        target = torch.full((len(chunk), width), -1, dtype=torch.long)  # -1: not scored
        for r, i in enumerate(chunk):
            ids, n = rows[i]
            idx[r, : len(ids) - 1] = torch.tensor(ids[:-1])
            target[r, len(ids) - 1 - n : len(ids) - 1] = torch.tensor(ids[-n:])
        idx, target = idx.to(device), target.to(device)
        scored = target >= 0
        row_of = torch.arange(len(chunk), device=device)[:, None].expand_as(target)[scored]
        wanted = target[scored]
        for name, logits in logits_of(idx).items():  # (only the continuations' positions are normalised)
            logp = F.log_softmax(logits[scored].float(), dim=-1).gather(-1, wanted[:, None])[:, 0]
            sums = torch.zeros(len(chunk), dtype=torch.float64, device=device).index_add_(0, row_of, logp.double())
            values = out.setdefault(name, [float("-inf")] * len(rows))
            for i, total in zip(chunk, sums.tolist(), strict=True):
                values[i] = total
    return out


def choice_credit(scores: Sequence[float], answer: int) -> float:
    """1 when the right choice scores highest, 1/t when it ties t ways for the highest, else 0 (and
    0 when nothing could be scored: a question the context cannot hold counts wrong, as in `score`)."""
    best = max(scores)
    if best == float("-inf") or scores[answer] != best:
        return 0.0
    return 1.0 / sum(v == best for v in scores)


def choice_accuracy(logits_of: Logits, items: Sequence[ChoiceItem], tokenizer, eot_id: int, block_size: int,
                    device, batch_size: int = 64, chance: float = float("nan")) -> dict[str, Accuracy]:
    """Forced-choice accuracy of each reader of `logits_of` on `items` (all choices of all items
    scored in one pass; `outcomes`: the right choice alone scored highest)."""
    pairs = [(item.prompt, choice) for item in items for choice in item.choices]
    scores = continuation_log_probs(logits_of, pairs, tokenizer, eot_id, block_size, device, batch_size)
    results = {}
    for name, values in scores.items():
        credits, at = [], 0
        for item in items:
            credits.append(choice_credit(values[at : at + len(item.choices)], item.answer))
            at += len(item.choices)
        results[name] = Accuracy(sum(credits), len(items), chance, [c == 1.0 for c in credits])
    return results


class RetentionSuite:
    """The fact questions (and task pairs) of one evaluation, fixed once, scored on any completer
    (exact match, `evaluate`) or, the fact questions, by forced choice on any `Logits`
    (`evaluate_choices`: among the answers each form takes in the whole question set)."""

    def __init__(self, tokenizer, seed: int, items: int | None = None, task_files: Sequence[str] = (),
                 families: Sequence[str] = FACT_FAMILIES):
        self.sets: dict[str, list[EvalItem]] = {}
        self.chance: dict[str, float] = {}
        self.choices: dict[str, list[ChoiceItem]] = {}
        self.choice_chance: dict[str, float] = {}
        for family in families:
            tag = tags.facts(family)
            population = fact_items(family, seed)
            self.sets[tag] = population[:items]
            self.chance[tag] = form_chance(self.sets[tag], population)
            self.choices[tag] = choice_items(self.sets[tag], population)
            self.choice_chance[tag] = choice_chance(self.sets[tag], population)
        for path in task_files:
            tag = tags.eval_task(Path(path).stem)
            if tag in self.sets:
                raise ConfigError(f"task_files: expected files with distinct names, got two named {Path(path).stem!r}")
            self.sets[tag] = task_items(path)
            self.chance[tag] = task_chance(self.sets[tag])
        self.budgets = {tag: token_budget(items, tokenizer) for tag, items in self.sets.items()}
        self.tokenizer = tokenizer

    def evaluate(self, complete: Completer) -> dict[str, Accuracy]:
        return {tag: score(complete, items, self.budgets[tag], self.chance[tag]) for tag, items in self.sets.items()}

    def evaluate_choices(self, logits_of: Logits, eot_id: int, block_size: int, device,
                         batch_size: int = 64) -> dict[str, dict[str, Accuracy]]:
        """Forced-choice accuracy on the fact questions: reader -> tag -> Accuracy."""
        by_reader: dict[str, dict[str, Accuracy]] = defaultdict(dict)
        for tag, items in self.choices.items():
            for reader, acc in choice_accuracy(logits_of, items, self.tokenizer, eot_id, block_size, device,
                                               batch_size, self.choice_chance[tag]).items():
                by_reader[reader][tag] = acc
        return dict(by_reader)

    @staticmethod
    def scalars(results: dict[str, Accuracy]) -> dict[str, float]:
        out: dict[str, float] = {}
        for tag, acc in results.items():
            out.update(acc.scalars(tag))
        return out


class Retention(L.Callback):
    """`eval/facts/<family>` and `eval/task/<name>` (each with `/lo`, `/hi`, `/n`, `/chance`) at
    step 0, every `every_n_steps` optimizer steps and at the end; greedy, on global rank zero."""

    def __init__(
        self,
        enabled: bool = False,
        every_n_steps: int = 500,
        items: int | None = None,
        seed: int | None = None,
        task_files: list[str] = [],  # noqa: B006 - copied, never mutated
        batch_size: int = 64,
    ):
        """
        Args:
            enabled: run the evaluations at all.
            every_n_steps: evaluate every this many optimizer steps (and at step 0 and the end).
            items: at most this many distinct questions per fact family (null: all, 178 and 125).
            seed: world seed the questions are drawn with; null: one derived from data.seed, never
                data.seed itself (the questions are the world's either way: see the module doc).
            task_files: .jsonl files of {"prompt", "answer"} lines, each logged as eval/task/<stem>.
            batch_size: prompts decoded together.
        """
        for key, value, low in (("every_n_steps", every_n_steps, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"retention.{key}: expected an integer >= {low}, got {value!r}")
        if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items < 1):
            raise ConfigError(f"retention.items: expected null or an integer >= 1, got {items!r}")
        self.enabled, self.every_n_steps, self.items, self.seed = enabled, every_n_steps, items, seed
        self.task_files, self.batch_size = list(task_files), batch_size
        self.suite: RetentionSuite | None = None
        self.cadence = Cadence(every_n_steps)  # step 0, every every_n_steps, the end

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "tokenizer", None) is None:
            rank_zero_info("lamina: retention off: it needs a set-up TextDataModule (its tokenizer)")
            self.enabled = False
            return
        data_seed = int(datamodule.hparams.get("seed", 0))
        seed = self.seed if self.seed is not None else held_out_seed(data_seed)
        if self.seed is not None and datamodule.hparams.get("source") == "world" and seed == data_seed:
            raise ConfigError(f"retention.seed: expected a seed other than data.seed, got {seed} for both")
        self.suite = RetentionSuite(datamodule.tokenizer, seed, self.items, self.task_files)
        if self.cadence.starts(trainer):
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.suite is not None and self.cadence.due(trainer):
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.suite is not None and self.cadence.ends(trainer):
            self._evaluate(trainer, pl_module)

    def state_dict(self) -> dict:
        return self.cadence.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.cadence.load_state_dict(state_dict)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.cadence.ran(trainer)
        if not trainer.is_global_zero:
            return
        model = getattr(pl_module, "model", pl_module)
        complete = GreedyCompleter.for_model(model, trainer.datamodule.tokenizer, trainer.datamodule.eot_id,
                                             self.batch_size)
        was_training = model.training
        model.eval()
        try:
            with trainer.precision_plugin.forward_context():
                scalars = RetentionSuite.scalars(self.suite.evaluate(complete))
        finally:
            model.train(was_training)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)


def held_out_seed(data_seed: int) -> int:
    """A world seed for the questions, derived from data.seed and never equal to it."""
    from lamina.probes import world_seed

    seed = world_seed(data_seed, 0, "facts")
    return seed if seed != data_seed else seed + 1


__all__ = [
    "Accuracy",
    "ChoiceItem",
    "Completer",
    "EvalItem",
    "Logits",
    "FACT_FAMILIES",
    "GreedyCompleter",
    "Retention",
    "RetentionSuite",
    "fact_items",
    "form_chance",
    "choice_accuracy",
    "choice_chance",
    "choice_credit",
    "choice_items",
    "continuation_log_probs",
    "form_answers",
    "held_out_seed",
    "line_break_ids",
    "model_logits",
    "question_form",
    "score",
    "swap_answer",
    "task_chance",
    "task_items",
    "token_budget",
    "wilson_interval",
]
