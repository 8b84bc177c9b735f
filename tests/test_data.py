"""The data pipeline: sources, tokenizers, the token cache and the DataModule's windows.

Everything runs on small local files or a few hundred KB of the world corpus: no network.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lamina.data import TextDataModule
from lamina.data import packing, sources, tokenizer as tok_lib
from lamina.data.module import RandomWindows, splitmix64_array, window_offsets
from lamina.data.packing import build_token_cache, read_meta, token_dtype
from lamina.data.sources import Passage, iter_passages, resolve_source, split_of, splitmix64
from lamina.data.tokenizer import EOT, SPECIAL_TOKENS, byte_tokenizer, train_bpe
from lamina.errors import ConfigError

TRICKY = [
    "plain ascii text",
    "  two leading spaces, trailing space ",
    "accents: café, naïve, Ångström, São Paulo",
    "emoji 😀🧪👩‍👩‍👧 and CJK 漢字かな and RTL עברית",
    "newlines\n\n\nand\ttabs\r\nand a form feed\x0c and NUL \x00.",
    "specials inline: <think> 3+4=7 </think> A: 7<|endoftext|>next",
    "\n leading newline",
    "",
]


def world_text(n_bytes: int = 60_000) -> str:
    from lamina.data import world

    return world.sample_text(0, n_bytes)


@pytest.fixture(scope="module")
def bpe():
    return train_bpe([world_text(), *TRICKY[:3]], vocab_size=400)


def small_dm(source, tmp_path, **overrides) -> TextDataModule:
    args = dict(
        source=str(source),
        batch_size=4,
        block_size=16,
        max_bytes=100_000,
        val_fraction=0.2,
        val_tokens=200,
        cache_dir=str(tmp_path / "cache"),
        tokenizer_sample_bytes=50_000,
    )
    args.update(overrides)
    return TextDataModule(**args)


def ready_dm(source, tmp_path, **overrides) -> TextDataModule:
    dm = small_dm(source, tmp_path, **overrides)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def write_jsonl(path: Path, texts, column: str = "text") -> Path:
    path.write_text(
        "".join(json.dumps({column: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    return path


def documents(n: int = 60) -> list[str]:
    return [f"Doc {i}: the fox from Osk ate {i * 7} mice. Größe {'é' * (i % 5)} 😀\n" for i in range(n)]


# ---- tokenizers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_round_trip_is_exact_on_tricky_text(kind, bpe):
    tokenizer = byte_tokenizer() if kind == "byte" else bpe
    for text in TRICKY:
        ids = tokenizer.encode(text).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
    if kind == "byte":  # no merges: one id per byte
        assert byte_tokenizer().encode("héllo 😀").ids == list("héllo 😀".encode())
    else:
        assert len(bpe.encode(world_text(2000)).ids) < len(world_text(2000).encode())  # merges work


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_special_tokens_are_single_ids(kind, bpe):
    tokenizer = byte_tokenizer() if kind == "byte" else bpe
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    assert None not in ids and len(set(ids)) == 3
    encoded = tokenizer.encode("x<think>1+1</think>y<|endoftext|>z").ids
    for token_id in ids:
        assert encoded.count(token_id) == 1
    if kind == "byte":
        assert ids == [256, 257, 258] and tokenizer.get_vocab_size() == 259
    else:
        assert tokenizer.get_vocab_size() <= 400


def test_token_byte_lengths_count_raw_bytes(bpe):
    lengths = tok_lib.token_byte_lengths(bpe)
    for text in TRICKY:
        ids = bpe.encode(text).ids
        eots = text.count(EOT)
        assert lengths[ids].sum() == len(text.encode()) - eots * len(EOT)  # the separator is 0 bytes


def test_model_vocab_size_needs_no_build(tmp_path):
    cache = tmp_path / "cache"
    assert TextDataModule(cache_dir=str(cache)).model_vocab_size == 259
    dm = TextDataModule(
        source="HuggingFaceFW/fineweb-edu", tokenizer="bpe", vocab_size=50304, cache_dir=str(cache)
    )
    assert dm.model_vocab_size == 50304
    assert not cache.exists()  # nothing built, nothing downloaded


def test_bpe_tokenizer_is_cached(tmp_path, monkeypatch):
    builds = []
    write_splits = packing.write_splits
    monkeypatch.setattr(packing, "write_splits", lambda *a, **k: builds.append(1) or write_splits(*a, **k))
    dm = ready_dm("world", tmp_path, tokenizer="bpe", vocab_size=300)
    assert dm.tokenizer.get_vocab_size() <= dm.model_vocab_size == 300
    monkeypatch.setattr(tok_lib, "train_bpe", lambda *a, **k: pytest.fail("retrained a cached tokenizer"))
    again = ready_dm("world", tmp_path, tokenizer="bpe", vocab_size=300)
    assert again.tokenizer.to_str() == dm.tokenizer.to_str() and again.cache_path == dm.cache_path
    assert len(builds) == 1  # the freshly trained and the reloaded tokenizer key the same cache
    assert (tmp_path / "cache" / "tokenizers").is_dir()


# ---- packing ------------------------------------------------------------------------------------


def expected_split(tokenizer, docs, val_fraction, split):
    """Hand-made packing: each document of the split, tokenised, then <|endoftext|>."""
    eot = tokenizer.token_to_id(EOT)
    ids, n_bytes = [], 0
    for index, doc in enumerate(docs):
        if split_of(index, val_fraction) == split:
            ids += tokenizer.encode(doc).ids + [eot]
            n_bytes += len(doc.encode())
    return ids, n_bytes


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_packed_ids_equal_tokenised_documents(kind, tmp_path):
    docs = documents()
    source = write_jsonl(
        tmp_path / "docs.jsonl", docs[:30] + ["", None] + docs[30:]
    )  # empty rows are skipped
    dm = ready_dm(source, tmp_path, tokenizer=kind, vocab_size=300, val_fraction=0.25)
    meta = read_meta(dm.cache_path)
    assert meta["dtype"] == "uint16"
    for split, data in (("train", dm.train_data), ("val", dm.val_data)):
        ids, n_bytes = expected_split(dm.tokenizer, docs, 0.25, split)
        assert data.dtype == np.uint16 and data.tolist() == ids
        assert meta["splits"][split]["tokens"] == len(ids)
        assert meta["splits"][split]["bytes"] == n_bytes
        assert meta["splits"][split]["documents"] == ids.count(dm.eot_id)
    assert meta["tokens_per_byte"] == pytest.approx(
        meta["splits"]["val"]["tokens"] / meta["splits"]["val"]["bytes"]
    )


def test_dtype_is_uint32_beyond_65536_ids(tmp_path):
    assert (
        token_dtype(259) == np.uint16
        and token_dtype(65_536) == np.uint16
        and token_dtype(65_537) == np.uint32
    )
    big = byte_tokenizer()
    big.add_tokens([f"<w{i}>" for i in range(70_000)])
    text = "a<w69999>b<w5>\n"
    source = resolve_source(str(write_jsonl(tmp_path / "a.jsonl", [text] * 20)))
    path = build_token_cache(source, big, cache_dir=tmp_path / "cache", max_bytes=None, val_fraction=0.5)
    assert read_meta(path)["dtype"] == "uint32"
    train = packing.open_split(path, "train")
    assert train.dtype == np.uint32 and train[: len(big.encode(text).ids)].tolist() == big.encode(text).ids
    assert big.token_to_id("<w69999>") in train.tolist()


def test_txt_paragraphs_keep_exact_text_and_files_are_the_documents(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    texts = {
        "a.txt": "".join(f"Para {i} line one.\nline two, é.\n\n" for i in range(40)),
        "b.txt": "".join(f"Other {i}.\n\n\n" for i in range(30)) + "no final newline",
    }
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    passages = list(iter_passages(resolve_source(str(folder)), val_fraction=0.3))
    assert "".join(p.text for p in passages) == texts["a.txt"] + texts["b.txt"]
    assert passages[0].text == "Para 0 line one.\nline two, é.\n\n"
    assert {p.doc for p in passages} == {0, 1} and {p.split for p in passages} == {"train", "val"}
    dm = ready_dm(folder, tmp_path, val_fraction=0.3)
    for split, data in (("train", dm.train_data), ("val", dm.val_data)):
        docs_in_split = {p.doc for p in passages if p.split == split}
        assert data.tolist().count(dm.eot_id) == len(docs_in_split)  # EOT between files, not paragraphs


@pytest.mark.parametrize("layout", ["txt", "jsonl", "parquet", "folder", "glob"])
def test_local_sources(layout, tmp_path):
    docs = documents(80)
    if layout == "txt":
        source = tmp_path / "corpus.txt"
        source.write_text("\n".join(docs), encoding="utf-8")  # blank lines: paragraphs
    elif layout == "jsonl":
        source = write_jsonl(tmp_path / "corpus.jsonl", docs)
    elif layout == "parquet":
        source = tmp_path / "corpus.parquet"
        datasets.Dataset.from_dict({"body": docs, "n": list(range(len(docs)))}).to_parquet(str(source))
    else:
        data = tmp_path / "data"
        (data / "sub").mkdir(parents=True)
        write_jsonl(data / "one.jsonl", docs[:40])
        (data / "sub" / "two.txt").write_text("\n".join(docs[40:]), encoding="utf-8")
        (data / "notes.md").write_text("not a corpus file")
        source = data if layout == "folder" else tmp_path / "data" / "**" / "*"
    column = "body" if layout == "parquet" else "text"
    dm = ready_dm(source, tmp_path, text_column=column, val_fraction=0.1)
    total = sum(s["bytes"] for s in dm.meta["splits"].values())
    expected = len("\n".join(docs).encode()) if layout == "txt" else sum(len(d.encode()) for d in docs)
    if layout in ("folder", "glob"):
        expected = sum(len(d.encode()) for d in docs[:40]) + len("\n".join(docs[40:]).encode())
    assert total == expected
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64


def test_max_bytes_caps_the_text_taken(tmp_path):
    dm = ready_dm("world", tmp_path, max_bytes=30_000)
    assert sum(s["bytes"] for s in dm.meta["splits"].values()) == 30_000


def test_world_families_change_the_cache(tmp_path):
    everything = ready_dm("world", tmp_path, max_bytes=20_000)
    arith = ready_dm("world", tmp_path, max_bytes=20_000, families=["arith"])
    assert arith.cache_path != everything.cache_path
    assert arith.tokenizer.decode(arith.train_data[:200].tolist(), skip_special_tokens=False).startswith(
        "Q: "
    )


def test_hub_dataset_goes_through_the_same_path(tmp_path, monkeypatch):
    # No network in tests: stand a local iterable dataset in for the hub and check the call.
    docs = documents(80)
    calls = []

    def fake_load_dataset(name, config=None, *, split, streaming):
        calls.append((name, config, split, streaming))
        return datasets.Dataset.from_dict({"content": docs}).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dm = ready_dm(
        "someone/corpus", tmp_path, dataset_config="en", dataset_split="train", text_column="content"
    )
    assert calls[0] == ("someone/corpus", "en", "train", True)
    assert sum(s["bytes"] for s in dm.meta["splits"].values()) == sum(len(d.encode()) for d in docs)
    assert dm.meta["source"]["kind"] == "hub"

    def missing(*args, **kwargs):
        raise datasets.exceptions.DatasetNotFoundError("Dataset 'someone/nope' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(ConfigError, match=r"data\.source: cannot open Hugging Face dataset 'someone/nope'"):
        small_dm("someone/nope", tmp_path).prepare_data()


# ---- the cache ----------------------------------------------------------------------------------


def test_second_prepare_is_a_no_op(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "docs.jsonl", documents())
    first = ready_dm(source, tmp_path)
    mtime = (first.cache_path / "train.bin").stat().st_mtime_ns
    monkeypatch.setattr(packing, "write_splits", lambda *a, **k: pytest.fail("rebuilt a complete cache"))
    second = ready_dm(source, tmp_path)
    assert second.cache_path == first.cache_path
    assert (second.cache_path / "train.bin").stat().st_mtime_ns == mtime
    assert packing.disk_usage(first.cache_path) >= (first.cache_path / "train.bin").stat().st_size > 0


def test_cache_follows_file_content_not_name(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", documents())
    before = ready_dm(source, tmp_path).cache_path
    renamed = source.rename(tmp_path / "renamed.jsonl")
    assert ready_dm(renamed, tmp_path).cache_path == before
    write_jsonl(renamed, documents()[::-1])
    assert ready_dm(renamed, tmp_path).cache_path != before


def test_killed_build_is_never_reused(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", documents())
    path = ready_dm(source, tmp_path).cache_path
    good = (path / "train.bin").read_bytes()
    # A partial folder in the final place (no meta.json), a temp dir of a killed build on this
    # host (its pid is gone) and one of another host's build that may still be running.
    (path / "meta.json").unlink()
    (path / "train.bin").write_bytes(good[:10])
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = path.with_name(f"{path.name}.tmp-{socket.gethostname()}-{dead.pid}")
    elsewhere = path.with_name(f"{path.name}.tmp-otherhost-1")
    for tmp in (stale, elsewhere):
        tmp.mkdir()
        (tmp / "train.bin").write_bytes(b"junk")
    dm = ready_dm(source, tmp_path)
    assert dm.cache_path == path and (path / "train.bin").read_bytes() == good
    assert packing.is_complete(path) and not stale.exists() and elsewhere.exists()


# ---- errors -------------------------------------------------------------------------------------


def test_source_errors_name_the_file_or_column(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.source: no such file or folder .*missing\.txt"):
        TextDataModule(source=str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match=r"data\.source: no file matches .*\*\.txt"):
        TextDataModule(source=str(tmp_path / "notes" / "*.txt"))
    empty = tmp_path / "a.txt"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"data\.source: .*a\.txt' holds no text"):
        TextDataModule(source=str(empty))
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match=r"data\.source: .*table\.csv' is not a \.txt"):
        TextDataModule(source=str(tmp_path / "table.csv"))
    source = write_jsonl(tmp_path / "docs.jsonl", documents(), column="body")
    with pytest.raises(
        ConfigError, match=r"data\.text_column: no column 'text' in .*docs\.jsonl.*'body', 'id'"
    ):
        small_dm(source, tmp_path).prepare_data()
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"data\.source: cannot read .*bad\.jsonl"):
        small_dm(tmp_path / "bad.jsonl", tmp_path).prepare_data()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(tokenizer="wordpiece"), r"data\.tokenizer: expected 'byte' or 'bpe', got 'wordpiece'"),
        (dict(tokenizer="bpe", vocab_size=100), r"data\.vocab_size: expected an integer >= 259"),
        (dict(batch_size=0), r"data\.batch_size: expected an integer >= 1, got 0"),
        (dict(val_fraction=0.0), r"data\.val_fraction: expected a number between 0 and 1"),
        (dict(val_fraction=1), r"data\.val_fraction"),
        (dict(max_bytes=0), r"data\.max_bytes"),
        (dict(val_tokens=10), r"data\.val_tokens: expected an integer >= block_size \+ 1 = 17"),
        (dict(families=["poetry"]), r"data\.families: unknown family 'poetry'"),
        (dict(probe_files=["nope.txt"]), r"data\.probe_files: no such file 'nope\.txt'"),
        (
            dict(source="org/name", families=["arith"]),
            r"data\.families: only applies to data\.source 'world'",
        ),
        (dict(dataset_config="x"), r"data\.dataset_config: only applies to a Hugging Face dataset"),
    ],
)
def test_config_errors_name_the_key(overrides, message, tmp_path):
    source = overrides.pop("source", "world")
    with pytest.raises(ConfigError, match=message):
        small_dm(source, tmp_path, **overrides)


def test_too_small_split_says_how_many_tokens(tmp_path):
    source = write_jsonl(tmp_path / "tiny.jsonl", documents(10))
    dm = small_dm(source, tmp_path, block_size=512, val_tokens=1000, val_fraction=0.2)
    with pytest.raises(
        ConfigError,
        match=r"data\.source: the (train|val) split of .*tiny\.jsonl' has \d+ tokens, fewer than block_size \+ 1 = 513",
    ):
        dm.prepare_data()


def test_hub_names_and_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub = resolve_source("HuggingFaceFW/fineweb-edu", dataset_config="sample-10BT")
    assert hub.kind == "hub"
    assert hub.identity() == {
        "kind": "hub",
        "name": "HuggingFaceFW/fineweb-edu",
        "config": "sample-10BT",
        "split": "train",
        "text_column": "text",
    }
    assert resolve_source("wikitext").kind == "hub"
    (tmp_path / "data").mkdir()
    for path_like in ("data/corpus", "./corpus", "corpus.jsonl", "a/b/c"):
        with pytest.raises(ConfigError, match=r"no such file or folder"):
            resolve_source(path_like)


# ---- building the cache in shards: resume, processes, and no `datasets` for the world -------------

ENCODE_TEXTS = packing.encode_texts


class CountingEncoder:
    """packing.encode_texts that records the texts it is given, and at call `stop` raises
    KeyboardInterrupt, as a Ctrl-C in the middle of a build would."""

    def __init__(self, stop: int | None = None):
        self.calls, self.texts, self.stop = 0, [], stop

    def __call__(self, tokenizer, texts):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        self.texts += texts
        return ENCODE_TEXTS(tokenizer, texts)


def small_shards(monkeypatch, shard_bytes: int = 6_000, batch_bytes: int = 1_500) -> None:
    monkeypatch.setattr(packing, "SHARD_BYTES", shard_bytes)
    monkeypatch.setattr(packing, "BATCH_BYTES", batch_bytes)


def cache_files(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in ("train.bin", "val.bin", "meta.json")}


def partial_folders(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.partial"))


@pytest.mark.parametrize("kind", ["world", "jsonl"])
def test_interrupted_build_resumes_at_its_last_finished_shard(kind, tmp_path, monkeypatch, capsys):
    small_shards(monkeypatch)
    source = "world" if kind == "world" else write_jsonl(tmp_path / "docs.jsonl", documents(500))
    args = dict(max_bytes=40_000, val_fraction=0.1)
    straight = CountingEncoder()
    monkeypatch.setattr(packing, "encode_texts", straight)
    reference = ready_dm(source, tmp_path / "straight", **args)
    # The batches the build makes, one encoder call each: stop at the 2nd batch of shard 3.
    dm = small_dm(source, tmp_path / "resumed", **args)
    passages = list(iter_passages(dm.corpus, 0.1, 40_000))
    batches = list(packing.shard_batches(passages))
    shard_of_batch = np.cumsum([0] + [ends for _, ends, _ in batches[:-1]])
    assert shard_of_batch[-1] >= 4 and straight.calls == len(batches)  # several shards, one call a batch
    stop = int(np.flatnonzero(shard_of_batch == 2)[1]) + 1
    monkeypatch.setattr(packing, "encode_texts", CountingEncoder(stop=stop))
    with pytest.raises(KeyboardInterrupt):
        dm.prepare_data()
    [partial] = partial_folders(tmp_path / "resumed" / "cache")
    done = packing.read_progress(partial)
    assert len(done) == 2 and not packing.is_complete(partial.with_suffix(""))
    assert (partial / "train.bin").stat().st_size > done[-1]["splits"]["train"]["tokens"] * 2  # cut mid-shard
    assert "token cache build stopped with 2 shard(s) done" in capsys.readouterr().err

    resumed = CountingEncoder()
    monkeypatch.setattr(packing, "encode_texts", resumed)
    dm.prepare_data()
    assert "resuming the token cache build" in capsys.readouterr().err
    # Shards 0 and 1 were not tokenised again; every passage after them was, once.
    assert resumed.texts == [p.text for p in passages[done[-1]["passages"] :]]
    assert dm.cache_path.name == reference.cache_path.name and dm.cache_path == partial.with_suffix("")
    assert cache_files(dm.cache_path) == cache_files(reference.cache_path)
    assert partial_folders(tmp_path / "resumed" / "cache") == []


def test_a_build_killed_after_its_last_shard_finishes_without_reading(tmp_path, monkeypatch):
    small_shards(monkeypatch)
    source = write_jsonl(tmp_path / "docs.jsonl", documents(300))
    reference = ready_dm(source, tmp_path / "straight")
    write_json = packing.write_json

    def killed_writing_meta(path, value):
        if path.name == "meta.json":  # every shard recorded, the closing <|endoftext|>s written
            raise KeyboardInterrupt
        write_json(path, value)

    monkeypatch.setattr(packing, "write_json", killed_writing_meta)
    with pytest.raises(KeyboardInterrupt):
        small_dm(source, tmp_path / "resumed").prepare_data()
    monkeypatch.setattr(packing, "write_json", write_json)
    monkeypatch.setattr(packing, "encode_texts", CountingEncoder(stop=1))  # must not be called
    monkeypatch.setattr(packing, "iter_passages", lambda *a, **k: pytest.fail("read the source again"))
    dm = ready_dm(source, tmp_path / "resumed")
    assert cache_files(dm.cache_path) == cache_files(reference.cache_path)


def test_a_resume_rebuilds_from_the_shard_whose_text_changed(tmp_path, monkeypatch, capsys):
    # A hub dataset is keyed by its name: if its rows change between the runs, the shards from
    # the first changed one on are rebuilt (the ones before it are kept), and the cache is that
    # of the new rows.
    small_shards(monkeypatch)
    docs = documents(600)
    rows = {"now": docs[:400]}

    def fake_load_dataset(name, config=None, *, split, streaming):
        return datasets.Dataset.from_dict({"text": rows["now"]}).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(packing, "encode_texts", CountingEncoder(stop=9))  # in shard 2
    with pytest.raises(KeyboardInterrupt):
        small_dm("someone/corpus", tmp_path / "a").prepare_data()
    rows["now"] = docs[:200] + docs[400:]  # changed from row 200 on
    passages = [Passage(t, i, len(t.encode()), "train", i) for i, t in enumerate(rows["now"])]
    batches = list(packing.shard_batches(passages))
    changed = sum(ends for batch, ends, _ in batches if batch[-1].index < 200)  # the shard holding row 200
    assert changed == 1
    counting = CountingEncoder()
    monkeypatch.setattr(packing, "encode_texts", counting)
    dm = ready_dm("someone/corpus", tmp_path / "a")
    err = capsys.readouterr().err
    assert "stopped with 2 shard(s) done" in err and "differs from the partial build's at shard 1" in err
    assert "resuming the token cache build" in err and ": 1 shard(s) done" in err
    first_kept = next(i for i, (_, ends, _) in enumerate(batches) if ends)
    assert counting.texts == [p.text for batch, _, _ in batches[first_kept + 1 :] for p in batch]
    monkeypatch.setattr(packing, "encode_texts", ENCODE_TEXTS)
    assert cache_files(dm.cache_path) == cache_files(ready_dm("someone/corpus", tmp_path / "b").cache_path)


def test_a_dropped_hub_connection_keeps_the_finished_shards(tmp_path, monkeypatch):
    small_shards(monkeypatch)
    docs = documents(3000)
    state = {"fail_after": 2500}  # (rows are read 1024 at a time: two reads go through)

    def rows():
        for i, doc in enumerate(docs):
            if i == state["fail_after"]:
                raise ConnectionError("Connection reset by peer")
            yield {"text": doc}

    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: datasets.IterableDataset.from_generator(rows)
    )
    with pytest.raises(ConfigError, match=(
        r"^data\.source: lost the connection to the Hugging Face hub for data\.source=someone/corpus "
        r"\(Connection reset by peer\); finished shards of the token cache are kept, and the same command resumes"
    )):
        small_dm("someone/corpus", tmp_path / "a", max_bytes=None).prepare_data()
    [partial] = partial_folders(tmp_path / "a" / "cache")
    done = packing.read_progress(partial)
    assert len(done) >= 10 and done[-1]["passages"] <= 2048
    state["fail_after"] = None
    counting = CountingEncoder()
    monkeypatch.setattr(packing, "encode_texts", counting)
    dm = ready_dm("someone/corpus", tmp_path / "a", max_bytes=None)
    assert counting.texts == docs[done[-1]["passages"] :]  # the kept shards were not tokenised again
    monkeypatch.setattr(packing, "encode_texts", ENCODE_TEXTS)
    again = ready_dm("someone/corpus", tmp_path / "b", max_bytes=None)
    assert cache_files(dm.cache_path) == cache_files(again.cache_path)


def test_num_proc_2_builds_the_bytes_of_num_proc_1(tmp_path, monkeypatch):
    small_shards(monkeypatch, shard_bytes=20_000)
    monkeypatch.setattr(packing, "PROC_MIN_BYTES", 1)  # processes even for this small a shard
    path = tmp_path / "docs.parquet"
    datasets.Dataset.from_dict({"text": documents(700), "n": list(range(700))}).to_parquet(str(path))
    maps = []
    real_map = datasets.Dataset.map

    def spy(self, *args, **kwargs):
        maps.append(kwargs.get("num_proc"))
        return real_map(self, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "map", spy)
    # (one tokenizer for both: a BPE retrained in another cache_dir would key another cache)
    tokenizer = train_bpe([world_text(20_000)], vocab_size=300)
    source = resolve_source(str(path))
    one = build_token_cache(source, tokenizer, cache_dir=tmp_path / "one", max_bytes=None, val_fraction=0.1, num_proc=1)
    assert maps == []  # one process: no map at all
    two = build_token_cache(source, tokenizer, cache_dir=tmp_path / "two", max_bytes=None, val_fraction=0.1, num_proc=2)
    assert len(maps) >= 2 and set(maps) == {2}  # every shard over 2 processes
    assert cache_files(one) == cache_files(two)
    assert read_meta(two)["splits"]["val"]["tokens"] > 0


def test_world_corpus_never_imports_datasets(tmp_path):
    # The lent GPU box has no `datasets`: the built-in corpus must build and load without it.
    code = f"""
