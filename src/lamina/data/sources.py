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
is the same on every machine and does not depend on the seed. Where the hash sends no passage of a
small source to val, the passage with the smallest hash is held out (`holdout_index`), so any
source of two passages or more has a val split.

`data.val_source` (resolve_val_source) names a validation text of the user's choosing instead: a
local file, folder or glob, or another split of data.source's Hugging Face dataset. All of its
passages are val; data.source is split exactly as without it (its held-out passages stay out of
training, and are what the in-distribution probes read), so setting it changes only what val/loss
and val/bpb are measured on.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from lamina.errors import ConfigError

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SUFFIXES = ", ".join(BUILDERS)
TXT_PASSAGE_CHARS = 1 << 12  # a paragraph longer than this is cut at a line end: a file without
# blank lines still gives many passages, so even a small one has a val split
SPLIT_SALT = 0x243F6A8885A308D3  # fixed (digits of pi): the split must not move with data.seed
ROWS_PER_READ = 1024

MASK64 = (1 << 64) - 1
SPLIT_BLOCK = 4096  # passage indices whose split is hashed in one vectorised call
HOLDOUT_SCAN_BYTES = 1 << 30  # how far a source is read for a val passage before trusting chance


def splitmix64_array(x) -> np.ndarray:
    """splitmix64 (Steele et al.), a fast, well-mixed 64-bit integer hash, over a uint64 array or
    scalar (wrapping arithmetic); the same on every machine. lamina's one implementation: the
    train/val split, the training windows and RLP's seeds all hash through it."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def splitmix64(x: int) -> int:
    """splitmix64_array of one Python int (taken modulo 2**64), as a Python int."""
    return int(splitmix64_array(np.uint64(x & MASK64)))


def val_flags(start: int, count: int, val_fraction: float) -> np.ndarray:
    """Whether each passage index in [start, start + count) is held out for val: its hash is below
    val_fraction * 2**64. The bound is the float's exact value rounded up to an integer, so the
    uint64 comparison is exact (a float comparison would round the hash)."""
    bound = math.ceil(val_fraction * 2**64)
    indices = np.arange(start, start + count, dtype=np.uint64) ^ np.uint64(SPLIT_SALT)
    if bound >= 1 << 64:
        return np.ones(count, dtype=bool)
    return splitmix64_array(indices) < np.uint64(bound)


def split_of(index: int, val_fraction: float) -> str:
    """'val' for a fraction `val_fraction` of passage indices, 'train' for the rest."""
    return "val" if val_flags(index, 1, val_fraction)[0] else "train"


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
    thoughts: str = "keep"  # keep | strip the <think> ... </think> spans (lamina.data.thoughts)
    world: tuple = ()  # world: (key, value) of each data.levels, tasks, level_weights, exposure_bins, family_weights set
    _identity: dict = field(default_factory=dict, compare=False, repr=False)

    def identity(self) -> dict:
        """What the caches are keyed on. Local files by CONTENT (sha256, streamed), so an edited
        file gets a new cache and a renamed one does not; the world by seed, families and the
        generator's own source code; the hub by name, config and split. Computed once."""
        if not self._identity:
            self._identity.update(self._compute_identity())
            if self.thoughts != "keep":  # kept text keeps the cache keys it always had
                self._identity["thoughts"] = self.thoughts
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
                **{key: list(value) if isinstance(value, tuple) else value for key, value in self.world},
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
    index: int = -1  # its place in the source's stream of passages (what the split hashes)


# ---- resolving data.source ----------------------------------------------------------------------


