"""TextDataModule: source -> tokenizer -> token cache -> random training windows, fixed val windows.

Training batches are a pure function of (seed, global batch index): window offsets come from an
integer hash, never from a stateful RNG, so a run resumed at step N sees exactly the batches an
uninterrupted run would, and DDP ranks and DataLoader workers take disjoint batch indices.
"""

from __future__ import annotations

import codecs
import itertools
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, get_worker_info

from lamina.data.packing import SPLITS, available_cores, build_token_cache, describe_cache, open_split, read_meta
from lamina.data.sources import MASK64, holdout_index, resolve_source, resolve_val_source, splitmix64_array
from lamina.data.thoughts import with_thoughts
from lamina.data.tokenizer import (
    END_THINK,
    EOT,
    MIN_BPE_VOCAB_SIZE,
    THINK,
    check_kind,
    load_tokenizer,
    model_vocab_size,
    save_tokenizer,
    special_ids,
    token_byte_lengths,
)
from lamina.errors import ConfigError


class TextDataModule(L.LightningDataModule):
    """Text from `data.source`, tokenised once into a cached memmap; random training windows
    (reproducible and resumable), a fixed validation set, and exact bits-per-byte accounting.

    After setup(): `tokenizer` (tokenizers.Tokenizer), `cache_path`, `meta`, `train_data` and
    `val_data` (token memmaps of data.source's splits), `validation_data` (the text validation
    measures: `val_data`, or data.val_source's tokens from `val_cache_path`), `val_tokens_per_byte`,
    `eot_id`, `think_id`, `end_think_id`.
    """

    def __init__(
        self,
        source: str = "world",
        tokenizer: str = "byte",
        vocab_size: int = 8192,
        batch_size: int = 32,
        block_size: int = 256,
        max_bytes: int | None = 20_000_000,
        val_fraction: float = 0.02,
        val_tokens: int = 65_536,
        val_source: str | None = None,
        families: list[str] | None = None,
        levels: list[int] | None = None,
        tasks: list[str] | None = None,
        level_weights: str = "by_kind",
        exposure_bins: list[int] | None = None,
        family_weights: dict[str, int] | None = None,
        thoughts: str = "keep",
        dataset_config: str | None = None,
        dataset_split: str = "train",
        text_column: str = "text",
        probe_files: list[str] = [],  # noqa: B006 - copied below, never mutated
        seed: int = 0,
        cache_dir: str = ".cache/lamina",
        num_workers: int = 0,
        tokenizer_sample_bytes: int = 4_000_000,
        num_proc: int | None = None,
    ):
        """Text for next-token training, tokenised once and cached.

        Args:
            source: `world` (the built-in corpus), a Hugging Face dataset name
                (e.g. `HuggingFaceFW/fineweb-edu`), or a local file, folder or glob of
                .txt/.jsonl/.json/.parquet files.
            tokenizer: `byte` (256 byte ids + 3 special tokens) or `bpe` (byte-level BPE trained on
                the training text, cached).
            vocab_size: vocabulary size of a `bpe` tokenizer, special tokens included (>= 259).
            batch_size: sequences per batch (per device and per micro-batch).
            block_size: tokens per training sequence; linked from `model.block_size`.
            max_bytes: cap on the UTF-8 bytes of text taken from the source, train and val together
                (null: all of it; the world corpus is endless and needs a cap).
            val_fraction: share of documents held out for validation (0 < val_fraction < 1).
            val_tokens: tokens in the fixed validation set, taken from the start of the val split.
            val_source: the text val/loss and val/bpb are measured on (null: data.source's own
                held-out passages, data.val_fraction of them). A local file, folder or glob of
                .txt/.jsonl/.json/.parquet files (e.g. nanoGPT's last 10% of a text, written to a
                file), or a split of data.source's Hugging Face dataset (e.g. `validation`). Read up
                to data.max_bytes (data.thoughts applies to it too), tokenised into a cache of its own;
                data.source is split as without it, so the training text (and the probes' held-out
                text) does not change.
            families: world families to train on (null: prose, arith, strings; world v2 adds
                people, context).
            levels: world arithmetic levels to train on (null: all of 1-5); the others become
                `ood/level/<k>` probes.
            tasks: world tasks to train on (null: all); the held-out tasks of trained families
                become `ood/task/<task>` probes.
            level_weights: `by_kind` (every world kind alike: arithmetic level 1, one task, is
                rarer than level 3, four) or `equal` (each arithmetic level alike).
            exposure_bins: relative mentions of the world people family's roster bins (null:
                0, 1, 10, 100), probed as `exposure/<bin>` beside `novel`; needs the people family.
                Which roster people fill each bin is drawn by `seed` (world.exposure_roster).
            family_weights: relative weight of each world family, integers (null: every family
                alike; a family not named weighs 1), e.g. `{arith: 3, strings: 2}`. An example picks
                its family by these weights, then a kind within it.
            thoughts: `keep` the `<think> ... </think>` spans in the text, or `strip` them (the
                worked reasoning left out, the question and answer kept; lamina.data.thoughts).
            dataset_config: Hugging Face dataset config name (e.g. `sample-10BT`).
            dataset_split: Hugging Face dataset split to stream.
            text_column: column holding the text in a Hugging Face dataset or .jsonl/.json/.parquet file.
            probe_files: local text files, each an extra out-of-distribution probe `ood/<stem>`.
            seed: seed of the world corpus (the people roster's exposure bins included: every
                probe and evaluation about the roster reads the same draw) and of the training
                window order.
            cache_dir: folder for trained tokenizers and token caches.
            num_workers: DataLoader worker processes.
            tokenizer_sample_bytes: bytes of training text a `bpe` tokenizer is trained on.
            num_proc: processes that tokenise a Hugging Face dataset or local files into the token
                cache (null: every core of this machine; the world corpus is generated and
                tokenised in one process).
        """
        super().__init__()
        # Kept in checkpoints, not sent to the logger: LightningCLI's config.yaml records them, and
        # Lightning refuses to merge a data.vocab_size (unused by byte) with model.vocab_size.
        self.save_hyperparameters(logger=False)
        check_args(self.hparams)
        self.corpus = resolve_source(
            source,
            seed=seed,
            families=families,
            dataset_config=dataset_config,
            dataset_split=dataset_split,
            text_column=text_column,
            world_options=dict(levels=levels, tasks=tasks, level_weights=level_weights, exposure_bins=exposure_bins,
                               family_weights=family_weights),
        )
        self.corpus = with_thoughts(self.corpus, thoughts)
        self.val_corpus = resolve_val_source(val_source, self.corpus)
        if self.val_corpus is not None:  # tokenised as the training text is
            self.val_corpus = with_thoughts(self.val_corpus, thoughts)
        self.probe_files = list(probe_files)
        # Set by setup():
        self.tokenizer = None  # tokenizers.Tokenizer
        self.cache_path: Path | None = None
        self.meta: dict | None = None
        self.train_data: np.ndarray | None = None  # token ids, read-only memmaps
        self.val_data: np.ndarray | None = None  # data.source's held-out passages (probes read them)
        self.val_cache_path: Path | None = None  # data.val_source's own token cache (None without it)
        self.validation_data: np.ndarray | None = None  # what val/bpb measures: val_data, or val_source's
        self.val_tokens_per_byte: float | None = None  # of the val set's predicted tokens: exact bpb
        self.eot_id = self.think_id = self.end_think_id = None

    @property
    def model_vocab_size(self) -> int:
        """Embedding rows the model needs, from the config alone (nothing is built)."""
        return model_vocab_size(self.hparams.tokenizer, self.hparams.vocab_size)

    # ---- LightningDataModule hooks ----------------------------------------------------------------

    def prepare_data(self) -> None:
        """Train (or load) the tokenizer and build the token cache; once per node."""
        tokenizer, self.cache_path, self.val_cache_path = self._build()
        hp = self.hparams
        reached = tokenizer.get_vocab_size()
        if hp.tokenizer == "bpe" and reached < hp.vocab_size:
            # The model still has data.vocab_size rows (it is sized from the config, before any
            # build): the ids the sample could not supply are rows that are never trained.
            rank_zero_info(
                f"lamina: the bpe tokenizer has {reached:,} ids, fewer than data.vocab_size={hp.vocab_size:,}: "
                f"its sample of {min(hp.tokenizer_sample_bytes, hp.max_bytes or hp.tokenizer_sample_bytes):,} "
                f"bytes supplies no more merges (raise data.tokenizer_sample_bytes, or set data.vocab_size "
                f"to {reached} to drop the {hp.vocab_size - reached:,} unused embedding rows)"
            )
        rank_zero_info(describe_cache(self.cache_path))
        if self.val_cache_path is not None:
            rank_zero_info(describe_cache(self.val_cache_path) + f" (data.val_source {hp.val_source!r})")

    def setup(self, stage: str | None = None) -> None:
        self.tokenizer, self.cache_path, self.val_cache_path = self._build()  # cache hits after prepare_data
        self.meta = read_meta(self.cache_path)
        self.train_data = open_split(self.cache_path, "train")
        self.val_data = open_split(self.cache_path, "val")
        self.validation_data = self.val_data if self.val_cache_path is None else open_split(self.val_cache_path, "val")
        ids = special_ids(self.tokenizer)
        self.eot_id, self.think_id, self.end_think_id = ids[EOT], ids[THINK], ids[END_THINK]
        self.val_tokens_per_byte = self._val_tokens_per_byte()
        if self.hparams.val_tokens > len(self.validation_data):  # fine (a small corpus), but say so
            what = "the val split" if self.val_cache_path is None else f"data.val_source {self.hparams.val_source!r}"
            rank_zero_info(
                f"lamina: data.val_tokens is {self.hparams.val_tokens:,} but {what} holds "
                f"{len(self.validation_data):,} tokens: validating on all of them"
            )
        if stage == "fit":
            self._save_tokenizer_to_run()

    def train_dataloader(self) -> DataLoader:
        start, rank, world_size = 0, 0, 1
        if self.trainer is not None:
            # Batches already consumed by this rank: resuming continues the same stream.
            start = self.trainer.global_step * self.trainer.accumulate_grad_batches
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        windows = RandomWindows(
            self._require_setup(),
            batch_size=self.hparams.batch_size,
            block_size=self.hparams.block_size,
            seed=self.hparams.seed,
            start=start,
            rank=rank,
            world_size=world_size,
        )
        return DataLoader(windows, batch_size=None, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        self._require_setup()
        windows = FixedWindows(
            self.val_cache_path or self.cache_path, block_size=self.hparams.block_size, n_windows=self.n_val_windows
        )
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = ContiguousShards(windows, self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(
            windows,
            batch_size=self.hparams.batch_size,
            shuffle=False,
            sampler=sampler,
            drop_last=False,
            **self._loader_kwargs(),
        )

    # ---- helpers -----------------------------------------------------------------------------------

    @property
    def n_val_windows(self) -> int:
        """Windows in the fixed val set: `val_tokens` tokens from the start of the val split, cut
        into windows of block_size + 1 that share one token, so every token is predicted once. A
        whole number of batches (rounded up where the split has the tokens, else down): every val
        batch has one shape, so a compiled model traces validation once."""
        block, batch = self.hparams.block_size, self.hparams.batch_size
        available = (len(self.validation_data) - 1) // block
        wanted = min((self.hparams.val_tokens - 1) // block, available)
        if wanted < batch:
            return wanted
        rounded_up = -(-wanted // batch) * batch
        return rounded_up if rounded_up <= available else wanted // batch * batch

    def _build(self):
        hp = self.hparams
        sample_bytes = min(hp.tokenizer_sample_bytes, hp.max_bytes or hp.tokenizer_sample_bytes)
        holdout = holdout_index(self.corpus, hp.val_fraction, hp.max_bytes)
        tokenizer = load_tokenizer(
            hp.tokenizer,
            self.corpus,
            vocab_size=hp.vocab_size,
            sample_bytes=sample_bytes,
            val_fraction=hp.val_fraction,
            cache_dir=hp.cache_dir,
            holdout=holdout,
        )
        path = build_token_cache(
            self.corpus,
            tokenizer,
            cache_dir=hp.cache_dir,
            max_bytes=hp.max_bytes,
            val_fraction=hp.val_fraction,
            holdout=holdout,
            num_proc=hp.num_proc or available_cores(),
        )
        self._check_split_sizes(read_meta(path))
        return tokenizer, path, self._build_val(tokenizer)

    def _build_val(self, tokenizer) -> Path | None:
        """data.val_source's token cache (every passage in its val split), keyed as any cache is:
        by its content (a local file) or name and split (a hub dataset), the tokenizer, the cap."""
        if self.val_corpus is None:
            return None
        hp = self.hparams
        try:
            path = build_token_cache(
                self.val_corpus,
                tokenizer,
                cache_dir=hp.cache_dir,
                max_bytes=hp.max_bytes,
                val_fraction=1.0,  # all of it
                num_proc=hp.num_proc or available_cores(),
            )
        except ConfigError as err:  # the reading errors name data.source: here it is data.val_source
            message = str(err)
            if not message.startswith("data.source"):
                raise
            raise type(err)("data.val_source" + message[len("data.source") :]) from err
        have, need = read_meta(path)["splits"]["val"]["tokens"], hp.block_size + 1
        if have < need:
            raise ConfigError(
                f"data.val_source: {hp.val_source!r} has {have} tokens, fewer than block_size + 1 = {need}; "
                f"give it more text, or lower model.block_size"
            )
        return path

    def _check_split_sizes(self, meta: dict) -> None:
        hp = self.hparams
        need = hp.block_size + 1
        capped = hp.max_bytes is not None and sum(s["bytes"] for s in meta["splits"].values()) >= hp.max_bytes
        for split in SPLITS:
            have = meta["splits"][split]["tokens"]
            if have >= need:
                continue
            fixes = [
                "lower model.block_size",  # (data.block_size is linked from it)
                "lower data.val_fraction" if split == "train" else "raise data.val_fraction",
            ]
            if capped:
                fixes.insert(0, "raise data.max_bytes")
            raise ConfigError(
                f"data.source: the {split} split of {hp.source!r} has {have} tokens, fewer than "
                f"block_size + 1 = {need}; {', or '.join(fixes)}"
            )

    def _val_tokens_per_byte(self) -> float:
        # Exact for the val set: the tokens it predicts over the raw bytes they stand for.
        n = self.n_val_windows * self.hparams.block_size
        predicted = np.asarray(self.validation_data[1 : n + 1])
        n_bytes = int(token_byte_lengths(self.tokenizer)[predicted].sum())
        return n / max(n_bytes, 1)

    def _save_tokenizer_to_run(self) -> None:
        trainer = self.trainer
        if trainer is None or not trainer.loggers:
            return
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks, rank zero writes
        if log_dir and trainer.is_global_zero:
            save_tokenizer(self.tokenizer, Path(log_dir) / "tokenizer.json")

    def _require_setup(self) -> Path:
        if self.cache_path is None:
            raise RuntimeError(
                "TextDataModule: call prepare_data() and setup() before asking for a dataloader"
            )
        return self.cache_path

    def _loader_kwargs(self) -> dict:
        workers = self.hparams.num_workers
        return dict(num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


# ---- datasets -------------------------------------------------------------------------------------


class RandomWindows(IterableDataset):
    """Endless batches of random windows from the train split, yielded whole (DataLoader
    batch_size=None). This rank's k-th batch is global batch k * world_size + rank; DataLoader
    workers take every num_workers-th k, and the loader interleaves them back in order."""

    def __init__(
        self,
        cache_path,
        *,
        batch_size: int,
        block_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.cache_path = Path(cache_path)
        self.batch_size, self.block_size, self.seed = batch_size, block_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self._data = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:  # opened in each worker process, never pickled
            self._data = open_split(self.cache_path, "train")
        return self._data

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}

    def global_batch_indices(self):
        worker = get_worker_info()
        first, step = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for k in itertools.count(self.start + first, step):
            yield k * self.world_size + self.rank

    def __iter__(self):
        for index in self.global_batch_indices():
            yield self.batch(index)

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global batch `index`: (x, y) int64 [batch_size, block_size], y shifted by one."""
        n_starts = len(self.data) - self.block_size  # windows of block_size + 1 tokens
        offsets = window_offsets(self.seed, index, self.batch_size, n_starts)
        windows = self.data[offsets[:, None] + np.arange(self.block_size + 1)]  # one vectorised gather
        windows = torch.from_numpy(windows.astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


class FixedWindows(Dataset):
    """The fixed val set: window i holds tokens [i * block_size, (i + 1) * block_size] of val."""

    def __init__(self, cache_path, *, block_size: int, n_windows: int):
        self.cache_path, self.block_size, self.n_windows = Path(cache_path), block_size, n_windows
        self._data = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = open_split(self.cache_path, "val")
        return self._data

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n_windows:
            raise IndexError(i)
        start = i * self.block_size
        window = torch.from_numpy(self.data[start : start + self.block_size + 1].astype(np.int64))
        return window[:-1], window[1:]


class ContiguousShards(DistributedSampler):
    """Rank r's contiguous share of a map-style dataset, without the padding DistributedSampler
    adds to even the shards: every val window is counted once, so val/loss under DDP (a mean
    weighted by rows across ranks) equals one process's. Lightning keeps a DistributedSampler
    it is given rather than inserting its own."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
        self.indices = range(len(dataset))[rank * len(dataset) // world_size : (rank + 1) * len(dataset) // world_size]
        self.num_samples = self.total_size = len(self.indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---- window offsets: an integer hash (sources.splitmix64_array), no RNG state ---------------------


def window_offsets(seed: int, batch_index: int, batch_size: int, n_starts: int) -> np.ndarray:
    """Start offsets in [0, n_starts) of the rows of global batch `batch_index`: a pure function
    of its arguments, the same on every machine."""
    rows = np.arange(batch_size, dtype=np.uint64)
    counter = np.uint64(batch_index) * np.uint64(batch_size) + rows
    key = splitmix64_array(np.array([seed & MASK64], dtype=np.uint64))
    return (splitmix64_array(counter ^ key) % np.uint64(n_starts)).astype(np.int64)


# ---- config checks: every mistake is a one-line ConfigError naming its key -----------------------


def check_args(hp) -> None:
    check_kind(hp.tokenizer)
    _expect(_is_int(hp.batch_size) and hp.batch_size >= 1, "batch_size", "an integer >= 1", hp.batch_size)
    if not (_is_int(hp.block_size) and hp.block_size >= 1):  # the user sets it as model.block_size (a link)
        raise ConfigError(f"model.block_size: expected an integer >= 1, got {hp.block_size!r}")
    if hp.tokenizer == "bpe":
        _expect(
            _is_int(hp.vocab_size) and hp.vocab_size >= MIN_BPE_VOCAB_SIZE,
            "vocab_size",
            f"an integer >= {MIN_BPE_VOCAB_SIZE} for bpe (256 bytes + 3 special tokens)",
            hp.vocab_size,
        )
        _expect(
            _is_int(hp.tokenizer_sample_bytes) and hp.tokenizer_sample_bytes >= 1,
            "tokenizer_sample_bytes",
            "an integer >= 1",
            hp.tokenizer_sample_bytes,
        )
    _expect(
        hp.max_bytes is None or (_is_int(hp.max_bytes) and hp.max_bytes >= 1),
        "max_bytes",
        "null or an integer >= 1",
        hp.max_bytes,
    )
    _expect(
        isinstance(hp.val_fraction, (int, float))
        and not isinstance(hp.val_fraction, bool)
        and 0 < hp.val_fraction < 1,
        "val_fraction",
        "a number between 0 and 1 (exclusive)",
        hp.val_fraction,
    )
    need = hp.block_size + 1
    _expect(
        _is_int(hp.val_tokens) and hp.val_tokens >= need,
        "val_tokens",
        f"an integer >= block_size + 1 = {need}",
        hp.val_tokens,
    )
    _expect(_is_int(hp.seed), "seed", "an integer", hp.seed)
    _expect(_is_int(hp.num_workers) and hp.num_workers >= 0, "num_workers", "an integer >= 0", hp.num_workers)
    _expect(
        hp.num_proc is None or (_is_int(hp.num_proc) and hp.num_proc >= 1),
        "num_proc",
        "null (every core) or an integer >= 1",
        hp.num_proc,
    )
    _expect(
        isinstance(hp.cache_dir, (str, os.PathLike)) and str(hp.cache_dir) != "",
        "cache_dir",
        "a folder path",
        hp.cache_dir,
    )
    if os.path.exists(hp.cache_dir) and not os.path.isdir(hp.cache_dir):
        raise ConfigError(f"data.cache_dir: {str(hp.cache_dir)!r} exists and is not a folder")
    _expect(
        isinstance(hp.dataset_split, str) and hp.dataset_split != "",
        "dataset_split",
        "a split name",
        hp.dataset_split,
    )
    _expect(isinstance(hp.probe_files, (list, tuple)), "probe_files", "a list of files", hp.probe_files)
    for number, path in enumerate(hp.probe_files, 1):
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            # (an empty entry would be the current folder, a probe named `ood/`)
            raise ConfigError(
                f"data.probe_files: entry {number} is {str(path)!r}, expected the path of a UTF-8 text file"
            )
        check_probe_file(str(path))


PROBE_CHECK_BYTES = 1 << 20  # probes read only the start of a file: check that much


def check_probe_file(path: str) -> None:
    """A probe file exists and starts with UTF-8 text (probes decode it leniently, so a binary
    file picked by mistake would otherwise become a probe of replacement characters)."""
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise ConfigError(f"data.probe_files: no such file {path!r}")
    try:
        with open(full, "rb") as f:
            head = f.read(PROBE_CHECK_BYTES)
    except OSError as err:
        raise ConfigError(f"data.probe_files: cannot read {path!r} ({err.strerror or err})") from err
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut last character is fine
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"data.probe_files: {path!r} is not UTF-8 text (byte {err.start} is {head[err.start]:#04x})"
        ) from err
    if not text.strip() and len(head) < PROBE_CHECK_BYTES:  # the whole file read, and nothing in it
        what = "is empty" if not head else "holds only white space"
        raise ConfigError(f"data.probe_files: {path!r} {what}, expected UTF-8 text to probe the model with")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(ok: bool, key: str, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"data.{key}: expected {expected}, got {value!r}")
