"""Documents from a data source: the built-in world corpus, a Hugging Face dataset, or local files.

`data.source` is one of
- `world`: the built-in synthetic corpus (`lamina.data.world`), one example per document;
- a local file, folder or glob of .txt / .jsonl / .json / .parquet files;
- otherwise a Hugging Face dataset name (`HuggingFaceFW/fineweb-edu`), streamed.

Hub and local files go through the same `datasets.load_dataset(..., streaming=True)` code path, so
nothing is ever loaded whole. A source comes out as one ordered, deterministic stream of passages.
A passage is a whole document (a world example, a jsonl/parquet row), except for .txt files: a
.txt file is one document read line by line and cut into passages at paragraph breaks (blank
lines), so that a single file can still be split into train and val, and so that a multi-GB file
is never one string. The packer writes `<|endoftext|>` between documents, not between passages.

Each passage goes to train or val by a fixed integer hash of its index in the stream, so the split
is the same on every machine and does not depend on the seed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lamina.errors import ConfigError

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SUFFIXES = ", ".join(BUILDERS)
TXT_PASSAGE_CHARS = 1 << 12  # a paragraph longer than this is cut at a line end: a file without
# blank lines still gives many passages, so even a small one has a val split
SPLIT_SALT = 0x243F6A8885A308D3  # fixed (digits of pi): the split must not move with data.seed
ROWS_PER_READ = 1024

MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """A fast, well-mixed 64-bit integer hash (Steele et al.); the same on every machine."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def split_of(index: int, val_fraction: float) -> str:
    """'val' for a fraction `val_fraction` of passage indices, 'train' for the rest."""
    return "val" if splitmix64(index ^ SPLIT_SALT) < val_fraction * 2**64 else "train"


@dataclass(frozen=True)
class Source:
    """A resolved `data.source`: what to read, and nothing read yet."""

    spec: str  # data.source as the user wrote it
    kind: str  # "world" | "hub" | "local"
    files: tuple[str, ...] = ()  # local: sorted file paths
    seed: int = 0  # world
    families: tuple[str, ...] = ()  # world
    dataset_config: str | None = None  # hub
    dataset_split: str = "train"  # hub
    text_column: str = "text"  # hub, .jsonl, .json, .parquet
    _identity: dict = field(default_factory=dict, compare=False, repr=False)

    def identity(self) -> dict:
        """What the caches are keyed on. Local files by CONTENT (sha256, streamed), so an edited
        file gets a new cache and a renamed one does not; the world by seed, families and the
        generator's own source code; the hub by name, config and split. Computed once."""
        if not self._identity:
            self._identity.update(self._compute_identity())
        return self._identity

    def _compute_identity(self) -> dict:
        if self.kind == "world":
            from lamina.data import world

            generator = hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()
            return {
                "kind": "world",
                "seed": self.seed,
                "families": list(self.families),
                "generator": generator,
            }
        if self.kind == "hub":
            return {
                "kind": "hub",
                "name": self.spec,
                "config": self.dataset_config,
                "split": self.dataset_split,
                "text_column": self.text_column,
            }
        files = [[Path(f).suffix, file_sha256(f)] for f in self.files]
        return {"kind": "local", "text_column": self.text_column, "files": files}

    def size_hint(self) -> int | None:
        """Bytes the source holds, where known without reading it (for the progress bar)."""
        return sum(os.path.getsize(f) for f in self.files) if self.kind == "local" else None


@dataclass(frozen=True)
class Passage:
    text: str
    doc: int  # the document it belongs to: `<|endoftext|>` goes between documents
    n_bytes: int  # UTF-8 bytes of text: the denominator of bits per byte
    split: str  # "train" | "val"


# ---- resolving data.source ----------------------------------------------------------------------


