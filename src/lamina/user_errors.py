"""User mistakes that other libraries report as exceptions, turned into lamina's one line.

lamina's own checks raise `ConfigError` with a message that names the key. Other mistakes surface
inside jsonargparse (a wrong type, an unknown key, a YAML file that does not parse), Lightning (an
accelerator this machine lacks) or torch (a checkpoint file that is not one). `user_message(err)`
recognises those by the exception and by where it was raised, and returns the line to print;
anything else is a bug and gets None, so that it keeps its traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import FrameType

import yaml

from lamina.errors import ConfigError

SECTIONS = "seed_everything, trainer, model, data, checkpoint, instrument, ckpt_path"
MODEL_SHAPE_KEYS = (
    "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "activation", "mlp_ratio", "bias", "rotary",
)


def user_message(err: BaseException) -> str | None:
    """The one line (without the `lamina: error:` prefix) for a user mistake, else None."""
    for rule in (config_error_cause, checkpoint_message, parser_message, lightning_init_message, memory_message):
        message = rule(err)
        if message:
            return message
    return None


# ---- lamina's own ConfigError, also when a library re-raised it ---------------------------------


def config_error_cause(err: BaseException) -> str | None:
    """A ConfigError, or an error raised `from` one: jsonargparse wraps what a dataclass such as
    RLPConfig raises while it tries each type of `RLPConfig | None`. Only the explicit cause chain
    counts: an error raised while handling a ConfigError may be a bug."""
    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, ConfigError):
            return str(err)
        err, seen = err.__cause__, seen + 1
    return None


# ---- sizes that do not fit the machine -----------------------------------------------------------


def memory_message(err: BaseException) -> str | None:
    """Out of GPU (or host) memory: the run's sizes do not fit; say which keys set them."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        where = f"out of GPU memory ({first_sentence(str(err))})"
    elif isinstance(err, MemoryError):
        where = "out of host memory"
    else:
        return None
    return (
        f"data.batch_size: {where}; lower data.batch_size (raise trainer.accumulate_grad_batches to keep the "
        f"global batch), model.block_size or the model size, or use trainer.precision bf16-mixed; the last "
        f"checkpoint saved, if any, is intact"
    )


# ---- jsonargparse: wrong types, unknown keys, links, bad config text ----------------------------


def parser_message(err: BaseException) -> str | None:
    if not is_argument_error(err):
        return None
    text = str(err)
    if m := re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.S):
        return f"{m.group(1)}: {expected_got(m.group(2))}"
    if m := re.match(r'Linked "([^"]+)" must be given via "([^"]+)"', text):
        target, source = m.groups()
        if source == "data.model_vocab_size":  # a property of the data module, not a key to set
            source = "data.tokenizer and data.vocab_size"
        return f"{target}: is set from {source} (a link), not directly; set {source} instead"
    if m := re.match(r"unrecognized arguments: --([\w.]+)", text):
        return f"{m.group(1)}: no such key ({text})"
    if m := re.search(r"does not accept (?:option|key) '([^']+)'", text):
        return f"{m.group(1)}: no such key"
    if text.startswith(("Problems parsing config", "Unexpected config")):
        return f"config: expected YAML that maps sections ({SECTIONS}) to their keys; {text}"
    return text


def is_argument_error(err: BaseException) -> bool:
    from jsonargparse import ArgumentError

    return isinstance(err, ArgumentError)


def expected_got(problem: str) -> str:
    """jsonargparse's "Expected a <class 'int'>. Got value: four", or its Union form listing each
    alternative, as "expected an integer, got 'four'"; anything else unchanged."""
    given = re.search(r"^\s*Given value: (.*)$", problem, re.M) or re.search(r"Got value: (.*)$", problem, re.M)
    alternatives = re.findall(r"Expected an? (.+?)(?:\. Got value: .*)?$", problem, re.M)
    if not given or not alternatives:
        return problem
    choices, kinds = [], []
    for alternative in alternatives:
        if literal := re.fullmatch(r"typing\.Literal\[(.*)\]", alternative):
            choices += [value.strip().strip("'\"") for value in literal.group(1).split(",")]
        elif builtin := re.fullmatch(r"<class '(\w+)'>", alternative):
            kinds.append(TYPE_WORDS.get(builtin.group(1), f"a {builtin.group(1)}"))
        elif re.fullmatch(r"[\w ]+", alternative):
            kinds.append(f"a {alternative}")
        else:
            return problem  # a class path or a file: jsonargparse's own text says it best
    expected = ([f"one of {', '.join(dict.fromkeys(choices))}"] if choices else []) + list(dict.fromkeys(kinds))
    return f"expected {' or '.join(expected)}, got {given.group(1)!r}"


TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list",
    "dict": "a mapping",
    "NoneType": "null",
}


