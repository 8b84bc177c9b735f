"""The runs of a study: `lamina fit` for (arm, config files, overrides, seed) under DIR/runs/,
reused when finished and resumed when half done.

A run of arm A with seed s lives in `DIR/runs/A/seed<s>/version_0/` (a TensorBoard logger with
save_dir `DIR/runs/A`, name `seed<s>`, version 0), so that `lamina compare DIR/runs/A DIR/runs/B`
reads the seeds of two arms as groups paired by seed. Every run gets `--seed_everything s
--data.seed s` and the run's `--trainer.max_steps`.

- finished: `checkpoints/last.ckpt` holds `global_step` = max_steps: the run is reused, not trained;
- half done: a `last.ckpt` at an earlier step: the fit resumes from it (`--ckpt_path`), in place;
- otherwise: a fresh fit.

`study-run.json` in the run folder records what the run was made from (the argv and a digest of
each config file's text). A finished or half-done run whose record differs from what the study
asks for now is refused with one line (remove the folder or pick another --out): reusing it would
silently mix two setups.

Fits run in this process through `lamina.cli.main` (no interpreter or torch start per run), or
with `isolate=True` each in a subprocess (`python -m lamina.cli`), should in-process state ever
leak between fits.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from lamina.errors import ConfigError, write_failure

RECORD = "study-run.json"

Fit = Callable[[list[str]], None]  # runs `lamina fit` with these words (after the program name)


@dataclass(frozen=True)
class RunSpec:
    """One `lamina fit`: `configs` in order (later ones overlay earlier ones), then `overrides`
    (`--key value` words), then the seed and max_steps the study sets."""

    arm: str
    configs: tuple[str, ...]
    seed: int
    max_steps: int
    overrides: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.arm or "/" in self.arm or self.arm.startswith("."):
            raise ConfigError(f"study arm: expected a plain folder name, got {self.arm!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ConfigError(f"study {self.arm}: expected max_steps >= 1, got {self.max_steps!r}")


@dataclass
class Run:
    """A finished run: its folder, its final checkpoint, and whether this call trained it."""

    spec: RunSpec
    folder: Path
    trained: bool
    seconds: float = 0.0
    record: dict = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"


def in_process_fit(words: list[str]) -> None:
    """`lamina fit ...` in this process. A user mistake has printed its one line and exits (code 2)."""
    import warnings

    from lamina.cli import main

    with warnings.catch_warnings():  # (LightningCLI warns when argv is given while sys.argv holds the study's words)
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        main(words)


def subprocess_fit(words: list[str]) -> None:
    """`lamina fit ...` in a fresh interpreter; its exit status carries over."""
    done = subprocess.run([sys.executable, "-m", "lamina.cli", *words], check=False)
    if done.returncode:
        raise SystemExit(done.returncode)


def checkpoint_step(path: Path) -> int | None:
    """`global_step` of a lamina checkpoint, None where the file is missing or unreadable."""
    import torch

    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file is not a finished run
        return None
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return int(step) if isinstance(step, int) else None


def file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as err:
        raise ConfigError(f"--config: expected a readable config file, got {path!r} ({write_failure(err)})") from err


class Runner:
    """Runs (or reuses) the fits of one claim under `root` (DIR/runs), one progress line each."""

    def __init__(self, root: str | Path, claim: str, fit: Fit | None = None, isolate: bool = False,
                 log: Callable[[str], None] = print):
        self.root, self.claim, self.log = Path(root), claim, log
        self.fit = fit or (subprocess_fit if isolate else in_process_fit)
        self.fits = 0  # fits started by this runner (a reused run starts none)

    def folder(self, spec: RunSpec) -> Path:
        return self.root / spec.arm / f"seed{spec.seed}" / "version_0"

    def words(self, spec: RunSpec) -> list[str]:
        words = ["fit"]
        for config in spec.configs:
            words += ["--config", str(config)]
        words += list(spec.overrides)
        words += [
            "--seed_everything", str(spec.seed), "--data.seed", str(spec.seed),
            "--trainer.max_steps", str(spec.max_steps),
            "--trainer.logger.class_path", "lamina.tensorboard.TensorBoardLogger",
            "--trainer.logger.init_args.save_dir", str(self.root / spec.arm),
            "--trainer.logger.init_args.name", f"seed{spec.seed}",
            "--trainer.logger.init_args.version", "0",
        ]
        return words

    def record_of(self, spec: RunSpec) -> dict:
        return {"arm": spec.arm, "seed": spec.seed, "max_steps": spec.max_steps,
                "configs": {str(c): file_digest(str(c)) for c in spec.configs}, "overrides": list(spec.overrides)}

    def run(self, spec: RunSpec, seed_index: int = 1, n_seeds: int = 1) -> Run:
        folder = self.folder(spec)
        last = folder / "checkpoints" / "last.ckpt"
        want = self.record_of(spec)
        record_path = folder / RECORD
        step = checkpoint_step(last)
        where = f"study {self.claim}: seed {seed_index}/{n_seeds}, arm {spec.arm}"
        if step is not None:
            try:
                had = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                had = None
            keys = ("arm", "seed", "max_steps", "configs", "overrides")
            if had is None or {k: had.get(k) for k in keys} != want:
                raise ConfigError(
                    f"{where}: the run folder {folder} holds a run made with other settings (or without "
                    f"{RECORD}); remove it or pick another --out"
                )
            if step >= spec.max_steps:
                self.log(f"{where}: finished run reused (step {step}), {folder}")
                return Run(spec, folder, trained=False, seconds=float(had.get("seconds", 0.0)), record=had)
        words = self.words(spec)
        if step is not None:
            words += ["--ckpt_path", str(last)]
            self.log(f"{where}: resuming from step {step} to {spec.max_steps}, {folder}")
        else:
            self.log(f"{where}: training {spec.max_steps} steps, {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_json(record_path, {**want, "argv": words, "finished": False})
        except OSError as err:
            raise ConfigError(f"--out: expected a writable folder, got {str(folder)!r} ({write_failure(err)})") from err
        started = time.perf_counter()
        self.fits += 1
        self.fit(words)
        seconds = time.perf_counter() - started
        done = checkpoint_step(last)
        if done is None or done < spec.max_steps:
            raise ConfigError(f"{where}: the fit ended without {last} at step {spec.max_steps} (got {done})")
        record = {**want, "argv": words, "finished": True, "seconds": seconds}
        _write_json(record_path, record)
        return Run(spec, folder, trained=True, seconds=seconds, record=record)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_all(runner: Runner, specs: Sequence[RunSpec], seed_index: int, n_seeds: int) -> list[Run]:
    return [runner.run(spec, seed_index, n_seeds) for spec in specs]


__all__ = ["Fit", "Run", "RunSpec", "Runner", "checkpoint_step", "in_process_fit", "run_all", "subprocess_fit"]