def resolve_source(
    spec: str,
    *,
    seed: int = 0,
    families: list[str] | None = None,
    dataset_config: str | None = None,
    dataset_split: str = "train",
    text_column: str = "text",
    world_options: dict | None = None,
) -> Source:
    """Classify and check `data.source` without reading any text (local files must exist).
    `world_options`: `lamina.data.world.generate`'s levels, tasks, level_weights, exposure_bins,
    family_weights."""
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
    world_defaults = {"levels": None, "tasks": None, "level_weights": "by_kind", "exposure_bins": None,
                      "family_weights": None}
    options = {k: v for k, v in (world_options or {}).items() if v != world_defaults[k]}
    if options and kind != "world":
        raise ConfigError(
            f"data.{next(iter(options))}: only applies to data.source 'world', not {spec!r} (leave it unset)"
        )
    if kind != "hub" and (dataset_config is not None or dataset_split != "train"):
        key = "dataset_config" if dataset_config is not None else "dataset_split"
        raise ConfigError(f"data.{key}: only applies to a Hugging Face dataset, not {spec!r}")
    if kind == "world":
        from lamina.data import world

        families = tuple(world.FAMILIES if families is None else families)
        options = {k: v if k == "level_weights" else world._as_tuple(v) for k, v in options.items()}
        if "family_weights" in options:  # kept as sorted (family, weight) pairs: hashable, one cache key
            options["family_weights"] = tuple(sorted(dict(world.check_family_weights(
                world_options["family_weights"], families)).items()))
        world.generate(seed, families, **options)  # validates the names now, not at the first read
        return Source(spec, "world", seed=seed, families=families, world=tuple(options.items()))
    if kind == "hub":
        return Source(
            spec, "hub", dataset_config=dataset_config, dataset_split=dataset_split, text_column=text_column
        )
    return Source(spec, "local", files=local_files(spec), text_column=text_column)


VAL_SOURCE_EXPECTED = (
    f"null (hold out data.val_fraction of data.source), a local file, folder or glob of {SUFFIXES} "
    f"files, or a split of data.source's Hugging Face dataset (e.g. validation)"
)


def resolve_val_source(spec, source: Source) -> Source | None:
    """Classify and check `data.val_source` against the resolved `data.source`, reading no text.

    None: no text of its own (today's behaviour: val is the source's own held-out passages). A
    local file, folder or glob: all of its text is the validation text. A bare split name (no
    `/`, not a path on disk) with a Hugging Face data.source: that split of the same dataset
    (same config and text column). Validation text that is the training text is refused: a
    local file whose content is one of data.source's files, or the hub split data.source trains on.
    """
    if spec is None:
        return None
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"data.val_source: expected {VAL_SOURCE_EXPECTED}, got {spec!r}")
    if looks_local(spec):
        val = Source(spec, "local", files=local_files(spec, "data.val_source"), text_column=source.text_column)
        if source.kind == "local":
            train = {sha: f for f, (_, sha) in zip(source.files, source.identity()["files"])}
            for f, (_, sha) in zip(val.files, val.identity()["files"]):
                if sha in train:
                    raise ConfigError(
                        f"data.val_source: {f!r} is training text (the same content as {train[sha]!r} of "
                        f"data.source); validate on text the model is not trained on, or leave it null"
                    )
        return val
    if source.kind == "hub" and "/" not in spec:
        if spec == source.dataset_split:
            raise ConfigError(
                f"data.val_source: {spec!r} is the split data.source trains on (data.dataset_split); "
                f"name another split of {source.spec!r}, or leave it null"
            )
        return Source(
            source.spec,
            "hub",
            dataset_config=source.dataset_config,
            dataset_split=spec,
            text_column=source.text_column,
        )
    if source.kind == "hub":
        why = "it is no local path, and a split of data.source's dataset is a bare name"
    else:
        why = f"it is no local path, and data.source {source.spec!r} is not a Hugging Face dataset with splits"
    raise ConfigError(f"data.val_source: no such file or folder {spec!r} ({why}); expected {VAL_SOURCE_EXPECTED}")


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


