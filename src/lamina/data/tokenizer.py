"""Tokenizers: `byte` and `bpe`, both a Hugging Face `tokenizers.Tokenizer` saved as tokenizer.json.

Both are byte-level (GPT-2's ByteLevel pre-tokenizer and decoder), so any UTF-8 text round-trips
exactly: `decode(encode(text).ids, skip_special_tokens=False) == text`.
- `byte`: the 256 byte symbols and no merges; token id == byte value; specials are 256, 257, 258.
- `bpe`: byte-level BPE trained on a sample of the training text, `vocab_size` ids in all
  (specials and the 256 byte symbols included); cached by a hash of what it was trained on.
The special tokens `<|endoftext|>`, `<think>` and `</think>` are single ids in both, and their
literal strings in text map to those ids (the world corpus writes `<think>` literally).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lamina.data.sources import Source, train_sample
from lamina.errors import ConfigError

EOT, THINK, END_THINK = "<|endoftext|>", "<think>", "</think>"
SPECIAL_TOKENS = (EOT, THINK, END_THINK)
KINDS = ("byte", "bpe")
BYTE_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
MIN_BPE_VOCAB_SIZE = BYTE_VOCAB_SIZE
FORMAT_VERSION = 1  # bump when a change here changes the tokenizers trained


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"data.tokenizer: expected 'byte' or 'bpe', got {kind!r}")


def model_vocab_size(kind: str, vocab_size: int) -> int:
    """The embedding size a model needs, from the config alone (every id is below it)."""
    check_kind(kind)
    return BYTE_VOCAB_SIZE if kind == "byte" else vocab_size


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character: ByteLevel's 256-symbol alphabet."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _byte_level(tokenizer: Tokenizer, use_regex: bool = True) -> Tokenizer:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def byte_tokenizer() -> Tokenizer:
    """Byte-level tokenizer with no merges: id b is byte b; then the special tokens."""
    vocab = {char: b for b, char in bytes_to_unicode().items()}
    # With no merges, GPT-2's word-splitting regex cannot change the ids: skip it (2-3x faster).
    tokenizer = _byte_level(Tokenizer(models.BPE(vocab=vocab, merges=[])), use_regex=False)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def train_bpe(texts, vocab_size: int) -> Tokenizer:
    """Byte-level BPE trained on an iterable of strings; at most `vocab_size` ids in all."""
    tokenizer = _byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, seen in the sample or not
        show_progress=sys.stderr.isatty(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def load_tokenizer(
    kind: str,
    source: Source,
    *,
    vocab_size: int,
    sample_bytes: int,
    val_fraction: float,
    cache_dir: str | os.PathLike,
    holdout: int | None = None,
) -> Tokenizer:
    """The tokenizer `data.tokenizer` names; a bpe one is trained once and then read from
    `cache_dir/tokenizers/`, keyed by (source identity, vocab size, sample size, split).
    `holdout`: the passage sources.holdout_index holds out for val (never trained on)."""
    check_kind(kind)
    if kind == "byte":
        return byte_tokenizer()
    path = bpe_cache_path(
        source,
        vocab_size=vocab_size,
        sample_bytes=sample_bytes,
        val_fraction=val_fraction,
        cache_dir=cache_dir,
        holdout=holdout,
    )
    if path.exists():
        return Tokenizer.from_file(str(path))
    tokenizer = train_bpe(train_sample(source, val_fraction, sample_bytes, holdout), vocab_size)
    try:
        save_tokenizer(tokenizer, path)
    except OSError as err:  # disk full, read-only, no permission: the user's to fix
        raise ConfigError(
            f"data.cache_dir: cannot save the trained tokenizer to {path} ({err.strerror or err}); "
            f"free space or point data.cache_dir at a writable folder"
        ) from err
    return tokenizer


def bpe_cache_path(
    source: Source, *, vocab_size: int, sample_bytes: int, val_fraction: float, cache_dir, holdout=None
) -> Path:
    key = {
        "format": FORMAT_VERSION,
        "source": source.identity(),
        "vocab_size": vocab_size,
        "sample_bytes": sample_bytes,
        "val_fraction": val_fraction,  # the sample is training text only
    }
    if holdout is not None:  # (only then: every other source keeps the key it always had)
        key["holdout"] = holdout
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "tokenizers" / f"bpe-{vocab_size}-{digest}.json"


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
    """Write tokenizer.json atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # (gone after a successful replace)


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes of raw text behind each id: a ByteLevel symbol is one byte; `<think>` and
    `</think>` stand for their literal text; `<|endoftext|>` is the separator the packer adds,
    0 bytes. Summed over predicted tokens this gives the exact bytes for bits per byte."""
    lengths = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for token, index in tokenizer.get_vocab(with_added_tokens=False).items():
        lengths[index] = len(token)
    for index, added in tokenizer.get_added_tokens_decoder().items():
        lengths[index] = 0 if added.content == EOT else len(added.content.encode("utf-8"))
    return lengths


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, index in ids.items() if index is None]
    if missing:
        raise ConfigError(f"data.tokenizer: tokenizer lacks the special tokens {missing}")
    return ids
