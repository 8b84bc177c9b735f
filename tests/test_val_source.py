"""`data.val_source`: a validation text of the user's choosing (a local file, folder or glob, or a
split of data.source's Hugging Face dataset) instead of lamina's own held-out passages.

Validation reads only that text; the training text, data.source's own held-out split (which the
probes read) and, with no val_source, everything else stay exactly as they were. Small local files
and a little of the world corpus: no network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lamina.data import TextDataModule, packing
from lamina.data.sources import holdout_index, resolve_source, resolve_val_source
from lamina.data.tokenizer import token_byte_lengths
from lamina.errors import ConfigError
from tests.test_bad_input import one_error_line

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def train_text() -> str:
    return "".join(f"Para {i}: the owl of Brill ate {i * 3} moths.\nAnd slept.\n\n" for i in range(400))


def val_text() -> str:  # bytes the training text never holds (digits and letters of its own)
    return "".join(f"VALIDATION line {i:04d} ZZZ qqq xx.\n" for i in range(300))


def dm_for(tmp_path: Path, **overrides) -> TextDataModule:
    args = dict(
        source=str(tmp_path / "train.txt"),
        batch_size=4,
        block_size=16,
        max_bytes=200_000,
        val_tokens=400,
        cache_dir=str(tmp_path / "cache"),
        num_proc=1,
    )
    args.update(overrides)
    dm = TextDataModule(**args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def files(tmp_path):
    (tmp_path / "train.txt").write_text(train_text())
    (tmp_path / "val.txt").write_text(val_text())
    return tmp_path


def _windows(batch):
    x, y = batch
    for row_x, row_y in zip(x, y):
        yield np.concatenate([row_x.numpy(), row_y.numpy()[-1:]])


def test_a_local_file_is_the_validation_text_and_the_train_set_is_unchanged(files):
    default = dm_for(files)
    chosen = dm_for(files, val_source=str(files / "val.txt"))
    # Validation reads val.txt only: its windows are the file's bytes from the start, in order.
    text = val_text().encode()
    windows = [w for batch in chosen.val_dataloader() for w in _windows(batch)]
    assert len(windows) == chosen.n_val_windows == (400 - 1) // 16
    for i, window in enumerate(windows):
        assert bytes(window.astype(np.uint8).tolist()) == text[i * 16 : i * 16 + 17]
    assert chosen.val_tokens_per_byte == 1.0  # byte tokens, no separator among the predicted ones
    # The training text, data.source's own held-out split and its cache are untouched.
    assert chosen.cache_path == default.cache_path and chosen.val_cache_path != default.cache_path
    assert np.array_equal(chosen.train_data, default.train_data)
    assert np.array_equal(chosen.val_data, default.val_data)
    batch = next(iter(chosen.train_dataloader()))
    assert all(np.array_equal(a, b) for a, b in zip(batch, next(iter(default.train_dataloader()))))
    assert b"VALIDATION" not in bytes(np.asarray(chosen.train_data).astype(np.uint8).tolist())


def test_no_val_source_is_todays_behaviour(files):
    dm = dm_for(files)
    assert dm.val_corpus is None and dm.val_cache_path is None and dm.validation_data is dm.val_data
    # The cache key is the one lamina always computed (val_source is not part of it).
    holdout = holdout_index(dm.corpus, 0.02, 200_000)
    key = packing.cache_key(dm.corpus, dm.tokenizer, max_bytes=200_000, val_fraction=0.02, holdout=holdout)
    assert dm.cache_path.name == key
    # Validation windows come from the source's own held-out split, from its start.
    windows = [w for batch in dm.val_dataloader() for w in _windows(batch)]
    for i, window in enumerate(windows):
        assert np.array_equal(window, np.asarray(dm.val_data[i * 16 : i * 16 + 17]))
    n = dm.n_val_windows * 16
    predicted = np.asarray(dm.val_data[1 : n + 1])
    assert dm.val_tokens_per_byte == n / int(token_byte_lengths(dm.tokenizer)[predicted].sum())


def test_the_val_cache_keys_on_the_val_text(files):
    first = dm_for(files, val_source=str(files / "val.txt"))
    (files / "val.txt").write_text(val_text().replace("ZZZ", "YYY"))
    second = dm_for(files, val_source=str(files / "val.txt"))
    assert second.val_cache_path != first.val_cache_path and second.cache_path == first.cache_path
    assert b"YYY" in bytes(np.asarray(second.validation_data).astype(np.uint8).tolist())


def test_a_folder_or_glob_of_jsonl_rows_each_a_document(files):
    folder = files / "heldout"
    folder.mkdir()
    rows = [f"Question {i}: what is {i}+{i}? Answer {2 * i}." for i in range(40)]
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows[:20]))
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows[20:]))
    for spec in (str(folder), str(folder / "*.jsonl")):
        dm = dm_for(files, val_source=spec, val_tokens=100_000)
        ids = np.asarray(dm.validation_data).tolist()
        assert ids.count(dm.eot_id) == 40  # one document per row
        text = bytes(i for i in ids if i < 256).decode()
        assert text == "".join(rows)


def test_a_split_of_the_training_hub_dataset():
    source = resolve_source("owner/corpus", dataset_config="en", text_column="body")
    val = resolve_val_source("validation", source)
    assert (val.kind, val.spec, val.dataset_config, val.dataset_split, val.text_column) == (
        "hub", "owner/corpus", "en", "validation", "body"
    )
    assert val.identity() != source.identity()
    with pytest.raises(ConfigError, match=r"^data\.val_source: 'train' is the split data\.source trains on"):
        resolve_val_source("train", source)


# ---- bad input: one line naming data.val_source ------------------------------------------------------


def prepare(tmp_path, *extra):
    return ["prepare", "--config", str(CONFIGS / "tiny.yaml"), "--data.cache_dir", str(tmp_path / "cache"),
            "--data.source", "train.txt", *extra]


@pytest.fixture
def in_files(files, monkeypatch):
    monkeypatch.chdir(files)
    return files


def test_a_missing_file_is_one_line(in_files, capsys):
    line = one_error_line(capsys, prepare(in_files, "--data.val_source", "missing.txt"))
    assert line == "lamina: error: data.val_source: no such file or folder 'missing.txt'"


@pytest.mark.parametrize("spec, message", [
    ("validation", r"data\.val_source: no such file or folder 'validation' \(it is no local path, and data\.source "
                   r"'train\.txt' is not a Hugging Face dataset with splits\); expected null .*"),
    ("train.txt", r"data\.val_source: 'train\.txt' is training text \(the same content as 'train\.txt' of "
                  r"data\.source\); .*"),
    ("empty.txt", r"data\.val_source: 'empty\.txt' holds no text"),
    ("short.txt", r"data\.val_source: 'short\.txt' has 7 tokens, fewer than block_size \+ 1 = 129; .*"),
    ("*.csv", r"data\.val_source: no file matches '\*\.csv'"),
])
def test_bad_val_sources_are_one_line(spec, message, in_files, capsys):
    (in_files / "empty.txt").write_text("")
    (in_files / "short.txt").write_text("tiny.\n")
    line = one_error_line(capsys, prepare(in_files, "--data.val_source", spec))
    assert re.fullmatch("lamina: error: " + message, line), line


def test_lamina_prepare_builds_the_val_cache_too(in_files, capsys, caplog):
    from lamina.cli import main

    with caplog.at_level("INFO"):
        main(prepare(in_files, "--data.val_source", "val.txt"))
    assert "token cache ready at" in capsys.readouterr().out
    line = next(r.getMessage() for r in caplog.records if "data.val_source" in r.getMessage())
    assert re.fullmatch(r"lamina: token cache .*: 0 train \+ 9,901 val tokens, .* \(data\.val_source 'val\.txt'\)", line)