def check_config_files(words: list[str]) -> None:
    """Each `--config FILE` is a readable YAML mapping, so that a typo in it gets a line naming the
    file and the place, not jsonargparse's parse of "<unicode string>". Inline YAML given to
    --config (not a file) is left to jsonargparse."""
    for value in config_values(words):
        path = Path(value).expanduser()
        if path.is_dir():
            raise ConfigError(f"config: {value!r} is a folder, expected a YAML file")
        if not path.is_file():
            check_inline_yaml(value)
            continue
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(f"config: {value!r} is not UTF-8 text ({err.reason} at byte {err.start})") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"config: {value!r} is not valid YAML: {yaml_problem(err)}") from err
        if not isinstance(content, dict):
            got = "an empty file" if content is None else f"a {type(content).__name__}"
            raise ConfigError(f"config: {value!r}: expected a mapping of sections ({SECTIONS}), got {got}")


def check_inline_yaml(value: str) -> None:
    """--config also takes YAML text (`--config "trainer: {max_steps: 5}"`); a value that is
    neither a file nor such a mapping is a missing file."""
    try:
        content = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {value!r} is no file, nor valid YAML: {yaml_problem(err)}") from err
    if not isinstance(content, dict):
        raise ConfigError(f"config: no such file {value!r}")


def config_values(words: list[str]) -> list[str]:
    values = []
    for i, word in enumerate(words):
        if word in ("--config", "-c") and i + 1 < len(words):
            values.append(words[i + 1])
        elif word.startswith("--config="):
            values.append(word.split("=", 1)[1])
    return values


def yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    return where + problem + (f" ({context})" if context else "")


# ---- checkpoints: a file that is not one, or does not fit the model -----------------------------


def checkpoint_message(err: BaseException) -> str | None:
    """An error raised while Lightning read the file named by ckpt_path (LightningCLI reads its
    hyperparameters, the trainer loads it) or put its weights into the model."""
    if not isinstance(err, Exception):
        return None
    for frame in raised_through(err):
        name, owner = frame.f_code.co_name, type(frame.f_locals.get("self")).__name__
        if name == "_parse_ckpt_path" and owner.endswith("CLI"):
            return unreadable_checkpoint(frame.f_locals.get("ckpt_path"), err)
        if name == "_parse_ckpt_path" and owner == "_CheckpointConnector" and isinstance(err, ValueError):
            return f"ckpt_path: {short(str(err))}"  # "best" or "hpc" with nothing to resume from
        if name == "resume_start" and owner == "_CheckpointConnector":
            return unreadable_checkpoint(frame.f_locals.get("checkpoint_path"), err)
        if name in ("restore_model", "restore_training_state") and owner == "_CheckpointConnector":
            return unfit_checkpoint(frame.f_locals["self"], err)
    return None