import sys
sys.modules["datasets"] = None  # every `import datasets` now fails
from lamina.data import TextDataModule
dm = TextDataModule(source="world", tokenizer="bpe", vocab_size=300, tokenizer_sample_bytes=20_000,
                    max_bytes=50_000, block_size=16, batch_size=2, val_tokens=100, val_fraction=0.1,
                    cache_dir={str(tmp_path)!r}, num_proc=4)
dm.prepare_data()
dm.setup("fit")
assert len(dm.train_data) > 1000 and len(dm.val_data) > 100
print("built without datasets")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "built without datasets" in run.stdout


def reference_splitmix64(x: int) -> int:
    """The scalar formula sources.py had: the spec the one vectorised implementation must meet."""
    mask = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def test_the_one_splitmix64_is_bit_identical_to_the_old_formula():
    rng = np.random.default_rng(0)
    values = [0, 1, 2, 2**32, 2**63 - 1, 2**63, 2**64 - 1, sources.SPLIT_SALT]
    values += [int(v) for v in rng.integers(0, 2**63, 200, dtype=np.int64)] + [(int(v) * 2 + 1) % 2**64 for v in values[-50:]]  # odd, high bits
    expected = [reference_splitmix64(v) for v in values]
    assert [splitmix64(v) for v in values] == expected
    assert splitmix64_array(np.array(values, dtype=np.uint64)).tolist() == expected
    # The split: the old float comparison, exactly, also for a fraction right at a passage's hash.
    at_hash = reference_splitmix64(7 ^ sources.SPLIT_SALT) / 2**64
    for fraction in (0.001, 0.02, 0.5, 0.999999, at_hash, np.nextafter(at_hash, 1), np.nextafter(at_hash, 0)):
        old = ["val" if reference_splitmix64(i ^ sources.SPLIT_SALT) < fraction * 2**64 else "train" for i in range(3000)]
        assert [split_of(i, fraction) for i in range(3000)] == old
        assert sources.val_flags(0, 3000, fraction).tolist() == [s == "val" for s in old]


