"""The built-in corpus: determinism, filters, and the correctness of every answer it states."""

import hashlib
import itertools
import os
import re
import subprocess
import sys

import pytest

from lamina.data import world
from lamina.data.world import (
    ARITH_LEVELS,
    FAMILIES,
    STRING_TASKS,
    TASKS_BY_FAMILY,
    Example,
    generate,
    sample_text,
)
from lamina.errors import ConfigError

# sha256 of sample_text(0, 50_000). A change to the generator that changes the bytes must update
# this on purpose: cached token shards, probe sets and run comparisons all depend on these bytes.
DIGEST_SEED0_50K = "c7ce89cd5fc2fd3d993a935d864df519866a4527738163c47086a70684128446"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def take(n: int, **kwargs) -> list[Example]:
    return list(itertools.islice(generate(kwargs.pop("seed", 0), **kwargs), n))


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_recorded_digest():
    first, second = sample_text(0, 50_000), sample_text(0, 50_000)
    assert first == second
    assert digest(first) == DIGEST_SEED0_50K


def test_deterministic_across_processes():
    # world.py loaded alone: the package would import torch and Lightning (most of a minute on a
    # loaded machine) for nothing the corpus uses.
    code = (
        "import hashlib, importlib.util, sys; "
        "spec = importlib.util.spec_from_file_location('lamina.data.world', sys.argv[1]); "
        "world = sys.modules[spec.name] = importlib.util.module_from_spec(spec); spec.loader.exec_module(world); "
        "print(hashlib.sha256(world.sample_text(0, 50_000).encode()).hexdigest())"
    )
    for hash_seed in ("1", "12345"):  # str hashing is salted by this; the corpus must not care
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        cmd = [sys.executable, "-c", code, world.__file__]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == DIGEST_SEED0_50K


def test_different_seeds_differ():
    # -1 and 1 included: random.Random(n) seeds with abs(n), the generator must not.
    texts = [sample_text(seed, 5_000) for seed in (0, 1, -1, 2, 10**12)]
    assert len(set(texts)) == len(texts)


def test_deterministic_in_filters_and_order_insensitive():
    kwargs = dict(families=("arith", "strings"), levels=(2, 3), tasks=("add", "mul", "reverse"))
    assert take(300, seed=5, **kwargs) == take(300, seed=5, **kwargs)
    reordered = dict(families=("strings", "arith"), levels=(3, 2), tasks=("reverse", "mul", "add"))
    assert take(300, seed=5, **reordered) == take(300, seed=5, **kwargs)


def test_facts_are_the_same_for_every_seed():
    """The seed picks sentences, never the world: a question has one answer across seeds."""
    answers: dict[str, str] = {}
    for seed in range(4):
        for ex in take(1_500, seed=seed, families=("prose",), tasks=("question",)):
            question, answer = ex.text.split(" A: ")
            question = question.split(" <think>")[0]
            assert answers.setdefault(question, answer) == answer
    assert len(answers) > 100  # many distinct questions, so the check above has teeth


# --- shape of the stream ------------------------------------------------------------------------


def test_stream_is_endless_and_well_formed():
    examples = take(10_000, seed=3)
    assert len(examples) == 10_000
    for ex in examples:
        assert ex.text.endswith("\n") and "\n" not in ex.text[:-1]
        assert "<|endoftext|>" not in ex.text
        assert ex.text.isascii()
        assert 10 <= len(ex.text) <= 256
        assert ex.family in FAMILIES
        assert ex.task in TASKS_BY_FAMILY[ex.family]
    seen = {(ex.family, ex.task) for ex in examples}
    assert seen == {(f, t) for f in FAMILIES for t in TASKS_BY_FAMILY[f]}  # every task occurs
    assert {ex.level for ex in examples if ex.family == "arith"} == set(ARITH_LEVELS)


def test_sample_text_reaches_n_bytes():
    text = sample_text(7, 1_000)
    assert 1_000 <= len(text.encode()) < 1_000 + 300
    assert sample_text(7, 0) == ""
    assert sample_text(7, 2_000, families=("strings",), tasks=("sort",)).startswith("sort: ")


# --- filters and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_family_filter(family):
    assert {ex.family for ex in take(300, families=(family,))} == {family}


