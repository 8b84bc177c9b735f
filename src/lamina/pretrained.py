"""Lamina checkpoints as plain GPTs: the model weights, the shape they need, and the tokenizer.

A lamina checkpoint (what `lamina fit` writes under `runs/<name>/version_<n>/checkpoints/`) holds
`state_dict` (the LanguageModel's, model weights under `model.`), `hyper_parameters` (the model's
shape keys and vocab_size) and `datamodule_hyper_parameters` (data.tokenizer, data.vocab_size, ...).
The tokenizer itself is not in the checkpoint: it is the run folder's `tokenizer.json`, two levels
up. A byte tokenizer is the same everywhere, so it is rebuilt when that file is missing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lamina.data.tokenizer import byte_tokenizer
from lamina.errors import ConfigError
from lamina.model import GPT, GPTConfig
from lamina.user_errors import read_checkpoint as read_any_checkpoint

SHAPE_KEYS = (
    "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "activation", "mlp_ratio", "bias", "rotary",
    "qk_norm", "tie_embeddings", "logit_softcap",
)


@dataclass
class LoadedCheckpoint:
    """A checkpoint's model (eval mode, on the CPU), its hyperparameters and its tokenizer."""

    path: str
    model: GPT
    hparams: dict
    data_hparams: dict = field(default_factory=dict)
    tokenizer: object | None = None  # tokenizers.Tokenizer
    tokenizer_file: str | None = None  # where the tokenizer was read from (None: rebuilt byte tokenizer)

    @property
    def tokenizer_kind(self) -> str | None:
        return self.data_hparams.get("tokenizer")


def read_checkpoint(path: str | os.PathLike, key: str) -> dict:
    """The checkpoint dict (lamina.user_errors.read_checkpoint), with its model hyperparameters."""
    checkpoint = read_any_checkpoint(path, key)
    if not checkpoint.get("state_dict") or "hyper_parameters" not in checkpoint:
        raise ConfigError(f"{key}: expected a lamina checkpoint (state_dict and hyper_parameters), got {str(path)!r}")
    return checkpoint


def misfits(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors a model's state dict (`own`) and `weights` do not share in shape."""
    return sorted(own.keys() ^ weights.keys()) + sorted(
        k for k in own.keys() & weights.keys() if own[k].shape != weights[k].shape
    )


def gpt_config(hparams: dict, key: str) -> GPTConfig:
    """The GPTConfig a checkpoint's model hyperparameters describe."""
    known = {k: hparams[k] for k in SHAPE_KEYS if k in hparams}
    if "vocab_size" not in known:
        raise ConfigError(f"{key}: expected model.vocab_size in the checkpoint's hyper_parameters, got none")
    return GPTConfig(**known)


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The GPT's weights: the LanguageModel's `model.` entries without that prefix."""
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def load_init_from(model: GPT, hparams, path: str) -> None:
    """`model.init_from`: copy the model weights of a lamina checkpoint into `model` (the module's
    GPT, whose hyperparameters are `hparams`), and nothing else: no optimizer, step or counters."""
    checkpoint = read_any_checkpoint(path, "model.init_from")
    weights = model_weights(checkpoint)
    bad = misfits(model.state_dict(), weights)
    if bad:
        saved = checkpoint.get("hyper_parameters", {})
        differ = [f"model.{k} is {saved[k]} there, {hparams[k]} here"
                  for k in SHAPE_KEYS if k in saved and saved[k] != hparams[k]]
        raise ConfigError(
            f"model.init_from: the weights in {path!r} do not fit this model: "
            + ("; ".join(differ) if differ else f"{len(bad)} tensors differ, e.g. {bad[0]}")
        )
    model.load_state_dict(weights)


def load_gpt(path: str | os.PathLike, key: str = "checkpoint", tokenizer: bool = True) -> LoadedCheckpoint:
    """A lamina checkpoint as a GPT in eval mode (CPU, float32), with its tokenizer when asked."""
    checkpoint = read_checkpoint(path, key)
    hparams = dict(checkpoint["hyper_parameters"])
    model = GPT(gpt_config(hparams, key))
    weights = model_weights(checkpoint)
    bad = misfits(model.state_dict(), weights)
    if bad:
        raise ConfigError(
            f"{key}: expected weights that fit the shape in its hyper_parameters, got {len(bad)} that do not "
            f"(e.g. {bad[0]}) in {str(path)!r}"
        )
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    model.eval()
    loaded = LoadedCheckpoint(str(path), model, hparams, dict(checkpoint.get("datamodule_hyper_parameters") or {}))
    if tokenizer:
        loaded.tokenizer, loaded.tokenizer_file = run_tokenizer(path, loaded.tokenizer_kind, key)
    return loaded


def run_tokenizer(path: str | os.PathLike, kind: str | None, key: str):
    """(tokenizer, file) of the run a checkpoint belongs to: `<run>/tokenizer.json` beside its
    `checkpoints/` folder (or beside the file itself); a byte tokenizer is rebuilt if missing."""
    from tokenizers import Tokenizer

    here = Path(path).resolve().parent
    for candidate in (here.parent / "tokenizer.json", here / "tokenizer.json"):
        if candidate.is_file():
            return Tokenizer.from_file(str(candidate)), str(candidate)
    if kind in (None, "byte"):
        return byte_tokenizer(), None
    raise ConfigError(
        f"{key}: expected the run's tokenizer.json beside {str(path)!r}'s checkpoints/ folder "
        f"(data.tokenizer is {kind!r}, which cannot be rebuilt), got none"
    )


def same_tokenizer(a: LoadedCheckpoint, b: LoadedCheckpoint) -> str | None:
    """None when a and b read and write the same token ids; else what differs, in words."""
    if a.model.config.vocab_size != b.model.config.vocab_size:
        return f"model.vocab_size {b.model.config.vocab_size} there, {a.model.config.vocab_size} here"
    if a.tokenizer_kind and b.tokenizer_kind and a.tokenizer_kind != b.tokenizer_kind:
        return f"data.tokenizer {b.tokenizer_kind!r} there, {a.tokenizer_kind!r} here"
    both = a.tokenizer is not None and b.tokenizer is not None
    if both and tokenizer_spec(a.tokenizer) != tokenizer_spec(b.tokenizer):
        return "the tokenizers differ (same size, other tokens, ids, merges or pre-tokenizer)"
    return None


def tokenizer_spec(tokenizer) -> dict:
    """What fixes a tokenizer's ids: its JSON (vocabulary, merges, special tokens, pre-tokenizer,
    decoder), without the padding and truncation settings, which do not change ids."""
    spec = json.loads(tokenizer.to_str())
    spec.pop("padding", None)
    spec.pop("truncation", None)
    return spec


__all__ = [
    "LoadedCheckpoint",
    "gpt_config",
    "load_gpt",
    "model_weights",
    "misfits",
    "read_checkpoint",
    "run_tokenizer",
    "same_tokenizer",
    "tokenizer_spec",
]
