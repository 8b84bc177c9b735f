"""The data pipeline: sources, tokenizers, the token cache and the DataModule's windows.

Everything runs on small local files or a few hundred KB of the world corpus: no network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lamina.data import TextDataModule
from lamina.data import packing, tokenizer as tok_lib
from lamina.data.module import RandomWindows, splitmix64_array, window_offsets
from lamina.data.packing import build_token_cache, read_meta, token_dtype
from lamina.data.sources import iter_passages, resolve_source, split_of, splitmix64
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
    assert n == (150 - 1) // 16 == 9 and [len(x) for x, _ in first] == [4, 4, 1]  # last batch kept
    xs = torch.cat([x for x, _ in first]).flatten()
    ys = torch.cat([y for _, y in first]).flatten()
    val = torch.from_numpy(dm.val_data[: n * 16 + 1].astype(np.int64))
    assert torch.equal(xs, val[:-1]) and torch.equal(ys, val[1:])  # each token predicted once


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