def test_level_and_task_filters():
    examples = take(500, families=("arith",), levels=(2, 4))
    assert {ex.level for ex in examples} == {2, 4}
    examples = take(500, tasks=("reverse", "add", "story"))
    expected = {("strings", "reverse"), ("arith", "add"), ("prose", "story")}
    assert {(ex.family, ex.task) for ex in examples} == expected
    # levels restrict arith only; other families pass through unchanged
    examples = take(500, families=("arith", "strings"), levels=(1,))
    assert {ex.family for ex in examples} == {"arith", "strings"}
    assert {(ex.task, ex.level) for ex in examples if ex.family == "arith"} == {("add", 1)}


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        (dict(families=("prose", "poetry")), "'poetry'"),
        (dict(levels=(1, 9)), "9"),
        (dict(tasks=("juggle",)), "'juggle'"),
        (dict(families=("prose",), tasks=("add",)), "'add'"),  # a task of a family not selected
        (dict(families=()), "empty"),
        (dict(tasks=("mul",), levels=(1,)), "mul"),  # valid names, but nothing to generate
    ],
)
def test_bad_filters_raise_config_error_at_call_time(kwargs, bad):
    with pytest.raises(ConfigError) as info:
        generate(0, **kwargs)  # no next(): bad config fails where it is given
    message = str(info.value)
    assert bad in message and "\n" not in message


def test_unknown_family_message_lists_valid_ones():
    message = r"^data\.families: unknown family 'poetry' \(expected one of: prose, arith, strings, people, context\)$"
    with pytest.raises(ConfigError, match=message):
        generate(0, families=("poetry",))
    with pytest.raises(ConfigError, match=r"expected one of: 1, 2, 3, 4, 5"):
        sample_text(0, 10, levels=(0,))


# --- arithmetic: answers and worked steps -------------------------------------------------------

ARITH_RE = re.compile(r"^Q: ([0-9+*-]+)=\? <think> (.*) </think> A: (\d+)\n$")
SECTION_HEADER_RE = re.compile(r"(\d+[+*-]\d+): ")


def column_value(steps: list[str]) -> int:
    """Rebuild a column computation's result from its steps, the way a pupil reads them."""
    digits = []
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if m := re.fullmatch(r"bring down (\d)", step):
            digits.append(m[1])
        elif m := re.fullmatch(r"[\d+*-]+=(\d+), write (\d) carry (\d)", step):
            assert int(m[1]) == 10 * int(m[3]) + int(m[2])
            digits.append(m[2])
        elif m := re.fullmatch(r"[\d-]+ borrow ([\d-]+)=(\d)", step):
            digits.append(m[2])
        elif m := re.fullmatch(r"[\d+*-]+=(\d+)", step):
            assert last or len(m[1]) == 1, step  # only the last column writes more than a digit
            digits.append(m[1])
        else:
            raise AssertionError(f"unparsable step {step!r}")
    return int("".join(reversed(digits)))


def check_equations(think: str) -> None:
    """Every `lhs=rhs` stated in the thought is true."""
    equations = re.findall(r"([\d+*-]+)=(\d+)", think)
    assert equations
    for lhs, rhs in equations:
        assert eval(lhs) == int(rhs), (lhs, rhs, think)


def section_value(header: str, body: str) -> int:
    """The result of one operation `header` (e.g. "47*23") as its worked steps `body` give it."""
    steps = body.rstrip(".").split(". ")
    if re.fullmatch(r"\d+\*\d\d+", header):  # long multiplication: partial products, then their sum
        partials = [int(s.split("=")[1]) for s in steps[:-1]]
        total_lhs, total = steps[-1].split("=")
        assert [int(x) for x in total_lhs.split("+")] == partials
        return int(total)
    return column_value(steps)


