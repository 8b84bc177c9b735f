"""User mistakes that other libraries report as exceptions, turned into lamina's one line.

lamina's own checks raise `ConfigError` with a message that names the key. jsonargparse reports
a value that does not fit its key's type, an unknown key or a YAML file that does not parse;
`user_message(err)` turns those into the line to print, and gives None for anything else (a bug,
which keeps its traceback). Lightning's checks of the Trainer and ModelCheckpoint arguments and a
checkpoint file that cannot be read or does not fit are caught where lamina makes the call
(`lamina.cli`), as a ConfigError, with the helpers here.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from lamina.errors import ConfigError

SECTIONS = (
    "seed_everything, trainer, model, data, throughput, checkpoint, instrument, thought_eval, drift, retention, "
    "ckpt_path"
)
# Keys that moved (lamina.pretrained.migrate reads older configs and checkpoints): old key -> where it is now.
MOVED_KEYS = {
    "model.peak_flops": "throughput.peak_flops",
    "model.thought_eval": "thought_eval, a section of its own (thought_eval.enabled: true turns it on)",
    "model.rlp": "the model class lamina.rlp.RLPModel (model.class_path lamina.rlp.RLPModel with model.init_args.rlp; "
                 "--model lamina.rlp.RLPModel --model.rlp.* on the command line)",
}
# The flat keys of the `instrument` section of an older lamina -> (their section, their key there); the
# switches `modularity`, `ablation`, `layers`, `lastlayer`, `hierarchy`, `context` (true/false) are each
# section's `enabled` now (lamina.instrument.config; lamina.pretrained.migrate reads the old layout).
INSTRUMENT_MOVED = {
    "probe_tokens": ("probes", "tokens"),
    "probe_batch_size": ("probes", "batch_size"),
    "probe_seed": ("probes", "seed"),
    "active": ("sparsity", "active"),
    "cett": ("sparsity", "cett"),
    "eps": ("sparsity", "eps"),
    "light_every_n_steps": ("sparsity", "light_every_n_steps"),
    "light_windows": ("sparsity", "light_windows"),
    "train_density": ("sparsity", "train_density"),
    "modularity": ("modularity", "enabled"),
    "modularity_every_n_steps": ("modularity", "every_n_steps"),
    "modularity_tokens": ("modularity", "tokens"),
    "null_draws": ("modularity", "null_draws"),
    "shuffled_draws": ("modularity", "shuffled_draws"),
    "n_modules": ("modularity", "n_modules"),
    "max_modules": ("modularity", "max_modules"),
    "ablation": ("ablation", "enabled"),
    "ablation_every_n_steps": ("ablation", "every_n_steps"),
    "ablation_examples": ("ablation", "examples"),
    "ablation_mode": ("ablation", "mode"),
    "layers": ("layers", "enabled"),
    "lastlayer": ("lastlayer", "enabled"),
    "lastlayer_problems": ("lastlayer", "problems"),
    "hierarchy": ("hierarchy", "enabled"),
    "probe_every_n_steps": ("hierarchy", "every_n_steps"),
    "probe_items": ("hierarchy", "items"),
    "probe_examples": ("hierarchy", "examples"),
    "context": ("context", "enabled"),
    "context_every_n_steps": ("context", "every_n_steps"),
    "context_prompts": ("context", "prompts"),
    "context_alpha": ("context", "alpha"),
}
MOVED_KEYS.update(
    {f"instrument.{old}": f"instrument.{section}.{key}" for old, (section, key) in INSTRUMENT_MOVED.items()}
)
MODEL_SHAPE_KEYS = (
    "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "activation", "mlp_ratio", "bias", "rotary",
    "qk_norm", "tie_embeddings", "logit_softcap",
)


def user_message(err: BaseException) -> str | None:
    """The one line (without the `lamina: error:` prefix) for a user mistake, else None."""
    for rule in (config_error_cause, parser_message, memory_message):
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
    return argument_message(str(err))


def argument_message(text: str) -> str:
    """jsonargparse's account of a mistake as lamina's line (without `lamina: error:`)."""
    if m := re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.S):
        key, problem = m.groups()
        if inner := subclass_problem(problem):
            # a key of the model, whose section takes a class path: the class's own account, under `key.`
            inner_message = argument_message(inner)
            return moved_key_message(f"{key}.{inner_message}") or f"{key}.{inner_message}"
        return switch_now_section(key, problem) or f"{key}: {expected_got(problem)}"
    if m := re.fullmatch(r"Option '([^']+)' is not accepted", text.strip()):
        return f"{m.group(1)}: no such key"
    if m := re.match(r'Linked "([^"]+)" must be given via "([^"]+)"', text):
        target, source = m.groups()
        if source == "data.model_vocab_size":  # a property of the data module, not a key to set
            source = "data.tokenizer and data.vocab_size"
        return f"{target}: is set from {source} (a link), not directly; set {source} instead"
    if m := re.match(r"unrecognized arguments: --([\w.]+)", text):
        return moved_key_message(f"{m.group(1)}: no such key") or f"{m.group(1)}: no such key ({text})"
    if m := re.search(r"does not accept (?:option|key) '([^']+)'", text):
        return f"{m.group(1)}: no such key"
    if text.startswith(("Problems parsing config", "Unexpected config")):
        return f"config: expected YAML that maps sections ({SECTIONS}) to their keys; {text}"
    return text


def subclass_problem(problem: str) -> str | None:
    """The class's own problem in jsonargparse's account of a section that takes a class path (the
    model): "Does not validate against any of the Union subtypes ... - Problem with given class_path
    'lamina.lm.LanguageModel': <the problem> - Expected a <class 'NoneType'> ..."; None for another."""
    m = re.search(r"^( *)- Problem with given class_path '[^']+':\n(.*?)(?=^\1- |^\s*Given value|\Z)", problem,
                  re.S | re.M)
    if not m or not problem.lstrip().startswith("Does not validate against any of the Union subtypes"):
        return None
    lines = [line for line in m.group(2).splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines) if lines else 0
    inner = "\n".join(line[indent:] for line in lines)
    if m := re.fullmatch(r"unrecognized arguments: --([\w.]+)=.*", inner.strip(), re.S):
        return f"Option '{m.group(1)}' is not accepted"  # the same mistake, worded alike
    return inner