def local_files(spec: str, key: str = "data.source") -> tuple[str, ...]:
    """The files a local `data.source` (or `key`) names, sorted, each with a supported suffix."""
    path = Path(os.path.expanduser(spec))
    if glob.has_magic(spec):
        matches = sorted(p for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
        if not matches:
            raise ConfigError(f"{key}: no file matches {spec!r}")
        files = [p for p in matches if Path(p).suffix.lower() in BUILDERS]
        if not files:
            raise ConfigError(f"{key}: {spec!r} matches no {SUFFIXES} file")
    elif path.is_dir():
        files = sorted(
            str(p)
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in BUILDERS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ConfigError(f"{key}: folder {spec!r} holds no {SUFFIXES} file")
    elif path.is_file():
        if path.suffix.lower() not in BUILDERS:
            raise ConfigError(f"{key}: {spec!r} is not a {SUFFIXES} file")
        files = [str(path)]
    else:
        raise ConfigError(f"{key}: no such file or folder {spec!r}")
    if all(os.path.getsize(f) == 0 for f in files):
        raise ConfigError(f"{key}: {no_text_in(spec, files)}")
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


def iter_passages(
    source: Source, val_fraction: float, max_bytes: int | None = None, holdout: int | None = None
) -> Iterator[Passage]:
    """Every passage of the source in order, tagged with its split, until `max_bytes` UTF-8 bytes
    (both splits together; the passage that crosses the cap is cut at a character boundary).
    `holdout` (see holdout_index) is a passage index sent to val whatever its hash."""
    taken = 0
    flags, block = None, -1
    for index, (doc, text) in enumerate(_raw_passages(source)):
        if source.thoughts == "strip":
            from lamina.data.thoughts import strip_thoughts  # here: it imports the tokenizer, which imports us

            text = strip_thoughts(text)[0]
        data = text.encode("utf-8")
        capped = max_bytes is not None and taken + len(data) >= max_bytes
        if capped:
            text = data[: max_bytes - taken].decode("utf-8", errors="ignore")
            data = text.encode("utf-8")
        if data:
            taken += len(data)
            if index // SPLIT_BLOCK != block:  # one numpy call per block, not per passage
                block = index // SPLIT_BLOCK
                flags = val_flags(block * SPLIT_BLOCK, SPLIT_BLOCK, val_fraction)
            val = flags[index % SPLIT_BLOCK] or index == holdout
            yield Passage(text, doc, len(data), "val" if val else "train", index)
        if capped:
            return
    if taken == 0:
        raise ConfigError(f"data.source: {describe_empty(source)}")


def holdout_index(source: Source, val_fraction: float, max_bytes: int | None = None) -> int | None:
    """The passage to hold out for val when the hash gives val none: a small source (a 20 KB
    text file is 5 passages, so at val_fraction 0.02 its val split is most often empty) still
    validates. It is the passage whose hash is smallest, the one a growing val_fraction would
    take first. None when a val passage comes by chance (read only up to the first one), and
    for a Hugging Face dataset (never read here: a cached run needs no network; a hub dataset
    is large). A source of one passage cannot be split: that is a ConfigError."""
    if source.kind == "hub":
        return None
    best, count, taken = None, 0, 0
    for passage in iter_passages(source, val_fraction, max_bytes):
        if passage.split == "val":
            return None
        count += 1
        taken += passage.n_bytes
        key = splitmix64(passage.index ^ SPLIT_SALT)
        if best is None or key < best[0]:
            best = (key, passage.index)
        if taken >= HOLDOUT_SCAN_BYTES:  # so many passages and none in val: val_fraction is tiny
            return None
    if count == 1:
        what = f"{source.files[0]!r}" if source.kind == "local" and len(source.files) == 1 else repr(source.spec)
        raise ConfigError(
            f"data.source: {what} is a single passage of {taken:,} bytes, which cannot be split into "
            f"train and val (data.val_fraction {val_fraction}); give it more text (a .txt file is cut "
            f"into passages at blank lines and every {TXT_PASSAGE_CHARS:,} characters; a .jsonl, "
            f".json or .parquet row is one passage)"
        )
    return best[1]


def train_sample(
    source: Source, val_fraction: float, n_bytes: int, holdout: int | None = None
) -> Iterator[str]:
    """The first `n_bytes` of training text (never val), e.g. to train a tokenizer on."""
    taken = 0
    for passage in iter_passages(source, val_fraction, holdout=holdout):
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

        for doc, example in enumerate(world.generate(source.seed, source.families, **dict(source.world))):
            yield doc, example.text
        return
    if source.kind == "hub":
        texts = _column(
            _open_hub(source), source.text_column, f"Hugging Face dataset {source.spec!r}", hub=source.spec
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
    datasets = _import_datasets(f"a Hugging Face dataset ({source.spec!r})")
    try:
        return datasets.load_dataset(
            source.spec, source.dataset_config, split=source.dataset_split, streaming=True
        )
    except Exception as err:  # noqa: BLE001 - sorted below; anything else goes through as it is
        if is_network_error(err):
            raise HubUnreachable(hub_unreachable(source.spec, err)) from err
        if not isinstance(err, (datasets.exceptions.DatasetNotFoundError, FileNotFoundError, ValueError)):
            raise
        config = f" (dataset_config {source.dataset_config!r}, dataset_split {source.dataset_split!r})"
        raise ConfigError(
            f"data.source: cannot open Hugging Face dataset {source.spec!r}{config}: {one_line(err)}"
        ) from err


class HubUnreachable(ConfigError):
    """The hub could not be reached (no network, offline mode, a dropped connection): the user's
    to fix, and not the data's fault, so a partial token cache build is kept for a resume."""


LOCAL_FILES = f"a file, folder or glob of {', '.join(BUILDERS)} files"
NETWORK_ERRORS = (  # (module, class): checked only when the module is loaded (else none was raised)
    ("requests.exceptions", "ConnectionError"),
    ("requests.exceptions", "Timeout"),
    ("requests.exceptions", "ChunkedEncodingError"),
    ("httpx", "TransportError"),  # huggingface_hub >= 1.0 talks httpx
    ("aiohttp", "ClientConnectionError"),  # fsspec's HTTP file system, which streams data files
    ("huggingface_hub.errors", "OfflineModeIsEnabled"),
    ("huggingface_hub.errors", "LocalEntryNotFoundError"),  # offline, and not in the local cache
)


def is_network_error(err: BaseException) -> bool:
    """Whether `err`, or what it was raised from, says the network (or the hub) is out of reach:
    `datasets` raises ConnectionError("Couldn't reach ... on the Hub") with no network or with
    HF_HUB_OFFLINE=1; a stream cut mid-way raises the HTTP library's own errors."""
    classes = [ConnectionError, TimeoutError]
    for module, name in NETWORK_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            classes.append(cls)
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, tuple(classes)):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def hub_unreachable(spec: str, err: BaseException, streaming: bool = False) -> str:
    what = "lost the connection to" if streaming else "could not reach"
    then = "; finished shards of the token cache are kept, and the same command resumes" if streaming else ""
    return (
        f"data.source: {what} the Hugging Face hub for data.source={spec} ({one_line(err)}){then}; "
        f"with no network, train on local files instead: data.source {LOCAL_FILES} "
        f"(or 'world', the built-in corpus)"
    )


def _import_datasets(what: str):
    """`datasets`, or one line saying what needs it: a machine may lack it (the built-in corpus
    never imports it)."""
    try:
        import datasets
    except ImportError as err:
        if not (isinstance(err, ModuleNotFoundError) and err.name == "datasets"):
            raise ConfigError(f"data.source: reading {what}: `datasets` is installed but does not import: {err}") from err
        raise ConfigError(
            f"data.source: reading {what} needs the `datasets` package, which is not installed "
            f"(pip install datasets); data.source 'world', the built-in corpus, does not"
        ) from err
    return datasets


def _open_local(path: str):
    datasets = _import_datasets(f"{Path(path).suffix} files")
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


def _column(dataset, column: str, where: str, hub: str | None = None) -> Iterator[str]:
    """The non-empty strings of one column, checking the column exists and holds text."""
    for batch in _read_batches(dataset, where, hub):
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


def _read_batches(dataset, where: str, hub: str | None = None) -> Iterator[dict]:
    """Column batches of a streamed dataset; a local file `datasets` cannot parse is a ConfigError,
    and so is a hub dataset (`hub`: its name) whose connection drops. Another error while
    streaming from the hub may be the server's or a bug, so it goes through as it is."""
    batches = dataset.iter(batch_size=ROWS_PER_READ)
    while True:
        try:
            with datasets_quiet(hub is None):
                batch = next(batches)
        except StopIteration:
            return
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - UnicodeDecodeError, pyarrow errors, ...
            if hub is not None:
                if is_network_error(err):
                    raise HubUnreachable(hub_unreachable(hub, err, streaming=True)) from err
                raise
            raise ConfigError(f"data.source: cannot read {where}: {one_line(err)}") from err
        yield batch


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
