"""`lamina fit|validate|prepare`: LightningCLI over the LanguageModel and the TextDataModule.

Every config key can be overridden on the command line (`--model.n_layer 8`). Runs land in
`runs/<name>/version_<n>/`; `--ckpt_path last` resumes the latest run of the same name in place.
A user mistake prints one line naming the key or file and exits non-zero.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lamina.callbacks import Throughput, training_callbacks
from lamina.checkpointing import ReportRunFolder, StopOnSignal, use_atomic_checkpoints
from lamina.data import TextDataModule
from lamina.errors import ConfigError
from lamina.lm import LanguageModel
from lamina.user_errors import check_config_files, check_resume_config, check_trainer, user_message

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "runs", "name": "default"},
}


class LaminaCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.block_size", "data.block_size")
        parser.link_arguments("data.model_vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        from lamina.instrument import Instrumentation  # (imported here: cli.py's one instrumentation hook)

        parser.add_lightning_class_args(Instrumentation, "instrument")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 500,
                "trainer.logger": DEFAULT_LOGGER,
                "trainer.max_steps": 1000,
                "trainer.val_check_interval": 250,
                "trainer.check_val_every_n_epoch": None,
                "trainer.gradient_clip_val": 1.0,
            }
        )

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        # Throughput first: the other callbacks' on_train_batch_end (measurements, thinking
        # evaluations, checkpoints) run after its timing window closes (sorted stably: ModelCheckpoint
        # stays last).
        trainer.callbacks.sort(key=lambda c: not isinstance(c, Throughput))
        check_trainer(trainer)
        use_atomic_checkpoints(trainer)
        return trainer

    def _instantiate_trainer(self, config: dict, callbacks: list):
        # `checkpoint.*` always makes a ModelCheckpoint, which Lightning refuses beside
        # `trainer.enable_checkpointing false`: that switch drops it instead.
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI puts the checkpoint's model hyperparameters in place of the config's: a shape
        # key the user set otherwise would be silently ignored, so it is refused first.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc") and not str(ckpt_path).startswith("registry"):
            defaults = self._parser(subcommand).get_defaults().model
            check_resume_config(ckpt_path, self.config[subcommand].model, defaults)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            resume_latest_version(config)


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
    return dict(
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False, "default_env": False},
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": [*training_callbacks(), StopOnSignal(), ReportRunFolder()]},
    )


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """The console script; `argv` (without the program name) is for calling it from Python."""
    words = sys.argv[1:] if argv is None else argv
    try:
        if words[:1] == ["compare"]:
            from lamina.compare import main as compare_main

            compare_main(words[1:])
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
