"""The built-in corpus: an endless, seeded, offline "world" text in five families (domains).

- prose: facts, questions and short stories about a small FIXED world (16 people, 12 towns on a
  grid, 10 animals). The world is the same for every seed; the seed only picks which sentences are
  sampled, so facts recur and a tiny GPT can memorise them. Two-hop questions reason in
  `<think> ... </think>` before answering.
- arith: `Q: 47+38=? <think> 7+8=15, write 5 carry 1. 4+3+1=8. </think> A: 85` with column-by-column
  worked steps, at difficulty levels 1-5 (more digits, more operands, then sub / mul / mixed).
- strings: `reverse: kqzf -> fzqk`, base tasks and their compositions, tagged by task so that
  probes can ablate them one by one.

World v2 (trained only when `families` names them; the default mix is the three above, byte for
byte as it always was):

- people: prose's person facts and questions about a second, fixed population (ROSTER, own
  villages, jobs and things) under controlled exposure: the seed deals the roster out in an order
  of its own (`exposure_roster`) and cuts it into bins of PEOPLE_PER_BIN people, and a person of
  bin b is the subject of b times as many documents as a person of bin 1 (`exposure_bins`, default
  0, 1, 10, 100: bin 0 is never mentioned). Which people are seen often is thus drawn per seed,
  so that no person's name makes an exposure effect that holds over seeds. `novel_people(seed)`:
  people no text of that seed mentions (NOVEL_PEOPLE, in no run's text, and the roster people the
  seed's bins leave out), drawn per seed, in the same templates (probes only).
- context: `Context: Tavik lives in Fenby. Q: Where does Tavik live? A: Fenby`: facts stated, then
  asked about, of a person invented for the document (`fresh`: only the context knows) or of a
  world person (`known`: the context agrees with the world), at levels 1-4 (sentences, with a
  second person as distractor). `counterfactuals()` writes contexts that contradict a roster
  person's fact (of the run's data seed's roster), each with its consistent twin and its question
  alone, for evaluation only.
- labels per token: `labelled_examples()` gives each example's spans (entity, attribute, town,
  operator, digit, carry, task, answer) and `token_labels()` maps them onto a tokenizer's tokens.

Every example is tagged (family, task, level): a run trained on some families, levels or tasks
has the others as out-of-distribution and harder probes. Only the standard library's
`random.Random` is used (never the global RNG, never `hash()` of a str), so a seed gives the same
bytes on every machine, process and Python >= 3.10.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import random
import re
import types
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from lamina.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Public names

FAMILIES: tuple[str, ...] = ("prose", "arith", "strings")  # what a run trains on by default
V2_FAMILIES: tuple[str, ...] = ("people", "context")  # world v2: trained only when named
ALL_FAMILIES: tuple[str, ...] = FAMILIES + V2_FAMILIES
PROSE_TASKS: tuple[str, ...] = ("fact", "question", "story")
ARITH_TASKS: tuple[str, ...] = ("add", "sub", "mul", "mixed")
ARITH_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
STRING_BASE_TASKS: tuple[str, ...] = ("copy", "reverse", "sort", "shift", "rotate")
# Compositions apply left to right ("sort+reverse": sort, then reverse). Only compositions that
# are new functions are listed: "X+sort" is just sort, "copy+X" is just X, and shift commutes
# with reverse and rotate, so those would be the same task under two names.
STRING_TASKS: tuple[str, ...] = STRING_BASE_TASKS + (
    "sort+reverse",
    "sort+shift",
    "sort+rotate",
    "reverse+shift",
    "reverse+rotate",
    "rotate+reverse",
)
STRING_LEVELS: tuple[int, ...] = (1, 2, 3, 4)  # length buckets: level L has 2L+1 or 2L+2 letters
PEOPLE_TASKS: tuple[str, ...] = ("bio", "recall")  # facts about one person; a question about one
CONTEXT_TASKS: tuple[str, ...] = ("fresh", "known")  # the asked-about person: new to the reader, or a world person
CONTEXT_LEVELS: tuple[int, ...] = (1, 2, 3, 4)  # sentences in the context
TASKS_BY_FAMILY = types.MappingProxyType(
    {
        "prose": PROSE_TASKS,
        "arith": ARITH_TASKS,
        "strings": STRING_TASKS,
        "people": PEOPLE_TASKS,
        "context": CONTEXT_TASKS,
    }
)
LEVEL_WEIGHTS: tuple[str, ...] = ("by_kind", "equal")
DEFAULT_EXPOSURE_BINS: tuple[int, ...] = (0, 1, 10, 100)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Example:
    text: str  # one document, ends with "\n"; the packer adds the separators
    family: str  # one of FAMILIES
    task: str  # one of TASKS_BY_FAMILY[family]
    level: int  # arith: ARITH_LEVELS; strings: STRING_LEVELS; prose, people: facts chained (1 or 2);
    # context: CONTEXT_LEVELS (sentences in the context)


# ---------------------------------------------------------------------------------------------
# The world: fixed entities and facts, identical for every seed (the probes' ground truth)

# Towns on a grid, north at the top: neighbours give "X is north of Y" facts.
TOWN_GRID: tuple[tuple[str, ...], ...] = (
    ("Osk", "Brill", "Karn", "Tove"),
    ("Vale", "Mirth", "Dun", "Wick"),
    ("Ash", "Lorn", "Quill", "Sedge"),
)
DIRECTIONS = {"north": (-1, 0), "south": (1, 0), "west": (0, -1), "east": (0, 1)}
OPPOSITE = {"north": "south", "south": "north", "west": "east", "east": "west"}
TOWNS: tuple[str, ...] = tuple(town for row in TOWN_GRID for town in row)

# animal -> (what it eats, its colour)
ANIMALS = {
    "fox": ("mice", "red"),
    "owl": ("moths", "gray"),
    "goat": ("grass", "white"),
    "cat": ("fish", "black"),
    "dog": ("bones", "brown"),
    "hare": ("clover", "tan"),
    "crow": ("corn", "black"),
    "pig": ("acorns", "pink"),
    "horse": ("oats", "brown"),
    "bee": ("nectar", "yellow"),
}


@dataclass(frozen=True)
class Person:
    name: str
    pronoun: str  # "she" or "he"
    town: str  # where they live
    job: str  # unique per person, so "the baker" names one person
    pet: str  # a key of ANIMALS
    food: str  # what they like to eat
    thing: str  # what they own, unique per person

    @property
    def possessive(self) -> str:
        return "her" if self.pronoun == "she" else "his"


PEOPLE: tuple[Person, ...] = (
    Person("Mira", "she", "Osk", "baker", "fox", "plums", "lamp"),
    Person("Tomas", "he", "Osk", "smith", "dog", "bread", "bell"),
    Person("Ilse", "she", "Brill", "weaver", "cat", "cheese", "kite"),
    Person("Bram", "he", "Karn", "farmer", "goat", "soup", "cart"),
    Person("Nell", "she", "Tove", "potter", "owl", "figs", "drum"),
    Person("Oren", "he", "Vale", "miller", "horse", "rice", "map"),
    Person("Kara", "she", "Mirth", "fisher", "cat", "eggs", "boat"),
    Person("Joss", "he", "Dun", "hunter", "dog", "pie", "rope"),
    Person("Wren", "she", "Wick", "tailor", "hare", "pears", "coat"),
    Person("Ezra", "he", "Ash", "healer", "bee", "honey", "flute"),
    Person("Lena", "she", "Lorn", "mason", "pig", "apples", "chisel"),
    Person("Pim", "he", "Quill", "scribe", "crow", "nuts", "book"),
    Person("Sade", "she", "Sedge", "brewer", "goat", "stew", "barrel"),
    Person("Hugo", "he", "Vale", "shepherd", "dog", "cake", "horn"),
    Person("Rosa", "she", "Karn", "cook", "hare", "beans", "pot"),
    Person("Finn", "he", "Wick", "carpenter", "fox", "toast", "saw"),
)
RESIDENTS = {town: tuple(p for p in PEOPLE if p.town == town) for town in TOWNS}


def neighbour(town: str, direction: str) -> str | None:
    """The town one step `direction` of `town` on the grid, or None at the edge."""
    row, col = next((r, c) for r, line in enumerate(TOWN_GRID) for c, t in enumerate(line) if t == town)
    dr, dc = DIRECTIONS[direction]
    r, c = row + dr, col + dc
    inside = 0 <= r < len(TOWN_GRID) and 0 <= c < len(TOWN_GRID[0])
    return TOWN_GRID[r][c] if inside else None


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _capital(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


# ---------------------------------------------------------------------------------------------
# prose: facts, questions, stories

# Each fact has a few paraphrases so the model learns the fact, not one string.
def _person_facts(p: Person, rng: random.Random) -> list[str]:
    """Sentences about one person; after the first, the name may become a pronoun."""
    facts = [
        rng.choice(["{n} lives in " + p.town, "{n} is from " + p.town]),
        rng.choice(["{n} is " + article(p.job), "{n} works as " + article(p.job)]),
        rng.choice(["{n} has " + article(p.pet), "{n} keeps " + article(p.pet)]),
        rng.choice(["{n} likes " + p.food, "{n} loves to eat " + p.food]),
        rng.choice(["{n} owns " + article(p.thing), "{n} carries " + article(p.thing)]),
    ]
    rng.shuffle(facts)
    return facts


def _town_facts(town: str, rng: random.Random) -> list[str]:
    facts = []
    for direction in DIRECTIONS:
        other = neighbour(town, direction)
        if other is not None:
            verb = rng.choice(("is", "lies"))
            facts.append(f"{{n}} {verb} {direction} of {other}")
    facts.append("{n} is home to " + " and ".join(p.name for p in RESIDENTS[town]))
    rng.shuffle(facts)
    return facts


def _animal_facts(animal: str, rng: random.Random) -> list[str]:
    food, colour = ANIMALS[animal]
    facts = [rng.choice(["{n} eats " + food, "{n} likes to eat " + food]), "{n} is " + colour]
    rng.shuffle(facts)
    return facts


def prose_fact(rng: random.Random) -> str:
    """Two or three facts about one subject (a person, a town or an animal)."""
    subject = rng.choice(("person", "town", "animal"))
    if subject == "person":
        p = rng.choice(PEOPLE)
        name, pronoun, facts = p.name, p.pronoun, _person_facts(p, rng)
    elif subject == "town":
        town = rng.choice(TOWNS)
        name, pronoun, facts = town, "it", _town_facts(town, rng)
    else:
        animal = rng.choice(tuple(ANIMALS))
        name, pronoun, facts = "the " + animal, "it", _animal_facts(animal, rng)
    facts = facts[: rng.randint(2, 3)]
    # Name first, then a pronoun half the time: coreference is part of the grammar to learn.
    sentences = [facts[0].format(n=name)]
    sentences += [f.format(n=rng.choice((name, pronoun))) for f in facts[1:]]
    return " ".join(_capital(s) + "." for s in sentences) + "\n"


def _one_hop_question(rng: random.Random) -> tuple[str, str]:
    """(question, answer) answered by a single world fact."""
    p, animal, town = rng.choice(PEOPLE), rng.choice(tuple(ANIMALS)), rng.choice(TOWNS)
    direction = rng.choice(tuple(DIRECTIONS))
    options = [
        (f"Where does {p.name} live?", p.town),
        (f"What does {p.name} do?", article(p.job)),
        (f"What pet does {p.name} have?", article(p.pet)),
        (f"What does {p.name} like to eat?", p.food),
        (f"What does {p.name} own?", article(p.thing)),
        (f"Who is the {p.job}?", p.name),
        (f"Who owns the {p.thing}?", p.name),
        (f"Who lives in {town}?", " and ".join(r.name for r in RESIDENTS[town])),
        (f"What does the {animal} eat?", ANIMALS[animal][0]),
        (f"What color is the {animal}?", ANIMALS[animal][1]),
    ]
    other = neighbour(town, direction)
    if other is not None:
        options.append((f"What is {direction} of {town}?", other))
    return rng.choice(options)


def _two_hop_question(rng: random.Random) -> tuple[str, str, str]:
    """(question, thought, answer): two chained facts, the first stated in the thought."""
    p = rng.choice(PEOPLE)
    food, colour = ANIMALS[p.pet]
    has_pet = f"{p.name} has {article(p.pet)}."
    is_job = f"The {p.job} is {p.name}."
    options = [
        (f"What does {p.name}'s pet eat?", f"{has_pet} The {p.pet} eats {food}.", food),
        (f"What color is {p.name}'s pet?", f"{has_pet} The {p.pet} is {colour}.", colour),
        (f"Where does the {p.job} live?", f"{is_job} {p.name} lives in {p.town}.", p.town),
        (f"What pet does the {p.job} have?", f"{is_job} {has_pet}", article(p.pet)),
        (f"What does the {p.job} own?", f"{is_job} {p.name} owns {article(p.thing)}.", article(p.thing)),
    ]
    direction = rng.choice(tuple(DIRECTIONS))
    other = neighbour(p.town, direction)
    if other is not None:
        thought = f"{p.name} lives in {p.town}. {other} is {direction} of {p.town}."
        options.append((f"What is {direction} of the town where {p.name} lives?", thought, other))
    return rng.choice(options)


def prose_question_one_hop(rng: random.Random) -> str:
    question, answer = _one_hop_question(rng)
    return f"Q: {question} A: {answer}.\n"


def prose_question_two_hop(rng: random.Random) -> str:
    question, thought, answer = _two_hop_question(rng)
    return f"Q: {question} {THINK_OPEN} {thought} {THINK_CLOSE} A: {answer}.\n"


def prose_story(rng: random.Random) -> str:
    """A walk to a neighbouring town and back; every sentence is consistent with the world."""
    p = rng.choice(PEOPLE)
    direction = rng.choice([d for d in DIRECTIONS if neighbour(p.town, d) is not None])
    there = neighbour(p.town, direction)
    host = rng.choice(RESIDENTS[there])
    pet_food = ANIMALS[p.pet][0]
    opening = rng.choice([
        f"One morning {p.name} left {p.town} with {p.possessive} {p.pet}.",
        f"{p.name} the {p.job} set out from {p.town} with {p.possessive} {p.pet}.",
    ])
    travel = rng.choice([
        f"{_capital(p.pronoun)} walked {direction} to {there}.",
        f"{_capital(p.pronoun)} went {direction} to {there}.",
    ])
    meeting = rng.choice([
        f"There {p.pronoun} met {host.name}, the {host.job}.",
        f"In {there} {p.pronoun} visited {host.name} the {host.job}.",
    ])
    middle = rng.choice([
        f"{host.name} showed {p.name} {host.possessive} {host.thing}.",
        f"{host.name} gave {p.name} some {host.food}.",
        f"The {p.pet} ate some {pet_food}.",
    ])
    closing = rng.choice([
        f"In the evening {p.name} walked {OPPOSITE[direction]}, back to {p.town}.",
        f"Then {p.pronoun} went home to {p.town}.",
    ])
    return " ".join((opening, travel, meeting, middle, closing)) + "\n"


# ---------------------------------------------------------------------------------------------
# arith: worked column steps inside <think> ... </think>

# level -> task -> digits of each operand. Within a level every task is about equally hard;
# each level adds digits or an operand, so levels above the trained ones are harder probes.
ARITH_PROBLEMS = {
    1: {"add": (1, 1)},
    2: {"add": (2, 2), "sub": (2, 2), "mul": (1, 1)},
    3: {"add": (3, 3), "sub": (3, 3), "mul": (2, 1), "mixed": (1, 1, 1)},
    4: {"add": (4, 4), "sub": (4, 4), "mul": (2, 2), "mixed": (2, 2, 2)},
    5: {"add": (3, 3, 3), "sub": (4, 3, 3), "mul": (3, 2), "mixed": (3, 3, 3)},
}


def _digits(n: int) -> list[int]:
    """Least significant digit first: the order columns are worked in."""
    return [int(c) for c in reversed(str(n))]


def add_steps(a: int, b: int) -> list[str]:
    """Column addition, right to left. The last column writes its whole sum (no carry step)."""
    da, db = _digits(a), _digits(b)
    n_columns = max(len(da), len(db))
    steps, carry = [], 0
    for i in range(n_columns):
        terms = [d[i] for d in (da, db) if i < len(d)] + ([carry] if carry else [])
        total = sum(terms)
        if len(terms) == 1:
            steps.append(f"bring down {total}")
            carry = 0
        elif total >= 10 and i < n_columns - 1:
            steps.append(f"{'+'.join(map(str, terms))}={total}, write {total % 10} carry {total // 10}")
            carry = total // 10
        else:
            steps.append(f"{'+'.join(map(str, terms))}={total}")
            carry = 0
    return steps


def sub_steps(a: int, b: int) -> list[str]:
    """Column subtraction (a >= b), right to left, borrowing from the next column."""
    da, db = _digits(a), _digits(b)
    steps, borrow = [], 0
    for i, top in enumerate(da):
        terms = [top] + ([1] if borrow else []) + ([db[i]] if i < len(db) else [])
        if len(terms) == 1:
            steps.append(f"bring down {top}")
            borrow = 0
            continue
        expr = "-".join(map(str, terms))
        value = top - sum(terms[1:])
        if value < 0:
            steps.append(f"{expr} borrow 1{expr}={value + 10}")
            borrow = 1
        else:
            steps.append(f"{expr}={value}")
            borrow = 0
    return steps


def mul_steps(a: int, b: int) -> list[str]:
    """Long multiplication: column steps by a one-digit b, else one partial product per digit."""
    if b >= 10:
        partials = [a * d * 10**i for i, d in enumerate(_digits(b))]
        steps = [f"{a}*{d * 10**i}={p}" for i, (d, p) in enumerate(zip(_digits(b), partials))]
        return steps + [f"{'+'.join(map(str, partials))}={sum(partials)}"]
    da = _digits(a)
    steps, carry = [], 0
    for i, d in enumerate(da):
        expr = f"{d}*{b}" + (f"+{carry}" if carry else "")
        total = d * b + carry
        if total >= 10 and i < len(da) - 1:
            steps.append(f"{expr}={total}, write {total % 10} carry {total // 10}")
            carry = total // 10
        else:
            steps.append(f"{expr}={total}")
            carry = 0
    return steps


STEPS_BY_OP: dict[str, Callable[[int, int], list[str]]] = {"+": add_steps, "-": sub_steps, "*": mul_steps}
APPLY_OP: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


def _number(rng: random.Random, n_digits: int) -> int:
    return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)


def _arith_problem(rng: random.Random, level: int, task: str) -> tuple[list[int], list[str]]:
    """Operands and operators; redrawn until no intermediate value is negative."""
    sizes = ARITH_PROBLEMS[level][task]
    while True:
        operands = [_number(rng, n) for n in sizes]
        if task == "mixed":  # at least one + and one -, in a random order
            ops = ["+", "-"] + [rng.choice("+-") for _ in range(len(sizes) - 3)]
            rng.shuffle(ops)
        else:
            ops = [{"add": "+", "sub": "-", "mul": "*"}[task]] * (len(sizes) - 1)
        value, ok = operands[0], True
        for op, x in zip(ops, operands[1:]):
            value = APPLY_OP[op](value, x)
            ok = ok and value >= 0
        if ok:
            return operands, ops


def arith_example(rng: random.Random, level: int, task: str) -> str:
    """One problem; with several operators, each one is worked in turn, left to right."""
    operands, ops = _arith_problem(rng, level, task)
    sections, value = [], operands[0]
    for op, x in zip(ops, operands[1:]):
        body = ". ".join(STEPS_BY_OP[op](value, x)) + "."
        sections.append(f"{value}{op}{x}: {body}" if len(ops) > 1 else body)
        value = APPLY_OP[op](value, x)
    expr = str(operands[0]) + "".join(f"{op}{x}" for op, x in zip(ops, operands[1:]))
    return f"Q: {expr}=? {THINK_OPEN} {' '.join(sections)} {THINK_CLOSE} A: {value}\n"


# ---------------------------------------------------------------------------------------------
# strings: compositional letter-string tasks

LETTERS = "abcdefghijklmnopqrstuvwxyz"
STRING_OPS: dict[str, Callable[[str], str]] = {
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
    "shift": lambda s: "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in s),  # a->b, z->a
    "rotate": lambda s: s[1:] + s[:1],  # first letter moves to the end
}


def apply_string_task(task: str, s: str) -> str:
    """The answer to a string task: its base operations applied left to right."""
    for name in task.split("+"):
        s = STRING_OPS[name](s)
    return s


def string_example(rng: random.Random, task: str) -> tuple[str, int]:
    level = rng.choice(STRING_LEVELS)
    s = "".join(rng.choice(LETTERS) for _ in range(2 * level + rng.randint(1, 2)))
    return f"{task}: {s} -> {apply_string_task(task, s)}\n", level


# ---------------------------------------------------------------------------------------------
# World v2, people: a roster with controlled exposure, and novel people who never occur in training

# A second population beside PEOPLE, with its own villages, jobs and things, so that every claim
# of the first world stays true ("the baker" is still Mira, "Who lives in Osk" still has its one
# answer). Pets and foods are shared. Names are made of syllables by a fixed generator; none is a
# word any template writes.
VILLAGES: tuple[str, ...] = ("Hollin", "Fenby", "Crag", "Wold", "Marrow", "Thorn", "Brae", "Yarrow")
ROSTER_JOBS: tuple[str, ...] = (
    "glazier", "roofer", "cooper", "tanner", "dyer", "joiner",
    "thatcher", "fletcher", "carter", "chandler", "saddler", "drover",
)
ROSTER_THINGS: tuple[str, ...] = ("spade", "ladle", "basket", "lantern", "whistle", "kettle", "satchel", "comb")
FOODS: tuple[str, ...] = tuple(dict.fromkeys(p.food for p in PEOPLE))
PEOPLE_PER_BIN = 8  # roster people in each exposure bin
MAX_EXPOSURE_BINS = 8
N_NOVEL = 16  # novel people: the same templates, never in any training text
N_FRESH = 512  # names the context family invents for one document each (facts drawn per document)

# Every word the templates write (besides names): a generated name must be none of them.
_TEMPLATE_WORDS = frozenset(
    """a an and as ate back carries color context do does east eat eats evening from gave has have
    he her his home in is it keeps left lies like likes live lives loves met morning north of one
    out own owns pet q s set she showed some south the then there think to town visited walked went
    west what where who with works""".split()
)


def _world_words() -> frozenset[str]:
    words = set(_TEMPLATE_WORDS) | {t.lower() for t in TOWNS + VILLAGES}
    for p in PEOPLE:
        words |= {p.name.lower(), p.job, p.pet, p.food, p.thing}
    for animal, (food, colour) in ANIMALS.items():
        words |= {animal, food, colour}
    return frozenset(words | set(ROSTER_JOBS) | set(ROSTER_THINGS))


def _name_pool(n: int) -> tuple[str, ...]:
    """n distinct names like "Tavik" or "Nore": consonant-vowel syllables from a fixed generator."""
    onsets, vowels, codas = "bdfghklmnprstvz", "aeiou", ("", "", "", "k", "l", "n", "r", "s")
    rng = random.Random(0x4E414D4553)  # fixed: the world is the same for every seed
    reserved, names, seen = _world_words(), [], set()
    while len(names) < n:
        name = rng.choice(onsets) + rng.choice(vowels) + rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
        if name in seen or name in reserved:
            continue
        seen.add(name)
        names.append(name.capitalize())
    return tuple(names)


def _invented_person(name: str, rng: random.Random) -> Person:
    return Person(
        name,
        rng.choice(("she", "he")),
        rng.choice(VILLAGES),
        rng.choice(ROSTER_JOBS),
        rng.choice(tuple(ANIMALS)),
        rng.choice(FOODS),
        rng.choice(ROSTER_THINGS),
    )


def _fixed_people(names: Sequence[str], salt: int) -> tuple[Person, ...]:
    rng = random.Random(salt)
    return tuple(_invented_person(name, rng) for name in names)


_NAMES = _name_pool(N_NOVEL + MAX_EXPOSURE_BINS * PEOPLE_PER_BIN + N_FRESH)
# Novel people come first in the pool, so they stay the same whatever data.exposure_bins says.
NOVEL_PEOPLE: tuple[Person, ...] = _fixed_people(_NAMES[:N_NOVEL], 0x4E4F56454C)
ROSTER: tuple[Person, ...] = _fixed_people(_NAMES[N_NOVEL : N_NOVEL + MAX_EXPOSURE_BINS * PEOPLE_PER_BIN], 0x524F53)
FRESH_NAMES: tuple[str, ...] = _NAMES[N_NOVEL + MAX_EXPOSURE_BINS * PEOPLE_PER_BIN :]


def check_exposure_bins(bins) -> tuple[int, ...]:
    """`data.exposure_bins` as a tuple (None: DEFAULT_EXPOSURE_BINS), or a one-line ConfigError."""
    if bins is None:
        return DEFAULT_EXPOSURE_BINS
    ok = isinstance(bins, (list, tuple)) and 1 <= len(bins) <= MAX_EXPOSURE_BINS
    ok = ok and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bins)
    ok = ok and len(set(bins)) == len(bins) and any(b > 0 for b in bins)
    if not ok:
        raise ConfigError(
            f"data.exposure_bins: expected null or a list of 1 to {MAX_EXPOSURE_BINS} distinct integers "
            f">= 0 (relative mentions), at least one > 0, got {bins!r}"
        )
    return tuple(bins)


def _draw_rng(seed: int, purpose: str) -> random.Random:
    """A stream of its own for one draw of a data seed (sha256: the same on every machine and process)."""
    digest = hashlib.sha256(f"lamina.world.{purpose}/{_rng_seed(seed)}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _rotated_roster(seed: int) -> tuple[Person, ...]:
    """ROSTER in the order data seed `seed` deals it out: a seeded permutation, so which people are
    exposed, and how often, is drawn per seed (a person's name cannot be what makes an exposure
    effect that holds over seeds)."""
    roster = list(ROSTER)
    _draw_rng(seed, "roster").shuffle(roster)
    return tuple(roster)


def exposure_roster(bins: Sequence[int] | None = None, *, seed: int) -> tuple[tuple[int, Person], ...]:
    """(bin, person) for every roster person data seed `seed` trains on: PEOPLE_PER_BIN people per
    bin, in bin order, dealt from the seed's permutation of ROSTER (`seed`: the run's data.seed,
    the one `generate` gets). A person of bin b is the subject of b parts in
    sum(bins) * PEOPLE_PER_BIN of the people family."""
    bins = check_exposure_bins(bins)
    roster = _rotated_roster(seed)
    return tuple((bins[i // PEOPLE_PER_BIN], roster[i]) for i in range(len(bins) * PEOPLE_PER_BIN))


def people_by_bin(bins: Sequence[int] | None = None, *, seed: int) -> dict[int, tuple[Person, ...]]:
    """The roster people of each exposure bin for data seed `seed`."""
    out: dict[int, list[Person]] = {}
    for b, person in exposure_roster(bins, seed=seed):
        out.setdefault(b, []).append(person)
    return {b: tuple(people) for b, people in out.items()}


def novel_people(bins: Sequence[int] | None = None, *, seed: int) -> tuple[Person, ...]:
    """N_NOVEL people that no training text of data seed `seed` mentions, drawn per seed from
    NOVEL_PEOPLE (never in any run's text) and the roster people this seed's bins leave out, so
    that the never-seen side of an exposure contrast is drawn per seed too. In the order drawn."""
    in_bins = {p.name for _, p in exposure_roster(bins, seed=seed)}
    unused = [p for p in NOVEL_PEOPLE + ROSTER if p.name not in in_bins]
    return tuple(_draw_rng(seed, "novel").sample(unused, N_NOVEL))


def people_bio(rng: random.Random, p: Person) -> str:
    """Two or three facts about a person: prose's person facts, word for word."""
    facts = _person_facts(p, rng)[: rng.randint(2, 3)]
    sentences = [facts[0].format(n=p.name)] + [f.format(n=rng.choice((p.name, p.pronoun))) for f in facts[1:]]
    return " ".join(_capital(s) + "." for s in sentences) + "\n"


ATTRIBUTES: tuple[str, ...] = ("town", "job", "pet", "food", "thing")


def _attribute_question(p: Person, attribute: str) -> tuple[str, str]:
    """(question, answer) about one attribute of a person, in prose's one-hop wording."""
    return {
        "town": (f"Where does {p.name} live?", p.town),
        "job": (f"What does {p.name} do?", article(p.job)),
        "pet": (f"What pet does {p.name} have?", article(p.pet)),
        "food": (f"What does {p.name} like to eat?", p.food),
        "thing": (f"What does {p.name} own?", article(p.thing)),
    }[attribute]


# Each attribute's two paraphrases in prose's wording; {v} is the value as the answer writes it.
_FACT_TEMPLATES: dict[str, tuple[str, str]] = {
    "town": ("{n} lives in {v}", "{n} is from {v}"),
    "job": ("{n} is {v}", "{n} works as {v}"),
    "pet": ("{n} has {v}", "{n} keeps {v}"),
    "food": ("{n} likes {v}", "{n} loves to eat {v}"),
    "thing": ("{n} owns {v}", "{n} carries {v}"),
}


def _answer_value(p: Person, attribute: str) -> str:
    """An attribute's value as an answer or a fact writes it (`Fenby`, `a fox`, `plums`)."""
    value = getattr(p, attribute)
    return value if attribute in ("town", "food") else article(value)


def _attribute_fact(p: Person, attribute: str, rng: random.Random) -> str:
    """One sentence stating an attribute, in one of prose's paraphrases (with its full stop)."""
    return rng.choice(_FACT_TEMPLATES[attribute]).format(n=p.name, v=_answer_value(p, attribute)) + "."


def people_recall(rng: random.Random, p: Person, level: int) -> str:
    """A question about a person: one fact (level 1), or the person's pet and a world fact about
    that animal, the first stated in the thought (level 2)."""
    if level == 1:
        question, answer = _attribute_question(p, rng.choice(ATTRIBUTES))
        return f"Q: {question} A: {answer}.\n"
    food, colour = ANIMALS[p.pet]
    has_pet = f"{p.name} has {article(p.pet)}."
    question, thought, answer = rng.choice([
        (f"What does {p.name}'s pet eat?", f"{has_pet} The {p.pet} eats {food}.", food),
        (f"What color is {p.name}'s pet?", f"{has_pet} The {p.pet} is {colour}.", colour),
    ])
    return f"Q: {question} {THINK_OPEN} {thought} {THINK_CLOSE} A: {answer}.\n"


def _people_kinds(pick: Callable[[random.Random], Person]) -> list[_Kind]:
    """The people family's kinds, each about the person `pick` draws."""

    def bio(rng: random.Random) -> Example:
        return Example(people_bio(rng, pick(rng)), "people", "bio", 1)

    def recall(level: int) -> Callable[[random.Random], Example]:
        return lambda rng: Example(people_recall(rng, pick(rng), level), "people", "recall", level)

    return [_Kind("people", "bio", None, bio), *(_Kind("people", "recall", None, recall(lv)) for lv in (1, 2))]


def _weighted_pick(people: Sequence[Person], weights: Sequence[int]) -> Callable[[random.Random], Person]:
    """Draws person i with probability weights[i] / sum(weights): integers only, the same everywhere."""
    kept = [(p, w) for p, w in zip(people, weights) if w > 0]
    cumulative = list(itertools.accumulate(w for _, w in kept))
    return lambda rng: kept[bisect.bisect_right(cumulative, rng.randrange(cumulative[-1]))][0]


def people_examples(seed: int, people: Sequence[Person]) -> Iterator[Example]:
    """Endless people-family examples about `people` (drawn uniformly), e.g. one exposure bin's
    roster or NOVEL_PEOPLE: the probes' text about entities of one exposure."""
    rng = random.Random(_rng_seed(seed))
    kinds = _people_kinds(_weighted_pick(people, [1] * len(people)))
    while True:
        yield rng.choice(kinds).make(rng)


# ---------------------------------------------------------------------------------------------
# World v2, context: facts stated in a context, then asked about


def _fresh_person(rng: random.Random, avoid: str = "") -> Person:
    """Someone the reader cannot know: a name and facts drawn for this document only."""
    name = rng.choice(FRESH_NAMES)
    while name == avoid:
        name = rng.choice(FRESH_NAMES)
    return _invented_person(name, rng)


class _ContextDocument(NamedTuple):
    prompt: str  # `Context: ... Q: ... A:`
    answer: str  # what the context says
    consistent_prompt: str  # the same document with the subject's true facts (== prompt unless `stated`)


def _context_document(
    rng: random.Random, subject: Person, other: Person | None, asked: str, level: int,
    stated: dict[str, str] | None = None,
) -> _ContextDocument:
    """`level` sentences, one stating the asked attribute of `subject`; the others state other
    facts of `subject` or facts of `other` (at least one when there is an other). `stated`
    overrides what the context says of `subject` (counterfactuals); `consistent_prompt` is then the
    same document, word for word, stating the subject's true value instead."""
    told = dataclasses.replace(subject, **(stated or {}))
    pairs = [(subject, a) for a in ATTRIBUTES if a != asked]
    if other is not None:
        pairs += [(other, a) for a in ATTRIBUTES]
    rest = rng.sample(pairs, level - 1)
    if other is not None and level >= 2 and all(p is not other for p, _ in rest):
        rest[0] = (other, rng.choice(ATTRIBUTES))
    facts = [(subject, asked)] + rest
    rng.shuffle(facts)
    templates = [rng.choice(_FACT_TEMPLATES[a]) for _, a in facts]  # one draw per sentence, in order

    def document(who: Person) -> str:
        sentences = (t.format(n=p.name, v=_answer_value(who if p is subject else p, a)) + "."
                     for t, (p, a) in zip(templates, facts))
        question = _attribute_question(who, asked)[0]
        return f"Context: {' '.join(sentences)} Q: {question} A:"

    return _ContextDocument(document(told), _attribute_question(told, asked)[1], document(subject))


def context_example(rng: random.Random, task: str, level: int) -> str:
    """`Context: Tavik lives in Fenby. Q: Where does Tavik live? A: Fenby`. `fresh`: about a person
    invented for this document (the answer is only in the context); `known`: about a world person
    (PEOPLE), with true facts, so the context agrees with what the rest of the corpus says."""
    if task == "fresh":
        subject = _fresh_person(rng)
        other = _fresh_person(rng, avoid=subject.name) if level >= 2 else None
    else:
        subject = rng.choice(PEOPLE)
        other = rng.choice([p for p in PEOPLE if p is not subject]) if level >= 2 else None
    prompt, answer, _ = _context_document(rng, subject, other, rng.choice(ATTRIBUTES), level)
    return f"{prompt} {answer}\n"


def _context_kind(task: str, level: int) -> _Kind:
    return _Kind("context", task, None, lambda rng: Example(context_example(rng, task, level), "context", task, level))


# ---------------------------------------------------------------------------------------------
# World v2, counterfactual contexts (evaluation only: never in any training text)


@dataclass(frozen=True)
class Counterfactual:
    """A context that contradicts a roster person's fact. `prompt` ends with `A:`; the answers are
    the words after `A: ` (`context_answer`: what the context says; `memorised_answer`: the
    world's fact, which training states `bin` times as often as a bin-1 person's).
    `consistent_prompt`: the same document stating the true value (the context agrees with
    memory; only the value's words differ); `question_prompt`: the question alone, `Q: ... A:`,
    as the people family's recall questions ask it (what the model says without a context)."""

    prompt: str
    context_answer: str
    memorised_answer: str
    bin: int
    entity: str
    attribute: str
    consistent_prompt: str = ""
    question_prompt: str = ""

    def __iter__(self):  # (prompt, context_answer, memorised_answer, bin), as a tuple unpacks
        return iter((self.prompt, self.context_answer, self.memorised_answer, self.bin))


_ATTRIBUTE_VALUES = {
    "town": VILLAGES,
    "job": ROSTER_JOBS,
    "pet": tuple(ANIMALS),
    "food": FOODS,
    "thing": ROSTER_THINGS,
}


def counterfactuals(
    seed: int, n: int | None = None, exposure_bins: Sequence[int] | None = None, level: int = 1, *,
    data_seed: int,
) -> Iterator[Counterfactual]:
    """Counterfactual contexts about the roster people of data seed `data_seed` (the run's
    data.seed: it deals the roster into exposure bins, `exposure_roster`): the bins in turn, and
    within a bin its people in turn (so n = k x bins x PEOPLE_PER_BIN gives every bin and every
    person k prompts), then an attribute drawn at random; the context states another value of it
    (`level` sentences, the others true facts of the same person or a fresh person's). n items, or
    endless (None). `seed` draws the stream (its own: a salted seed), and no training text holds a
    context about a roster person."""
    if level not in CONTEXT_LEVELS:
        raise ConfigError(f"level: expected one of {', '.join(map(str, CONTEXT_LEVELS))}, got {level!r}")
    by_bin = people_by_bin(exposure_bins, seed=data_seed)
    bins = tuple(by_bin)
    salted = hashlib.sha256(f"lamina.world.counterfactuals/{_rng_seed(seed)}".encode()).digest()
    rng = random.Random(int.from_bytes(salted[:8], "little"))
    count = itertools.count() if n is None else range(n)
    for i in count:
        b = bins[i % len(bins)]
        person = by_bin[b][(i // len(bins)) % len(by_bin[b])]
        attribute = rng.choice(ATTRIBUTES)
        value = rng.choice([v for v in _ATTRIBUTE_VALUES[attribute] if v != getattr(person, attribute)])
        other = _fresh_person(rng) if level >= 2 and rng.random() < 0.5 else None
        document = _context_document(rng, person, other, attribute, level, {attribute: value})
        question, memorised = _attribute_question(person, attribute)
        yield Counterfactual(document.prompt, document.answer, memorised, b, person.name, attribute,
                             document.consistent_prompt, f"Q: {question} A:")


# ---------------------------------------------------------------------------------------------
# The catalog of example kinds, and the stream


@dataclass(frozen=True)
class _Kind:
    """One (family, task[, level]) the stream can draw from; `make` writes one example of it."""

    family: str
    task: str
    level: int | None  # arith: the level the `levels` filter selects on; None elsewhere
    make: Callable[[random.Random], Example]


def _prose_kind(task: str, level: int, write: Callable[[random.Random], str]) -> _Kind:
    return _Kind("prose", task, None, lambda rng: Example(write(rng), "prose", task, level))


def _arith_kind(level: int, task: str) -> _Kind:
    def make(rng: random.Random) -> Example:
        return Example(arith_example(rng, level, task), "arith", task, level)

    return _Kind("arith", task, level, make)


def _string_kind(task: str) -> _Kind:
    def make(rng: random.Random) -> Example:
        text, level = string_example(rng, task)
        return Example(text, "strings", task, level)

    return _Kind("strings", task, None, make)


# Prose levels count the facts chained to write the text (stories chain town, neighbour, host).
CATALOG: tuple[_Kind, ...] = (
    _prose_kind("fact", 1, prose_fact),
    _prose_kind("question", 1, prose_question_one_hop),
    _prose_kind("question", 2, prose_question_two_hop),
    _prose_kind("story", 2, prose_story),
    *(_arith_kind(level, task) for level, tasks in ARITH_PROBLEMS.items() for task in tasks),
    *(_string_kind(task) for task in STRING_TASKS),
)
# The people family's kinds depend on data.exposure_bins: built by _select_kinds, between these.
CONTEXT_CATALOG: tuple[_Kind, ...] = tuple(
    _context_kind(task, level) for task in CONTEXT_TASKS for level in CONTEXT_LEVELS
)


def _as_tuple(value) -> tuple:
    # A bare name is a common slip for a one-element list ("prose" is a Sequence of letters).
    return (value,) if isinstance(value, (str, int)) else tuple(value)


def _unknown(key: str, what: str, value, valid: Sequence) -> ConfigError:
    expected = ", ".join(map(str, valid))
    return ConfigError(f"data.{key}: unknown {what} {value!r} (expected one of: {expected})")


def check_level_weights(level_weights) -> str:
    if level_weights not in LEVEL_WEIGHTS:
        raise ConfigError(f"data.level_weights: expected one of {', '.join(LEVEL_WEIGHTS)}, got {level_weights!r}")
    return level_weights


def check_family_weights(family_weights, families: Sequence[str]) -> dict[str, int] | None:
    """`data.family_weights` as {family: integer weight} (None: every family alike). Integers, so
    that a stream is the same on every machine; a family it does not name weighs 1."""
    if family_weights is None:
        return None
    try:  # a mapping, or the (family, weight) pairs a Source keeps
        weights = dict(family_weights)
    except (TypeError, ValueError):
        raise ConfigError(
            f"data.family_weights: expected a mapping of family to integer weight, got {family_weights!r}"
        ) from None
    for family, weight in weights.items():
        if family not in families:
            raise _unknown("family_weights", "family (not in data.families)", family, families)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ConfigError(f"data.family_weights.{family}: expected an integer >= 0, got {weight!r}")
    if not any(weights.get(f, 1) for f in families):
        raise ConfigError("data.family_weights: every family weighs 0 (expected at least one above 0)")
    return weights


def _select_kinds(families, levels, tasks, exposure_bins=None, seed: int = 0) -> dict[str, list[_Kind]]:
    """Validate the filters and return the kinds each selected family draws from (the people
    family's about data seed `seed`'s roster: `exposure_roster`)."""
    families = _as_tuple(families)
    if not families:
        raise ConfigError(f"data.families: empty (expected some of: {', '.join(ALL_FAMILIES)})")
    for family in families:
        if family not in ALL_FAMILIES:
            raise _unknown("families", "family", family, ALL_FAMILIES)
    if levels is not None:
        levels = _as_tuple(levels)
        if not levels:
            raise ConfigError(f"data.levels: empty (expected some of: {', '.join(map(str, ARITH_LEVELS))})")
        for level in levels:
            if isinstance(level, bool) or level not in ARITH_LEVELS:
                raise _unknown("levels", "level", level, ARITH_LEVELS)
    if tasks is not None:
        tasks = _as_tuple(tasks)
        valid = [t for f in ALL_FAMILIES if f in families for t in TASKS_BY_FAMILY[f]]
        if not tasks:
            raise ConfigError(f"data.tasks: empty (expected some of: {', '.join(valid)})")
        for task in tasks:
            if task not in valid:
                raise _unknown("tasks", "task", task, valid)
    people: list[_Kind] = []
    if "people" in families:
        roster = exposure_roster(exposure_bins, seed=seed)
        people = _people_kinds(_weighted_pick([p for _, p in roster], [b for b, _ in roster]))
    elif exposure_bins is not None:
        check_exposure_bins(exposure_bins)
        raise ConfigError(
            "data.exposure_bins: applies to the people family, which data.families does not train "
            "(add people to data.families, or set data.exposure_bins to null)"
        )

    selected: dict[str, list[_Kind]] = {}
    # Catalog order, so the order the filters were given in does not matter.
    for kind in (*CATALOG, *people, *CONTEXT_CATALOG):
        if kind.family not in families or (tasks is not None and kind.task not in tasks):
            continue
        if levels is not None and kind.level is not None and kind.level not in levels:
            continue
        selected.setdefault(kind.family, []).append(kind)
    if not selected:  # only arith tasks can all miss: e.g. mul at level 1
        first = {t: min(lv for lv, ts in ARITH_PROBLEMS.items() if t in ts) for t in ARITH_TASKS}
        raise ConfigError(
            f"data.levels: no task of {', '.join(tasks)} exists at levels {', '.join(map(str, levels))} "
            f"(first level of each task: {', '.join(f'{t} {lv}' for t, lv in first.items())})"
        )
    return selected


def trained_families(
    families: Sequence[str] = FAMILIES,
    levels: Sequence[int] | None = None,
    tasks: Sequence[str] | None = None,
    exposure_bins: Sequence[int] | None = None,
) -> tuple[str, ...]:
    """The families `generate` really draws from with these filters (a tasks filter can leave a
    family nothing to draw), in ALL_FAMILIES order."""
    return tuple(_select_kinds(families, levels, tasks, exposure_bins))  # (which people: no matter here)


def _rng_seed(seed: int) -> int:
    # random.Random(n) seeds with abs(n), so -1 and 1 would give the same stream: zigzag instead.
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    return 2 * seed if seed >= 0 else -2 * seed - 1


def generate(
    seed: int,
    families: Sequence[str] = FAMILIES,
    levels: Sequence[int] | None = None,
    tasks: Sequence[str] | None = None,
    *,
    level_weights: str = "by_kind",
    exposure_bins: Sequence[int] | None = None,
    family_weights: Mapping[str, int] | Sequence[tuple[str, int]] | None = None,
    roster_seed: int | None = None,
) -> Iterator[Example]:
    """Endless stream of examples, deterministic in all arguments.

    Each example picks a family among the selected ones (uniformly, or in proportion to
    `family_weights`, integers; a family not named weighs 1, one at 0 is not drawn), then a kind within it:
    `level_weights="by_kind"` (the default, the corpus's original bytes) draws every kind (task,
    and level for arith) uniformly, so arithmetic level 1 (one task) is rarer than level 3 (four);
    `"equal"` draws an arithmetic level uniformly, then a task of that level. `levels` restricts
    arith difficulty levels (None: all), `tasks` restricts tasks (None: all); families left with
    no task drop out. `exposure_bins` sets the relative mentions of the people family's roster
    (None: DEFAULT_EXPOSURE_BINS; only with the people family); `roster_seed` deals the roster into
    those bins (`exposure_roster(exposure_bins, seed=roster_seed)`; None: `seed`, as training's
    stream, whose seed is data.seed; a probe's stream of another seed passes the run's data.seed, so
    that its people are the run's). Bad names raise ConfigError here, not at the first next().
    """
    check_level_weights(level_weights)
    roster_seed = seed if roster_seed is None else roster_seed
    kinds_by_family = _select_kinds(families, levels, tasks, exposure_bins, roster_seed)
    weights = check_family_weights(family_weights, _as_tuple(families))
    rng = random.Random(_rng_seed(seed))
    # "equal": kinds grouped by level, for the families whose kinds have levels (arith).
    by_level = {
        family: {lv: [k for k in kinds if k.level == lv] for lv in dict.fromkeys(k.level for k in kinds)}
        for family, kinds in kinds_by_family.items()
        if level_weights == "equal" and all(k.level is not None for k in kinds)
    }

    family_names = list(kinds_by_family)
    if weights is None:
        pick_family = rng.choice  # unweighted: the corpus's original bytes
    else:
        # One integer draw over the cumulative weights: the same stream on every machine.
        cumulative = list(itertools.accumulate(weights.get(f, 1) for f in family_names))
        if cumulative[-1] == 0:
            raise ConfigError(f"data.family_weights: every family left to draw ({', '.join(family_names)}) weighs 0")

        def pick_family(names: list[str]) -> str:
            return names[bisect.bisect_right(cumulative, rng.randrange(cumulative[-1]))]

    def stream() -> Iterator[Example]:
        while True:
            family = pick_family(family_names)
            if family in by_level:
                kinds = by_level[family][rng.choice(tuple(by_level[family]))]
            else:
                kinds = kinds_by_family[family]
            yield rng.choice(kinds).make(rng)

    return stream()


def sample_text(seed: int, n_bytes: int, families: Sequence[str] = FAMILIES, **filters) -> str:
    """Concatenated example texts until at least n_bytes (UTF-8); for tests and tokenizer samples."""
    parts, size = [], 0
    examples = generate(seed, families, **filters)
    while size < n_bytes:
        text = next(examples).text
        parts.append(text)
        size += len(text.encode("utf-8"))
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Labels per token: what each stretch of an example's text is (for linear probes of the layers)

# Tiers (DESIGN.md, hierarchy): conceptual (entity, attribute, town), functional (operator,
# carry, task), lexical (digit), output (answer).
LABEL_KINDS: tuple[str, ...] = ("entity", "attribute", "town", "operator", "digit", "carry", "task", "answer")
# For every kind but these, text[start:end] == value. A carry span is a column's work
# ("7+8=15", "2-8 borrow 12-8=4"); its value is the carry (or borrow) that column passes on.
NON_VALUE_KINDS: frozenset[str] = frozenset({"carry"})


class Span(NamedTuple):
    start: int  # byte offsets into text.encode("utf-8") (world text is ASCII: also str indices)
    end: int
    kind: str  # one of LABEL_KINDS
    value: str


@dataclass(frozen=True)
class LabelledExample:
    text: str
    spans: tuple[Span, ...]  # sorted by (start, end, kind)
    family: str
    task: str
    level: int


def _vocabulary() -> dict[str, str]:
    """word -> label kind, for the prose-like families (prose, people, context)."""
    kinds = {name: "entity" for name in (*(p.name for p in PEOPLE), *_NAMES)}
    kinds.update({town: "town" for town in TOWNS + VILLAGES})
    attributes = {*ROSTER_JOBS, *ROSTER_THINGS, *FOODS}
    for p in PEOPLE:
        attributes |= {p.job, p.pet, p.thing}
    for animal, (food, colour) in ANIMALS.items():
        attributes |= {animal, food, colour}
    kinds.update({word: "attribute" for word in attributes})
    return kinds


_VOCABULARY = _vocabulary()
_WORD_RE = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, _VOCABULARY), key=len, reverse=True)) + r")\b")
_ADD_COLUMN_RE = re.compile(r"(?<![\d*])(\d(?:\+\d)+)=(\d+)")  # single-digit terms: a column, not "141+940"
_SUB_COLUMN_RE = re.compile(r"(?<!\d)\d(?:-\d)+( borrow \d+(?:-\d)+)?=\d+")
_MUL_COLUMN_RE = re.compile(r"(?<!\d)\d\*\d(?:\+\d)?=(\d+)")  # one digit of a by a one-digit b


