"""`lamina fit|validate|prepare`: LightningCLI over the LanguageModel and the TextDataModule.

Every config key can be overridden on the command line (`--model.n_layer 8`). The model is
lamina.lm.LanguageModel unless the config names another class (`model: class_path:
lamina.rlp.RLPModel, init_args: ...`; `--model lamina.rlp.RLPModel`); each callback with settings
has a section of its own (throughput, thought_eval, instrument, checkpoint, drift, retention). A
config of an older lamina is read in today's layout (lamina.pretrained.migrate). Runs land in
`runs/<name>/version_<n>/`; `--ckpt_path last` resumes the latest run of the same name in place.
A user mistake prints one line naming the key or file and exits non-zero.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
import warnings
from pathlib import Path

import yaml
from jsonargparse import ArgumentError, Namespace, set_parsing_settings
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lamina.callbacks import TerminalDefaults, ThoughtEval, Throughput, training_callbacks
from lamina.verdict import Question
from lamina.checkpointing import LastAtFinalStep, ReportRunFolder, StopOnSignal, use_atomic_checkpoints
from lamina.data import TextDataModule
from lamina.errors import ConfigError
from lamina.lm import LanguageModel
from lamina.pretrained import LANGUAGE_MODEL, MOVED_KEYS, checkpoint_config, migrate, moved_instrument_keys
from lamina.user_errors import (
    check_checkpoint_fits,
    check_config_files,
    check_resume_config,
    check_trainer,
    lightning_argument_error,
    read_checkpoint,
    unreadable_checkpoint,
    user_message,
)

DEFAULT_LOGGER = {
    "class_path": "lamina.tensorboard.TensorBoardLogger",
    "init_args": {"save_dir": "runs", "name": "default"},
}


def not_a_promotion(record: logging.LogRecord) -> bool:
    """False for Lightning's advertisements of its cloud products ("💡 Tip: For seamless cloud
    logging ..., try installing litlogger"), which it logs at INFO on every fit."""
    return not re.match(r"\W*Tip:", record.getMessage())


# Lightning's rank_zero_info writes through this logger (a filter on it drops the record for
# every handler, Lightning's own and the user's).
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(not_a_promotion)

# Other libraries' deprecation notices about each other's internals, which a lamina user can do
# nothing about (each by its message; any other warning still shows): Lightning 2.6 builds torch's
# deprecated pytree LeafSpec when it logs a value.
KNOWN_DEPRECATIONS = ((r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),)


def hide_known_deprecations() -> None:
    """On import and again as each CLI starts (cli_kwargs): a `warnings.catch_warnings` block around
    the import (a test runner's) drops the filters set in it. (Setting one again replaces it.)"""
    for pattern, category in KNOWN_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


hide_known_deprecations()


