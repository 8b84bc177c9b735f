"""World v2: held-out levels and tasks, level weights, controlled exposure, novel people, the
context family, counterfactual contexts, labels per token, and the probes built on them."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lamina.data import TextDataModule, world
from lamina.data.sources import iter_passages, resolve_source
from lamina.data.tokenizer import byte_tokenizer, train_bpe
from lamina.errors import ConfigError
from lamina.probes import build_probes, labelled_windows

# md5 of sample_text(0, 200_000) before world v2: the default corpus must keep these bytes (the
# demo's losses, cached token shards and run comparisons depend on them).
MD5_SEED0_200K = "6065185a44171d82aad622666645a02d"

V2 = dict(
    families=world.ALL_FAMILIES,
    levels=(1, 2, 3),
    tasks=tuple(t for t in world.TASKS_BY_FAMILY["strings"] if t not in ("sort+reverse", "reverse+rotate"))
    + world.PROSE_TASKS + world.ARITH_TASKS + world.PEOPLE_TASKS + world.CONTEXT_TASKS,
    level_weights="equal",
    exposure_bins=(0, 2, 20, 200),
)


def take(n, seed=0, **kwargs):
    return list(itertools.islice(world.generate(seed, **kwargs), n))


def word_re(words) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b")


def training_texts(n_bytes: int, **options) -> list[str]:
    """The training split's documents, through the same path TextDataModule reads (sources)."""
    families = options.pop("families", None)
    source = resolve_source("world", seed=3, families=families, world_options=options)
    return [p.text for p in iter_passages(source, 0.02, max_bytes=n_bytes) if p.split == "train"]


# --- determinism and the default bytes ----------------------------------------------------------

DIGESTS = """
h = lambda s: hashlib.sha256(s.encode()).hexdigest()
out = {
    "v2": h(world.sample_text(5, 60_000, **V2)),
    "labels": h(repr([(e.text, e.spans) for e in world.labelled_examples(6, 300, **V2)])),
    "counterfactuals": h(repr(list(world.counterfactuals(7, 300, exposure_bins=V2["exposure_bins"], level=3,
                                                          data_seed=5)))),
    "novel": h("".join(e.text for e in itertools.islice(world.people_examples(8, world.NOVEL_PEOPLE), 300))),
    "roster": h(repr((world.exposure_roster(V2["exposure_bins"], seed=5), world.novel_people(seed=5)))),
    "default": hashlib.md5(world.sample_text(0, 200_000).encode()).hexdigest(),
}
"""
# world.py loaded alone (no torch, no Lightning: a fast process), the options on stdin.
IN_A_PROCESS = """
import hashlib, importlib.util, itertools, json, sys
spec = importlib.util.spec_from_file_location("lamina.data.world", sys.argv[1])
world = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = world
spec.loader.exec_module(world)
V2 = json.loads(sys.stdin.read())
""" + DIGESTS + "print(json.dumps(out))"


def test_same_seed_same_bytes_across_processes_with_every_new_key():
    options = json.loads(json.dumps(V2))  # as the other processes read them: lists, not tuples
    here: dict = {"world": world, "V2": options, "hashlib": hashlib, "itertools": itertools}
    exec(DIGESTS, here)
    for hash_seed in ("1", "4242"):  # str hashing is salted by this; the corpus must not care
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        there = subprocess.run(
            [sys.executable, "-c", IN_A_PROCESS, world.__file__], input=json.dumps(V2), env=env,
            capture_output=True, text=True, check=True,
        ).stdout
        assert json.loads(there) == here["out"]
    assert here["out"]["default"] == MD5_SEED0_200K
    assert len(set(here["out"].values())) == 6


def test_default_bytes_are_unchanged_and_new_keys_at_their_defaults_change_nothing():
    default = world.sample_text(0, 200_000)
    assert hashlib.md5(default.encode()).hexdigest() == MD5_SEED0_200K
    explicit = world.sample_text(0, 200_000, families=world.FAMILIES, levels=None, tasks=None,
                                 level_weights="by_kind", exposure_bins=None)
    assert explicit == default
    # "equal" only reweights arithmetic levels: without arith it draws exactly what by_kind draws.
    no_arith = dict(families=("prose", "strings", "people", "context"))
    assert take(2_000, 9, level_weights="equal", **no_arith) == take(2_000, 9, **no_arith)
    assert take(500, 9, **V2) != take(500, 9, **{**V2, "level_weights": "by_kind"})