def resolve_source(
    spec: str,
    *,
    seed: int = 0,
    families: list[str] | None = None,
    dataset_config: str | None = None,
    dataset_split: str = "train",
    text_column: str = "text",
) -> Source:
    """Classify and check `data.source` without reading any text (local files must exist)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"data.source: expected 'world', a Hugging Face dataset name or a local path, got {spec!r}"
        )
    if not isinstance(text_column, str) or not text_column:
        raise ConfigError(f"data.text_column: expected a column name, got {text_column!r}")
    kind = "world" if spec == "world" else "local" if looks_local(spec) else "hub"
    if families is not None and kind != "world":
        raise ConfigError(
            f"data.families: only applies to data.source 'world', not {spec!r} (set it to null)"
        )
    if kind != "hub" and (dataset_config is not None or dataset_split != "train"):
        key = "dataset_config" if dataset_config is not None else "dataset_split"
        raise ConfigError(f"data.{key}: only applies to a Hugging Face dataset, not {spec!r}")
    if kind == "world":
        from lamina.data import world

        families = tuple(world.FAMILIES if families is None else families)
        world.generate(seed, families)  # validates the family names now, not at the first read
        return Source(spec, "world", seed=seed, families=families)
    if kind == "hub":
        return Source(
            spec, "hub", dataset_config=dataset_config, dataset_split=dataset_split, text_column=text_column
        )
    return Source(spec, "local", files=local_files(spec), text_column=text_column)


def looks_local(spec: str) -> bool:
    """A hub name is `name` or `owner/name`; anything path-like, or present on disk, is local."""
    path = Path(os.path.expanduser(spec))
    return (
        path.exists()
        or glob.has_magic(spec)
        or spec.startswith(("/", "./", "../", "~", "."))
        or path.suffix.lower() in BUILDERS
        or spec.count("/") > 1
        or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())  # "data/x": ./data exists
    )


def local_files(spec: str) -> tuple[str, ...]:
    """The files a local `data.source` names, sorted, each with a supported suffix."""
    path = Path(os.path.expanduser(spec))
    if glob.has_magic(spec):
        matches = sorted(p for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
        if not matches:
            raise ConfigError(f"data.source: no file matches {spec!r}")
        files = [p for p in matches if Path(p).suffix.lower() in BUILDERS]
        if not files:
            raise ConfigError(f"data.source: {spec!r} matches no {SUFFIXES} file")
    elif path.is_dir():
        files = sorted(
            str(p)
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in BUILDERS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ConfigError(f"data.source: folder {spec!r} holds no {SUFFIXES} file")
    elif path.is_file():
        if path.suffix.lower() not in BUILDERS:
            raise ConfigError(f"data.source: {spec!r} is not a {SUFFIXES} file")
        files = [str(path)]
    else:
        raise ConfigError(f"data.source: no such file or folder {spec!r}")
    if all(os.path.getsize(f) == 0 for f in files):
        raise ConfigError(f"data.source: {no_text_in(spec, files)}")
    return tuple(files)


def no_text_in(spec: str, files) -> str:
    return (
        f"{files[0]!r} holds no text"
        if len(files) == 1
        else f"the {len(files)} files of {spec!r} hold no text"
    )


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---- reading ------------------------------------------------------------------------------------


def iter_passages(source: Source, val_fraction: float, max_bytes: int | None = None) -> Iterator[Passage]:
    """Every passage of the source in order, tagged with its split, until `max_bytes` UTF-8 bytes
    (both splits together; the passage that crosses the cap is cut at a character boundary)."""
    taken = 0
    for index, (doc, text) in enumerate(_raw_passages(source)):
        data = text.encode("utf-8")
        capped = max_bytes is not None and taken + len(data) >= max_bytes
        if capped:
            text = data[: max_bytes - taken].decode("utf-8", errors="ignore")
            data = text.encode("utf-8")
        if data:
            taken += len(data)
            yield Passage(text, doc, len(data), split_of(index, val_fraction))
        if capped:
            return
    if taken == 0:
        raise ConfigError(f"data.source: {describe_empty(source)}")


def train_sample(source: Source, val_fraction: float, n_bytes: int) -> Iterator[str]:
    """The first `n_bytes` of training text (never val), e.g. to train a tokenizer on."""
    taken = 0
    for passage in iter_passages(source, val_fraction):
        if passage.split != "train":
            continue
        text = passage.text
        if taken + passage.n_bytes > n_bytes:
            text = text.encode("utf-8")[: n_bytes - taken].decode("utf-8", errors="ignore")
        taken += passage.n_bytes
        yield text
        if taken >= n_bytes:
            return


def describe_empty(source: Source) -> str:
    if source.kind == "local":
        return no_text_in(source.spec, source.files)
    return f"Hugging Face dataset {source.spec!r} holds no text in column {source.text_column!r}"


def _raw_passages(source: Source) -> Iterator[tuple[int, str]]:
    """(document number, text) for every non-empty passage, in source order."""
    if source.kind == "world":
        from lamina.data import world

        for doc, example in enumerate(world.generate(source.seed, source.families)):
            yield doc, example.text
        return
    if source.kind == "hub":
        texts = _column(
            _open_hub(source), source.text_column, f"Hugging Face dataset {source.spec!r}", local=False
        )
        for doc, text in enumerate(texts):
            yield doc, text
        return
    doc = 0
    for path in source.files:
        if Path(path).suffix.lower() == ".txt":
            for paragraph in _paragraphs(_txt_lines(path)):
                yield doc, paragraph
            doc += 1
        else:
            for text in _column(_open_local(path), source.text_column, repr(path)):
                yield doc, text
                doc += 1


def _open_hub(source: Source):
    import datasets

    try:
        return datasets.load_dataset(
            source.spec, source.dataset_config, split=source.dataset_split, streaming=True
        )
    except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError, ValueError) as err:
        config = f" (dataset_config {source.dataset_config!r}, dataset_split {source.dataset_split!r})"
        raise ConfigError(
            f"data.source: cannot open Hugging Face dataset {source.spec!r}{config}: {one_line(err)}"
        ) from err


def _open_local(path: str):
    import datasets

    builder = BUILDERS[Path(path).suffix.lower()]
    extra = {"keep_linebreaks": True} if builder == "text" else {}
    try:
        with datasets_quiet():
            return datasets.load_dataset(builder, data_files=[path], split="train", streaming=True, **extra)
    except Exception as err:  # noqa: BLE001 - a .parquet that is not one fails here, before any read
        raise ConfigError(f"data.source: cannot read {path!r}: {one_line(err)}") from err


@contextlib.contextmanager
def datasets_quiet(quiet: bool = True):
    """`datasets` logs an error line of its own before it raises on a file it cannot parse; the
    ConfigError made from that exception is the one line the user should see."""
    logger = logging.getLogger("datasets")
    level = logger.level
    if quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _txt_lines(path: str) -> Iterator[str]:
    # The "text" builder reads in 10 MB chunks and yields lines with their line breaks (universal
    # newlines: "\r\n" becomes "\n"), so a huge file streams in bounded memory.
    for batch in _read_batches(_open_local(path), repr(path)):
        yield from batch["text"]


def _paragraphs(lines: Iterator[str], limit: int = TXT_PASSAGE_CHARS) -> Iterator[str]:
    """Join lines into paragraphs; blank lines stay with the paragraph before them, so the
    passages concatenate back to the exact text."""
    buf, size, prev_blank = [], 0, False
    for line in lines:
        blank = not line.strip()
        if buf and ((prev_blank and not blank) or size >= limit):
            yield "".join(buf)
            buf, size = [], 0
        buf.append(line)
        size += len(line)
        prev_blank = blank
    if buf:
        yield "".join(buf)


def _column(dataset, column: str, where: str, local: bool = True) -> Iterator[str]:
    """The non-empty strings of one column, checking the column exists and holds text."""
    for batch in _read_batches(dataset, where, local):
        if column not in batch:
            present = ", ".join(map(repr, batch)) or "none"
            raise ConfigError(f"data.text_column: no column {column!r} in {where} (columns: {present})")
        for value in batch[column]:
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise ConfigError(
                    f"data.text_column: column {column!r} of {where} holds {type(value).__name__}, expected text"
                )
            yield value


def _read_batches(dataset, where: str, local: bool = True) -> Iterator[dict]:
    """Column batches of a streamed dataset; a local file `datasets` cannot parse is a ConfigError
    (a hub error may be the network's, so it goes through as it is)."""
    batches = dataset.iter(batch_size=ROWS_PER_READ)
    while True:
        try:
            with datasets_quiet(local):
                batch = next(batches)
        except StopIteration:
            return
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - UnicodeDecodeError, pyarrow errors, ...
            if not local:
                raise
            raise ConfigError(f"data.source: cannot read {where}: {one_line(err)}") from err
        yield batch


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
