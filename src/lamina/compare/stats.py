"""The statistics of a comparison: per group the mean, std and 95% t-interval over its runs; per
group after the first, its difference from the first group, Welch's and paired by seed; the
cells of every table (at the last step every run reached, at matched tokens, at matched FLOPs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

from lamina.compare.runs import AXES, FLOPS, TOKENS, Curve, Group, Run, value_at

LEVEL = 0.95
VIEWS = ("end", "tokens", "flops")  # the tables: at the runs' last common step, then at a matched budget per axis


def t_quantile(df: float) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    return float(scipy_stats.t.ppf(0.5 + LEVEL / 2, df))


@dataclass
class Stats:
    """Mean, sample std (n - 1) and the 95% t-interval of the mean over n values."""

    n: int
    mean: float | None = None
    std: float | None = None
    lo: float | None = None
    hi: float | None = None


def summarize(values: list[float]) -> Stats:
    """Stats of `values`: the interval is mean ± t(0.975, n - 1) · std / √n (what
    scipy.stats.ttest_1samp(values).confidence_interval() gives, and exact where std is 0)."""
    n = len(values)
    if n == 0:
        return Stats(0)
    mean = float(np.mean(values))
    if n == 1:
        return Stats(1, mean)
    std = float(np.std(values, ddof=1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return Stats(n, mean, std, mean - half, mean + half)


class Difference(NamedTuple):
    """A difference from the first group and its 95% interval (None where there is none)."""

    diff: float | None = None
    lo: float | None = None
    hi: float | None = None


def welch(ref: Stats, other: Stats) -> Difference:
    """other.mean - ref.mean, with Welch's 95% interval (Welch–Satterthwaite degrees of freedom,
    as scipy.stats.ttest_ind(other, ref, equal_var=False).confidence_interval()) where both have
    n >= 2; zero-width where both spreads are 0."""
    if not ref.n or not other.n:
        return Difference()
    diff = other.mean - ref.mean
    if ref.n < 2 or other.n < 2:
        return Difference(diff)
    va, vb = ref.std**2 / ref.n, other.std**2 / other.n
    if va + vb == 0.0:
        return Difference(diff, diff, diff)
    df = (va + vb) ** 2 / (va**2 / (ref.n - 1) + vb**2 / (other.n - 1))
    half = t_quantile(df) * math.sqrt(va + vb)
    return Difference(diff, diff - half, diff + half)


def match_by_seed(ref: Group, other: Group) -> list[tuple[Run, Run]]:
    """(run of `ref`, run of `other`) with the same seed, in seed order. A run without a seed is
    matched with nothing, and so is a seed that two runs of one group share (which is which?)."""

    def by_seed(group: Group) -> dict[tuple[int, int], Run]:
        seeds = [run.seed for run in group.runs]
        return {run.seed: run for run in group.runs if run.seed is not None and seeds.count(run.seed) == 1}

    mine, theirs = by_seed(ref), by_seed(other)
    return [(mine[seed], theirs[seed]) for seed in sorted(mine.keys() & theirs.keys())]


@dataclass
class Cell:
    """One group's value of one metric in one table."""

    stats: Stats
    welch: Difference = Difference()  # from the first group
    paired: Stats | None = None  # over the seed pairs with the first group that have the value; None: first group
    per_seed: dict = field(default_factory=dict)  # seed -> paired difference (None: the pair lacks the value)

    @property
    def is_paired(self) -> bool:
        """Whether the report gives the paired difference here (2 pairs or more), not Welch's."""
        return self.paired is not None and self.paired.n >= 2


class EndStep(NamedTuple):
    """Where the end-of-run table reads a metric: `step`, the last step at which every run logging it
    has a value (None where they share none after step 0: the row is refused), and `last`, each of
    those runs with its own last step of the metric."""

    step: int | None
    last: list[tuple[Run, int]]

    @property
    def refused(self) -> bool:
        return self.step is None and bool(self.last)