class LaminaCLI(LightningCLI):
    def __init__(self, *args, subclass_mode_model: bool = True, **kwargs):
        """LightningCLI's arguments. The model section takes any LanguageModel subclass by class path
        (lamina.rlp.RLPModel); a config without one is a LanguageModel."""
        super().__init__(*args, subclass_mode_model=subclass_mode_model, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit and validate: a LanguageModel has no test or predict step."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model's keys are init_args of whichever class the config names; without a class path,
        # the LanguageModel's.
        parser.set_defaults({"model": {"class_path": LANGUAGE_MODEL}})
        # int: model.block_size is a PositiveInt, which a key typed int cannot write back to YAML
        parser.link_arguments("model.init_args.block_size", "data.block_size", compute_fn=int)
        parser.link_arguments("data.model_vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        # Throughput's section first: Lightning runs callbacks in this order (ModelCheckpoint moved
        # last), so the others' on_train_batch_end (measurements, thinking evaluations, checkpoints)
        # run after its timing window closes.
        parser.add_lightning_class_args(Throughput, "throughput")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        from lamina.instrument import Instrumentation  # (imported here: cli.py's one instrumentation hook)

        parser.add_lightning_class_args(Instrumentation, "instrument")
        from lamina.finetune import Drift, Retention  # after pretraining: what fine-tuning moves and keeps

        parser.add_lightning_class_args(Drift, "drift")
        parser.add_lightning_class_args(Retention, "retention")
        parser.add_lightning_class_args(ThoughtEval, "thought_eval")
        # What `lamina compare` judges this run's group by (lamina.verdict.Question): read, not run.
        parser.add_class_arguments(Question, "compare")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 500,
                "trainer.logger": DEFAULT_LOGGER,
                "trainer.max_steps": 1000,
                "trainer.val_check_interval": 250,
                "trainer.num_sanity_val_steps": -1,  # the whole val set: it is step 0's validation (lm.py)
                "trainer.check_val_every_n_epoch": None,
                "trainer.gradient_clip_val": 1.0,
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        words = sys.argv[1:] if args is None else args
        migrated = None if isinstance(words, (dict, Namespace)) else migrated_config_words(list(words))
        if migrated is None:
            super().parse_arguments(parser, args)
        else:  # (LightningCLI's own parse, without its warning about args given beside sys.argv)
            self.config = parser.parse_args(migrated)
        subcommand = self.config.get("subcommand")
        check_vocab_size_not_given((self.config[subcommand] if subcommand else self.config).model)
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path in ("best", "hpc"):
            # "best" names the best checkpoint of an earlier fit in the same process; a SLURM job that
            # was requeued resumes from its "hpc" checkpoint by itself (with ckpt_path null).
            raise ConfigError(f"ckpt_path: expected a checkpoint file or 'last', got {ckpt_path!r}")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's: a checkpoint file's model settings take the config's place (a resumed run
        keeps its checkpoint's model); lamina's reads the checkpoint in today's layout (migrated: an
        older one's thought_eval and peak_flops come along, into their sections), and first checks
        that the file is a readable checkpoint, that no shape key or model class the user set differs
        from it (it would be silently ignored), and that its settings parse as a config."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or ckpt_path == "last" or not is_local_file(ckpt_path):
            return  # (`last` is found in before_instantiate_classes; a registry name or URL, Lightning reads)
        path = str(ckpt_path)
        settings = checkpoint_config(read_checkpoint(path))  # a missing file, a folder, not a checkpoint: one line
        model = self.config[subcommand].model
        # The signature's defaults: lamina sets no parser defaults among the model's keys.
        defaults = {k: p.default for k, p in inspect.signature(LanguageModel.__init__).parameters.items()}
        check_resume_config(path, model.init_args, defaults)
        saved_class = settings["model"]["class_path"]
        if model.class_path not in (LANGUAGE_MODEL, saved_class):
            raise ConfigError(
                f"ckpt_path: {path!r} is a checkpoint of a {saved_class}, this config's model is a {model.class_path} "
                f"(a resumed run keeps its checkpoint's model: to start from its weights, pass it as model.init_from)"
            )
        try:
            self.config = self.parser.parse_object({subcommand: settings}, self.config)
        except ArgumentError as err:
            raise ConfigError(unreadable_checkpoint(path, err)) from err

    def instantiate_trainer(self, **kwargs):
        trainer = self.lightning_trainer(**kwargs)
        check_trainer(trainer)
        count_validation_in_optimizer_steps(trainer)
        use_atomic_checkpoints(trainer)
        return trainer

    def lightning_trainer(self, **kwargs) -> Trainer:
        """LightningCLI's trainer; Lightning's checks of its arguments fail as one line naming the
        key. `checkpoint.*` always makes a ModelCheckpoint, which Lightning refuses beside
        `trainer.enable_checkpointing false`: that switch drops it instead (the trainer is built
        with checkpointing on, then without the callback, as Lightning builds it with it off)."""
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        values = {**config.get("trainer", {}), **kwargs}
        switched_off = values.get("enable_checkpointing") is False
        if switched_off:
            kwargs = {**kwargs, "enable_checkpointing": True}
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except Exception as err:
            error = lightning_argument_error("trainer", Trainer, values, err)
            if error is None:
                raise
            raise error from err
        if switched_off:
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        # Built once here to check its arguments: Lightning checks them in its constructor, and
        # jsonargparse builds it among all the other classes, where its errors are not told apart.
        try:
            ModelCheckpoint(**config.checkpoint)
        except Exception as err:
            error = lightning_argument_error("checkpoint", ModelCheckpoint, config.checkpoint, err)
            if error is None:
                raise
            raise error from err
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            resume_latest_version(config)

    def after_instantiate_classes(self) -> None:
        # Before the trainer loads the checkpoint: the model built from this config can take it.
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        path = config.get("ckpt_path")
        if path and path != "last" and is_local_file(path):  # (validate resolves "last" itself)
            check_checkpoint_fits(str(path), read_checkpoint(str(path)), self.model, resuming=self.subcommand == "fit")


def check_vocab_size_not_given(model) -> None:
    """model.vocab_size is linked from the data module (its tokenizer's size) when the classes are
    built, over any value given; jsonargparse refuses a value given for a link target of a plain
    section, not for one among a class path's init_args: lamina does (a value other than the default)."""
    default = inspect.signature(LanguageModel.__init__).parameters["vocab_size"].default
    if model.init_args.get("vocab_size", default) != default:
        raise ConfigError(
            "model.vocab_size: is set from data.tokenizer and data.vocab_size (a link), not directly; set "
            "data.tokenizer and data.vocab_size instead"
        )


def migrated_config_words(words: list[str]) -> list[str] | None:
    """`words` with each `--config FILE` of an older lamina (lamina.pretrained.migrate changes it) given
    as its migrated YAML instead, and a line saying so; None when no config file needed it."""
    out = list(words)
    for i, word in enumerate(words):
        if word.startswith("--config="):
            at, value = i, word.split("=", 1)[1]
        elif word in ("--config", "-c") and i + 1 < len(words):
            at, value = i + 1, words[i + 1]
        else:
            continue
        path = Path(value).expanduser()
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # check_config_files says what is wrong with it
        if not isinstance(content, dict) or (new := migrate(content)) == content:
            continue
        text = yaml.safe_dump(new, sort_keys=False)  # --config takes YAML text as well as a file
        out[at] = f"--config={text}" if at == i else text
        model = content.get("model") or {}
        keys = (model.get("init_args") or {}) if "class_path" in model else model
        moved = [f"{old} -> {MOVED_KEYS[old]}" for old in MOVED_KEYS
                 if old.startswith("model.") and old.split(".")[1] in keys]
        instrument = content.get("instrument")
        if isinstance(instrument, dict):  # its flat keys, each into its section
            moved += [f"instrument.{old} -> {MOVED_KEYS['instrument.' + old]}"
                      for old in moved_instrument_keys(instrument)]
        moved = ", ".join(moved)
        rank_zero_info(f"lamina: {value} holds keys of an older lamina, read in today's layout: {moved} "
                       f"(lamina.pretrained.migrate; docs/configs.md)")
    return out if out != list(words) else None


def is_local_file(ckpt_path) -> bool:
    """Not a model registry name ("registry:...") nor a URL (s3://...): those Lightning reads itself."""
    return not str(ckpt_path).startswith("registry") and "://" not in str(ckpt_path)


def count_validation_in_optimizer_steps(trainer) -> None:
    """`trainer.val_check_interval` N (an integer) means: validate after every N optimizer steps.
    Lightning counts micro-batches, so with accumulation the cadence would shift whenever
    accumulate_grad_batches changes (a DDP overlay, a bigger batch); the trainer is given the
    micro-batch count instead (a fraction of an epoch or a time is left as it is)."""
    interval = trainer.val_check_interval
    if isinstance(interval, int) and not isinstance(interval, bool):
        trainer.val_check_interval = interval * trainer.accumulate_grad_batches


def resume_latest_version(config) -> None:
    """Point `ckpt_path last` at the newest `runs/<name>/version_<n>/checkpoints/last.ckpt` and keep
    logging into that same version folder, so a resumed run continues its curves."""
    logger = config.trainer.logger
    if not logger or isinstance(logger, (bool, list)):
        raise ConfigError("ckpt_path: 'last' needs a single TensorBoardLogger in trainer.logger")
    args = logger.init_args
    run_dir = Path(args.save_dir) / args.name
    versions = sorted(
        (int(m.group(1)), p)
        for p in run_dir.glob("version_*")
        if (m := re.fullmatch(r"version_(\d+)", p.name)) and (p / "checkpoints" / "last.ckpt").exists()
    )
    if not versions:
        raise ConfigError(f"ckpt_path: 'last' found no checkpoints/last.ckpt under {run_dir}/version_*")
    version, path = versions[-1]
    args.version = version
    config.ckpt_path = str(path / "checkpoints" / "last.ckpt")


def prepare(args: list[str]) -> None:
    """`lamina prepare --config X`: build the tokenizer and token cache ahead of time."""
    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=args, **cli_kwargs())
    cli.datamodule.prepare_data()
    print(f"lamina: token cache ready at {cli.datamodule.cache_path}")


def fit_callbacks() -> list:
    """lamina.callbacks.training_callbacks() but Throughput, which the `throughput` section makes."""
    return [c for c in training_callbacks() if not isinstance(c, Throughput)]


def cli_kwargs() -> dict:
    hide_known_deprecations()
    return dict(
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False, "default_env": False},
        auto_configure_optimizers=False,
        # TerminalDefaults after the config's callbacks: it swaps only the bar and summary Lightning adds
        trainer_defaults={"callbacks": [*fit_callbacks(), StopOnSignal(), LastAtFinalStep(), ReportRunFolder(),
                                         TerminalDefaults()]},
    )


