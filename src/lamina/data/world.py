"""The built-in corpus: an endless, seeded, offline "world" text in three families (domains).

- prose: facts, questions and short stories about a small FIXED world (16 people, 12 towns on a
  grid, 10 animals). The world is the same for every seed; the seed only picks which sentences are
  sampled, so facts recur and a tiny GPT can memorise them. Two-hop questions reason in
  `<think> ... </think>` before answering.
- arith: `Q: 47+38=? <think> 7+8=15, write 5 carry 1. 4+3+1=8. </think> A: 85` with column-by-column
  worked steps, at difficulty levels 1-5 (more digits, more operands, then sub / mul / mixed).
- strings: `reverse: kqzf -> fzqk`, base tasks and their compositions, tagged by task so that
  probes can ablate them one by one.

Every example is tagged (family, task, level): a run trained on some families or levels has the
others as out-of-distribution and harder probes. Only the standard library's `random.Random` is
used (never the global RNG, never `hash()` of a str), so a seed gives the same bytes on every
machine, process and Python >= 3.10.
"""

from __future__ import annotations

import random
import types
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from lamina.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Public names

FAMILIES: tuple[str, ...] = ("prose", "arith", "strings")
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
TASKS_BY_FAMILY = types.MappingProxyType(
    {"prose": PROSE_TASKS, "arith": ARITH_TASKS, "strings": STRING_TASKS}
)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Example:
    text: str  # one document, ends with "\n"; the packer adds the separators
    family: str  # one of FAMILIES
    task: str  # one of TASKS_BY_FAMILY[family]
    level: int  # arith: ARITH_LEVELS; strings: STRING_LEVELS; prose: facts chained (1 or 2)


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


def _as_tuple(value) -> tuple:
    # A bare name is a common slip for a one-element list ("prose" is a Sequence of letters).
    return (value,) if isinstance(value, (str, int)) else tuple(value)


def _unknown(key: str, what: str, value, valid: Sequence) -> ConfigError:
    expected = ", ".join(map(str, valid))
    return ConfigError(f"data.{key}: unknown {what} {value!r} (expected one of: {expected})")


def _select_kinds(families, levels, tasks) -> dict[str, list[_Kind]]:
    """Validate the filters and return the kinds each selected family draws from."""
    families = _as_tuple(families)
    if not families:
        raise ConfigError(f"data.families: empty (expected some of: {', '.join(FAMILIES)})")
    for family in families:
        if family not in FAMILIES:
            raise _unknown("families", "family", family, FAMILIES)
    if levels is not None:
        levels = _as_tuple(levels)
        if not levels:
            raise ConfigError(f"data.levels: empty (expected some of: {', '.join(map(str, ARITH_LEVELS))})")
        for level in levels:
            if isinstance(level, bool) or level not in ARITH_LEVELS:
                raise _unknown("levels", "level", level, ARITH_LEVELS)
    if tasks is not None:
        tasks = _as_tuple(tasks)
        valid = [t for f in FAMILIES if f in families for t in TASKS_BY_FAMILY[f]]
        if not tasks:
            raise ConfigError(f"data.tasks: empty (expected some of: {', '.join(valid)})")
        for task in tasks:
            if task not in valid:
                raise _unknown("tasks", "task", task, valid)

    selected: dict[str, list[_Kind]] = {}
    for kind in CATALOG:  # catalog order, so the order the filters were given in does not matter
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
) -> Iterator[Example]:
    """Endless stream of examples, deterministic in all arguments.

    Each example picks a family uniformly among the selected ones, then a kind (task, and level for
    arith) uniformly within it. `levels` restricts arith difficulty levels (None: all), `tasks`
    restricts tasks (None: all); families left with no task drop out. Bad names raise ConfigError
    here, not at the first next().
    """
    kinds_by_family = _select_kinds(families, levels, tasks)
    rng = random.Random(_rng_seed(seed))

    def stream() -> Iterator[Example]:
        family_names = list(kinds_by_family)
        while True:
            family = rng.choice(family_names)
            yield rng.choice(kinds_by_family[family]).make(rng)

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


__all__ = [
    "ARITH_LEVELS",
    "ARITH_TASKS",
    "FAMILIES",
    "PROSE_TASKS",
    "STRING_LEVELS",
    "STRING_TASKS",
    "TASKS_BY_FAMILY",
    "Example",
    "apply_string_task",
    "generate",
    "sample_text",
]
