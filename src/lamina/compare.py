"""`lamina compare RUN [RUN ...] --out DIR`: runs side by side, aligned on tokens seen and on FLOPs.

A RUN is a run version folder (`runs/<name>/version_<n>`), a folder above run folders
(`runs/<name>`: all its versions; `runs`: every run), or a glob of them. The runs' TensorBoard
scalars are read back, every tag is placed on two x axes, cumulative training tokens
(`perf/tokens_seen`) and cumulative training FLOPs (`perf/flops`), by interpolating those
counters (logged at the logging steps) at the tag's steps, and runs are grouped into arms: by
default one group per run name (the versions of `runs/<name>` are seeds of one arm), or as
`--group LABEL=RUN[,RUN...]` says.

Written to `DIR`:
- `report.md`: per group and key metric, the value at the end of each run and at a matched
  budget (the largest tokens seen, and the largest FLOPs, that every run logging the metric
  reached), as mean ± std [95% t-interval] over the group's runs, and the difference of each
  group from the first one: paired by seed where the runs of the two groups match by seed (see
  below), else the difference of means with Welch's 95% interval;
- `report.csv`: the same numbers, one row per group x metric, blank where no run has the value,
  with both the Welch and the paired difference;
- `<metric>_vs_tokens.png` and `<metric>_vs_flops.png`: one plot per metric family, a line per
  group (its mean over runs) with a shaded band of ±1 std where the group has several runs.

Paired by seed: a run's seed is the pair (`seed_everything`, `data.seed`) of the config.yaml that
LightningCLI saved in its folder. Runs of the two groups with the same seed (one run per seed in
each group) make a pair; where at least 2 pairs have the value, the difference is the mean over
pairs of (run of the group - run of the first group with the same seed), with the 95% t-interval
over the n pairs (n - 1 degrees of freedom). Seed-to-seed spread shared by the arms (the same
validation text, the same initialisation) cancels in each pair, where Welch's interval counts it
as noise. Fewer than 2 pairs (runs without seeds in their config, seeds that differ between the
groups): Welch's interval, as the report says per column and cell.

Nothing is invented: a run that lacks a metric, or whose curve does not reach a budget, is left
out of that cell, and a cell no run fills is blank.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import glob
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lamina.errors import ConfigError

TOKENS, FLOPS = "perf/tokens_seen", "perf/flops"
# axis key -> (counter tag, axis label, tick style, title in the report)
AXES = {
    "tokens": (TOKENS, "tokens seen", "tokens", "At matched tokens seen"),
    "flops": (FLOPS, "training FLOPs", "auto", "At matched FLOPs"),
}
VIEWS = ("end", "tokens", "flops")
KEY_METRICS = (
    "val/bpb",
    "val/loss",
    "eval/arith_acc/level*",
    "eval/arith_acc_nothink/level*",
    "rlp/reward_mean",
    "sparsity/gap/*",
)
ARITH = re.compile(r"eval/arith_acc(_nothink)?/level(\d+)")
THINK_STYLES = ("with thinking", "no thinking")


# ---- statistics --------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_ppf: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass
class Stats:
    """Mean, sample std (n - 1) and the 95% t-interval of the mean over a group's runs."""

    n: int
    mean: float | None = None
    std: float | None = None
    lo: float | None = None
    hi: float | None = None


def describe(values: list[float]) -> Stats:
    n = len(values)
    if n == 0:
        return Stats(0)
    mean = float(np.mean(values))
    if n == 1:
        return Stats(1, mean)
    std = float(np.std(values, ddof=1))
    half = t_ppf(0.975, n - 1) * std / math.sqrt(n)
    return Stats(n, mean, std, mean - half, mean + half)


def welch(ref: Stats, other: Stats) -> tuple[float | None, float | None, float | None]:
    """other.mean - ref.mean, with Welch's 95% interval where both have n >= 2."""
    if not ref.n or not other.n:
        return None, None, None
    diff = other.mean - ref.mean
    if ref.n < 2 or other.n < 2:
        return diff, None, None
    va, vb = ref.std**2 / ref.n, other.std**2 / other.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (ref.n - 1) + vb**2 / (other.n - 1))
    half = t_ppf(0.975, df) * se
    return diff, diff - half, diff + half


