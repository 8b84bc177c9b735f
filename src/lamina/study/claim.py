"""A claim of the research note as a study: its name, its one-sentence claim, the presets it runs
at, and the function that runs it (through a `Runner`) and returns its `ClaimResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from lamina.errors import ConfigError
from lamina.study.report import ClaimResult
from lamina.study.runs import Runner

PRESETS = ("cpu", "gpu", "test")  # test: a handful of steps at toy sizes, for the smoke test


def repo_configs() -> Path:
    """The repository's configs/ folder (src/lamina/study/ -> the repository root)."""
    return Path(__file__).resolve().parents[3] / "configs"


@dataclass
class StudyContext:
    """What a claim's run gets: where to write, which seeds, the preset, the runner of its fits."""

    claim: str
    out: Path  # DIR: runs under DIR/runs/, the report under DIR/<claim>/
    seeds: list[int]
    preset: str
    runner: Runner
    configs: Path = field(default_factory=repo_configs)
    device: str = "auto"  # for evaluations outside a fit: auto (cuda when present), cpu, cuda, ...
    log: Callable[[str], None] = print
    unit: bool = False  # a --fits-for-seed process: fits and per-seed evaluations, nothing over all seeds

    @property
    def folder(self) -> Path:
        return self.out / self.claim

    def progress(self, message: str) -> None:
        self.log(f"study {self.claim}: {message}")


@dataclass(frozen=True)
class Claim:
    name: str
    sentence: str
    run: Callable[[StudyContext], ClaimResult]
    presets: tuple[str, ...] = PRESETS
    group: str = ""  # claims of one group share runs (fitted once a seed, in one --jobs unit); "": the claim's own

    @property
    def runs_with(self) -> str:
        return self.group or self.name


def study_configs(claim: str, folder: Path, names: dict[str, str]) -> dict[str, Path]:
    """role -> the study config file `folder / name`; a missing one is a one-line error (--configs)."""
    paths = {role: Path(folder) / name for role, name in names.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"study {claim}: expected the study's configs, got no {', '.join(missing)} (--configs)")
    return paths


__all__ = ["Claim", "PRESETS", "StudyContext", "repo_configs", "study_configs"]


def yaml_value(paths, *keys: str):
    """The value of a dotted key in the last of `paths` that sets it (None: none does)."""
    found = None
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"--config: expected a readable YAML file, got {str(path)!r} ({err})") from err
        for key in keys:
            data = data.get(key) if isinstance(data, dict) else None
        if data is not None:
            found = data
    return found