def moved_key_message(line: str) -> str | None:
    """`<key>: no such key` for a key that moved (`model.peak_flops`, `model.rlp.group_size`): where it
    is now; None for any other line."""
    m = re.fullmatch(r"([\w.]+): no such key(?: .*)?", line)
    if not m:
        return None
    key = m.group(1).replace(".init_args.", ".")
    # (a key under an old switch that is a section now, `instrument.modularity.<key>`, is no moved key)
    moved = next((old for old in MOVED_KEYS if key == old or (
        key.startswith(old + ".") and not MOVED_KEYS[old].startswith(old + "."))), None)
    if moved is None:
        return None
    return f"{key}: no such key; {'it' if key == moved else moved} moved to {MOVED_KEYS[moved]}"


def switch_now_section(key: str, problem: str) -> str | None:
    """A value given to a section of the instrument (`--instrument.probes 5`): jsonargparse tries to read
    it as the section's config ("Unable to load config '5'"); for an old switch that is a section now
    (`--instrument.modularity false`), say where the switch is. None for anything else."""
    m = re.match(r"\s*Unable to load config '(.*?)'", problem, re.S)
    if not m or not key.startswith("instrument."):
        return None
    line = f"{key}: expected a mapping of its keys (--{key}.<key> VALUE), got {m.group(1)!r}"
    new = MOVED_KEYS.get(key)
    if new and new.startswith(key + "."):
        line += f"; the switch {key} (true/false) moved to {new}"
    return line


def is_argument_error(err: BaseException) -> bool:
    from jsonargparse import ArgumentError

    return isinstance(err, ArgumentError)