# ---- runs --------------------------------------------------------------------------------------


def natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def event_dirs(root: Path) -> list[Path]:
    """Every folder at or below `root` that holds TensorBoard event files, versions in numeric order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=natural_key)
        if any("tfevents" in name for name in filenames):
            found.append(Path(dirpath))
    return found


def resolve(spec: str) -> list[Path]:
    """The run folders a RUN argument names (see the module docstring)."""
    if glob.has_magic(spec):
        matches = [Path(m) for m in sorted(glob.glob(spec), key=natural_key)]
        dirs = [d for m in matches if m.is_dir() for d in event_dirs(m)]
        dirs += [m.parent for m in matches if m.is_file() and "tfevents" in m.name]
        if not dirs:
            raise ConfigError(f"{spec}: the glob matched no run folder with TensorBoard event files")
        return list(dict.fromkeys(dirs))
    path = Path(spec)
    if path.is_file() and "tfevents" in path.name:
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


Curve = tuple[np.ndarray, np.ndarray]  # (x, y), x increasing


@dataclass(eq=False)
class Run:
    path: Path
    name: str  # the default group: `<name>` of runs/<name>/version_<n>
    label: str
    scalars: dict[str, Curve]  # tag -> (steps, values), steps increasing
    axes: dict[str, Curve | None] = field(default_factory=dict)  # axis key -> (steps, counter values)
    seed: tuple[int, int] | None = None  # (seed_everything, data.seed) from its config.yaml, if it has both

    @property
    def last_step(self) -> int:
        return max((int(steps[-1]) for steps, _ in self.scalars.values() if len(steps)), default=0)

    def final(self, tag: str) -> float | None:
        curve = self.scalars.get(tag)
        return float(curve[1][-1]) if curve is not None and len(curve[0]) else None

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


def load_run(path: Path) -> Run:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    keep_little = {"images": 1, "audio": 1, "histograms": 1, "compressedHistograms": 1, "tensors": 1}
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, **keep_little})
    try:
        acc.Reload()
    except Exception as err:  # a truncated or foreign file: name it, in one line
        raise ConfigError(f"{path}: cannot read its TensorBoard event files ({err})") from err
    scalars: dict[str, Curve] = {}
    for tag in acc.Tags().get("scalars", []):
        by_step: dict[int, float] = {}
        for event in acc.Scalars(tag):  # a step written twice (a resumed run): the later value wins
            by_step[int(event.step)] = float(event.value)
        steps = np.array(sorted(by_step), dtype=np.int64)
        scalars[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    if re.fullmatch(r"version_\d+", path.name) and path.parent.name:
        name, label = path.parent.name, f"{path.parent.name}/{path.name}"
    else:
        name = label = path.name or str(path)
    run = Run(path, name, label, scalars, seed=read_seed(path))
    run.axes = {key: counter_axis(run, tag) for key, (tag, *_) in AXES.items()}
    for key, (tag, *_) in AXES.items():  # the counters as tags: with their zero at step 0 too
        if run.axes[key] is not None:
            steps, values = run.axes[key]
            run.scalars[tag] = (steps.astype(np.int64), values)
    return run


def read_seed(path: Path) -> tuple[int, int] | None:
    """(seed_everything, data.seed) from the config.yaml LightningCLI saved in the run folder; None
    where there is no such file, it does not parse, or either seed is missing or not an integer
    (`seed_everything: true` before Lightning wrote the drawn seed back, null, ...)."""
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
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
    there: lamina counts from 0 in a fresh run (an init_from phase included), and Lightning logs
    step s after s + 1 batches, so the line back lands near one step's worth, never far above."""
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


def match_by_seed(ref: Group, other: Group) -> list[tuple[Run, Run]]:
    """(run of `ref`, run of `other`) with the same seed, in seed order. A run without a seed is
    matched with nothing, and so is a seed that two runs of one group share (which is which?)."""

    def by_seed(group: Group) -> dict[tuple[int, int], Run]:
        seeds = [run.seed for run in group.runs]
        return {run.seed: run for run in group.runs if run.seed is not None and seeds.count(run.seed) == 1}

    mine, theirs = by_seed(ref), by_seed(other)
    return [(mine[seed], theirs[seed]) for seed in sorted(mine.keys() & theirs.keys())]


