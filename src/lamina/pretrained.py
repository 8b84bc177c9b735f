"""Lamina checkpoints as plain GPTs: the model weights, the shape they need, and the tokenizer.

A lamina checkpoint (what `lamina fit` writes under `runs/<name>/version_<n>/checkpoints/`) holds
`state_dict` (the LanguageModel's, model weights under `model.`), `hyper_parameters` (the model's
shape keys and vocab_size) and `datamodule_hyper_parameters` (data.tokenizer, data.vocab_size, ...).
The tokenizer itself is not in the checkpoint: it is the run folder's `tokenizer.json`, two levels
up. A byte tokenizer is the same everywhere, so it is rebuilt when that file is missing.

`migrate` reads the checkpoints and configs of an older lamina in today's layout.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lamina.errors import ConfigError
from lamina.model import GPT, GPTConfig
from lamina.user_errors import INSTRUMENT_MOVED, MOVED_KEYS
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

    from lamina.data.tokenizer import byte_tokenizer  # (here: lamina.data loads the world generator)

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


# ---- older checkpoints and configs in today's layout --------------------------------------------

LANGUAGE_MODEL = "lamina.lm.LanguageModel"
RLP_MODEL = "lamina.rlp.RLPModel"
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"  # how Lightning rebuilds a module named by class path
# Keys that left the model's section: the old key under `model.` -> (its section, its key there; None: the
# whole section)
MOVED_OUT_OF_MODEL = {"peak_flops": ("throughput", "peak_flops"), "thought_eval": ("thought_eval", None)}
# (lamina.user_errors.MOVED_KEYS says where each moved key is now, for the error lines and notes)


def migrate(old: Mapping) -> dict:
    """An older lamina's config or checkpoint in today's layout: a new dict (`old` is left as it is);
    a config already in today's layout comes back equal.

    A config (sections seed_everything, trainer, model, data, ...; the model's keys flat or as
    class_path and init_args):
    - `model.peak_flops` (a setting of the Throughput callback) -> `throughput.peak_flops`;
    - `model.thought_eval` (the ThoughtEval callback's) -> the `thought_eval` section, with
      `enabled: true` (a mapping there turned the evaluations on), null -> nothing;
    - `model.rlp` set -> the model class lamina.rlp.RLPModel, `rlp` among its init_args (the other
      model keys kept); `model.rlp` null -> dropped;
    - the flat keys of `instrument` -> its sections (lamina.instrument.config; the table is
      lamina.user_errors.INSTRUMENT_MOVED): `modularity_every_n_steps: 1200` -> `modularity:
      {every_n_steps: 1200}`, `probe_tokens` -> `probes.tokens`, a switch `modularity: false` ->
      `modularity: {enabled: false}`; each section where the first of its keys stood.

    A checkpoint (state_dict and hyper_parameters, as Lightning writes them): its hyper_parameters as
    today's model writes them, without peak_flops or thought_eval; where `rlp` is set it is an RLPModel
    checkpoint (`_class_path` lamina.rlp.RLPModel and Lightning's `_instantiator`, as a `lamina fit` of
    today writes them: RLPModel.load_from_checkpoint reads it). The settings that left the model go to
    `checkpoint["lamina"]["moved_settings"]` as config sections ({"throughput": {"peak_flops": ...},
    "thought_eval": {...}}): a resumed run took them from its checkpoint, as model settings, and
    `lamina fit --ckpt_path` still does (checkpoint_config)."""
    if "state_dict" in old or "hyper_parameters" in old:
        # (the tensors are shared with `old`, not copied: only the settings change)
        checkpoint = {**old, **{k: copy.deepcopy(old[k]) for k in ("hyper_parameters", "lamina") if k in old}}
        return _migrate_checkpoint(checkpoint)
    return _migrate_config(copy.deepcopy(dict(old)))


def _migrate_config(config: dict) -> dict:
    if isinstance(config.get("instrument"), Mapping) and moved_instrument_keys(config["instrument"]):
        config["instrument"] = _migrate_instrument(config["instrument"])
    model = config.get("model")
    if not isinstance(model, Mapping):
        return config
    class_path, init_args, rest = _split_model(model)
    for key, (section, name) in MOVED_OUT_OF_MODEL.items():
        if key not in init_args:
            continue
        value = _plain_data(init_args.pop(key))
        if value is None:
            continue
        if name is None:  # the whole section: a mapping there turned it on
            config[section] = {"enabled": True, **value, **(config.get(section) or {})}
        else:
            config[section] = {name: value, **(config.get(section) or {})}
    if "rlp" in init_args:
        rlp = _plain_data(init_args["rlp"])
        if rlp is None:
            del init_args["rlp"]
        else:
            init_args["rlp"] = rlp
            if class_path in (None, LANGUAGE_MODEL):
                class_path = RLP_MODEL
            init_args = {"rlp": init_args.pop("rlp"), **init_args}
    config["model"] = init_args if class_path is None else {"class_path": class_path, "init_args": init_args, **rest}
    return config


def moved_instrument_keys(instrument: Mapping) -> list[str]:
    """The flat keys of an older lamina in an `instrument` section (a switch such as `modularity` counts
    when it is not a mapping, today's section)."""
    return [key for key, value in instrument.items()
            if key in INSTRUMENT_MOVED and not (INSTRUMENT_MOVED[key][1] == "enabled" and isinstance(value, Mapping))]


def _migrate_instrument(instrument: Mapping) -> dict:
    """An `instrument` section with flat keys in today's layout: each moved key into its section, the
    section placed where its first key stood; keys already in a section win over flat ones."""
    moved = set(moved_instrument_keys(instrument))
    out: dict = {}
    for key, value in instrument.items():
        if key not in moved:
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = {**out[key], **value}  # the section, beside flat keys that went into it
            else:
                out[key] = value
            continue
        section, name = INSTRUMENT_MOVED[key]
        current = out.get(section)
        current = dict(current) if isinstance(current, Mapping) else {}
        out[section] = current if name in current else {**current, name: value}
    return out


def model_init_args(model: Mapping) -> dict:
    """The model's keys of a model section, flat or as class_path with init_args (a saved config.yaml
    of today holds the latter)."""
    return _split_model(model)[1]


def _split_model(model: Mapping) -> tuple[str | None, dict, dict]:
    """(class_path or None, the model's keys, what else the section holds) of a model section as a
    config writes it (flat, or class_path with init_args) or as a checkpoint's hyper_parameters hold it
    (flat, with Lightning's `_class_path`)."""
    model = dict(model)
    if "class_path" in model:
        class_path = model.pop("class_path")
        init_args = dict(model.pop("init_args", None) or {})
        return class_path, init_args, model
    return model.pop("_class_path", None), model, {}


def _plain_data(value):
    """Settings as a config holds them: a dataclass (RLPConfig and ThoughtEvalConfig in the
    hyperparameters of a module built from Python) as a mapping, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: _plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v) for v in value]
    return value


def _migrate_checkpoint(checkpoint: dict) -> dict:
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    instantiator = hparams.pop("_instantiator", None)
    config = _migrate_config({"model": hparams})
    class_path, init_args, _ = _split_model(config.pop("model"))
    if class_path is not None:
        init_args = {"_class_path": class_path, **init_args, "_instantiator": instantiator or INSTANTIATOR}
    elif instantiator is not None:
        init_args["_instantiator"] = instantiator
    if "hyper_parameters" in checkpoint:
        checkpoint["hyper_parameters"] = init_args
    if config:
        checkpoint.setdefault("lamina", {})["moved_settings"] = config
    return checkpoint


def checkpoint_config(checkpoint: dict) -> dict:
    """The config sections a checkpoint sets when a run resumes from it (migrated first): `model`, as
    class_path and init_args, and, for a checkpoint of an older lamina, the settings that have left the
    model since (`throughput`, `thought_eval`)."""
    checkpoint = migrate(checkpoint)
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items()
               if k == "_class_path" or not k.startswith("_")}  # ours, not Lightning's _instantiator
    class_path, init_args, _ = _split_model(hparams)
    return {"model": {"class_path": class_path or LANGUAGE_MODEL, "init_args": init_args},
            **checkpoint.get("lamina", {}).get("moved_settings", {})}


__all__ = [
    "LANGUAGE_MODEL",
    "MOVED_KEYS",
    "RLP_MODEL",
    "LoadedCheckpoint",
    "checkpoint_config",
    "gpt_config",
    "load_gpt",
    "migrate",
    "model_weights",
    "misfits",
    "moved_instrument_keys",
    "read_checkpoint",
    "run_tokenizer",
    "same_tokenizer",
    "tokenizer_spec",
]
