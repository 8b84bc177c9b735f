"""Data input the way a new user gets it wrong, through the real entry point (`lamina.cli.main`, or
the console script where the environment must differ): each mistake gives one line naming the key
and what to do, exit code 2 and no traceback; and a small corpus that used to fail now works.

Nothing here touches the network: the hub is reached with HF_HUB_OFFLINE=1 set, which is how
`datasets` fails on a machine without one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.cli import main
from lamina.data import packing
from lamina.data.sources import TXT_PASSAGE_CHARS, split_of
from tests.test_bad_input import one_error_line

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def prepare_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["prepare", "--config", str(CONFIGS / "tiny.yaml"), "--data.cache_dir", str(tmp_path / "cache"), *extra]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (the tiny config's run folder is relative)


# ---- data.probe_files -----------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["", " "])
def test_an_empty_probe_files_entry_is_one_line(entry, tmp_path, capsys):
    line = one_error_line(capsys, prepare_args(tmp_path, "--data.probe_files", json.dumps([entry])))
    assert line == f"lamina: error: data.probe_files: entry 1 is {entry!r}, expected the path of a UTF-8 text file"


@pytest.mark.parametrize("content, what", [("", "is empty"), ("\n \n\t\n", "holds only white space")])
def test_an_empty_probe_file_is_one_line(content, what, tmp_path, capsys):
    (tmp_path / "poems.txt").write_text("The fox and the owl.\n" * 20)
    (tmp_path / "blank.txt").write_text(content)
    line = one_error_line(capsys, prepare_args(tmp_path, "--data.probe_files", "[poems.txt, blank.txt]"))
    assert line == f"lamina: error: data.probe_files: 'blank.txt' {what}, expected UTF-8 text to probe the model with"


# ---- a Hugging Face dataset with no network ---------------------------------------------------------


def test_a_hub_dataset_without_network_is_one_line(tmp_path):
    # `datasets` raises ConnectionError("Couldn't reach ... on the Hub (OfflineModeIsEnabled)") here,
    # and the same with no network at all (LocalEntryNotFoundError inside, after its retries).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    lamina = Path(sys.executable).with_name("lamina")
    run = subprocess.run(
        [str(lamina), *prepare_args(tmp_path, "--data.source", "someone/no-such-corpus")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, run.stderr
    assert re.fullmatch(
        r"lamina: error: data\.source: could not reach the Hugging Face hub for data\.source=someone/no-such-corpus "
        r"\(Couldn't reach 'someone/no-such-corpus' on the Hub \(OfflineModeIsEnabled\)\); with no network, "
        r"train on local files instead: data\.source a file, folder or glob of \.txt, \.jsonl, \.json, \.parquet "
        r"files \(or 'world', the built-in corpus\)",
        errors[0],
    ), errors[0]


# ---- a small local text file ------------------------------------------------------------------------


def prose(n_bytes: int) -> str:
    """Lines of prose without blank lines: a .txt file cut into passages every 4 KB only."""
    line = "The owl of Brill ate moths, and the fox of Osk ate mice in the long evenings.\n"
    return line * (n_bytes // len(line))


def test_a_20kb_text_file_gets_a_val_split(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text(prose(20_000))
    passages = -(-path.stat().st_size // TXT_PASSAGE_CHARS)
    # The hash sends none of its 5 passages to val at the default val_fraction: it used to fail.
    assert passages == 5 and all(split_of(i, 0.02) == "train" for i in range(passages))
    main(prepare_args(tmp_path, "--data.source", str(path)))
    cache = Path(capsys.readouterr().out.split("token cache ready at ")[1].strip())
    splits = packing.read_meta(cache)["splits"]
    assert splits["val"]["tokens"] >= 129 and splits["train"]["tokens"] > splits["val"]["tokens"]
    assert splits["train"]["bytes"] + splits["val"]["bytes"] == path.stat().st_size


@pytest.mark.parametrize("name, text", [
    ("one.txt", "A single short note, with no paragraphs to split it at.\n" * 10),
    ("one.jsonl", json.dumps({"text": "One document in one row of a jsonl file."}) + "\n"),
])
def test_a_single_passage_file_cannot_be_split_and_says_so(name, text, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    line = one_error_line(capsys, prepare_args(tmp_path, "--data.source", name))
    n_bytes = len(text.encode()) if name.endswith(".txt") else len(json.loads(text)["text"])
    assert re.fullmatch(
        rf"lamina: error: data\.source: '{re.escape(name)}' is a single passage of {n_bytes:,} bytes, which "
        rf"cannot be split into train and val \(data\.val_fraction 0\.02\); give it more text .*",
        line,
    ), line


def test_local_files_on_a_machine_without_datasets_is_one_line(tmp_path, capsys, monkeypatch):
    # (the lent GPU box has no `datasets`: the world corpus needs none, local files and the hub do)
    (tmp_path / "notes.txt").write_text(prose(20_000))
    monkeypatch.setitem(sys.modules, "datasets", None)  # every `import datasets` now fails
    line = one_error_line(capsys, prepare_args(tmp_path, "--data.source", "notes.txt"))
    assert line == (
        "lamina: error: data.source: reading .txt files needs the `datasets` package, which is not "
        "installed (pip install datasets); data.source 'world', the built-in corpus, does not"
    )