def assemble(run_specs: list[str], group_specs: list[str]) -> list[Group]:
    """Runs named on the command line, grouped: `--group` labels first, in order, then one group
    per run name for the runs no `--group` claims."""
    explicit: list[tuple[str, list[Path]]] = []
    for spec in group_specs:
        label, sep, rest = spec.partition("=")
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        if not sep or not label.strip() or not parts:
            raise ConfigError(f"--group {spec}: expected LABEL=RUN[,RUN...]")
        explicit.append((label.strip(), [d for part in parts for d in resolve(part)]))
    positional = [d for spec in run_specs for d in resolve(spec)]
    if not positional and not explicit:
        raise ConfigError("compare: name at least one RUN (a run folder, runs/<name>, or a glob)")

    loaded: dict[Path, Run] = {}

    def load(path: Path) -> Run:
        key = path.resolve()
        if key not in loaded:
            loaded[key] = load_run(path)
        return loaded[key]

    claimed: dict[Path, str] = {}
    groups: dict[str, list[Run]] = {}
    for label, paths in explicit:
        for path in paths:
            key = path.resolve()
            if claimed.get(key, label) != label:
                raise ConfigError(f"--group {label}: run {path} is already in group {claimed[key]}")
            claimed[key] = label
            run = load(path)
            if run not in groups.setdefault(label, []):
                groups[label].append(run)
    for path in positional:
        if path.resolve() in claimed:
            continue
        run = load(path)
        if run not in groups.setdefault(run.name, []):
            groups[run.name].append(run)

    labels = [run.label for run in loaded.values()]
    for run in loaded.values():  # two folders with the same <name>/version_<n>: show their paths
        if labels.count(run.label) > 1:
            run.label = str(run.path)
    return [Group(label, runs) for label, runs in groups.items()]


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
        raise ConfigError(
            f"no run has any key metric ({', '.join(KEY_METRICS)}); choose tags with --metrics"
        )
    return chosen


# ---- the comparison ----------------------------------------------------------------------------


@dataclass
class Cell:
    stats: Stats
    values: list[float]  # one per run that has the value
    delta: tuple[float | None, float | None, float | None] = (None, None, None)  # Welch's, from the first group
    paired: Stats | None = None  # over the seed pairs with the first group that have the value; None: first group

    @property
    def is_paired(self) -> bool:
        """Whether the report gives the paired difference here (2 pairs or more), not Welch's."""
        return self.paired is not None and self.paired.n >= 2


@dataclass
class Comparison:
    groups: list[Group]
    metrics: list[str]  # rows of the tables: chosen metrics, then tokens seen and FLOPs
    budgets: dict[str, dict[str, float | None]]  # axis -> metric -> budget
    cells: dict[str, dict[str, dict[str, Cell]]]  # view -> metric -> group -> cell
    pairs: dict[str, list[tuple[Run, Run]]] = field(default_factory=dict)  # group -> seed pairs with the first

    @property
    def runs(self) -> list[Run]:
        return [run for group in self.groups for run in group.runs]


def budget(curves: list[Curve]) -> float | None:
    """The largest x every curve reached."""
    ends = [float(x[-1]) for x, _ in curves if len(x)]
    return min(ends) if ends else None