def test_a_bpe_short_of_its_vocab_size_says_so(tmp_path, caplog):
    source = write_jsonl(tmp_path / "docs.jsonl", documents(60))
    logging.getLogger("lightning.pytorch").addHandler(caplog.handler)
    try:
        dm = ready_dm(source, tmp_path, tokenizer="bpe", vocab_size=5000)
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(caplog.handler)
    reached = dm.tokenizer.get_vocab_size()
    assert reached < 5000 and dm.model_vocab_size == 5000  # the model is sized from the config
    assert (
        f"lamina: the bpe tokenizer has {reached:,} ids, fewer than data.vocab_size=5,000" in caplog.text
        and f"set data.vocab_size to {reached} to drop the {5000 - reached:,} unused embedding rows" in caplog.text
    ), caplog.text



# ---- training windows ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    return ready_dm("world", tmp, max_bytes=60_000).cache_path


def windows(cache, **overrides) -> RandomWindows:
    args = dict(batch_size=4, block_size=16, seed=0)
    args.update(overrides)
    return RandomWindows(cache, **args)


def take(dataset, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = iter(dataset)
    return [next(batches) for _ in range(n)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b)
    )


def test_windows_are_a_pure_function_of_seed_and_batch_index(world_cache):
    stream = take(windows(world_cache), 8)
    assert same(stream, take(windows(world_cache), 8))
    assert not same(stream, take(windows(world_cache, seed=1), 8))
    assert same(take(windows(world_cache, start=5), 3), stream[5:8])
    x, y = stream[0]
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    offsets = window_offsets(0, 3, 1000, 50)
    assert offsets.min() >= 0 and offsets.max() < 50 and len(set(offsets.tolist())) == 50
    assert splitmix64_array(np.arange(5, dtype=np.uint64)).tolist() == [splitmix64(i) for i in range(5)]