def unreadable_checkpoint(path, err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return f"ckpt_path: no such checkpoint file {str(path)!r}"
    if isinstance(err, IsADirectoryError):
        return f"ckpt_path: {str(path)!r} is a folder, expected a .ckpt file"
    if is_argument_error(err):  # a checkpoint of an older lamina, say, with a key since renamed
        return f"ckpt_path: the hyperparameters saved in {str(path)!r} do not fit this config: {parser_message(err)}"
    detail = first_sentence(str(err)) or "the file ends early"
    return f"ckpt_path: cannot read {str(path)!r} as a lamina checkpoint ({type(err).__name__}: {detail})"


def unfit_checkpoint(connector, err: Exception) -> str | None:
    path = str(getattr(connector, "_ckpt_path", "?"))
    if isinstance(err, KeyError) and "contains only the model" in str(err):
        return (
            f"ckpt_path: {path!r} holds model weights only and cannot resume training; to start from "
            f"its weights, pass it as model.init_from instead"
        )
    if not isinstance(err, RuntimeError) or "state_dict" not in str(err):
        return None
    saved = (getattr(connector, "_loaded_checkpoint", None) or {}).get("hyper_parameters", {})
    module = connector.trainer.lightning_module
    here = dict(getattr(module, "hparams", {}))
    differ = [
        f"model.{k} is {saved[k]!r} there, {here[k]!r} here" for k in MODEL_SHAPE_KEYS
        if k in saved and k in here and saved[k] != here[k]
    ]
    why = "; ".join(differ) if differ else short(str(err))
    return f"ckpt_path: the weights in {path!r} do not fit this model: {why}"


def check_resume_config(path: str, model_config, model_defaults) -> None:
    """Before LightningCLI replaces the model config with the hyperparameters saved in the
    checkpoint at `path` (it does, for a resumed run): a shape key the user set to another value
    would be silently ignored, so refuse it. `model_config` and `model_defaults` are the parsed
    `model` section and its defaults; a key still at its default counts as not set."""
    saved = read_checkpoint_hparams(path)
    conflicts = [
        f"model.{key} is {saved[key]!r} there, {model_config[key]!r} here"
        for key in MODEL_SHAPE_KEYS
        if key in saved and key in model_config
        and model_config[key] != model_defaults.get(key)  # set by the user
        and model_config[key] != saved[key]
    ]
    if conflicts:
        raise ConfigError(
            f"ckpt_path: the checkpoint {path!r} does not fit this config: {'; '.join(conflicts)} "
            f"(a resumed run keeps its checkpoint's shape: drop those keys, or start a new run from its "
            f"weights with model.init_from and a matching shape)"
        )


def read_checkpoint_hparams(path: str) -> dict:
    """The hyperparameters saved in a Lightning checkpoint, or a one-line ConfigError."""
    import torch

    if Path(path).is_dir():
        raise ConfigError(f"ckpt_path: {path!r} is a folder, expected a .ckpt file")
    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path: no such checkpoint file {path!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch.load makes of a file that is not a checkpoint
        raise ConfigError(unreadable_checkpoint(path, err)) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path: {path!r} is not a lamina checkpoint (no state_dict)")
    return dict(checkpoint.get("hyper_parameters") or {})


# ---- Trainer arguments that Lightning accepts but fails on later --------------------------------


def check_trainer(trainer) -> None:
    """What Trainer() lets through and the run trips on later: a modulo by zero at the first
    step (log_every_n_steps, accumulate_grad_batches, val_check_interval 0), a negative clip value
    (the clip coefficient turns negative: the update climbs the loss), max_epochs 0 (trains
    nothing, silently), or a file where a folder must be created."""
    for key in ("log_every_n_steps", "accumulate_grad_batches"):
        value = getattr(trainer, key)
        if not value >= 1:
            raise ConfigError(f"trainer.{key}: expected an integer >= 1, got {value!r}")
    interval = trainer.val_check_interval
    if interval is not None and not interval > 0:
        raise ConfigError(
            f"trainer.val_check_interval: expected null, a number of steps >= 1 or a fraction of an "
            f"epoch in (0, 1], got {interval!r}"
        )
    clip = trainer.gradient_clip_val
    if clip is not None and not clip >= 0:
        raise ConfigError(f"trainer.gradient_clip_val: expected null or a number >= 0, got {clip!r}")
    if trainer.max_epochs == 0:
        raise ConfigError("trainer.max_epochs: expected null, -1 or an integer >= 1 (0 trains nothing), got 0")
    folders = [("checkpoint.dirpath", getattr(trainer.checkpoint_callback, "dirpath", None))]
    folders += [("trainer.logger.init_args.save_dir", getattr(log, "save_dir", None)) for log in trainer.loggers]
    for key, folder in folders:
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise ConfigError(f"{key}: {str(folder)!r} exists and is not a folder")


# ---- Lightning's checks of Trainer and ModelCheckpoint arguments --------------------------------


def lightning_init_message(err: BaseException) -> str | None:
    """A MisconfigurationException, ValueError or TypeError raised by the constructor of the
    Trainer or ModelCheckpoint: Lightning checking the arguments the user gave (no user code runs
    there), named by the section and the argument the message mentions."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    if not isinstance(err, (MisconfigurationException, ValueError, TypeError)):
        return None
    sections = ((Trainer, "trainer"), (ModelCheckpoint, "checkpoint"))
    for frame in raised_through(err):
        if frame.f_code.co_name != "__init__":
            continue
        owner = frame.f_locals.get("self")
        section = next((name for cls, name in sections if type(owner) is cls), None)
        if section is not None:
            return init_argument_message(section, frame, str(err))
    return None


def init_argument_message(section: str, frame: FrameType, message: str) -> str:
    args = frame.f_code.co_varnames[1 : frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]
    mentioned = sorted(
        (m.start(), arg) for arg in args if (m := re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", message))
    )
    key = mentioned[0][1] if mentioned else None
    if key is None and section == "trainer" and re.search(r"gpu|cuda|mps|tpu|backend", message, re.I):
        key = "accelerator"  # "No supported gpu backend found!" names no argument
    if key is None:
        return f"{section}: {short(message)}"
    value = frame.f_locals.get(key)
    got = f" (got {value!r})" if repr(value) not in message and str(value) not in message else ""
    return f"{section}.{key}: {short(message)}{got}"


# ---- helpers -------------------------------------------------------------------------------------


def raised_through(err: BaseException):
    """The frames from the outermost catch down to where `err` was raised."""
    tb = err.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def first_sentence(text: str) -> str:
    """torch.load's errors run to a paragraph of advice about pickles: its first sentence is the news."""
    return short(re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0], 200)


def short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