def test_level_weights():
    n = 20_000
    shares = {}
    for rule in world.LEVEL_WEIGHTS:
        counts = collections.Counter(ex.level for ex in take(n, 2, families=("arith",), level_weights=rule))
        shares[rule] = {k: counts[k] / n for k in world.ARITH_LEVELS}
    # by_kind: 16 kinds alike, level 1 has one of them; equal: a fifth each.
    kinds = {k: len(tasks) for k, tasks in world.ARITH_PROBLEMS.items()}
    for k in world.ARITH_LEVELS:
        for rule, expected in (("by_kind", kinds[k] / sum(kinds.values())), ("equal", 1 / 5)):
            assert abs(shares[rule][k] - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (rule, k)
    # equal with held-out levels: the kept ones alike, tasks alike within a level.
    examples = take(n, 3, families=("arith",), levels=(1, 3), level_weights="equal")
    counts = collections.Counter((ex.level, ex.task) for ex in examples)
    assert abs(sum(c for (lv, _), c in counts.items() if lv == 1) / n - 0.5) < 0.02
    assert abs(counts[(3, "mixed")] / n - 0.125) < 0.01


def test_family_weights_set_each_familys_share_and_unweighted_is_unchanged():
    n, families = 20_000, ("prose", "arith", "strings", "people", "context")
    weights = {"arith": 4, "strings": 2, "prose": 0}  # people and context unnamed: 1 each
    counts = collections.Counter(ex.family for ex in take(n, 2, families=families, family_weights=weights))
    total = 4 + 2 + 0 + 1 + 1
    for family in families:
        expected = {**{"people": 1, "context": 1}, **weights}[family] / total
        assert abs(counts[family] / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-9, family
    assert counts["prose"] == 0
    # Unnamed or absent, the stream is the one without the key; as (family, weight) pairs, the same as a dict.
    assert take(300, 4, families=families, family_weights=None) == take(300, 4, families=families)
    assert take(300, 4, families=families, family_weights=(("arith", 4),)) == take(
        300, 4, families=families, family_weights={"arith": 4})
    # Weights all 1 draw exactly what no weights draw (one randbelow(5) either way).
    assert take(300, 4, families=families, family_weights={"arith": 1}) == take(300, 4, families=families)
    assert take(300, 4, families=families, family_weights={"arith": 2}) != take(300, 4, families=families)


# --- held-out levels and tasks ------------------------------------------------------------------

ARITH_Q = re.compile(r"^Q: ([0-9+*-]+)=\? ")


def arith_level_of(text: str) -> int:
    """The level of an arithmetic problem read from its text alone: the operators and the digits
    of each operand (every level's problem shapes are its own)."""
    expr = ARITH_Q.match(text)[1]
    numbers = re.split(r"[+*-]", expr)
    ops = "".join(re.findall(r"[+*-]", expr))
    task = {"+": "add", "-": "sub", "*": "mul"}.get(ops[0]) if len(set(ops)) == 1 else "mixed"
    shape = tuple(len(x) for x in numbers)
    levels = [lv for lv, tasks in world.ARITH_PROBLEMS.items() if tasks.get(task) == shape]
    assert len(levels) == 1, text
    return levels[0]


def test_arith_level_of_reads_every_level():
    for level in world.ARITH_LEVELS:
        assert {arith_level_of(ex.text) for ex in take(300, level, families=("arith",), levels=(level,))} == {level}


def test_held_out_levels_and_tasks_never_occur_in_training():
    texts = training_texts(1_500_000, **V2)
    arith = [t for t in texts if ARITH_Q.match(t)]
    strings = [m[1] for t in texts if (m := re.match(r"([a-z+]+): [a-z]+ -> ", t))]
    assert len(arith) > 1_000 and len(strings) > 1_000
    assert {arith_level_of(t) for t in arith} == {1, 2, 3}
    assert set(strings) == set(V2["tasks"]) & set(world.STRING_TASKS)  # all kept tasks, no held-out one
    for held_out in ("sort+reverse", "reverse+rotate"):
        assert not any(t.startswith(held_out + ": ") for t in texts)


# --- controlled exposure and novel people ------------------------------------------------------


@pytest.mark.parametrize("bins", [world.DEFAULT_EXPOSURE_BINS, (0, 3, 30)])
def test_exposure_bins_hit_their_relative_counts(bins):
    n = 100_000
    roster = world.exposure_roster(bins, seed=4)  # the roster as take()'s seed deals it
    assert len(roster) == len(bins) * world.PEOPLE_PER_BIN
    names = {p.name: b for b, p in roster}
    finder = word_re(names)
    mentions = collections.Counter()
    for ex in take(n, 4, families=("people",), exposure_bins=bins):
        found = set(finder.findall(ex.text))
        assert len(found) == 1, ex.text  # a people document is about one person
        mentions.update(found)
    per_bin = collections.defaultdict(list)
    for name, b in names.items():
        per_bin[b].append(mentions[name])
    unit = n / (world.PEOPLE_PER_BIN * sum(bins))  # documents per person of bin 1
    measured = {b: float(np.mean(c)) / unit for b, c in per_bin.items()}
    print(f"exposure {bins}: mentions per person / bin-1 expectation: {measured}")
    for b, counts in per_bin.items():
        if b == 0:
            assert max(counts) == 0
        else:
            assert abs(np.mean(counts) / (b * unit) - 1) < 0.10, (b, counts)
            if b >= 10:  # enough mentions for each person alone
                assert all(abs(c / (b * unit) - 1) < 0.10 for c in counts), (b, counts)


def test_the_roster_is_dealt_per_data_seed():
    bins = world.DEFAULT_EXPOSURE_BINS
    assert world.exposure_roster(bins, seed=7) == world.exposure_roster(bins, seed=7)
    names = lambda s: [p.name for p in world.people_by_bin(bins, seed=s)[100]]  # noqa: E731
    assert len({tuple(names(s)) for s in range(1, 9)}) == 8  # a seed's often-seen people are its own
    # Over seeds every roster person is seen often somewhere: no name is tied to a bin.
    often = collections.Counter(n for s in range(200) for n in names(s))
    assert set(often) == {p.name for p in world.ROSTER}
    for seed in range(1, 6):
        novel = world.novel_people(bins, seed=seed)
        assert len(novel) == world.N_NOVEL == len({p.name for p in novel})
        assert not {p.name for p in novel} & {p.name for _, p in world.exposure_roster(bins, seed=seed)}
    assert len({tuple(p.name for p in world.novel_people(bins, seed=s)) for s in range(1, 6)}) == 5
    # With every bin in use there is no roster person left over: the novel people are NOVEL_PEOPLE.
    full = tuple(range(1, world.MAX_EXPOSURE_BINS + 1))
    assert {p.name for p in world.novel_people(full, seed=3)} == {p.name for p in world.NOVEL_PEOPLE}


def test_a_stream_of_another_seed_reads_the_runs_roster():
    # A probe's stream: its own seed draws the documents, roster_seed (the run's data.seed) the people.
    bins = (0, 1, 10, 100)
    names = word_re(p.name for p in world.ROSTER)
    counts = collections.Counter(n for ex in take(3_000, 9, families=("people",), exposure_bins=bins, roster_seed=3)
                                 for n in set(names.findall(ex.text)))
    by_bin = world.people_by_bin(bins, seed=3)
    assert set(counts) == {p.name for b in (1, 10, 100) for p in by_bin[b]}
    assert min(counts[p.name] for p in by_bin[100]) > max(counts[p.name] for p in by_bin[1])
    assert take(200, 9, families=("people",), roster_seed=9) == take(200, 9, families=("people",))  # None: the seed's
    labelled = world.labelled_examples(9, 200, ("people",), roster_seed=3)
    assert {ex.text for ex in labelled} == {ex.text for ex in take(200, 9, families=("people",), roster_seed=3)}


def test_novel_and_unexposed_people_never_occur_in_training():
    bins = (0, 1, 10, 100)
    texts = training_texts(2_000_000, families=world.ALL_FAMILIES, exposure_bins=bins)  # data seed 3
    by_family = collections.Counter()
    in_bins = {p.name for _, p in world.exposure_roster(bins, seed=3)}
    # Never in this seed's text: its novel people, its bin 0, every roster person its bins leave out,
    # and NOVEL_PEOPLE (never in any seed's).
    novel = word_re(p.name for p in world.novel_people(bins, seed=3) + world.NOVEL_PEOPLE)
    unexposed = word_re([p.name for p in world.people_by_bin(bins, seed=3)[0]]
                        + [p.name for p in world.ROSTER if p.name not in in_bins])
    roster = word_re(p.name for p in world.ROSTER)
    for text in texts:
        assert not novel.search(text) and not unexposed.search(text), text
        if text.startswith("Context: "):
            by_family["context"] += 1
            assert not roster.search(text), text  # so no training context is about a roster person
        elif roster.search(text):
            by_family["people"] += 1
    assert by_family["context"] > 1_000 and by_family["people"] > 1_000
    # Rosters and name pools are disjoint, and no name is a word of the first world.
    pools = [[p.name for p in world.NOVEL_PEOPLE], [p.name for p in world.ROSTER], list(world.FRESH_NAMES),
             [p.name for p in world.PEOPLE] + list(world.TOWNS) + list(world.VILLAGES)]
    assert sum(map(len, pools)) == len(set().union(*pools))


def test_novel_people_use_the_same_templates():
    values = {*world.VILLAGES, *world.ROSTER_JOBS, *world.ROSTER_THINGS, *world.FOODS}
    for animal, (food, colour) in world.ANIMALS.items():
        values |= {animal, food, colour}

    def sentence_templates(people, seed) -> set[str]:
        names, out = word_re(p.name for p in people), set()
        for ex in itertools.islice(world.people_examples(seed, people), 3_000):
            text = word_re(values).sub("X", names.sub("NAME", ex.text))
            text = re.sub(r"\b(?:she|he|She|He)\b", "P", re.sub(r"\ban?\b", "A", text))
            out |= set(re.split(r"(?<=[.?]) ", text.strip()))
        return out

    novel, roster = sentence_templates(world.NOVEL_PEOPLE, 1), sentence_templates(world.ROSTER, 2)
    assert len(novel) > 20 and novel == roster


# --- the context family and counterfactuals ----------------------------------------------------

CONTEXT_RE = re.compile(r"^Context: (.+) Q: (.+\?) A: (.+)\n$")
FACT_RE = {
    "town": r"(\w+) (?:lives in|is from) (\w+)",
    "job": r"(\w+) (?:is|works as) an? (\w+)",
    "pet": r"(\w+) (?:has|keeps) an? (\w+)",
    "food": r"(\w+) (?:likes|loves to eat) (\w+)",
    "thing": r"(\w+) (?:owns|carries) an? (\w+)",
}
QUESTION_RE = {
    "town": r"Where does (\w+) live\?",
    "job": r"What does (\w+) do\?",
    "pet": r"What pet does (\w+) have\?",
    "food": r"What does (\w+) like to eat\?",
    "thing": r"What does (\w+) own\?",
}


def read_context(context: str) -> dict[tuple[str, str], str]:
    facts = {}
    for sentence in context.rstrip(".").split(". "):
        matches = [(a, m) for a, rx in FACT_RE.items() if (m := re.fullmatch(rx, sentence))]
        assert len(matches) == 1, sentence
        attribute, m = matches[0]
        assert (m[1], attribute) not in facts  # each fact stated once
        facts[(m[1], attribute)] = m[2]
    return facts


def asked(question: str) -> tuple[str, str]:
    (found,) = [(m[1], a) for a, rx in QUESTION_RE.items() if (m := re.fullmatch(rx, question))]
    return found


def bare(answer: str) -> str:
    return re.sub(r"^an? ", "", answer)


def test_context_answers_are_in_the_context_and_known_people_keep_their_facts():
    by_name = {p.name: p for p in world.PEOPLE}
    levels = collections.Counter()
    for ex in take(4_000, 12, families=("context",)):
        m = CONTEXT_RE.match(ex.text)
        assert m, ex.text
        facts = read_context(m[1])
        assert len(facts) == ex.level
        levels[ex.level] += 1
        name, attribute = asked(m[2])
        assert facts[(name, attribute)] == bare(m[3]), ex.text
        entities = {n for n, _ in facts}
        assert len(entities) == (1 if ex.level == 1 else 2), ex.text  # from level 2, a distractor
        if ex.task == "known":
            for (n, a), value in facts.items():
                assert getattr(by_name[n], a) == value, ex.text  # the context agrees with the world
        else:
            assert all(n in world.FRESH_NAMES for n in entities), ex.text
    assert set(levels) == set(world.CONTEXT_LEVELS)


@pytest.mark.parametrize("level", [1, 3])
def test_counterfactuals_contradict_the_memorised_fact_and_name_the_bin(level):
    bins = (0, 1, 10, 100)
    bin_of = {p.name: b for b, p in world.exposure_roster(bins, seed=2)}  # the run's data seed deals the bins
    person = {p.name: p for p in world.ROSTER}
    items = list(world.counterfactuals(5, 800, exposure_bins=bins, level=level, data_seed=2))
    assert items == list(world.counterfactuals(5, 800, exposure_bins=bins, level=level, data_seed=2))
    assert items != list(world.counterfactuals(6, 800, exposure_bins=bins, level=level, data_seed=2))
    # The bins in turn, each bin's people in turn: 800 = 25 x 4 bins x 8 people, so 25 prompts each.
    assert collections.Counter(item.bin for item in items) == {b: 200 for b in bins}
    assert set(collections.Counter(item.entity for item in items).values()) == {25}
    for item in items:
        prompt, context_answer, memorised_answer, b = item  # unpacks as the 4-tuple
        m = re.fullmatch(r"Context: (.+) Q: (.+\?) A:", prompt)
        assert m, prompt
        facts = read_context(m[1])
        assert len(facts) == level
        name, attribute = asked(m[2])
        assert (name, attribute) == (item.entity, item.attribute)
        assert b == bin_of[name]
        assert bare(memorised_answer) == getattr(person[name], attribute)  # the world's fact
        assert facts[(name, attribute)] == bare(context_answer) != bare(memorised_answer)
        # The consistent twin: the same document word for word but the asked fact's value, the true one.
        twin = re.fullmatch(r"Context: (.+) Q: (.+\?) A:", item.consistent_prompt)
        assert twin[2] == m[2] and read_context(twin[1]) == {**facts, (name, attribute): bare(memorised_answer)}
        changed = [(a, b) for a, b in zip(m[1].split(". "), twin[1].split(". ")) if a != b]
        assert len(changed) == 1 and changed[0][1] == changed[0][0].replace(context_answer, memorised_answer), changed
        # The question alone, as the people family's recall questions ask it.
        assert item.question_prompt == f"Q: {m[2]} A:"
        for (n, a), value in facts.items():  # everything else the context says is true
            if (n, a) != (name, attribute) and n in person:
                assert getattr(person[n], a) == value
    assert {item.bin for item in items} == set(bins)
    assert {item.attribute for item in items} == set(world.ATTRIBUTES)
    # Its own stream: no prompt is a prefix of a training context (none is about a roster person).
    training = {t for t in training_texts(300_000, families=("context",)) if t.startswith("Context: ")}
    assert not any(t.startswith(item.prompt) for t in training for item in items[:50])


# --- labels per token ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled():
    return world.labelled_examples(21, 1_500, families=world.ALL_FAMILIES)


def test_label_spans_cover_their_values(labelled):
    kinds_seen = collections.Counter()
    for ex in labelled:
        data = ex.text.encode("utf-8")
        assert list(ex.spans) == sorted(ex.spans, key=lambda s: (s.start, s.end, world.LABEL_KINDS.index(s.kind)))
        for span in ex.spans:
            assert span.kind in world.LABEL_KINDS and 0 <= span.start < span.end <= len(data)
            kinds_seen[span.kind] += 1
            if span.kind not in world.NON_VALUE_KINDS:
                assert data[span.start : span.end].decode() == span.value, (ex.text, span)
        if ex.family == "arith":  # every digit and operator of the text, once
            digits = [s.start for s in ex.spans if s.kind == "digit"]
            assert digits == [m.start() for m in re.finditer(r"\d", ex.text)]
            assert ex.text[[s for s in ex.spans if s.kind == "answer"][0].start - 3 :].startswith("A: ")
        if ex.family == "strings":
            assert [s.kind for s in ex.spans] == ["task", "answer"] and ex.spans[0].value == ex.task
    assert set(kinds_seen) == set(world.LABEL_KINDS), kinds_seen


def test_carry_labels_are_the_carries_the_steps_write():
    checked = collections.Counter()
    for ex in world.labelled_examples(5, 600, families=("arith",)):
        for span in (s for s in ex.spans if s.kind == "carry"):
            work = ex.text[span.start : span.end]
            after = ex.text[span.end :]
            written = re.match(r", write \d carry (\d)", after)
            if "borrow" in work:
                assert span.value == "1"
            elif "-" in work:
                assert span.value == "0"
            elif written:  # the column says its carry
                assert span.value == written[1]
            else:  # no carry written: a column without one, or the last column, which writes its sum
                lhs, total = work.split("=")
                assert span.value == str(int(total) // 10) and int(total) == eval(lhs)
            checked["borrow" if "borrow" in work else "written" if written else "plain"] += 1
    assert min(checked.values()) > 50, checked
    # the documented example
    (ex,) = [world.annotate(world.Example("Q: 47+38=? <think> 7+8=15, write 5 carry 1. 4+3+1=8. </think> A: 85\n",
                                          "arith", "add", 2))]
    carries = [(ex.text[s.start : s.end], s.value) for s in ex.spans if s.kind == "carry"]
    assert carries == [("7+8=15", "1"), ("4+3+1=8", "0")]
    assert [(s.kind, s.value) for s in ex.spans if s.kind == "answer"] == [("answer", "85")]


def test_prose_labels_name_the_world():
    ex = world.annotate(world.Example("Q: Where does Mira live? A: Osk.\n", "prose", "question", 1))
    assert [(s.kind, s.value) for s in ex.spans] == [("entity", "Mira"), ("town", "Osk"), ("answer", "Osk")]
    ex = world.annotate(world.Example("Context: Tomas keeps a dog. Q: What pet does Tomas have? A: a dog\n",
                                      "context", "known", 1))
    assert [(s.kind, s.value) for s in ex.spans] == [
        ("entity", "Tomas"), ("attribute", "dog"), ("entity", "Tomas"), ("answer", "a dog"), ("attribute", "dog")
    ]


def test_token_labels_with_byte_tokens_cover_exactly_each_span(labelled):
    tok = byte_tokenizer()
    per_example = world.token_labels(labelled, tok)
    classes = per_example[0].classes
    for ex, tl in zip(labelled, per_example):
        assert tok.decode(tl.ids.tolist(), skip_special_tokens=False) == ex.text  # the mapping round-trips
        assert (tl.starts[1:] == tl.ends[:-1]).all() and tl.ends[-1] == len(ex.text.encode())
        for kind in world.LABEL_KINDS:
            covered = np.zeros(len(tl.ids), dtype=bool)
            for span in (s for s in ex.spans if s.kind == kind):
                inside = (tl.starts >= span.start) & (tl.ends <= span.end)
                decoded = tok.decode(tl.ids[inside].tolist(), skip_special_tokens=False)
                assert ex.text.encode()[span.start : span.end] == decoded.encode()
                assert (tl.labels[kind][inside] == classes[kind].index(span.value)).all()
                covered |= inside
            assert (tl.labels[kind][~covered] == -1).all()


def test_token_labels_with_bpe_cover_the_tokens_that_overlap(labelled):
    tok = train_bpe([world.sample_text(0, 80_000, families=world.ALL_FAMILIES)], vocab_size=400)
    per_example = world.token_labels(labelled, tok)
    merged = 0
    for ex, tl in zip(labelled, per_example):
        assert tok.decode(tl.ids.tolist(), skip_special_tokens=False) == ex.text
        merged += int(((tl.ends - tl.starts) > 1).sum())
        for kind in world.LABEL_KINDS:
            covered = np.zeros(len(tl.ids), dtype=bool)
            for span in (s for s in ex.spans if s.kind == kind):
                overlap = (tl.starts < span.end) & (tl.ends > span.start)
                run = np.flatnonzero(overlap)
                assert len(run) and (np.diff(run) == 1).all()
                assert tl.starts[run[0]] <= span.start and tl.ends[run[-1]] >= span.end
                if kind not in world.NON_VALUE_KINDS:
                    assert span.value in tok.decode(tl.ids[run].tolist(), skip_special_tokens=False)
                assert (tl.labels[kind][run] >= 0).all()
                covered |= overlap
            assert (tl.labels[kind][~covered] == -1).all()
    assert merged > 1_000  # BPE merged bytes, so overlaps were really tested


def test_labelled_windows_pair_tokens_and_labels():
    tok = byte_tokenizer()
    eot = tok.token_to_id("<|endoftext|>")
    examples = world.labelled_examples(2, 200, families=("arith", "people"))
    packed = labelled_windows(examples, tok, eot, block_size=64, n_windows=10)
    assert packed.inputs.shape == (10, 64)
    flat = packed.inputs.reshape(-1)
    for kind, labels in packed.labels.items():
        assert labels.shape == packed.inputs.shape and labels.dtype == torch.int64
        assert (labels.reshape(-1)[flat == eot] == -1).all()
    digits = packed.labels["digit"].reshape(-1)
    for t, label in zip(flat.tolist(), digits.tolist()):  # a digit's label names that digit
        assert (label >= 0) == (chr(t) in "0123456789" if t < 256 else False)
        if label >= 0:
            assert packed.classes["digit"][label] == chr(t)


# --- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(level_weights="uniform"), r"^data\.level_weights: expected one of by_kind, equal, got 'uniform'$"),
        (dict(families=("people",), exposure_bins=(0, 0)), r"^data\.exposure_bins: expected .*got \(0, 0\)$"),
        (dict(families=("people",), exposure_bins=(0,)), r"^data\.exposure_bins: expected .*at least one > 0"),
        (dict(families=("people",), exposure_bins=(1, -1)), r"^data\.exposure_bins: expected"),
        (dict(families=("people",), exposure_bins=(True, 2)), r"^data\.exposure_bins: expected"),
        (dict(families=("people",), exposure_bins=tuple(range(1, 10))), r"^data\.exposure_bins: expected"),
        (dict(exposure_bins=(0, 1)), r"^data\.exposure_bins: applies to the people family"),
        (dict(families=("people",), tasks=("fact",)),
         r"^data\.tasks: unknown task 'fact' \(expected one of: bio, recall\)$"),
        (dict(families=("prose",), family_weights={"arith": 2}),
         r"^data\.family_weights: unknown family \(not in data\.families\) 'arith' \(expected one of: prose\)$"),
        (dict(families=("prose",), family_weights={"prose": 1.5}), r"^data\.family_weights\.prose: expected an integer >= 0"),
        (dict(families=("prose", "arith"), family_weights={"prose": 0, "arith": 0}),
         r"^data\.family_weights: every family weighs 0"),
        (dict(family_weights=[1, 2]), r"^data\.family_weights: expected a mapping of family to integer weight"),
    ],
)
def test_bad_new_keys_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        world.generate(0, **kwargs)
    assert "\n" not in str(info.value)


def test_new_keys_through_the_data_module(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.level_weights: expected"):
        TextDataModule(level_weights="uniform", cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data\.levels: only applies to data\.source 'world'"):
        TextDataModule(source="org/name", levels=[1, 2], cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data\.levels: unknown level 7"):
        TextDataModule(levels=[1, 7], cache_dir=str(tmp_path))
    plain = TextDataModule(cache_dir=str(tmp_path)).corpus
    assert plain.world == () and set(plain.identity()) == {"kind", "seed", "families", "generator"}
    v2 = TextDataModule(cache_dir=str(tmp_path), families=list(world.ALL_FAMILIES), levels=[1, 2, 3],
                        level_weights="equal", exposure_bins=[0, 1, 10, 100]).corpus
    assert v2.identity()["levels"] == [1, 2, 3] and v2.identity()["level_weights"] == "equal"
    assert v2.identity() != TextDataModule(cache_dir=str(tmp_path), families=list(world.ALL_FAMILIES)).corpus.identity()
    weighted = TextDataModule(cache_dir=str(tmp_path), family_weights={"strings": 3, "arith": 2}).corpus
    assert weighted.identity()["family_weights"] == [("arith", 2), ("strings", 3)]  # one key whatever the order
    with pytest.raises(ConfigError, match=r"^data\.family_weights: only applies to data\.source 'world'"):
        TextDataModule(source="org/name", family_weights={"arith": 2}, cache_dir=str(tmp_path))


# --- probes ----------------------------------------------------------------------------------

BLOCK, TOKENS = 64, 512  # 8 windows a probe


def v2_datamodule(cache_dir, **options):
    dm = TextDataModule(
        block_size=BLOCK, batch_size=4, max_bytes=150_000, val_tokens=1024, val_fraction=0.05,
        cache_dir=str(cache_dir), seed=3, **options,
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_v2_probes(tmp_path):
    options = dict(families=list(world.ALL_FAMILIES), levels=[1, 2, 3], tasks=list(V2["tasks"]),
                   level_weights="equal", exposure_bins=[0, 1, 10, 100])
    built = build_probes(v2_datamodule(tmp_path / "a", **options), tokens=TOKENS, seed=0, task_examples=2)
    names = list(built.probes)
    expected = (
        [f"family/{f}" for f in world.ALL_FAMILIES]
        + ["level/1", "level/2", "level/3", "ood/level/4", "ood/level/5", "ood/task/sort_reverse",
           "ood/task/reverse_rotate"]
        + ["exposure/0", "exposure/1", "exposure/10", "exposure/100", "novel"]
    )
    assert names == ["id", "id_b", "shuffled", "random", "random_uniform"] + expected
    assert {tuple(w.shape) for w in built.probes.values()} == {(TOKENS // BLOCK, BLOCK)}
    tok = byte_tokenizer()
    text = {name: tok.decode(w.reshape(-1).tolist(), skip_special_tokens=False) for name, w in built.probes.items()}
    problems = [line for name in ("ood/level/4", "ood/level/5") for line in text[name].split("<|endoftext|>")]
    whole = [p for p in problems if ARITH_Q.match(p) and p.endswith("\n")]
    assert whole and {arith_level_of(p) for p in whole} <= {4, 5}
    assert re.search(r"^sort\+reverse: ", text["ood/task/sort_reverse"], re.MULTILINE)
    by_bin = world.people_by_bin(seed=3)  # v2_datamodule's data seed
    for b, people in by_bin.items():
        found = set(word_re(p.name for p in world.ROSTER + world.NOVEL_PEOPLE).findall(text[f"exposure/{b}"]))
        assert found and found <= {p.name for p in people}
    found = set(word_re(p.name for p in world.ROSTER + world.NOVEL_PEOPLE).findall(text["novel"]))
    assert found and found <= {p.name for p in world.novel_people(seed=3)}
    # The family probe's people are the run's too (a probe seed draws the text, the data seed the roster).
    exposed = {p.name for b, people in by_bin.items() if b > 0 for p in people}
    found = set(word_re(p.name for p in world.ROSTER + world.NOVEL_PEOPLE).findall(text["family/people"]))
    assert found and found <= exposed
    assert any("held out of training: arith level 4, arith level 5" in note for note in built.notes)
    # The family probes are the same text whatever the run trains on.
    other = build_probes(v2_datamodule(tmp_path / "b", families=["arith"]), tokens=TOKENS, seed=0, tasks=False)
    for family in world.ALL_FAMILIES:
        assert torch.equal(other.probes[f"family/{family}"], built.probes[f"family/{family}"]), family
    assert "exposure/1" not in other.probes and "novel" not in other.probes
