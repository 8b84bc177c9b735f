"""Finding runs, reading their TensorBoard scalars and config.yaml, and placing every tag on the
two x axes (cumulative training tokens and FLOPs); grouping runs into arms."""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lamina import tags
from lamina.errors import ConfigError

TOKENS, FLOPS = tags.TOKENS_SEEN, tags.FLOPS


class Axis(NamedTuple):
    counter: str  # the cumulative counter tag the axis reads
    label: str  # its name on a plot and in the report
    title: str  # the report's section at a matched budget on this axis


AXES = {
    "tokens": Axis(TOKENS, "tokens seen", "At matched tokens seen"),
    "flops": Axis(FLOPS, "training FLOPs", "At matched FLOPs"),
}
KEY_METRICS = (
    tags.VAL_BPB,
    tags.VAL_LOSS,
    tags.arith_acc("*"),
    tags.arith_acc("*", thought=False),
    tags.think_acc_gain("[0-9]"),  # with minus without a thought (its /lo, /hi bounds left out)
    *tags.RLP_SIGNAL,  # what can show RLP learning: rewards that differ within a group, and few groups without any
    tags.gap("*"),
)

Curve = tuple[np.ndarray, np.ndarray]  # (x, y), x increasing


def natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def is_event_file(path: Path) -> bool:
    return "tfevents" in path.name


def event_dirs(root: Path) -> list[Path]:
    """Every folder at or below `root` that holds TensorBoard event files, versions in numeric order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=natural_key)
        if any(is_event_file(Path(name)) for name in filenames):
            found.append(Path(dirpath))
    return found


def resolve_glob(spec: str) -> list[Path]:
    matches = [Path(m) for m in sorted(glob.glob(spec), key=natural_key)]
    dirs = [d for m in matches if m.is_dir() for d in event_dirs(m)]
    dirs += [m.parent for m in matches if m.is_file() and is_event_file(m)]
    if not dirs:
        raise ConfigError(f"{spec}: the glob matched no run folder with TensorBoard event files")
    return list(dict.fromkeys(dirs))


def resolve(spec: str) -> list[Path]:
    """The run folders a RUN argument names: a run folder, a folder above runs, an event file, or a glob."""
    if glob.has_magic(spec):
        return resolve_glob(spec)
    path = Path(spec)
    if path.is_file() and is_event_file(path):
        return [path.parent]
    if not path.exists():
        raise ConfigError(f"{spec}: no such run folder")
    if not path.is_dir():
        raise ConfigError(f"{spec}: not a run folder (expected runs/<name>/version_<n> or runs/<name>)")
    dirs = event_dirs(path)
    if not dirs:
        raise ConfigError(
            f"{spec}: no TensorBoard event files in this folder or below "
            "(expected runs/<name>/version_<n>/events.out.tfevents.*)"
        )
    return dirs


@dataclass(eq=False)
class Run:
    path: Path
    name: str  # the default group: `<name>` of runs/<name>/version_<n>
    label: str
    scalars: dict[str, Curve]  # tag -> (steps, values), steps increasing
    axes: dict[str, Curve | None] = field(default_factory=dict)  # axis key -> (steps, counter values)
    seed: tuple[int, int] | None = None  # (seed_everything, data.seed) from its config.yaml, if it has both
    question: dict = field(default_factory=dict)  # its config.yaml's `compare` section, keys set (lamina.verdict.Question)

    @property
    def last_step(self) -> int:
        return max((int(steps[-1]) for steps, _ in self.scalars.values() if len(steps)), default=0)

    def final(self, tag: str) -> float | None:
        curve = self.scalars.get(tag)
        return float(curve[1][-1]) if curve is not None and len(curve[0]) else None

    def steps(self, tag: str) -> np.ndarray:
        """The steps the run logged `tag` at, increasing (empty where it has none)."""
        curve = self.scalars.get(tag)
        return curve[0] if curve is not None else np.zeros(0, dtype=np.int64)

    def at_step(self, tag: str, step: int | None) -> float | None:
        """The value of `tag` logged at `step`; None where the run has none there."""
        curve = self.scalars.get(tag)
        if curve is None or step is None:
            return None
        hit = np.flatnonzero(curve[0] == step)
        return float(curve[1][hit[0]]) if len(hit) else None

    def curve(self, tag: str, axis: str) -> Curve | None:
        """`tag` against the axis's counter (tokens or FLOPs), or None where the run lacks either."""
        data, counter = self.scalars.get(tag), self.axes.get(axis)
        if data is None or counter is None or not len(data[0]):
            return None
        x, keep = steps_to_axis(counter, data[0])
        x, y = x[keep], data[1][keep]
        if not len(x):
            return None
        order = np.argsort(x, kind="stable")
        return x[order], y[order]


