"""Worked reasoning in the text (`data.thoughts`), and where it stood (thought slots).

The world corpus writes its reasoning inline: `Q: 47+38=? <think> 7+8=15, write 5 carry 1. 4+3+1=8.
</think> A: 85` (arithmetic) and `Q: What does Mira's pet eat? <think> Mira has a fox. The fox eats
mice. </think> A: mice.` (two-hop questions). A thought can only add what the text leaves out, so
`data.thoughts: strip` removes exactly those spans (` <think> ... </think>`, with the one space
before it), leaving `Q: 47+38=? A: 85`; `keep` (the default) leaves the text as written.

A thought slot is where a stripped span stood: the first token of ` A:` right after a question
that was worked in the corpus (an arithmetic question `Q: <expr>=?`, or one of the two-hop
questions). `ThoughtSlots` finds them in token ids, for any byte-level tokenizer, so RLP can put
its thoughts there (`model.rlp.positions: thought_slots`).

`LONGEST_THOUGHT_TOKENS`: the longest worked thought of each arithmetic level, in tokens of the byte
tokenizer (the bytes after `<think>`, its `</think>` included: what RLP samples), measured on
800,000 examples per level (`measure_longest_thoughts`); `TWO_HOP_THOUGHT_TOKENS` the same for the
two-hop questions, exact (all of them enumerated). The byte tokenizer is the longest tokenisation,
so a cap of this many tokens holds the thought under BPE too.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Iterable

import numpy as np
import torch

from lamina.data import world
from lamina.data.tokenizer import bytes_to_unicode
from lamina.errors import ConfigError

THOUGHT_MODES = ("keep", "strip")
SPAN = re.compile(r" ?<think>.*?</think>", re.DOTALL)  # the space before the span goes with it
INNER = re.compile(r"<think>(.*?)</think>", re.DOTALL)
# A question line up to its `?`, when ` A:` follows at once (a stripped, or never thought, question);
# the marker may be cut by the end of the window.
QUESTION_BEFORE_ANSWER = re.compile(rb"Q: ([^\n\x00?]*)\?(?= A:| A\Z| \Z)")
ARITH_QUESTION = re.compile(rb"[0-9+\-*]+=")

# The longest of 400,000 examples per level at seeds 11 and 12 (see the module docstring).
LONGEST_THOUGHT_TOKENS = {1: 10, 2: 37, 3: 64, 4: 101, 5: 169}
TWO_HOP_THOUGHT_TOKENS = 48  # e.g. " Kara lives in Mirth. Brill is north of Mirth. </think>"
DEFAULT_THOUGHT_TOKENS = 32  # the cap where the source has no worked thoughts (not the world corpus)


def check_thoughts(mode) -> str:
    if mode not in THOUGHT_MODES:
        raise ConfigError(f"data.thoughts: expected one of {', '.join(THOUGHT_MODES)}, got {mode!r}")
    return mode


def strip_thoughts(text: str) -> tuple[str, list[int]]:
    """`text` without its `<think> ... </think>` spans (each with the one space before it), and
    the offsets in the stripped text where each span stood. Everything else is left byte for byte;
    an unclosed `<think>` is not a span and stays."""
    parts, slots, removed, last = [], [], 0, 0
    for match in SPAN.finditer(text):
        parts.append(text[last : match.start()])
        slots.append(match.start() - removed)
        removed += match.end() - match.start()
        last = match.end()
    parts.append(text[last:])
    return "".join(parts), slots


def with_thoughts(source, mode: str):
    """The data source with its thoughts kept or stripped (a `lamina.data.sources.Source`)."""
    return dataclasses.replace(source, thoughts=check_thoughts(mode), _identity={})  # its own cache key


# ---- how long worked thoughts are -----------------------------------------------------------------


def thought_tokens(text: str) -> list[int]:
    """Byte-tokenizer tokens of each worked thought in `text`: its bytes after `<think>`, plus `</think>`."""
    return [len(m.group(1).encode("utf-8")) + 1 for m in INNER.finditer(text)]


def measure_longest_thoughts(seed: int, n: int) -> dict:
    """The longest worked thought among n world examples of each arithmetic level, and among n
    two-hop questions: {level: tokens, "two_hop": tokens} (byte tokenizer)."""
    longest = {}
    for level in world.ARITH_LEVELS:
        examples = world.generate(seed, families=("arith",), levels=[level])
        longest[level] = max(max(thought_tokens(next(examples).text)) for _ in range(n))
    rng = random.Random(seed)
    longest["two_hop"] = max(max(thought_tokens(world.prose_question_two_hop(rng))) for _ in range(n))
    return longest


def longest_thought_tokens(families: Iterable[str] | None = None, levels: Iterable[int] | None = None) -> int:
    """The longest worked thought the world corpus writes for these families and arithmetic levels
    (None: all), in byte-tokenizer tokens; DEFAULT_THOUGHT_TOKENS when they hold no worked thought."""
    families = world.FAMILIES if families is None else tuple(families)
    levels = world.ARITH_LEVELS if levels is None else tuple(levels)
    lengths = [LONGEST_THOUGHT_TOKENS[level] for level in levels] if "arith" in families else []
    if "prose" in families:
        lengths.append(TWO_HOP_THOUGHT_TOKENS)
    return max(lengths, default=DEFAULT_THOUGHT_TOKENS)


# ---- where the thoughts stood ---------------------------------------------------------------------


class _Picks:
    """A stand-in for random.Random whose choice() returns the items at the given indices in turn."""

    def __init__(self, picks: Iterable[int]):
        self.picks = iter(picks)

    def choice(self, options):
        return options[next(self.picks)]


def two_hop_questions() -> frozenset[str]:
    """Every two-hop question the world writes (with its `?`), by enumerating the generator's choices:
    a person, a direction, one of its question templates."""
    questions = set()
    for person in range(len(world.PEOPLE)):
        for direction in range(len(world.DIRECTIONS)):
            for template in range(8):
                try:
                    question, _, _ = world._two_hop_question(_Picks((person, direction, template)))
                except IndexError:  # fewer templates where the town has no neighbour that way
                    continue
                questions.add(question)
    return frozenset(questions)


def token_bytes(tokenizer, vocab_size: int | None = None) -> list[bytes]:
    """The raw bytes of each id of a byte-level tokenizer; special tokens (and ids past the
    tokenizer's, e.g. padding rows of the embedding) stand for one NUL byte, which no slot holds."""
    size = max(vocab_size or 0, tokenizer.get_vocab_size())
    table = [b"\x00"] * size
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    for token, index in tokenizer.get_vocab(with_added_tokens=False).items():
        table[index] = bytes(byte_of[char] for char in token)
    for index in tokenizer.get_added_tokens_decoder():
        table[index] = b"\x00"
    return table


def slot_offsets(text: bytes, two_hop: frozenset[bytes]) -> list[int]:
    """Byte offsets of the ` A:` that follow a worked question (arithmetic or two-hop) in `text`."""
    offsets = []
    for match in QUESTION_BEFORE_ANSWER.finditer(text):
        body = match.group(1)
        if ARITH_QUESTION.fullmatch(body) or body + b"?" in two_hop:
            offsets.append(match.end())
    return offsets


class ThoughtSlots:
    """Finds thought slots in token ids: `slots(windows)` marks, in a `[B, T]` batch, the tokens
    that begin ` A:` (or what the row's end leaves of it) after a worked question whose `Q: ` lies
    in the same row. Slots hold only where
    the marker starts a token, as it does under the byte tokenizer and under byte-level BPE (whose
    pre-tokenizer splits `?` from ` A`)."""

    def __init__(self, tokenizer, vocab_size: int | None = None):
        self.pieces = token_bytes(tokenizer, vocab_size)
        self.lengths = np.array([len(p) for p in self.pieces], dtype=np.int64)
        self.two_hop = frozenset(q.encode("utf-8") for q in two_hop_questions())

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(windows.shape, dtype=torch.bool)
        for row, ids in enumerate(windows.tolist()):
            starts = np.concatenate(([0], np.cumsum(self.lengths[ids])))
            text = b"".join(self.pieces[i] for i in ids)
            for offset in slot_offsets(text, self.two_hop):
                t = int(np.searchsorted(starts, offset))
                if t < len(ids) and starts[t] == offset:
                    mask[row, t] = True
        return mask.to(windows.device)