def expected_got(problem: str) -> str:
    """jsonargparse's account of a value that does not fit its key's type, as "expected ..., got
    ...": "Expected a <class 'int'>. Got value: four" (a builtin or a Literal's choices), "Not of
    type PositiveInt: 0 does not conform to restriction v>0" (a restricted number of
    jsonargparse.typing), or the Union form listing each alternative; anything else unchanged."""
    given = re.search(r"^\s*Given value: (.*)$", problem, re.M) or re.search(r"Got value: (.*)$", problem, re.M)
    value = given.group(1) if given else None
    choices, kinds = [], []  # kinds: (words, the base type of a restricted number, else None)
    for line in problem.splitlines():
        line = line.strip().removeprefix("- ")
        if restricted := re.fullmatch(r"Not of type (\w+): (.*)", line):
            # jsonargparse names its integer types ...Int (PositiveInt), and so does lamina.config_types
            base = int if restricted.group(1).endswith("Int") else float
            if limit := re.fullmatch(r"(.*?) ?does not conform to restriction (.+)", restricted.group(2)):
                kinds.append((restriction_words(base, limit.group(2)), base))
                inline = limit.group(1)
            else:  # not a number at all: "invalid literal for int() with base 10: 'x'", "True not a number"
                kinds.append((TYPE_WORDS[base.__name__], base))
                quoted = re.search(r": '(.*)'$", restricted.group(2))
                inline = quoted.group(1) if quoted else restricted.group(2).split(" not ")[0]
            value = inline if value is None else value
        elif alternative := re.fullmatch(r"Expected an? (.+?)(?:\. Got value: .*)?", line):
            alternative = alternative.group(1)
            if literal := re.fullmatch(r"typing\.Literal\[(.*)\]", alternative):
                choices += [choice.strip().strip("'\"") for choice in literal.group(1).split(",")]
            elif builtin := re.fullmatch(r"<class '(\w+)'>", alternative):
                kinds.append((TYPE_WORDS.get(builtin.group(1), f"a {builtin.group(1)}"), None))
            elif re.fullmatch(r"[\w ]+", alternative):
                kinds.append((f"a {alternative}", None))
            else:
                return problem  # a class path or a file: jsonargparse's own text says it best
    if value is None or not (choices or kinds):
        return problem
    got = repr(value)
    base = next((base for _, base in kinds if base is not None), None)
    if base is not None:
        try:
            number = base(value)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            got = repr(number)
        elif number is not None:  # nan or inf: not a number, whatever its range (a plain float says so too)
            kinds = [("a number" if restricted else words, None) for words, restricted in kinds]
    expected = [f"one of {', '.join(dict.fromkeys(choices))}"] if choices else []
    expected += dict.fromkeys(words for words, _ in kinds)
    return f"expected {' or '.join(expected)}, got {got}"


def restriction_words(base: type, expression: str) -> str:
    """jsonargparse's restriction `v>0` or `v>=0 and v<1` in words: "an integer >= 1", "a number in
    [0, 1)", "a non-negative number". An upper bound of inf (a finite number) goes unsaid."""
    bounds = [(op, ref) for op, ref in re.findall(r"v(>=|<=|>|<)([^\s]+)", expression) if ref != "inf"]
    noun = "an integer" if base is int else "a number"
    if " or " in expression or "=" in expression.replace(">=", "").replace("<=", "") or len(bounds) > 2:
        return f"{noun} with {expression}"
    if base is int:  # whole bounds: v>0 is v>=1
        bounds = [(">=", str(int(ref) + 1)) if op == ">" else ("<=", str(int(ref) - 1)) if op == "<" else (op, ref)
                  for op, ref in bounds]
    lower = next(((op, ref) for op, ref in bounds if op.startswith(">")), None)
    upper = next(((op, ref) for op, ref in bounds if op.startswith("<")), None)
    if lower and upper:
        if base is int:
            return f"an integer from {lower[1]} to {upper[1]}"
        return f"a number in {'[' if lower[0] == '>=' else '('}{lower[1]}, {upper[1]}{']' if upper[0] == '<=' else ')'}"
    if base is float and lower and lower[0] == ">=" and float(lower[1]) == 0:
        return "a non-negative number"
    bound = lower or upper
    return f"{noun} {bound[0]} {bound[1]}" if bound else noun


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
#
# lamina reads the file named by ckpt_path itself before Lightning does (LaminaCLI), so that each of
# these is one line naming ckpt_path rather than an error from inside Lightning's loading.


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict:
    """A Lightning checkpoint's contents, or a one-line ConfigError that names `key` (the flag or
    config key the path came from). The tensors of a zip-format file (torch.save's) are
    memory-mapped: reading the hyperparameters and shapes costs little."""
    import torch

    path = str(path)
    if Path(path).is_dir():
        raise ConfigError(f"{key}: {path!r} is a folder, expected a .ckpt file")
    if not Path(path).is_file():
        raise ConfigError(f"{key}: no such checkpoint file {path!r}")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as err:  # noqa: BLE001 - retried below, or reported
            if "lamina.rlp" not in str(err):
                raise
            # RLPConfig or ThoughtEvalConfig in the hyperparameters (a module built in Python): lamina.rlp.config
            # lets weights-only loading read them (imported here only: it loads the world generator)
            import lamina.rlp.config  # noqa: F401

            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - whatever torch.load makes of a file that is not a checkpoint
        raise ConfigError(unreadable_checkpoint(path, err, key)) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{key}: {path!r} is not a lamina checkpoint (no state_dict)")
    return checkpoint