def compare(groups: list[Group], metrics: list[str]) -> Comparison:
    runs = [run for group in groups for run in group.runs]
    rows = metrics + [tag for tag in (TOKENS, FLOPS) if tag not in metrics]
    budgets = {
        axis: {m: budget([c for r in runs if (c := r.curve(m, axis)) is not None]) for m in rows} for axis in AXES
    }
    pairs = {group.label: match_by_seed(groups[0], group) for group in groups[1:]}
    cells: dict[str, dict[str, dict[str, Cell]]] = {view: {} for view in VIEWS}
    for metric in rows:
        for view in VIEWS:
            per_group, per_run = {}, {}
            for group in groups:
                if view == "end":
                    values = [run.final(metric) for run in group.runs]
                else:
                    b = budgets[view][metric]
                    values = [value_at(run.curve(metric, view), b) for run in group.runs]
                per_run.update((id(run), v) for run, v in zip(group.runs, values))
                values = [v for v in values if v is not None]
                per_group[group.label] = Cell(describe(values), values)
            ref = per_group[groups[0].label].stats
            for group in groups[1:]:
                cell = per_group[group.label]
                cell.delta = welch(ref, cell.stats)
                diffs = [per_run[id(theirs)] - per_run[id(mine)] for mine, theirs in pairs[group.label]
                         if per_run[id(mine)] is not None and per_run[id(theirs)] is not None]
                cell.paired = describe(diffs)
            cells[view][metric] = per_group
    return Comparison(groups, rows, budgets, cells, pairs)


# ---- writing -----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4, sign: bool = False) -> str:
    """`digits` significant digits; whole numbers below 1e6 in full (10240, not 1.024e4); 1.8e9."""
    if value is None:
        return ""
    plus = "+" if sign else ""
    if math.isfinite(value) and 10 ** (digits - 1) <= abs(value) < 1e6:
        return format(round(value), f"{plus}d")
    text = format(value, f"{plus}.{digits}g")
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def stats_cell(stats: Stats) -> str:
    if stats.n == 0:
        return ""
    if stats.n == 1:
        return f"{fmt(stats.mean)} (n=1)"
    return f"{fmt(stats.mean)} ± {fmt(stats.std, 2)} [{fmt(stats.lo)}, {fmt(stats.hi)}] (n={stats.n})"


def delta_cell(delta: tuple[float | None, float | None, float | None]) -> str:
    diff, lo, hi = delta
    if diff is None:
        return ""
    if lo is None:
        return fmt(diff, 3, sign=True)
    return f"{fmt(diff, 3, sign=True)} [{fmt(lo, 3, sign=True)}, {fmt(hi, 3, sign=True)}]"


def difference_cell(cell: Cell, column_pairs: int) -> str:
    """The difference the report gives: paired where the cell has 2 seed pairs or more (its n shown
    where it has fewer pairs than its column), else Welch's (named so in a paired column)."""
    if cell.is_paired:
        p = cell.paired
        text = delta_cell((p.mean, p.lo, p.hi))
        return text + (f" (n={p.n})" if p.n != column_pairs else "")
    text = delta_cell(cell.delta)
    return text + (" (Welch)" if text and column_pairs >= 2 else "")


def delta_header(result: Comparison, group: Group, ref: str) -> str:
    n = len(result.pairs.get(group.label, []))
    return f"{group.label} − {ref} ({f'paired by seed, n={n}' if n >= 2 else 'Welch'})"