def _answer_span(text: str, family: str) -> tuple[int, int] | None:
    pattern = {
        "arith": r" A: (\d+)\n$",
        "strings": r" -> ([a-z]+)\n$",
        "context": r" A: ([^\n]+)\n$",
    }.get(family, r" A: ([^\n]+?)\.\n$")
    m = re.search(pattern, text)
    return m.span(1) if m else None


def _char_spans(text: str, family: str) -> list[tuple[int, int, str, str]]:
    spans = []
    if family in ("prose", "people", "context"):
        spans += [(m.start(), m.end(), _VOCABULARY[m[0]], m[0]) for m in _WORD_RE.finditer(text)]
    elif family == "arith":
        spans += [(m.start(), m.end(), "digit", m[0]) for m in re.finditer(r"\d", text)]
        spans += [(m.start(), m.end(), "operator", m[0]) for m in re.finditer(r"[+*-]", text)]
        lo, hi = text.find(THINK_OPEN), text.find(THINK_CLOSE)
        think = text[lo:hi]
        for m in _ADD_COLUMN_RE.finditer(think):
            spans.append((lo + m.start(), lo + m.end(), "carry", str(int(m[2]) // 10)))
        for m in _SUB_COLUMN_RE.finditer(think):
            spans.append((lo + m.start(), lo + m.end(), "carry", "1" if m[1] else "0"))
        for m in _MUL_COLUMN_RE.finditer(think):
            spans.append((lo + m.start(), lo + m.end(), "carry", str(int(m[1]) // 10)))
    elif family == "strings":
        m = re.match(r"([a-z+]+): ", text)
        if m:
            spans.append((m.start(1), m.end(1), "task", m[1]))
    answer = _answer_span(text, family)
    if answer is not None:
        spans.append((*answer, "answer", text[answer[0] : answer[1]]))
    return spans


def annotate(example: Example) -> LabelledExample:
    """The example with its label spans (byte offsets; see LABEL_KINDS)."""
    text = example.text
    spans = _char_spans(text, example.family)
    if not text.isascii():  # world text is ASCII; byte offsets for anything else
        to_byte = [0]
        for ch in text:
            to_byte.append(to_byte[-1] + len(ch.encode("utf-8")))
        spans = [(to_byte[s], to_byte[e], k, v) for s, e, k, v in spans]
    order = {kind: i for i, kind in enumerate(LABEL_KINDS)}
    spans.sort(key=lambda s: (s[0], s[1], order[s[2]]))
    return LabelledExample(text, tuple(Span(*s) for s in spans), example.family, example.task, example.level)


def labelled_examples(
    seed: int,
    n: int,
    families: Sequence[str] = ALL_FAMILIES,
    levels: Sequence[int] | None = None,
    tasks: Sequence[str] | None = None,
    *,
    level_weights: str = "by_kind",
    exposure_bins: Sequence[int] | None = None,
    roster_seed: int | None = None,
) -> list[LabelledExample]:
    """The first n examples of `generate(seed, ...)` (pick a seed other than training's, e.g.
    `lamina.probes.world_seed`, and pass the run's data.seed as `roster_seed`, so that its people
    are the run's), each with its label spans."""
    stream = generate(seed, families, levels, tasks, level_weights=level_weights, exposure_bins=exposure_bins,
                      roster_seed=roster_seed)
    return [annotate(example) for example in itertools.islice(stream, n)]


@dataclass(frozen=True)
class TokenLabels:
    """One example's tokens and a label per token for each kind: `labels[kind][t]` indexes
    `classes[kind]`, -1 where token t is in no span of that kind. Token t stands for bytes
    `starts[t]:ends[t]` of the text; it carries a span's label when it overlaps the span (with
    several spans of one kind, the last of them)."""

    ids: np.ndarray  # int64 [T]
    starts: np.ndarray  # int64 [T]
    ends: np.ndarray  # int64 [T]
    labels: dict[str, np.ndarray]  # kind -> int64 [T]
    classes: dict[str, tuple[str, ...]]


def label_classes(examples: Iterable[LabelledExample]) -> dict[str, tuple[str, ...]]:
    """The values each kind takes in `examples`, sorted: the class ids of token_labels."""
    values: dict[str, set[str]] = {kind: set() for kind in LABEL_KINDS}
    for example in examples:
        for span in example.spans:
            values[span.kind].add(span.value)
    return {kind: tuple(sorted(v)) for kind, v in values.items()}


def token_labels(
    examples: Sequence[LabelledExample], tokenizer, classes: dict[str, Sequence[str]] | None = None
) -> list[TokenLabels]:
    """Each example tokenised (no special tokens added; `<think>` is one token) with its label
    arrays. `tokenizer`: a Hugging Face `tokenizers.Tokenizer` (lamina's byte or BPE tokenizer).
    `classes` (kind -> values) fixes the class ids; None: label_classes(examples)."""
    from lamina.data.tokenizer import token_byte_lengths  # here: the tokenizer module imports sources

    classes = {k: tuple(v) for k, v in (classes or label_classes(examples)).items()}
    index = {kind: {value: i for i, value in enumerate(values)} for kind, values in classes.items()}
    lengths = token_byte_lengths(tokenizer)
    encodings = tokenizer.encode_batch([e.text for e in examples], add_special_tokens=False)
    out = []
    for example, encoding in zip(examples, encodings):
        ids = np.asarray(encoding.ids, dtype=np.int64)
        ends = np.cumsum(lengths[ids]) if len(ids) else np.zeros(0, dtype=np.int64)
        starts = ends - lengths[ids]
        if (ends[-1] if len(ids) else 0) != len(example.text.encode("utf-8")):
            raise ValueError("token_labels: the tokenizer does not give back the text's bytes")
        labels = {kind: np.full(len(ids), -1, dtype=np.int64) for kind in classes}
        for span in example.spans:
            if span.value not in index[span.kind]:
                raise ValueError(f"token_labels: classes[{span.kind!r}] lacks the value {span.value!r}")
            first = int(np.searchsorted(ends, span.start, side="right"))
            last = int(np.searchsorted(starts, span.end, side="left"))
            labels[span.kind][first:last] = index[span.kind][span.value]
        out.append(TokenLabels(ids, starts, ends, labels, classes))
    return out


__all__ = [
    "ALL_FAMILIES",
    "ARITH_LEVELS",
    "ARITH_TASKS",
    "ATTRIBUTES",
    "CONTEXT_LEVELS",
    "CONTEXT_TASKS",
    "DEFAULT_EXPOSURE_BINS",
    "FAMILIES",
    "LABEL_KINDS",
    "LEVEL_WEIGHTS",
    "NOVEL_PEOPLE",
    "PEOPLE_TASKS",
    "PROSE_TASKS",
    "ROSTER",
    "STRING_LEVELS",
    "STRING_TASKS",
    "TASKS_BY_FAMILY",
    "V2_FAMILIES",
    "Counterfactual",
    "Example",
    "LabelledExample",
    "Span",
    "TokenLabels",
    "annotate",
    "apply_string_task",
    "counterfactuals",
    "exposure_roster",
    "generate",
    "label_classes",
    "labelled_examples",
    "novel_people",
    "people_by_bin",
    "people_examples",
    "sample_text",
    "token_labels",
    "trained_families",
]
