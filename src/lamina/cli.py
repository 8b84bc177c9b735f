"""`lamina fit|validate|prepare`: LightningCLI over the LanguageModel and the TextDataModule.

Every config key can be overridden on the command line (`--model.n_layer 8`). Runs land in
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

from jsonargparse import ArgumentError
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lamina.callbacks import TerminalDefaults, Throughput, training_callbacks
from lamina.checkpointing import ReportRunFolder, StopOnSignal, use_atomic_checkpoints
from lamina.data import TextDataModule
from lamina.errors import ConfigError
from lamina.lm import LanguageModel
from lamina.user_errors import (
    check_checkpoint_fits,
    check_config_files,
    check_resume_config,
    check_trainer,
    lightning_argument_error,
    read_checkpoint,
    read_checkpoint_hparams,
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
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit and validate: a LanguageModel has no test or predict step."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # int: model.block_size is a PositiveInt, which a key typed int cannot write back to YAML
        parser.link_arguments("model.block_size", "data.block_size", compute_fn=int)
        parser.link_arguments("data.model_vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        from lamina.instrument import Instrumentation  # (imported here: cli.py's one instrumentation hook)

        parser.add_lightning_class_args(Instrumentation, "instrument")
        from lamina.finetune import Drift, Retention  # after pretraining: what fine-tuning moves and keeps

        parser.add_lightning_class_args(Drift, "drift")
        parser.add_lightning_class_args(Retention, "retention")
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
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path in ("best", "hpc"):
            # "best" names the best checkpoint of an earlier fit in the same process; a SLURM job that
            # was requeued resumes from its "hpc" checkpoint by itself (with ckpt_path null).
            raise ConfigError(f"ckpt_path: expected a checkpoint file or 'last', got {ckpt_path!r}")
        if ckpt_path and ckpt_path != "last" and is_local_file(ckpt_path):
            self.check_checkpoint_config(parser, subcommand, str(ckpt_path))

    def check_checkpoint_config(self, parser: LightningArgumentParser, subcommand: str, path: str) -> None:
        """Before LightningCLI reads the checkpoint at `path` and puts its model hyperparameters in
        place of the config's: the file is a readable checkpoint, no shape key the user set differs
        from it (it would be silently ignored), and its hyperparameters parse as a model config (a
        checkpoint of an older lamina may hold a key since renamed)."""
        # The signature's defaults: lamina sets no parser defaults in the model section.
        defaults = {k: p.default for k, p in inspect.signature(self.model_class.__init__).parameters.items()}
        check_resume_config(path, self.config[subcommand].model, defaults)
        saved = {k: v for k, v in read_checkpoint_hparams(path).items() if not k.startswith("_")}  # ours only
        try:
            parser.parse_object({subcommand: {"model": saved}}, self.config.clone())
        except ArgumentError as err:
            raise ConfigError(unreadable_checkpoint(path, err)) from err

    def instantiate_trainer(self, **kwargs):
        trainer = self.lightning_trainer(**kwargs)
        # Throughput first: the other callbacks' on_train_batch_end (measurements, thinking
        # evaluations, checkpoints) run after its timing window closes (sorted stably: ModelCheckpoint
        # stays last).
        trainer.callbacks.sort(key=lambda c: not isinstance(c, Throughput))
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


def cli_kwargs() -> dict:
    hide_known_deprecations()
    return dict(
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False, "default_env": False},
        auto_configure_optimizers=False,
        # TerminalDefaults after the config's callbacks: it swaps only the bar and summary Lightning adds
        trainer_defaults={"callbacks": [*training_callbacks(), StopOnSignal(), ReportRunFolder(), TerminalDefaults()]},
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
