"""A claim of the research note as a study: its name, its one-sentence claim, the presets it runs
at, and the function that runs it (through a `Runner`) and returns its `ClaimResult`.

Presets: `cpu` (the configs as they are), `gpu` (one CUDA device, bf16-mixed, bigger shapes and
more steps: each group's file sizes it so that one seed of every claim fits one 10-minute call on
an H100, the reasoning beside each), `test` (the cpu preset at the group's toy sizes). Each group
of claims that shares runs reads its presets from configs/study/<group>.yaml (`Presets`; the file's
format: lamina.study.presets), or from DIR/study/ with `--configs DIR`. A rehearsal
(`lamina study --rehearse`, `StudyContext.rehearse`) runs any preset's code at the same toy sizes on
the CPU: the preset's words, then the toy's (a later `--key value` wins), then `REHEARSAL` (the
accelerator back to the CPU; the precision stays the preset's), so `--preset gpu --rehearse` takes
the gpu preset's code path, bf16-mixed included, on a machine without CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, TypeVar

import yaml

from lamina.errors import ConfigError
from lamina.study.presets import read_presets
from lamina.study.report import ClaimResult
from lamina.study.runs import Runner

PRESETS = ("cpu", "gpu", "test")  # test: a handful of steps at toy sizes, for the smoke test
# Every fit of the gpu preset: one CUDA device (`gpu`, not `auto`: a machine without one fails at
# once, never trains on its CPU for hours), bf16 autocast with fp32 weights and optimizer state.
# Each group's gpu preset writes these words first in its `every` (configs/study/<group>.yaml, so
# that the file says all a gpu fit runs with); tests/test_study.py holds every gpu fit to them.
GPU = ("--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "bf16-mixed")
# A rehearsal's last words: the CPU, whatever the preset said (its precision stays: bf16-mixed runs
# as CPU autocast, so the gpu preset's mixed-precision path is rehearsed too).
REHEARSAL = ("--trainer.accelerator", "cpu", "--trainer.devices", "1")


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
    rehearse: bool = False  # the preset's code at its module's toy sizes on the CPU (lamina study --rehearse)

    @property
    def folder(self) -> Path:
        return self.out / self.claim

    @property
    def preset_text(self) -> str:
        """The preset as a report names it."""
        return f"{self.preset} (rehearsed: toy sizes on the CPU)" if self.rehearse else self.preset

    def progress(self, message: str) -> None:
        self.log(f"study {self.claim}: {message}")


@dataclass(frozen=True)
class Claim:
    name: str
    sentence: str
    run: Callable[[StudyContext], ClaimResult]
    presets: tuple[str, ...] = PRESETS
    group: str = ""  # claims of one group share runs (fitted once a seed, in one --jobs unit); "": the claim's own
    primary: str = ""  # the name of its primary contrast (its file's PRIMARY, fixed before it runs)
    margin: float | None = None  # the primary's margin: what a pilot's power is planned against (lamina.study.pilots)

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


P = TypeVar("P")


def is_words(value) -> bool:
    """A preset field of CLI words (a tuple of strings; an empty one too)."""
    return isinstance(value, tuple) and all(isinstance(word, str) for word in value)


def shrunk(preset: P, toy: P) -> P:
    """`preset` at `toy`'s sizes: each field of CLI words is the preset's words, then the toy's (a
    later `--key value` wins, so the toy's sizes stand and whatever the toy leaves alone stays the
    preset's: its device, precision and data choices); every other field (steps, items, cadences)
    is the toy's."""
    changes = {}
    for f in fields(preset):
        mine, toys = getattr(preset, f.name), getattr(toy, f.name)
        changes[f.name] = mine + toys if is_words(mine) and is_words(toys) else toys
    return replace(preset, **changes)


def rehearsal(preset: P, toy: P) -> P:
    """`preset` shrunk to `toy`'s sizes, on the CPU (REHEARSAL after everything in `every`)."""
    small = shrunk(preset, toy)
    return replace(small, every=small.every + REHEARSAL)


class Presets(dict):
    """A group's presets by name, `cpu`, `gpu` and `test` (cpu at the toy's sizes), read from
    `configs`/study/<group>.yaml (lamina.study.presets), with the toy's sizes (`toy`, what the test
    preset and a rehearsal shrink to) and the folder they were read from."""

    def __init__(self, group: str, kind: type, configs: Path):
        self.group, self.kind, self.configs = group, kind, Path(configs)
        self.path = study_configs(group, self.configs / "study", {"presets": f"{group}.yaml"})["presets"]
        read = read_presets(self.path, kind)
        self.toy = read["toy"]
        super().__init__(cpu=read["cpu"], gpu=read["gpu"], test=shrunk(read["cpu"], self.toy))

    def read_from(self, configs: Path) -> bool:
        return self.configs.resolve() == Path(configs).resolve()


def preset_for(ctx: StudyContext, presets: dict[str, P], toy: P) -> P:
    """The sizes a claim runs at: `presets[ctx.preset]`, or its rehearsal when `ctx.rehearse`.
    `Presets` read from another configs folder than the study's (`--configs DIR`) are read again
    from DIR/study/, the toy's sizes with them."""
    if isinstance(presets, Presets) and not presets.read_from(ctx.configs):
        presets = Presets(presets.group, presets.kind, ctx.configs)
        toy = presets.toy
    if ctx.preset not in presets:
        raise ConfigError(f"--preset: expected one of {', '.join(presets)} for {ctx.claim}, got {ctx.preset!r}")
    preset = presets[ctx.preset]
    return rehearsal(preset, toy) if ctx.rehearse else preset


__all__ = ["Claim", "GPU", "PRESETS", "Presets", "REHEARSAL", "StudyContext", "fmt3", "preset_for", "rehearsal",
           "repo_configs", "shrunk", "study_configs", "word_value", "yaml_value"]


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


def word_value(words: tuple[str, ...], key: str) -> str | None:
    """The value the last `--key value` pair in CLI words gives (`key` dotted, without the dashes;
    None: none does)."""
    found = None
    for i, word in enumerate(words[:-1]):
        if word == f"--{key}":
            found = words[i + 1]
    return found


def fmt3(x) -> str:
    """A number as a report's tables write it: three decimals, `n/a` for None or not finite."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"