def read_checkpoint_hparams(path: str) -> dict:
    """The hyperparameters saved in a Lightning checkpoint, or a one-line ConfigError."""
    return dict(read_checkpoint(path).get("hyper_parameters") or {})


def unreadable_checkpoint(path, err: Exception, key: str = "ckpt_path") -> str:
    if is_argument_error(err):  # a checkpoint of an older lamina, say, with a key since renamed
        return f"{key}: the hyperparameters saved in {str(path)!r} do not fit this config: {parser_message(err)}"
    detail = first_sentence(str(err)) or "the file ends early"
    return f"{key}: cannot read {str(path)!r} as a lamina checkpoint ({type(err).__name__}: {detail})"


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


def check_checkpoint_fits(path: str, checkpoint: dict, module, resuming: bool) -> None:
    """Before the trainer loads `checkpoint` (read from `path`) into `module`: its weights have the
    model's shapes (Lightning's strict load would fail on the first tensor that differs), and a
    resumed fit has the optimizer and loop state that a weights-only checkpoint lacks."""
    saved = checkpoint.get("hyper_parameters") or {}
    here = dict(getattr(module, "hparams", {}))
    differ = [
        f"model.{k} is {saved[k]!r} there, {here[k]!r} here" for k in MODEL_SHAPE_KEYS
        if k in saved and k in here and saved[k] != here[k]
    ]
    if not differ:  # the same shape keys and still another shape: name the first tensor
        ours = module.state_dict()
        differ = [
            f"{name} is {list(tensor.shape)} there, {list(ours[name].shape)} here"
            for name, tensor in checkpoint["state_dict"].items()
            if name in ours and getattr(tensor, "shape", None) is not None and tensor.shape != ours[name].shape
        ][:1]
    if differ:
        raise ConfigError(f"ckpt_path: the weights in {path!r} do not fit this model: {'; '.join(differ)}")
    if resuming and "optimizer_states" not in checkpoint:
        raise ConfigError(
            f"ckpt_path: {path!r} holds model weights only and cannot resume training; to start from "
            f"its weights, pass it as model.init_from instead"
        )


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


def lightning_argument_error(section: str, cls: type, values: Mapping, err: BaseException) -> ConfigError | None:
    """What Lightning raised while `cls(**values)` was built (the Trainer or a ModelCheckpoint, in
    lamina's call of it): a MisconfigurationException, ValueError or TypeError is its check of an
    argument the user gave (no user code runs there). The line names the section and the argument
    that the message mentions; None for anything else."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(err, ConfigError) or not isinstance(err, (MisconfigurationException, ValueError, TypeError)):
        return None
    return ConfigError(init_argument_message(section, cls, values, str(err)))


def init_argument_message(section: str, cls: type, values: Mapping, message: str) -> str:
    args = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    mentioned = sorted(
        (m.start(), arg) for arg in args if (m := re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", message))
    )
    key = mentioned[0][1] if mentioned else None
    if key is None and section == "trainer" and re.search(r"gpu|cuda|mps|tpu|backend", message, re.I):
        key = "accelerator"  # "No supported gpu backend found!" names no argument
    if key is None:
        return f"{section}: {short(message)}"
    value = values.get(key)
    got = f" (got {value!r})" if repr(value) not in message and str(value) not in message else ""
    return f"{section}.{key}: {short(message)}{got}"


# ---- helpers -------------------------------------------------------------------------------------


def first_sentence(text: str) -> str:
    """torch.load's errors run to a paragraph of advice about pickles: its first sentence is the news."""
    return short(re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0], 200)


def short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