def end_step(runs: list[Run], metric: str) -> EndStep:
    """The step the end-of-run table compares `metric` at. Values from different steps side by side
    (one run's last validation at step 0, another's at step 31) would read as a difference between
    the runs; so the table takes the last step they all logged. Step 0 alone does not count where a
    run went further: the untrained model is no end of a run."""
    logged = [(run, steps) for run in runs if len(steps := run.steps(metric))]
    last = [(run, int(steps[-1])) for run, steps in logged]
    common = set.intersection(*(set(steps.tolist()) for _, steps in logged)) if logged else set()
    step = max(common, default=None)
    if step == 0 and any(end > 0 for _, end in last):
        step = None
    return EndStep(None if step is None else int(step), last)


@dataclass
class Comparison:
    groups: list[Group]
    metrics: list[str]  # rows of the tables: chosen metrics, then tokens seen and FLOPs
    budgets: dict[str, dict[str, float | None]]  # axis -> metric -> budget
    cells: dict[str, dict[str, dict[str, Cell]]]  # view -> metric -> group -> cell
    pairs: dict[str, list[tuple[Run, Run]]] = field(default_factory=dict)  # group -> seed pairs with the first
    ends: dict[str, EndStep] = field(default_factory=dict)  # metric -> the step of the end-of-run table
    statistics: dict[str, dict[str, str]] = field(default_factory=dict)  # metric -> {"se": tag, "z": tag}

    @property
    def hidden(self) -> set[str]:
        """Tags that are statistics of another metric (its se, its z): a band and a column, not rows or plots."""
        return {tag for kinds in self.statistics.values() for tag in kinds.values()}

    @property
    def shown(self) -> list[str]:
        hidden = self.hidden
        return [m for m in self.metrics if m not in hidden]

    @property
    def runs(self) -> list[Run]:
        return [run for group in self.groups for run in group.runs]


def budget(curves: list[Curve]) -> float | None:
    """The largest x every curve reached."""
    ends = [float(x[-1]) for x, _ in curves if len(x)]
    return min(ends) if ends else None


def run_value(run: Run, metric: str, view: str, budgets: dict[str, dict[str, float | None]],
              ends: dict[str, EndStep]) -> float | None:
    """The run's value in a table: the one it logged at the metric's end step, or its curve on the
    view's axis at the budget."""
    if view == "end":
        return run.at_step(metric, ends[metric].step)
    return value_at(run.curve(metric, view), budgets[view][metric])


def paired_differences(pairs: list[tuple[Run, Run]], value: dict[int, float | None]) -> dict:
    """seed -> (run of the group - run of the first group with the same seed); None where the pair
    lacks either value."""
    return {mine.seed: (value[id(theirs)] - value[id(mine)]
                        if value[id(mine)] is not None and value[id(theirs)] is not None else None)
            for mine, theirs in pairs}


def table_row(groups: list[Group], pairs: dict[str, list[tuple[Run, Run]]],
              value: dict[int, float | None]) -> dict[str, Cell]:
    """Group label -> cell, from each run's value (by run id; None where it has none)."""
    row = {g.label: Cell(summarize([v for run in g.runs if (v := value[id(run)]) is not None])) for g in groups}
    ref = row[groups[0].label].stats
    for group in groups[1:]:
        cell = row[group.label]
        cell.welch = welch(ref, cell.stats)
        cell.per_seed = paired_differences(pairs[group.label], value)
        cell.paired = summarize([d for d in cell.per_seed.values() if d is not None])
    return row


def compare_groups(groups: list[Group], metrics: list[str],
                   statistics: dict[str, dict[str, str]] | None = None) -> Comparison:
    """Every table of the report: per view, metric and group, a cell. `statistics`: metric ->
    {"se": tag, "z": tag} among `metrics` (their cells are computed, and shown as a band and a column)."""
    runs = [run for group in groups for run in group.runs]
    rows = metrics + [tag for tag in (TOKENS, FLOPS) if tag not in metrics]
    budgets = {
        axis: {m: budget([c for r in runs if (c := r.curve(m, axis)) is not None]) for m in rows} for axis in AXES
    }
    ends = {m: end_step(runs, m) for m in rows}
    pairs = {group.label: match_by_seed(groups[0], group) for group in groups[1:]}
    cells = {
        view: {m: table_row(groups, pairs, {id(r): run_value(r, m, view, budgets, ends) for r in runs}) for m in rows}
        for view in VIEWS
    }
    return Comparison(groups, rows, budgets, cells, pairs, ends, statistics or {})