def seed_text(run: Run) -> str:
    return "" if run.seed is None else f"{run.seed[0]} / {run.seed[1]}"


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def write_markdown(result: Comparison, plots: list[tuple[str, list[tuple[str, str]]]], path: Path) -> None:
    groups = result.groups
    ref = groups[0].label
    deltas = [delta_header(result, g, ref) for g in groups[1:]]
    lines = [
        "# lamina compare",
        "",
        f"{len(result.runs)} runs in {len(groups)} groups. Each cell: mean ± std [95% t-interval of the mean] "
        "(n runs) over the group's runs; blank where no run of the group has the value."
        + (f" Columns `X − {ref}`, marked *paired by seed, n=<pairs>*: runs of X and {ref} with the same seed "
           "(`seed_everything` / `data.seed` of their config.yaml) are paired, and the cell is the mean over "
           "pairs of the per-seed difference with its 95% t-interval (n − 1 degrees of freedom; a cell with "
           "fewer pairs having the value shows its n, one with fewer than 2 falls back to Welch and says so). "
           "Marked *Welch* (fewer than 2 seed pairs): difference of means with Welch's 95% interval."
           if deltas else ""),
        "",
        "## Runs",
        "",
        md_row(["group", "run", "seed / data.seed", "last step", "tokens seen", "FLOPs", "folder"]),
        md_row(["---"] * 7),
    ]
    for group in groups:
        for run in group.runs:
            lines.append(md_row([group.label, run.label, seed_text(run), str(run.last_step),
                                 fmt(run.final(TOKENS)), fmt(run.final(FLOPS)), f"`{run.path}`"]))
    sections = [("end", "At the end of each run", None)] + [(axis, AXES[axis][3], AXES[axis][1]) for axis in AXES]
    for view, title, budget_name in sections:
        lines += ["", f"## {title}", ""]
        if budget_name:
            lines += [
                f"Budget: per metric, the largest {budget_name} that every run logging it reached; "
                "each run's curve is interpolated there.",
                "",
            ]
        head = ["metric"] + ([f"{budget_name} (budget)"] if budget_name else []) + [g.label for g in groups] + deltas
        lines += [md_row(head), md_row(["---"] * len(head))]
        for metric in result.metrics:
            per_group = result.cells[view][metric]
            row = [f"`{metric}`"]
            if budget_name:
                row.append(fmt(result.budgets[view][metric]))
            row += [stats_cell(per_group[g.label].stats) for g in groups]
            row += [difference_cell(per_group[g.label], len(result.pairs.get(g.label, []))) for g in groups[1:]]
            lines.append(md_row(row))
    if plots:
        lines += ["", "## Plots", "", "Lines: a group's mean over its runs; shaded: ±1 std over runs; dotted "
                  "vertical line: the matched budget.", ""]
        for title, files in plots:
            lines += [f"### {title}", "", " ".join(f"![{title} vs {xlabel}]({file})" for xlabel, file in files), ""]
    path.write_text("\n".join(lines).rstrip() + "\n")


# delta*: Welch's difference from the first group; paired_*: the difference paired by seed
# (paired_n seed pairs having the value; the report gives it where paired_n >= 2, else Welch's).
CSV_STATS = ("n", "mean", "std", "ci95_low", "ci95_high", "delta", "delta_ci95_low", "delta_ci95_high",
             "paired_n", "paired_delta", "paired_delta_ci95_low", "paired_delta_ci95_high")


def csv_columns() -> list[str]:
    columns = ["group", "metric", "runs"]
    for view in VIEWS:
        prefix = "end" if view == "end" else f"at_{view}"
        if view != "end":
            columns.append(f"{prefix}_budget")
        columns += [f"{prefix}_{name}" for name in CSV_STATS]
    return columns


def write_csv(result: Comparison, path: Path) -> None:
    def num(value: float | None) -> str:
        return "" if value is None else repr(float(value))

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_columns())
        for group in result.groups:
            for metric in result.metrics:
                row = [group.label, metric, len(group.runs)]
                for view in VIEWS:
                    cell = result.cells[view][metric][group.label]
                    if view != "end":
                        row.append(num(result.budgets[view][metric]))
                    s, p = cell.stats, cell.paired
                    row += [s.n, num(s.mean), num(s.std), num(s.lo), num(s.hi), *map(num, cell.delta)]
                    row += ["", "", "", ""] if p is None else [p.n, num(p.mean), num(p.lo), num(p.hi)]
                writer.writerow(row)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "metric"


def families(metrics: list[str]) -> dict[str, tuple[str, list[tuple[str, str | None]]]]:
    """Plot families: file stem -> (title, [(tag, line style)]). Arithmetic accuracy with and
    without thinking at one level share a plot; every other tag has its own."""
    out: dict[str, tuple[str, list[tuple[str, str | None]]]] = {}
    for tag in metrics:
        if tag in (TOKENS, FLOPS):
            continue
        m = ARITH.fullmatch(tag)
        if m:
            stem, title = f"arith_acc_level{m[2]}", f"arithmetic accuracy, level {m[2]}"
            style = THINK_STYLES[bool(m[1])]
        else:
            stem, title, style = slug(tag.removeprefix("eval/")), tag, None
        out.setdefault(stem, (title, []))[1].append((tag, style))
    return out


