"""Token cache: a source's text tokenised once into flat uint16/uint32 memmaps, train and val.

    cache_dir/<key>/train.bin   token ids of the train split, documents separated by <|endoftext|>
    cache_dir/<key>/val.bin     the same for val
    cache_dir/<key>/meta.json   dtype, and tokens / UTF-8 bytes / documents per split

`key` hashes everything the ids depend on: the source identity (local files by content), the
tokenizer's JSON, max_bytes, val_fraction and FORMAT_VERSION. Only a finished build is renamed to
`<key>`, so a folder there without a valid meta.json is damage and is rebuilt.

A build goes shard by shard, so that an interrupted one resumes. Passages are taken SHARD_BYTES of
text at a time; a shard's ids are appended to `<key>.partial/{train,val}.bin`, the files are
fsynced, and only then is the shard recorded in `<key>.partial/progress.json` (written whole and
renamed over the old one). The next build of the key (after Ctrl-C, a kill, a dropped connection)
cuts the files back to the last recorded shard, reads the source past the recorded passages
without tokenising them (checking their text against a hash in the record) and goes on. The cache
is byte-identical to one built in one go: the `<|endoftext|>` before a passage depends only on the
document of the previous passage of its split, which the record keeps, so no shard's ids depend on
where the shards begin. One build of a key runs at a time (a lock file in the partial folder, held
with flock); another process, on this machine or one sharing the folder, waits for it and then
uses its cache. A build that cannot write (disk full, read-only, no permission) removes the partial
folder, giving its space back, and says so in one line naming the folder.

Tokenising is `tokenizers`' encode_batch_fast (threads in Rust) over batches of passages. For a
Hugging Face dataset or local files and num_proc > 1, each shard goes through `datasets`'
`Dataset.map(batched=True, num_proc=...)`, which also spreads the Python side (ids into arrays)
over processes. The world corpus is one seeded stream generated in this process, while a thread
tokenises the batch before; that path never imports `datasets`.
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
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from lamina.data.sources import HubUnreachable, Passage, Source, iter_passages
from lamina.data.tokenizer import EOT
from lamina.errors import ConfigError, write_failure

try:
    import fcntl
except ImportError:  # (not on Windows: builds there are not locked against each other)
    fcntl = None

FORMAT_VERSION = 1
SPLITS = ("train", "val")
BATCH_BYTES = 4 << 20  # text tokenised per encode_batch_fast call: bounds memory, keeps threads busy
SHARD_BYTES = 256 << 20  # text per resumable shard: the most an interrupted build loses
PROC_MIN_BYTES = 8 << 20  # text per process at least: a smaller piece costs more to ship than to tokenise
MAP_BATCH_ROWS = 1000  # passages per call of the map function in each process
PARTIAL_LAYOUT = 1  # version of progress.json; a partial build of another layout starts over
PARTIAL_SUFFIX = ".partial"
PROGRESS = "progress.json"
LOCK = "lock"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (ids < 65,536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a batch scheduler narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def cache_key(
    source: Source, tokenizer: Tokenizer, *, max_bytes: int | None, val_fraction: float, holdout: int | None = None
) -> str:
    key = {
        "format": FORMAT_VERSION,
        "source": source.identity(),
        "tokenizer": hashlib.sha256(tokenizer.to_str().encode()).hexdigest(),
        "max_bytes": max_bytes,
        "val_fraction": val_fraction,
    }
    if holdout is not None:  # (only then: every other cache keeps the key it always had)
        key["holdout"] = holdout
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(
    source: Source,
    tokenizer: Tokenizer,
    *,
    cache_dir,
    max_bytes: int | None,
    val_fraction: float,
    holdout: int | None = None,
) -> Path:
    key = cache_key(source, tokenizer, max_bytes=max_bytes, val_fraction=val_fraction, holdout=holdout)
    return Path(cache_dir) / key


def build_token_cache(
    source: Source,
    tokenizer: Tokenizer,
    *,
    cache_dir: str | os.PathLike,
    max_bytes: int | None,
    val_fraction: float,
    holdout: int | None = None,
    num_proc: int = 1,
) -> Path:
    """The cache folder for this source and tokenizer, built first if needed (a no-op when a
    complete one exists; the rest of an interrupted build when its partial folder is there).
    `holdout`: see sources.holdout_index; `num_proc`: processes for a hub or local source."""
    final = cache_path(
        source, tokenizer, cache_dir=cache_dir, max_bytes=max_bytes, val_fraction=val_fraction, holdout=holdout
    )
    if is_complete(final):
        return final
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    try:
        with writing():
            final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(final)
        with build_lock(partial):
            if is_complete(final):  # another process built it while this one waited
                shutil.rmtree(partial, ignore_errors=True)
                return final
            if final.exists():  # only a finished build is ever renamed there: this is damage
                shutil.rmtree(final)
            meta = write_splits(
                partial,
                source,
                tokenizer,
                max_bytes=max_bytes,
                val_fraction=val_fraction,
                holdout=holdout,
                num_proc=num_proc,
            )
            meta.update(
                key=final.name,
                source_spec=source.spec,
                source=source.identity(),
                max_bytes=max_bytes,
                val_fraction=val_fraction,
            )
            with writing():
                write_json(partial / "meta.json", meta)
                (partial / PROGRESS).unlink(missing_ok=True)
                (partial / LOCK).unlink(missing_ok=True)
                os.replace(partial, final)
    except WriteFailed as failed:
        written = disk_usage(partial)
        shutil.rmtree(partial, ignore_errors=True)  # a full disk wants its space back more than a resume
        if not is_complete(final):  # not "another process finished first": a real failure
            raise cache_write_error(final, written, failed.__cause__) from failed.__cause__
    except HubUnreachable:
        raise  # the finished shards stay: the same command resumes once the hub is reachable
    except ConfigError:
        shutil.rmtree(partial, ignore_errors=True)  # the data is at fault: fixing it changes the key
        raise
    except BaseException:
        done = read_progress(partial)
        if done:
            print(
                f"lamina: token cache build stopped with {len(done)} shard(s) done "
                f"({done[-1]['bytes'] / 1e6:,.1f} MB of text) in {partial}; the same command resumes it",
                file=sys.stderr,
            )
        raise
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


# ---- one build, shard by shard ---------------------------------------------------------------------


class SourceChanged(Exception):
    """The text of a recorded shard is not what the source gives now (a hub dataset updated)."""

    def __init__(self, shard: int):
        super().__init__(shard)
        self.shard = shard


def write_splits(
    folder: Path,
    source: Source,
    tokenizer: Tokenizer,
    *,
    max_bytes: int | None,
    val_fraction: float,
    holdout: int | None = None,
    num_proc: int = 1,
) -> dict:
    """Tokenise the source's passages into `folder`/{train,val}.bin, resuming after the shards
    `folder`/progress.json records; returns the meta."""
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    eot = tokenizer.token_to_id(EOT)
    plan = {"layout": PARTIAL_LAYOUT, "format": FORMAT_VERSION, "shard_bytes": SHARD_BYTES, "dtype": dtype.name}
    plan["eot_id"] = eot
    done = read_progress(folder, plan, dtype)
    finished = bool(done) and done[-1]["last"]  # killed after its last shard: nothing left to read
    batches = iter(())
    while not finished:
        batches = shard_batches(iter_passages(source, val_fraction, max_bytes, holdout))
        try:
            skip_done(batches, done)
            break
        except SourceChanged as changed:  # keep the shards before it (their text matched) and read again
            print(
                f"lamina: the source's text differs from the partial build's at shard {changed.shard}: "
                f"rebuilding from there",
                file=sys.stderr,
            )
            done = done[: changed.shard]
            with writing():
                write_progress(folder, plan, done)
    if done:
        print(
            f"lamina: resuming the token cache build in {folder}: {len(done)} shard(s) done "
            f"({done[-1]['bytes'] / 1e6:,.1f} MB of text)",
            file=sys.stderr,
        )
    state = done[-1]["splits"] if done else {}
    writers = {split: SplitWriter(folder / f"{split}.bin", dtype, eot, state.get(split)) for split in SPLITS}
    # Processes only for datasets' sources: the world corpus must not need `datasets` at all.
    pooled = num_proc > 1 and source.kind != "world"
    known = [n for n in (source.size_hint(), max_bytes) if n]
    try:
        with tqdm(
            total=min(known) if known else None,  # for the progress bar only
            initial=done[-1]["bytes"] if done else 0,
            unit="B",
            unit_scale=True,
            desc="lamina: tokenising",
            file=sys.stderr,
            mininterval=1.0,
        ) as bar, ThreadPoolExecutor(1, thread_name_prefix="lamina-tokenise") as thread:
            shard, digest, passages = [], shard_digest(), done[-1]["passages"] if done else 0
            text_bytes = done[-1]["bytes"] if done else 0
            inflight = None
            for batch, ends_shard, last in batches:
                # Sequential, in stream order: which passages get an <|endoftext|> before them.
                flags = [writers[p.split].start_passage(p) for p in batch]
                digest_update(digest, batch)
                passages += len(batch)
                text_bytes += sum(p.n_bytes for p in batch)
                if pooled:
                    shard.append((batch, flags))
                else:  # tokenise this batch in the thread while the next one is read
                    job = (batch, flags, thread.submit(encode_texts, tokenizer, [p.text for p in batch]))
                    if inflight is not None:
                        write_batch(writers, *inflight[:2], inflight[2].result(), eot, dtype)
                        bar.update(sum(p.n_bytes for p in inflight[0]))
                    inflight = job
                if not ends_shard:
                    continue
                if pooled:
                    encode_shard(shard, writers, tokenizer, eot, dtype, num_proc)
                    bar.update(sum(p.n_bytes for batch, _ in shard for p in batch))
                    shard = []
                elif inflight is not None:
                    write_batch(writers, *inflight[:2], inflight[2].result(), eot, dtype)
                    bar.update(sum(p.n_bytes for p in inflight[0]))
                    inflight = None
                for writer in writers.values():
                    writer.sync()
                done.append(
                    {
                        "passages": passages,
                        "bytes": text_bytes,
                        "text_blake2b": digest.hexdigest(),
                        "last": last,
                        "splits": {split: writer.state() for split, writer in writers.items()},
                    }
                )
                with writing():
                    write_progress(folder, plan, done)
                digest = shard_digest()
        splits = {split: writer.finish() for split, writer in writers.items()}
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


def shard_batches(passages):
    """(batch, ends_shard, last) over the passages: batches of about BATCH_BYTES of text, a shard
    ending after the passage that brings it to SHARD_BYTES (or at the end of the stream). The
    boundaries depend on the passages alone, so a resumed build cuts the shards where the first
    one did."""
    passages = iter(passages)
    batch, batch_bytes, shard_bytes = [], 0, 0
    upcoming = next(passages, None)
    while upcoming is not None:
        passage, upcoming = upcoming, next(passages, None)
        batch.append(passage)
        batch_bytes += passage.n_bytes
        shard_bytes += passage.n_bytes
        ends_shard = shard_bytes >= SHARD_BYTES or upcoming is None
        if ends_shard or batch_bytes >= BATCH_BYTES:
            yield batch, ends_shard, upcoming is None
            batch, batch_bytes = [], 0
            if ends_shard:
                shard_bytes = 0


def skip_done(batches, done: list[dict]) -> None:
    """Read past the recorded shards' passages without tokenising them, checking each shard's
    text against its record (a Hugging Face dataset is keyed by name: its text can change)."""
    shard, digest, passages = 0, shard_digest(), 0
    if not done:
        return
    for batch, ends_shard, last in batches:
        digest_update(digest, batch)
        passages += len(batch)
        if not ends_shard:
            continue
        record = done[shard]
        if (passages, digest.hexdigest(), last) != (record["passages"], record["text_blake2b"], record["last"]):
            raise SourceChanged(shard)
        shard, digest = shard + 1, shard_digest()
        if shard == len(done):
            return
    raise SourceChanged(shard)  # the stream ended before the recorded shards did


def shard_digest():
    return hashlib.blake2b(digest_size=16)


def digest_update(digest, batch: list[Passage]) -> None:
    for passage in batch:
        data = passage.text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))  # (lengths too: "ab"+"c" is not "a"+"bc")
        digest.update(data)


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text (no special tokens added): the one place text becomes ids."""
    return [encoding.ids for encoding in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def write_batch(writers: dict, batch: list[Passage], flags: list[bool], ids: list[list[int]], eot: int, dtype) -> None:
    """Append a batch's ids to their splits' files, each after its <|endoftext|> where flagged."""
    for split, writer in writers.items():
        parts = itertools.chain.from_iterable(
            ([eot, *passage_ids] if flag else passage_ids)
            for passage, flag, passage_ids in zip(batch, flags, ids)
            if passage.split == split
        )
        writer.append(np.fromiter(parts, dtype=dtype))


def encode_shard(shard: list, writers: dict, tokenizer: Tokenizer, eot: int, dtype, num_proc: int) -> None:
    """Tokenise one shard over processes with `datasets`' map, then append it to the files."""
    passages = [p for batch, _ in shard for p in batch]
    procs = min(num_proc, sum(p.n_bytes for p in passages) // PROC_MIN_BYTES)
    if procs < 2:  # (a small last shard): not worth the processes
        for batch, flags in shard:
            write_batch(writers, batch, flags, encode_texts(tokenizer, [p.text for p in batch]), eot, dtype)
        return
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    table = datasets.Dataset.from_dict(
        {"text": [p.text for p in passages], "eot": [f for _, flags in shard for f in flags]}
    )
    with quiet_datasets():
        mapped = table.map(
            ShardEncoder(tokenizer.to_str(), eot, dtype.name),
            batched=True,
            batch_size=MAP_BATCH_ROWS,
            num_proc=procs,
            remove_columns=["text", "eot"],
            keep_in_memory=True,
            new_fingerprint=uuid.uuid4().hex,  # (nothing is cached on disk: no need to hash the function)
        )
    ids = mapped.data.table.column("ids")
    for split, writer in writers.items():
        mask = pa.array([p.split == split for p in passages])
        flat = pc.list_flatten(pc.filter(ids, mask))
        writer.append(np.asarray(flat.to_numpy(), dtype=dtype))


class ShardEncoder:
    """The map function of `encode_shard`: ids of each passage, after its <|endoftext|> where
    flagged. Pickled to the worker processes as the tokenizer's JSON; loaded once in each."""

    def __init__(self, tokenizer_json: str, eot: int, dtype: str):
        self.tokenizer_json, self.eot, self.dtype = tokenizer_json, eot, dtype
        self._tokenizer = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}

    def __call__(self, batch: dict) -> dict:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        ids = encode_texts(self._tokenizer, batch["text"])
        return {
            "ids": [
                np.array([self.eot, *passage_ids] if flag else passage_ids, dtype=self.dtype)
                for flag, passage_ids in zip(batch["eot"], ids)
            ]
        }


@contextlib.contextmanager
def quiet_datasets():
    """No progress bar of datasets' own beside lamina's (nor its notes on forking) during a map."""
    from datasets import utils

    bars = not utils.are_progress_bars_disabled()
    utils.disable_progress_bars()
    try:
        with _quiet_logger("datasets"):
            yield
    finally:
        if bars:
            utils.enable_progress_bars()


@contextlib.contextmanager
def _quiet_logger(name: str):
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class SplitWriter:
    """Appends one split's token ids to its file. An <|endoftext|> goes before a passage whose
    document differs from the previous passage's in this split, and after the last passage: one
    after each document's passages in the split. `state` (from a shard record) resumes it: the
    file is cut back to the tokens recorded, and the counts and last document go on from there."""

    def __init__(self, path: Path, dtype: np.dtype, eot: int, state: dict | None = None):
        state = state or {"tokens": 0, "bytes": 0, "documents": 0, "doc": None}
        self.dtype, self.eot = dtype, eot
        self.tokens, self.bytes, self.documents = state["tokens"], state["bytes"], state["documents"]
        self.doc: int | None = state["doc"]  # document of the last passage written
        with writing():
            self.file = open(path, "r+b" if path.exists() else "w+b")
            self.file.truncate(self.tokens * dtype.itemsize)
            self.file.seek(0, os.SEEK_END)

    def start_passage(self, passage: Passage) -> bool:
        """Count the passage in; whether an <|endoftext|> goes before its ids."""
        end_of_document = self.doc is not None and passage.doc != self.doc
        self.documents += end_of_document
        self.doc = passage.doc
        self.bytes += passage.n_bytes
        return end_of_document

    def append(self, ids: np.ndarray) -> None:
        with writing():
            self.write(ids)
        self.tokens += ids.size

    def write(self, ids: np.ndarray) -> None:
        ids.tofile(self.file)

    def sync(self) -> None:
        with writing():
            self.file.flush()  # buffered bytes land here: a full disk may show only now
            os.fsync(self.file.fileno())

    def state(self) -> dict:
        return {"tokens": self.tokens, "bytes": self.bytes, "documents": self.documents, "doc": self.doc}

    def finish(self) -> dict:
        if self.doc is not None:
            self.append(np.array([self.eot], dtype=self.dtype))
            self.documents += 1
        self.sync()
        with writing():
            self.file.close()
        return {"tokens": self.tokens, "bytes": self.bytes, "documents": self.documents}


def read_progress(folder: Path, plan: dict | None = None, dtype: np.dtype | None = None) -> list[dict]:
    """The shards a partial build has recorded; none when it is of another plan (shard size,
    layout) or its files are shorter than recorded (damaged: start over)."""
    try:
        progress = json.loads((folder / PROGRESS).read_text())
        done = progress["shards"]
        if plan is None:
            return done
        if progress["plan"] != plan:
            return []
        if done:
            for split in SPLITS:
                if (folder / f"{split}.bin").stat().st_size < done[-1]["splits"][split]["tokens"] * dtype.itemsize:
                    return []
        return done
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_progress(folder: Path, plan: dict, done: list[dict]) -> None:
    write_json(folder / PROGRESS, {"plan": plan, "shards": done})


def write_json(path: Path, value) -> None:
    """Write a JSON file whole or not at all: to a temp file, fsynced, renamed over the old one."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(json.dumps(value, indent=2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself survives a power cut once the folder is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def build_lock(partial: Path):
    """Hold `partial`/lock (flock) for one build of a key at a time. A waiter whose lock file was
    renamed away with a finished build (or removed) while it waited takes a fresh one."""
    while True:
        with writing():
            partial.mkdir(exist_ok=True)
        try:
            fd = os.open(partial / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # the folder was renamed into place just now
        except OSError as err:
            raise WriteFailed() from err
        try:
            _flock(fd, partial)
            if os.fstat(fd).st_ino == os.stat(partial / LOCK).st_ino:
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _flock(fd: int, partial: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"lamina: another process is building the token cache {partial}; waiting for it", file=sys.stderr)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass  # a file system without locks: build unlocked, as lamina always did


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
    """Delete temp folders of killed builds of this key on this host (their pid is gone), as
    lamina made them before builds were resumable; one of a live build, or another host's, is
    left alone."""
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
