"""Evaluations of thinking: held-out arithmetic with and without a thought, and the next-token loss
with a sampled thought. Plain functions and a class on GPT models; the ThoughtEval callback
(lamina.callbacks) runs them during training."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from lamina.data import world
from lamina.errors import ConfigError
from lamina.model import GPT
from lamina.rlp.config import ThoughtEvalConfig
from lamina.rlp.objective import no_thought_logprob, sample_thoughts, thought_scores



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
            "eval/think_len_mean": thoughts.lengths.float().mean().item(),
        }