def group_series(group: Group, index: int, tags: list[tuple[str, str | None]], axis: str) -> list:
    """A group's curves for one plot: per tag, its mean over the group's runs where they overlap,
    with ±1 std as a band (a single run: its own curve). The legend counts the runs shown."""
    from lamina.plots import Series, color

    per_tag = [(style, [(run, c) for run in group.runs if (c := run.curve(tag, axis)) is not None])
               for tag, style in tags]
    shown = {id(run) for _, pairs in per_tag for run, _ in pairs}
    name, col = f"{group.label} (n={len(shown)})", color(index)
    series = []
    for style, pairs in per_tag:
        curves = [c for _, c in pairs]
        start = max((x[0] for x, _ in curves), default=0.0)
        stop = min((x[-1] for x, _ in curves), default=0.0)
        if len(curves) < 2 or start > stop:  # one run, or runs sharing no stretch of the axis
            series += [Series(name, col, x, y, style=style) for x, y in curves]
            continue
        grid = np.unique(np.concatenate([x for x, _ in curves]))
        grid = grid[(grid >= start) & (grid <= stop)]
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        mean, std = ys.mean(axis=0), ys.std(axis=0, ddof=1)
        series.append(Series(name, col, grid, mean, mean - std, mean + std, style=style))
    return series


def write_plots(result: Comparison, out: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    from lamina.plots import line_plot

    written = []
    for stem, (title, members) in families(result.metrics).items():
        files = []
        for axis, (_, xlabel, xkind, _) in AXES.items():
            series = [s for i, group in enumerate(result.groups) for s in group_series(group, i, members, axis)]
            if not series:
                continue
            budgets = {result.budgets[axis][tag] for tag, _ in members} - {None}
            file = f"{stem}_vs_{axis}.png"
            line_plot(out / file, series, title=f"{title} vs {xlabel}", xlabel=xlabel,
                      ylabel="accuracy" if stem.startswith("arith_acc_level") else members[0][0], xkind=xkind,
                      styles=THINK_STYLES if any(st for _, st in members) else (),
                      vline=budgets.pop() if len(budgets) == 1 and len({s.group for s in series}) > 1 else None)
            files.append((xlabel, file))
        if files:
            written.append((title, files))
    return written


# ---- entry -------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line through lamina's ConfigError, not usage + exit
        raise ConfigError(f"compare: {message}")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lamina compare",
        description="Compare runs (groups of seeds) on tokens seen and training FLOPs: report.md, report.csv, PNGs.",
        epilog="Examples: lamina compare runs/base runs/rlp --out cmp;  "
        "lamina compare --group base='runs/base/version_*' --group rlp=runs/rlp/version_0,runs/rlp/version_1 --out cmp",
    )
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="a run folder runs/<name>/version_<n>, a folder above runs "
                   "(runs/<name>: all its versions), or a glob")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, report.csv and the plots")
    p.add_argument("--group", action="append", default=[], metavar="LABEL=RUN[,RUN...]",
                   help="put these runs in one group (repeatable); other runs are grouped by run name")
    p.add_argument("--metrics", action="append", metavar="PATTERN[,PATTERN...]",
                   help="scalar tags to report, glob patterns (comma-separated, repeatable); default: "
                   + ", ".join(KEY_METRICS))
    return p


def main(argv: list[str]) -> Comparison:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a folder")
    groups = assemble(args.runs, args.group)
    runs = [run for group in groups for run in group.runs]
    for run in runs:
        missing = [tag for key, (tag, *_) in AXES.items() if run.axes[key] is None]
        if missing:
            print(f"lamina compare: note: {run.path} logs no {' or '.join(missing)}: "
                  "left off that axis (its end-of-run values are still reported)", file=sys.stderr)
    patterns = [p.strip() for item in args.metrics for p in item.split(",") if p.strip()] if args.metrics else None
    metrics = select_metrics(runs, patterns)
    result = compare(groups, metrics)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create the folder ({err.strerror})") from err
    plots = write_plots(result, out)
    write_markdown(result, plots, out / "report.md")
    write_csv(result, out / "report.csv")
    print(f"lamina compare: {len(runs)} runs in {len(groups)} groups -> {out / 'report.md'}, "
          f"{out / 'report.csv'}, {sum(len(files) for _, files in plots)} plots")
    return result
