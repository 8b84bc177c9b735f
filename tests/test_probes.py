"""lamina.probes: fixed, deterministic probe sets that leave the global RNGs alone."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lamina.data import TextDataModule, world
from lamina.data.tokenizer import byte_tokenizer
from lamina.probes import (
    build_probes,
    family_mix,
    held_out_windows,
    probe_rng,
    string_task_probe,
    world_family_of,
)

BLOCK = 32
TOKENS = 256  # 8 windows per probe


def datamodule(cache_dir, families=None, probe_files=()):
    dm = TextDataModule(
        block_size=BLOCK, batch_size=4, max_bytes=120_000, val_tokens=1024, val_fraction=0.05,
        families=families, probe_files=list(probe_files), cache_dir=str(cache_dir), seed=3,
    )
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    return datamodule(tmp_path_factory.mktemp("cache"))


def rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_probes_are_deterministic_shaped_and_leave_global_rngs_alone(dm):
    before = rng_states()
    a = build_probes(dm, tokens=TOKENS, seed=0, task_examples=4)
    after = rng_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    b = build_probes(dm, tokens=TOKENS, seed=0, task_examples=4)
    assert list(a.probes) == ["id", "id_b", "shuffled", "random", "random_uniform"] + [
        f"family/{f}" for f in world.ALL_FAMILIES
    ] + [f"level/{k}" for k in world.ARITH_LEVELS]
    for name, windows in a.probes.items():
        assert windows.shape == (TOKENS // BLOCK, BLOCK) and windows.dtype == torch.int64, name
        assert torch.equal(windows, b.probes[name]), name
    for key in ("inputs", "targets", "task_ids"):
        assert torch.equal(getattr(a.tasks, key), getattr(b.tasks, key))
    other = build_probes(dm, tokens=TOKENS, seed=1, task_examples=4)
    assert not torch.equal(a.probes["id"], other.probes["id"])
    assert "ood/<family> skipped: the run trains on every world family" in a.notes


def test_shuffled_permutes_id_within_each_window_and_random_avoids_specials(dm):
    probes = build_probes(dm, tokens=TOKENS, seed=0, tasks=False).probes
    ident, shuffled = probes["id"], probes["shuffled"]
    assert torch.equal(ident.sort(dim=1).values, shuffled.sort(dim=1).values)
    assert not torch.equal(ident, shuffled)
    specials = {dm.eot_id, dm.think_id, dm.end_think_id}
    ids = set(probes["random_uniform"].flatten().tolist())
    assert not ids & specials and max(ids) < dm.tokenizer.get_vocab_size()


def test_random_draws_only_tokens_of_the_training_split_by_their_frequency(dm):
    probes = build_probes(dm, tokens=TOKENS * 8, seed=0, tasks=False).probes
    train_counts = np.bincount(np.asarray(dm.train_data), minlength=dm.tokenizer.get_vocab_size())
    drawn = probes["random"].flatten().numpy()
    assert (train_counts[drawn] > 0).all()  # never a token absent from the training split
    # Byte tokens: most of the uniform probe's tokens never occur in world text; `random` has none.
    assert (train_counts[probes["random_uniform"].flatten().numpy()] == 0).mean() > 0.5
    # Frequencies follow the split's: the commonest token is drawn about as often as it occurs.
    top = int(train_counts.argmax())
    expected = train_counts[top] / train_counts.sum()
    got = (drawn == top).mean()
    assert abs(got - expected) < 4 * np.sqrt(expected * (1 - expected) / drawn.size)


def test_every_probe_has_as_many_windows_as_id_and_the_family_mix_is_reported(dm):
    built = build_probes(dm, tokens=TOKENS, seed=0, tasks=False)
    counts = {name: len(w) for name, w in built.probes.items()}
    assert set(counts.values()) == {len(built.probes["id"])}, counts
    mix = [note for note in built.notes if note.startswith("id family mix")]
    assert len(mix) == 1 and all(f in mix[0] for f in world.FAMILIES), built.notes


def test_family_of_a_document_follows_its_template():
    tok = byte_tokenizer()
    eot = tok.token_to_id("<|endoftext|>")
    for family in world.ALL_FAMILIES:
        examples = world.generate(11, [family])
        texts = [next(examples).text for _ in range(50)]
        assert all(world_family_of(t) == family for t in texts), family
        cut = [t[len(t) // 3 :] for t in texts]  # windows start mid-document
        assert np.mean([world_family_of(t) == family for t in cut]) > 0.9, family
    rows = torch.tensor([tok.encode("Q: 1+2=? A: 3\n").ids + [eot] + tok.encode("copy: ab -> ab\n").ids])
    mix = family_mix(rows, tok, eot)
    assert mix["arith"] > 0.4 and mix["strings"] > 0.4 and mix["prose"] == 0


def test_id_and_id_b_are_disjoint_held_out_windows():
    data = np.arange(100 * BLOCK)  # every token names its position
    a, b = held_out_windows(data, BLOCK, 30, probe_rng(0, 0, "id"))
    assert a.shape == b.shape == (30, BLOCK)
    assert not set(a.flatten().tolist()) & set(b.flatten().tolist())
    assert (a[:, 1:] - a[:, :-1] == 1).all()  # whole contiguous windows
    small_a, small_b = held_out_windows(data[: 5 * BLOCK], BLOCK, 30, probe_rng(0, 0, "id"))
    assert len(small_a) == len(small_b) == 2  # half of the slots each


def test_ood_families_probe_files_and_task_probe(tmp_path):
    text = tmp_path / "poems.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 40)
    empty = tmp_path / "empty.txt"
    empty.write_text("x")
    dm = datamodule(tmp_path / "cache", families=["prose", "strings"], probe_files=[text, empty])
    empty.write_text("")  # emptied after the config check, which refuses an empty file: probes still cope
    built = build_probes(dm, tokens=TOKENS, seed=0, task_examples=3)
    assert "ood/arith" in built.probes and "ood/prose" not in built.probes
    assert built.probes["ood/poems"].shape == (TOKENS // BLOCK, BLOCK)
    assert any("empty" in note for note in built.notes)
    assert built.tasks is not None
    no_strings = build_probes(datamodule(tmp_path / "cache", families=["prose", "arith"]), tokens=TOKENS)
    assert no_strings.tasks is None and "ood/strings" in no_strings.probes


def test_task_probe_scores_exactly_the_answers():
    tok = byte_tokenizer()
    eot = tok.token_to_id("<|endoftext|>")
    probe = string_task_probe(tok, seed=5, eot_id=eot, block_size=64, examples_per_task=3)
    assert probe.tasks == world.STRING_TASKS
    scored = probe.targets >= 0
    assert torch.equal(scored, probe.task_ids >= 0)
    # Targets are the next input tokens.
    assert torch.equal(probe.targets[:, :-1][scored[:, :-1]], probe.inputs[:, 1:][scored[:, :-1]])
    answers = []
    for r in range(probe.inputs.shape[0]):
        row = probe.inputs[r].tolist() + [probe.targets[r, -1].item()]
        text = tok.decode([t for t in row if t >= 0 and t != eot])
        for line in filter(None, text.split("\n")):
            task, rest = line.split(": ", 1)
            letters, answer = rest.split(" -> ")
            assert answer == world.apply_string_task(task, letters)
            answers.append((task, answer))
        # Runs of scored positions, decoded, are the answers, labelled with their task.
        runs, current = [], []
        for p in range(probe.inputs.shape[1]):
            if scored[r, p]:
                current.append(p)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        for run in runs:
            task = world.STRING_TASKS[int(probe.task_ids[r, run[0]])]
            assert (probe.task_ids[r, run] == probe.task_ids[r, run[0]]).all()
            assert (task, tok.decode(probe.targets[r, run].tolist())) in answers
    assert len(answers) == 3 * len(world.STRING_TASKS)
    assert probe.scored_tokens == sum(len(a) for _, a in answers)


def test_non_world_source_skips_world_probes_gracefully():
    tok = byte_tokenizer()
    fake = SimpleNamespace(
        hparams=SimpleNamespace(block_size=BLOCK, seed=0, source="notes/", families=None),
        tokenizer=tok, val_data=np.arange(40 * BLOCK) % 250, train_data=np.arange(80 * BLOCK) % 200,
        eot_id=tok.token_to_id("<|endoftext|>"),
        probe_files=[],
    )
    built = build_probes(fake, tokens=TOKENS)
    assert list(built.probes) == ["id", "id_b", "shuffled", "random", "random_uniform"]
    assert built.probes["random"].max() < 200  # tokens of the training split only
    assert built.tasks is None
    assert any("not the world corpus" in note for note in built.notes)