def test_ddp_ranks_take_disjoint_batches_covering_the_stream(world_cache):
    single = take(windows(world_cache), 10)
    ranks = [windows(world_cache, rank=r, world_size=2) for r in range(2)]
    rank0, rank1 = ([i for _, i in zip(range(5), r.global_batch_indices())] for r in ranks)
    assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == list(range(10))
    shards = [take(r, 5) for r in ranks]
    assert same([shards[k % 2][k // 2] for k in range(10)], single)
    # Resuming rank 1 at its 3rd batch continues its own shard.
    assert same(take(windows(world_cache, rank=1, world_size=2, start=3), 2), shards[1][3:5])


def test_dataloader_workers_split_without_overlap(world_cache):
    dataset = windows(world_cache)
    serial = take(dataset, 6)
    loader = DataLoader(windows(world_cache), batch_size=None, num_workers=2)
    assert same(take(loader, 6), serial)


def test_val_windows_are_fixed_and_tile_the_start_of_val(tmp_path):
    dm = ready_dm("world", tmp_path, max_bytes=60_000, val_tokens=150, batch_size=4, block_size=16)
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert same(first, second)
    n = dm.n_val_windows
    # 9 windows hold val_tokens; rounded up to whole batches (one shape for a compiled model)
    assert (150 - 1) // 16 == 9 and n == 12 and [len(x) for x, _ in first] == [4, 4, 4]
    xs = torch.cat([x for x, _ in first]).flatten()
    ys = torch.cat([y for _, y in first]).flatten()
    val = torch.from_numpy(dm.val_data[: n * 16 + 1].astype(np.int64))
    assert torch.equal(xs, val[:-1]) and torch.equal(ys, val[1:])  # each token predicted once


def test_val_windows_round_down_when_the_split_is_short(tmp_path):
    dm = ready_dm("world", tmp_path, max_bytes=60_000, val_tokens=10_000, batch_size=4, block_size=16)
    available = (len(dm.val_data) - 1) // 16
    assert available * 16 < 10_000 and available % 4 != 0  # the split is the limit, and not whole batches
    assert dm.n_val_windows == available // 4 * 4
    assert all(len(x) == 4 for x, _ in dm.val_dataloader())


def test_val_tokens_per_byte_is_exact(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", documents(80))
    dm = ready_dm(source, tmp_path, val_fraction=0.3)
    targets = dm.val_data[1 : dm.n_val_windows * 16 + 1]
    n_bytes = sum(len(bytes([t])) for t in targets.tolist() if t != dm.eot_id)  # byte ids: 1 byte each
    assert dm.val_tokens_per_byte == pytest.approx(len(targets) / n_bytes)


# ---- with a Trainer: resuming continues the same stream -----------------------------------------


class Recorder(L.LightningModule):
    def __init__(self, vocab_size: int = 259):
        super().__init__()
        self.save_hyperparameters()  # as the GPT does: must not clash with data.vocab_size (8192)
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, _ = batch
        self.seen.append(x.clone())
        return self.weight * x.float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(tmp_path, max_steps, ckpt_path=None, save=None) -> list[torch.Tensor]:
    trainer = L.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=L.pytorch.loggers.CSVLogger(tmp_path / "runs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model = Recorder()
    trainer.fit(model, small_dm("world", tmp_path, max_bytes=60_000), ckpt_path=ckpt_path)
    if save:
        trainer.save_checkpoint(save)
    return model.seen


def test_resumed_run_sees_the_batches_of_an_uninterrupted_one(tmp_path):
    straight = fit(tmp_path, max_steps=4)
    assert len(straight) == 8  # 4 steps x 2 accumulated batches
    first = fit(tmp_path, max_steps=2, save=tmp_path / "half.ckpt")
    resumed = fit(tmp_path, max_steps=4, ckpt_path=tmp_path / "half.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(first + resumed, straight)) and len(first + resumed) == 8
    saved = list((tmp_path / "runs").rglob("tokenizer.json"))
    assert saved and json.loads(saved[0].read_text())["pre_tokenizer"]["type"] == "ByteLevel"
    assert os.path.getsize(saved[0]) > 0
