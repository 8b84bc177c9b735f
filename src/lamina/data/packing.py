"""Token cache: a source's text tokenised once into flat uint16/uint32 memmaps, train and val.

    cache_dir/<key>/train.bin   token ids of the train split, documents separated by <|endoftext|>
    cache_dir/<key>/val.bin     the same for val
    cache_dir/<key>/meta.json   dtype, and tokens / UTF-8 bytes / documents per split

`key` hashes everything the ids depend on: the source identity (local files by content), the
tokenizer's JSON, max_bytes, val_fraction and FORMAT_VERSION. A cache is built in a temp folder
beside its final place and renamed into place only when complete, so a killed build is never read
back; a folder without a valid meta.json is rebuilt. A build that cannot write (disk full,
read-only, no permission) removes its temp folder and says so in one line naming the folder.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from lamina.data.sources import Passage, Source, iter_passages
from lamina.data.tokenizer import EOT
from lamina.errors import ConfigError, write_failure

FORMAT_VERSION = 1
SPLITS = ("train", "val")
BATCH_BYTES = 4 << 20  # text tokenised per encode_batch call: bounds memory, keeps threads busy


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (ids < 65,536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def cache_key(source: Source, tokenizer: Tokenizer, *, max_bytes: int | None, val_fraction: float) -> str:
    key = {
        "format": FORMAT_VERSION,
        "source": source.identity(),
        "tokenizer": hashlib.sha256(tokenizer.to_str().encode()).hexdigest(),
        "max_bytes": max_bytes,
        "val_fraction": val_fraction,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(
    source: Source, tokenizer: Tokenizer, *, cache_dir, max_bytes: int | None, val_fraction: float
) -> Path:
    return Path(cache_dir) / cache_key(source, tokenizer, max_bytes=max_bytes, val_fraction=val_fraction)


def build_token_cache(
    source: Source,
    tokenizer: Tokenizer,
    *,
    cache_dir: str | os.PathLike,
    max_bytes: int | None,
    val_fraction: float,
) -> Path:
    """The cache folder for this source and tokenizer, built first if needed (a no-op when a
    complete one exists)."""
    final = cache_path(source, tokenizer, cache_dir=cache_dir, max_bytes=max_bytes, val_fraction=val_fraction)
    if is_complete(final):
        return final
    # Only a finished build is ever renamed into place, so an incomplete folder there is damage
    # (or a copy cut short): never trust it. Checked again in case a build just landed.
    if final.exists() and not is_complete(final):
        shutil.rmtree(final)
    tmp = final.with_name(f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        with writing():
            final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(final)
        shutil.rmtree(tmp, ignore_errors=True)
        with writing():
            tmp.mkdir()
        meta = write_splits(
            tmp, iter_passages(source, val_fraction, max_bytes), tokenizer, source.size_hint(), max_bytes
        )
        meta.update(
            key=final.name,
            source_spec=source.spec,
            source=source.identity(),
            max_bytes=max_bytes,
            val_fraction=val_fraction,
        )
        with writing():
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            os.replace(tmp, final)
    except WriteFailed as failed:
        if not is_complete(final):  # not "another process finished first": a real failure
            raise cache_write_error(final, disk_usage(tmp), failed.__cause__) from failed.__cause__
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class WriteFailed(Exception):
    """An OSError while writing the cache, told apart from one while reading the source (a hub
    dataset's network error is not the cache folder's fault)."""


@contextlib.contextmanager
def writing():
    try:
        yield
    except OSError as err:
        raise WriteFailed() from err


def cache_write_error(final: Path, written: int, err: OSError) -> ConfigError:
    mb = f"{written / 1e6:.1f} MB written before it failed"
    why = write_failure(err)
    if why == "out of disk space":
        return ConfigError(
            f"data.cache_dir: out of disk space building the token cache in {final} ({mb}); "
            f"free space or point data.cache_dir elsewhere"
        )
    return ConfigError(
        f"data.cache_dir: cannot write the token cache in {final} ({why}; {mb}); "
        f"point data.cache_dir at a writable folder"
    )


def describe_cache(folder: str | os.PathLike) -> str:
    """One line with a cache's size: tokens per split and bytes on disk."""
    splits = read_meta(folder)["splits"]
    return (
        f"lamina: token cache {folder}: {splits['train']['tokens']:,} train + {splits['val']['tokens']:,} val "
        f"tokens, {disk_usage(folder) / 1e6:.1f} MB on disk"
    )