def read_scalars(path: Path) -> dict[str, Curve]:
    """Every scalar tag of the event files in `path`; a step written twice (a resumed run): the later value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    keep_little = {"images": 1, "audio": 1, "histograms": 1, "compressedHistograms": 1, "tensors": 1}
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, **keep_little})
    try:
        acc.Reload()
    except Exception as err:  # a truncated or foreign file: name it, in one line
        raise ConfigError(f"{path}: cannot read its TensorBoard event files ({err})") from err
    scalars: dict[str, Curve] = {}
    for tag in acc.Tags().get("scalars", []):
        by_step = {int(event.step): float(event.value) for event in acc.Scalars(tag)}
        steps = np.array(sorted(by_step), dtype=np.int64)
        scalars[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return scalars


def load_run(path: Path) -> Run:
    if re.fullmatch(r"version_\d+", path.name) and path.parent.name:
        name, label = path.parent.name, f"{path.parent.name}/{path.name}"
    else:
        name = label = path.name or str(path)
    run = Run(path, name, label, read_scalars(path), seed=read_seed(path), question=read_question(path))
    run.axes = {key: counter_axis(run, axis.counter) for key, axis in AXES.items()}
    for key, axis in AXES.items():  # the counters as tags: with their zero at step 0 too
        if run.axes[key] is not None:
            steps, values = run.axes[key]
            run.scalars[axis.counter] = (steps.astype(np.int64), values)
    return run


def read_config(path: Path) -> dict:
    """The config.yaml LightningCLI saved in the run folder; {} where there is none or it does not parse."""
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def read_question(path: Path) -> dict:
    """The keys its config's `compare` section sets (primary, margin, predict; nulls left out)."""
    section = read_config(path).get("compare")
    return {k: v for k, v in section.items() if v is not None} if isinstance(section, dict) else {}


def read_seed(path: Path) -> tuple[int, int] | None:
    """(seed_everything, data.seed) from the config.yaml LightningCLI saved in the run folder; None
    where there is no such file, it does not parse, or either seed is missing or not an integer
    (`seed_everything: true` before Lightning wrote the drawn seed back, null, ...)."""
    config = read_config(path)
    if not isinstance(config.get("data"), dict):
        return None
    seeds = (config.get("seed_everything"), config["data"].get("seed"))
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return None
    return seeds


def counter_axis(run: Run, tag: str) -> Curve | None:
    """(steps, values) of a cumulative counter, with (0, 0) prepended for a run that starts from
    scratch, so that what is logged at step 0 (the untrained model) sits at zero tokens/FLOPs.

    A run starts from scratch when it logs something at step 0 (besides Lightning's hp_metric,
    which a resumed run writes too) and its counters' first points extrapolate back to about 0
    there: lamina counts from 0 in a fresh run (an init_from phase included) and logs at step s the
    counters that trained the weights after s updates, so the line back lands at about 0 (an older
    run, which logged the counters one step late, lands near one step's worth, never far above)."""
    data = run.scalars.get(tag)
    if data is None or not len(data[0]):
        return None
    steps, values = data[0].astype(np.float64), data[1]
    logs_step_zero = any(len(s) and s[0] == 0 for t, (s, _) in run.scalars.items() if t != "hp_metric")
    if steps[0] > 0 and values[0] > 0 and logs_step_zero:
        if len(steps) > 1 and steps[1] > steps[0]:
            slope = (values[1] - values[0]) / (steps[1] - steps[0])
        else:
            slope = values[0] / steps[0]
        at_zero = values[0] - slope * steps[0]  # the counter at step 0, extrapolated back
        if -0.25 * values[0] <= at_zero <= 0.75 * values[0]:
            steps, values = np.concatenate([[0.0], steps]), np.concatenate([[0.0], values])
    return steps, values