@pytest.mark.parametrize("level", ARITH_LEVELS)
def test_arith_answers_and_steps_are_correct(level):
    examples = take(400, seed=level, families=("arith",), levels=(level,))
    assert {ex.level for ex in examples} == {level}
    assert {ex.task for ex in examples} == set(world.ARITH_PROBLEMS[level])
    for ex in examples:
        m = ARITH_RE.match(ex.text)
        assert m, ex.text
        expr, think, answer = m[1], m[2], int(m[3])
        assert eval(expr) == answer  # +, - and * only; left to right is Python's order here
        check_equations(think)
        # the steps themselves must lead to the answer, op by op
        parts = SECTION_HEADER_RE.split(think)
        if len(parts) == 1:  # one operator: no section headers
            assert section_value(expr, think) == answer, ex.text
            continue
        assert parts[0] == ""
        previous = None
        for header, body in zip(parts[1::2], parts[2::2]):
            body = body.strip()
            left = int(re.match(r"\d+", header)[0])
            if previous is not None:
                assert left == previous, ex.text  # each op starts from the last result
            previous = section_value(header, body)
            assert previous == eval(header), ex.text
        assert previous == answer


def test_arith_level_one_is_single_digit_addition():
    for ex in take(200, families=("arith",), levels=(1,)):
        assert re.fullmatch(r"Q: (\d)\+(\d)=\? <think> \1\+\2=\d+\. </think> A: \d+\n", ex.text), ex.text


def test_arith_matches_the_documented_example_shape():
    assert world.add_steps(47, 38) == ["7+8=15, write 5 carry 1", "4+3+1=8"]
    assert world.sub_steps(52, 38) == ["2-8 borrow 12-8=4", "5-1-3=1"]
    assert world.mul_steps(47, 8) == ["7*8=56, write 6 carry 5", "4*8+5=37"]
    assert world.mul_steps(47, 23) == ["47*3=141", "47*20=940", "141+940=1081"]


# --- strings --------------------------------------------------------------------------------


def reference_string_task(task: str, s: str) -> str:
    """Independent of the module: each base op written out again."""
    for op in task.split("+"):
        if op == "reverse":
            s = s[::-1]
        elif op == "sort":
            s = "".join(sorted(s))
        elif op == "shift":
            s = "".join(chr((ord(c) - ord("a") + 1) % 26 + ord("a")) for c in s)
        elif op == "rotate":
            s = s[1:] + s[0]
        else:
            assert op == "copy"
    return s


@pytest.mark.parametrize("task", STRING_TASKS)
def test_string_answers_are_correct(task):
    examples = take(200, seed=11, families=("strings",), tasks=(task,))
    for ex in examples:
        m = re.fullmatch(r"([a-z+]+): ([a-z]+) -> ([a-z]+)\n", ex.text)
        assert m and m[1] == task == ex.task, ex.text
        assert m[3] == reference_string_task(task, m[2]), ex.text
        assert 2 * ex.level + 1 <= len(m[2]) <= 2 * ex.level + 2  # level is the length bucket
    assert {ex.level for ex in examples} == set(world.STRING_LEVELS)


def test_string_compositions_are_distinct_tasks():
    """No composition is another task under a second name (checked on one long string)."""
    probe = "thequickbrownfoxjumps"
    outputs = [reference_string_task(task, probe) for task in STRING_TASKS]
    assert len(set(outputs)) == len(STRING_TASKS)


# --- prose ------------------------------------------------------------------------------------


def test_prose_is_consistent_with_the_world():
    by_name = {p.name: p for p in world.PEOPLE}
    checked = 0
    for ex in take(2_000, seed=2, families=("prose",)):
        claims = re.findall(r"Q: Where does (\w+) live\? A: (\w+)\.", ex.text)
        claims += re.findall(r"(\w+) walked \w+, back to (\w+)\.", ex.text)
        claims += re.findall(r"(\w+) (?:lives in|is from) (\w+)\.", ex.text)
        for name, town in claims:
            if name in by_name:  # not "He lives in Osk."
                assert by_name[name].town == town, ex.text
                checked += 1
        for direction, town, answer in re.findall(r"What is (\w+) of (\w+)\? A: (\w+)\.", ex.text):
            assert world.neighbour(town, direction) == answer, ex.text
            checked += 1
        if ex.level == 2 and ex.task == "question":
            assert "<think> " in ex.text and " </think> A: " in ex.text
    assert checked > 200
    # every town has residents, so every story and "Who lives in" question has an answer
    assert all(world.RESIDENTS[town] for town in world.TOWNS)