def write_splits(
    folder: Path, passages, tokenizer: Tokenizer, size_hint: int | None, max_bytes: int | None
) -> dict:
    """Tokenise passages in batches and append each to its split's file; returns the meta."""
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    eot = tokenizer.token_to_id(EOT)
    writers = {split: SplitWriter(folder / f"{split}.bin", dtype, eot) for split in SPLITS}
    known = [n for n in (size_hint, max_bytes) if n]
    total = min(known) if known else None  # for the progress bar only
    try:
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc="lamina: tokenising",
            file=sys.stderr,
            mininterval=1.0,
        ) as bar:
            for batch in batched_by_bytes(passages, BATCH_BYTES):
                encodings = tokenizer.encode_batch_fast([p.text for p in batch], add_special_tokens=False)
                for passage, encoding in zip(batch, encodings):
                    writers[passage.split].add(passage, encoding.ids)
                for writer in writers.values():
                    writer.flush()
                bar.update(sum(p.n_bytes for p in batch))
        splits = {split: writer.close() for split, writer in writers.items()}
    finally:
        for writer in writers.values():
            with contextlib.suppress(OSError):  # when already failing, the first error is the one to tell
                writer.file.close()
    val = splits["val"]
    return {
        "format": FORMAT_VERSION,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "eot_id": eot,
        "splits": splits,
        "tokens_per_byte": val["tokens"] / val["bytes"] if val["bytes"] else None,
    }


def batched_by_bytes(passages, n_bytes: int):
    batch, size = [], 0
    for passage in passages:
        batch.append(passage)
        size += passage.n_bytes
        if size >= n_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class SplitWriter:
    """Appends one split's token ids to its file, with `<|endoftext|>` after each document."""

    def __init__(self, path: Path, dtype: np.dtype, eot: int):
        with writing():
            self.file = open(path, "wb")
        self.dtype, self.eot = dtype, eot
        self.pending: list[list[int]] = []
        self.doc: int | None = None  # document of the last passage written
        self.tokens = self.bytes = self.documents = 0

    def add(self, passage: Passage, ids: list[int]) -> None:
        if self.doc is not None and passage.doc != self.doc:
            self._end_document()
        self.doc = passage.doc
        self.pending.append(ids)
        self.bytes += passage.n_bytes

    def _end_document(self) -> None:
        self.pending.append([self.eot])
        self.documents += 1

    def flush(self) -> None:
        ids = np.fromiter(itertools.chain.from_iterable(self.pending), dtype=self.dtype)
        with writing():
            self.write(ids)
        self.tokens += ids.size
        self.pending = []

    def write(self, ids: np.ndarray) -> None:
        ids.tofile(self.file)

    def close(self) -> dict:
        if self.doc is not None:
            self._end_document()
        self.flush()
        with writing():
            self.file.close()  # buffered bytes land here: a full disk may show only now
        return {"tokens": self.tokens, "bytes": self.bytes, "documents": self.documents}


def read_meta(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def is_complete(folder: Path) -> bool:
    """A finished build of this format: meta.json present and every split file of its size."""
    try:
        meta = read_meta(folder)
        itemsize = np.dtype(meta["dtype"]).itemsize
        return meta["format"] == FORMAT_VERSION and all(
            (folder / f"{split}.bin").stat().st_size == meta["splits"][split]["tokens"] * itemsize
            for split in SPLITS
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def open_split(folder: str | os.PathLike, split: str) -> np.ndarray:
    """The split's token ids as a read-only memmap (an empty array for an empty split)."""
    meta = read_meta(folder)
    dtype = np.dtype(meta["dtype"])
    if meta["splits"][split]["tokens"] == 0:  # np.memmap refuses empty files
        return np.zeros(0, dtype=dtype)
    return np.memmap(Path(folder) / f"{split}.bin", dtype=dtype, mode="r")


def remove_stale_temp_dirs(final: Path) -> None:
    """Delete temp folders of killed builds of this key on this host (their pid is gone);
    a temp folder of a live build, or another host's, is left alone."""
    prefix = f"{final.name}.tmp-{socket.gethostname()}-"
    for tmp in final.parent.glob(f"{glob.escape(prefix)}*"):
        pid = tmp.name[len(prefix) :]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes on disk of every file under `path` (a cache folder, or the whole cache_dir)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while walking (a concurrent build finishing)
                pass
    return total