def steps_to_axis(counter: Curve, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counter values at `steps`: linear interpolation between the counter's logging steps, and a
    straight-line extension of the end segments by at most one logging interval (a last
    validation logged after the last counter). Returns (x, mask of the steps that got one)."""
    c_steps, c_values = counter
    steps = steps.astype(np.float64)
    x = np.interp(steps, c_steps, c_values)
    if len(c_steps) < 2:
        return x, steps == c_steps[0]
    gap = float(np.max(np.diff(c_steps)))
    below, above = steps < c_steps[0], steps > c_steps[-1]
    slope_lo = (c_values[1] - c_values[0]) / (c_steps[1] - c_steps[0])
    slope_hi = (c_values[-1] - c_values[-2]) / (c_steps[-1] - c_steps[-2])
    x[below] = c_values[0] + (steps[below] - c_steps[0]) * slope_lo
    x[above] = c_values[-1] + (steps[above] - c_steps[-1]) * slope_hi
    keep = (steps >= c_steps[0] - gap) & (steps <= c_steps[-1] + gap)
    return x, keep


def value_at(curve: Curve | None, x: float | None) -> float | None:
    """The curve linearly interpolated at `x`; None where it does not cover `x`."""
    if curve is None or x is None:
        return None
    xs, ys = curve
    if not len(xs) or x < xs[0] or x > xs[-1]:
        return None
    return float(np.interp(x, xs, ys))


@dataclass
class Group:
    label: str
    runs: list[Run]


def parse_group(spec: str) -> tuple[str, list[Path]]:
    """`LABEL=RUN[,RUN...]` -> (label, run folders)."""
    label, sep, rest = spec.partition("=")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    if not sep or not label.strip() or not parts:
        raise ConfigError(f"--group {spec}: expected LABEL=RUN[,RUN...]")
    return label.strip(), [d for part in parts for d in resolve(part)]


def assemble(run_specs: list[str], group_specs: list[str]) -> list[Group]:
    """Runs named on the command line, grouped: `--group` labels first, in order, then one group
    per run name for the runs no `--group` claims. Each folder is loaded once."""
    explicit = [parse_group(spec) for spec in group_specs]
    positional = [d for spec in run_specs for d in resolve(spec)]
    if not positional and not explicit:
        raise ConfigError("compare: name at least one RUN (a run folder, runs/<name>, or a glob)")

    loaded: dict[Path, Run] = {}
    claimed: dict[Path, str] = {}
    groups: dict[str, list[Run]] = {}

    def add(label: str | None, path: Path) -> None:
        """Put the run at `path` in group `label` (None: the group of its run name)."""
        key = path.resolve()
        if key not in loaded:
            loaded[key] = load_run(path)
        run = loaded[key]
        members = groups.setdefault(label or run.name, [])
        if run not in members:
            members.append(run)

    for label, paths in explicit:
        for path in paths:
            key = path.resolve()
            if claimed.get(key, label) != label:
                raise ConfigError(f"--group {label}: run {path} is already in group {claimed[key]}")
            claimed[key] = label
            add(label, path)
    for path in positional:
        if path.resolve() not in claimed:
            add(None, path)

    labels = [run.label for run in loaded.values()]
    for run in loaded.values():  # two folders with the same <name>/version_<n>: show their paths
        if labels.count(run.label) > 1:
            run.label = str(run.path)
    return [Group(label, runs) for label, runs in groups.items()]


STATISTICS = (tags.SE, tags.Z)  # `<tag>/se`, `<tag>/z`: statistics of `<tag>` (its standard error, its z), not metrics


def statistics_of(tags: list[str]) -> dict[str, dict[str, str]]:
    """tag -> {"se": tag/se, "z": tag/z} for the tags whose statistics are among `tags`."""
    present = set(tags)
    out: dict[str, dict[str, str]] = {}
    for tag in tags:
        base, _, kind = tag.rpartition("/")
        if kind in STATISTICS and base in present:
            out.setdefault(base, {})[kind] = tag
    return out


def select_metrics(runs: list[Run], patterns: list[str] | None) -> list[str]:
    """Tags matching the patterns (or the key metrics), in pattern order, levels in numeric order."""
    tags = sorted({tag for run in runs for tag in run.scalars}, key=natural_key)
    chosen: list[str] = []
    for pattern in patterns or KEY_METRICS:
        hits = [tag for tag in tags if fnmatch.fnmatchcase(tag, pattern)]
        if patterns and not hits:
            shown = ", ".join(tags[:12]) + (", ..." if len(tags) > 12 else "")
            raise ConfigError(f"--metrics {pattern}: no run has a scalar tag matching it (they have: {shown})")
        chosen += [tag for tag in hits if tag not in chosen]
    if not patterns and not chosen:
        raise ConfigError(f"no run has any key metric ({', '.join(KEY_METRICS)}); choose tags with --metrics")
    return chosen