# Subcommands that are not a fit: each module's main(argv) (imported on use: they pull matplotlib,
# scipy or transformers, which training never needs).
TOOLS = {
    "compare": "lamina.compare",
    "export": "lamina.export",
    "sample": "lamina.sample",
    "proxy": "lamina.finetune.proxy",
    "study": "lamina.study",
}


# `lamina --help`: every subcommand with a line (each one's own --help says the rest).
SUBCOMMANDS = {
    "fit": "train a GPT (lamina fit --config configs/tiny.yaml); --ckpt_path last resumes the latest run",
    "validate": "val/loss and val/bpb of a checkpoint (--ckpt_path)",
    "prepare": "build a config's tokenizer and token cache ahead of a fit",
    "compare": "runs side by side on tokens seen and FLOPs, paired by seed: a report (md, CSV, PNG)",
    "study": "one small experiment per claim about how representations form (docs/studies.md), each with a verdict",
    "sample": "what a checkpoint writes after a prompt, greedy or sampled",
    "export": "a checkpoint as a Hugging Face GPT2LMHeadModel folder (transformers, nnsight, TransformerLens)",
    "proxy": "proxy tuning: decode a base model with a small tuned expert's logit offset",
}


def overview() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {line}" for name, line in SUBCOMMANDS.items()]
    return "\n".join(["usage: lamina SUBCOMMAND [options]   (lamina SUBCOMMAND --help for its options)", "",
                      "A small-scale pretraining lab with in-loop instrumentation of representations.", "",
                      "subcommands:", *lines])


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """The console script; `argv` (without the program name) is for calling it from Python."""
    words = sys.argv[1:] if argv is None else argv
    if words[:1] in ([], ["-h"], ["--help"]):
        print(overview(), file=sys.stdout if words else sys.stderr)
        sys.exit(0 if words else 2)
    if not words[0].startswith("-") and words[0] not in SUBCOMMANDS:
        print(f"lamina: error: unknown subcommand {words[0]!r}: expected one of {', '.join(SUBCOMMANDS)} "
              "(lamina --help)", file=sys.stderr)
        sys.exit(2)
    try:
        if words[:1] and words[0] in TOOLS:
            importlib.import_module(TOOLS[words[0]]).main(words[1:])
            return
        check_config_files(words)
        if {"-h", "--help"} & set(words):
            # The help of the config dataclasses' keys (lamina.instrument.config) is their attribute
            # docstrings, which jsonargparse reads only when asked (a second or so per parse): for --help.
            set_parsing_settings(docstring_parse_attribute_docstrings=True)
        if words[:1] == ["prepare"]:
            prepare(words[1:])
        else:
            cli = LaminaCLI(LanguageModel, TextDataModule, args=argv, **cli_kwargs())
            stop = next((c for c in cli.trainer.callbacks if isinstance(c, StopOnSignal)), None)
            if stop is not None and stop.saved_step is not None:
                if cli.trainer.is_global_zero:
                    print(stop.message(), file=sys.stderr)
                sys.exit(130)
    except KeyboardInterrupt:
        print("lamina: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        message = user_message(err)  # None for anything but a recognised user mistake
        if message is None:
            raise  # a bug: keep its traceback
        print(f"lamina: error: {one_line(message)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
