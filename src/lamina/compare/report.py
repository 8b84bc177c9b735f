"""The report of a comparison: report.md, report.csv, and one PNG per metric family and axis
(matplotlib, object-oriented: a Figure per plot, no pyplot state)."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from lamina import tags
from lamina.compare.runs import AXES, FLOPS, STATISTICS, TOKENS, Group, Run
from lamina.compare.stats import VIEWS, Cell, Comparison, Difference, EndStep, Stats, summarize

# ---- numbers as text ---------------------------------------------------------------------------


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


def delta_cell(delta: Difference | tuple[float | None, float | None, float | None]) -> str:
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
        return delta_cell((p.mean, p.lo, p.hi)) + (f" (n={p.n})" if p.n != column_pairs else "")
    text = delta_cell(cell.welch)
    return text + (" (Welch)" if text and column_pairs >= 2 else "")


# ---- report.md ---------------------------------------------------------------------------------


def delta_header(result: Comparison, group: Group, ref: str) -> str:
    n = len(result.pairs.get(group.label, []))
    return f"{group.label} − {ref} ({f'paired by seed, n={n}' if n >= 2 else 'Welch'})"


def seed_text(run: Run) -> str:
    return "" if run.seed is None else f"{run.seed[0]} / {run.seed[1]}"


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def intro(result: Comparison) -> list[str]:
    groups, ref = result.groups, result.groups[0].label
    text = (f"{len(result.runs)} runs in {len(groups)} groups. Each cell: mean ± std [95% t-interval of the mean] "
            "(n runs) over the group's runs; blank where no run of the group has the value.")
    if len(groups) > 1:
        text += (f" Columns `X − {ref}`, marked *paired by seed, n=<pairs>*: runs of X and {ref} with the same seed "
                 "(`seed_everything` / `data.seed` of their config.yaml) are paired, and the cell is the mean over "
                 "pairs of the per-seed difference with its 95% t-interval (n − 1 degrees of freedom; a cell with "
                 "fewer pairs having the value shows its n, one with fewer than 2 falls back to Welch and says so). "
                 "Marked *Welch* (fewer than 2 seed pairs): difference of means with Welch's 95% interval.")
    return [text]


def runs_table(result: Comparison) -> list[str]:
    lines = ["## Runs", "", md_row(["group", "run", "seed / data.seed", "last step", "tokens seen", "FLOPs", "folder"]),
             md_row(["---"] * 7)]
    for group in result.groups:
        for run in group.runs:
            lines.append(md_row([group.label, run.label, seed_text(run), str(run.last_step),
                                 fmt(run.final(TOKENS)), fmt(run.final(FLOPS)), f"`{run.path}`"]))
    return lines


END_TITLE = "At the last step every run reached"
END_TEXT = ("Step: per metric, the last step at which every run logging it has a value; every value of a row "
            "is from that step, so that one run's last value is never set against another's from an earlier "
            "or later step. *(X: to S)*: the runs of group X went on to step S, past the step compared. A "
            "metric whose runs share no step after step 0 (the untrained model) is left out, with a line "
            "below the table naming the runs that stopped short. Runs of different lengths on purpose "
            "compare in the matched tokens and FLOPs tables; each run's own end is in the Runs table.")


def step_range(steps: list[int]) -> str:
    low, high = min(steps), max(steps)
    return str(low) if low == high else f"{low}–{high}"


def step_cell(result: Comparison, end: EndStep) -> str:
    """The step a row compares at, and the groups whose runs logged the metric past it (to what step)."""
    if end.step is None:
        return ""
    group_of = {id(run): group.label for group in result.groups for run in group.runs}
    later: dict[str, list[int]] = {}
    for run, last in end.last:
        if last > end.step:
            later.setdefault(group_of[id(run)], []).append(last)
    beyond = "; ".join(f"{label}: to {step_range(steps)}" for label, steps in later.items())
    return f"{end.step} ({beyond})" if beyond else str(end.step)


def refusal(end: EndStep) -> str:
    """Why the end-of-run table leaves a metric out, in one line naming the runs that stopped short."""
    furthest = max(last for _, last in end.last)
    short: dict[int, list[str]] = {}
    for run, last in end.last:
        if last < furthest:
            short.setdefault(last, []).append(run.label)
    stops = "; ".join(f"{', '.join(labels)} (last at step {step})" for step, labels in sorted(short.items()))
    return f"its runs share no step after step 0; did not reach step {furthest}: {stops}"


def budgets_differ(result: Comparison) -> str:
    """Where runs end at different tokens or FLOPs: the words the end-of-run heading adds ('' where not)."""
    parts = []
    for axis in AXES.values():
        ends = [v for run in result.runs if (v := run.final(axis.counter)) is not None]
        if ends and max(ends) > min(ends) * (1 + 1e-9):
            parts.append(f"{axis.label} {fmt(min(ends))} to {fmt(max(ends))}")
    return "" if not parts else (" — budgets differ: runs end at " + ", ".join(parts)
                                 + " (matched budgets below)")


def z_cell(result: Comparison, view: str, metric: str) -> str:
    """The mean z (the metric's `/z`) per group, at the row's step or budget."""
    tag = result.statistics.get(metric, {}).get("z")
    if tag is None:
        return ""
    cells = result.cells[view][tag]
    return "; ".join(f"{g.label}: {fmt(cells[g.label].stats.mean, 3)}" for g in result.groups
                     if cells[g.label].stats.n)


def refusals(result: Comparison) -> dict[str, str]:
    """metric -> why the end-of-run table leaves it out, for the metrics it leaves out."""
    hidden = result.hidden
    return {metric: refusal(end) for metric, end in result.ends.items() if end.refused and metric not in hidden}


def starred(tag: str) -> str:
    """The tag with the number of each numbered part starred: `sparsity/gap/id_b/layer3` ->
    `sparsity/gap/id_b/layer*`, `sparsity/gap/level/2` -> `sparsity/gap/level/*`."""
    return "/".join(re.sub(r"(?<=[A-Za-z_])\d+$|^\d+$", "*", part) for part in tag.split("/"))


def merged(patterns: list[str], head: tuple[str, ...]) -> str:
    """One glob for patterns that share their first parts `head`: part by part where they have
    as many parts (a part they differ in starred), else `head/*`."""
    if len(patterns) == 1:
        return patterns[0]
    split = [p.split("/") for p in patterns]
    if len({len(parts) for parts in split}) > 1:
        return "/".join(head) + "/*"
    return "/".join(column[0] if len(set(column)) == 1 else "*" for column in zip(*split))


def series_patterns(tags: list[str]) -> list[str]:
    """Tags folded into families, in order: per first two parts of a tag (`sparsity/gap`,
    `eval/arith_acc`, `val/bpb`) one glob, with how many tags it stands for where more than one."""
    families: dict[tuple[str, ...], list[str]] = {}
    for tag in tags:
        families.setdefault(tuple(tag.split("/")[:2]), []).append(tag)
    out = []
    for head, members in families.items():
        pattern = merged(list(dict.fromkeys(starred(tag) for tag in members)), head)
        out.append(pattern if len(members) == 1 else f"{pattern} ({len(members)})")
    return out


def refusal_summary(result: Comparison) -> str | None:
    """The end-of-run table's refusals in one line (None: there are none): the one series's reason,
    or how many series, their families, and each group's last steps of them (runs: each run's last
    step of each series; the step range over the series and runs). report.md lists every series."""
    refused = list(refusals(result))
    if not refused:
        return None
    if len(refused) == 1:
        (metric,) = refused
        return f"{metric} left out of the table at the last step every run reached: {refusal(result.ends[metric])}"
    group_of = {id(run): group.label for group in result.groups for run in group.runs}
    steps: dict[str, set[int]] = {}
    runs: dict[str, set[int]] = {}
    for metric in refused:
        for run, last in result.ends[metric].last:
            steps.setdefault(group_of[id(run)], set()).add(last)
            runs.setdefault(group_of[id(run)], set()).add(id(run))
    by_group = "; ".join(f"{g.label} ({len(runs[g.label])} run{'s' if len(runs[g.label]) > 1 else ''}): "
                         f"{step_range(sorted(steps[g.label]))}" for g in result.groups if g.label in steps)
    return (f"{len(refused)} series left out of the table at the last step every run reached, their runs sharing "
            f"no step after step 0: {', '.join(series_patterns(refused))}; their last steps by group: {by_group}")


def view_table(result: Comparison, view: str) -> list[str]:
    """One table: a row per metric, a column per group and per difference from the first group. The
    end-of-run table's rows name their step; a row it refuses is a line below it instead."""
    groups, ref = result.groups, result.groups[0].label
    axis = AXES.get(view)
    lines = [f"## {axis.title if axis else END_TITLE + budgets_differ(result)}", ""]
    if axis:
        lines += [f"Budget: per metric, the largest {axis.label} that every run logging it reached; "
                  "each run's curve is interpolated there.", ""]
    else:
        lines += [END_TEXT, ""]
    refused = {} if axis else refusals(result)
    with_z = any(result.statistics.get(m, {}).get("z") for m in result.shown)
    head = (["metric", f"{axis.label} (budget)" if axis else "step"] + [g.label for g in groups]
            + [delta_header(result, g, ref) for g in groups[1:]] + (["z (its /z, mean per group)"] if with_z else []))
    lines += [md_row(head), md_row(["---"] * len(head))]
    for metric in result.shown:
        if metric in refused:
            continue
        per_group = result.cells[view][metric]
        row = [f"`{metric}`", fmt(result.budgets[view][metric]) if axis else step_cell(result, result.ends[metric])]
        row += [stats_cell(per_group[g.label].stats) for g in groups]
        row += [difference_cell(per_group[g.label], len(result.pairs.get(g.label, []))) for g in groups[1:]]
        lines.append(md_row(row + ([z_cell(result, view, metric)] if with_z else [])))
    if refused:
        lines += ["", f"Not compared at a common step ({len(refused)} series):", ""]
        lines += [f"- `{metric}`: {reason}" for metric, reason in refused.items()]
    return lines


def plots_section(plots: list[tuple[str, list[tuple[str, str]]]]) -> list[str]:
    if not plots:
        return []
    lines = ["## Plots", "", "Level plots: a group's mean over its runs; shaded: ±1 std over runs (for a metric "
             "with a logged `/se`: ±1.96 se); dotted vertical line: the matched budget; series per level or layer "
             "share one figure of small panels. Paired-difference plots (*difference*): group − reference per "
             "seed (thin), their mean (thick) and 95% t-interval (shaded), with zero (solid grey) and the margin "
             "(dashed) drawn.", ""]
    for title, files in plots:
        lines += [f"### {title}", "", " ".join(f"![{title} vs {xlabel}]({file})" for xlabel, file in files), ""]
    return lines


# ---- elicitation share (runs with per-problem thought evaluations and pass@k) ----------------------


def thought_eval_files(path: Path) -> dict[int, Path]:
    """step -> the run's `thought_eval/step<N>.json` (lamina.callbacks.ThoughtEval)."""
    found = {}
    for file in (path / "thought_eval").glob("step*.json"):
        digits = file.stem.removeprefix("step")
        if digits.isdigit():
            found[int(digits)] = file
    return dict(sorted(found.items()))


def read_thought_eval(file: Path) -> dict | None:
    try:
        return {int(level): record for level, record in json.loads(file.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return None


def init_from(path: Path) -> str | None:
    """model.init_from of the config.yaml LightningCLI saved in the run folder (None: none)."""
    import yaml

    from lamina.pretrained import model_init_args  # (on use: it imports torch)

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    model = config.get("model") if isinstance(config, dict) else None
    value = model_init_args(model).get("init_from") if isinstance(model, dict) else None
    return value if isinstance(value, str) and value else None


def has_pass_at_k(records: dict | None) -> bool:
    return bool(records) and any(r.get("pass_correct") for r in records.values())


@dataclass
class Elicitation:
    """A run's elicitation share per level, {level: (share, problems)}, with k and where its base came from."""

    run: Run
    shares: dict[int, tuple[float, int]]
    k: int
    base: Run


def elicitation(result: Comparison) -> dict[str, list[Elicitation]]:
    """Per group, the elicitation share of each run that has one: lamina.rlp.elicitation_share of its last
    thought evaluation against its base's pass@k, k = all the base's samples. The base is the model the run
    started from, at step 0: the run's own step-0 evaluation where it measured pass@k, else that of another
    run of the comparison with the same seed and the same model.init_from that did (the same start model and,
    problems being matched by question, the same problems)."""
    from lamina.rlp.evaluate import elicitation_share

    files = {id(run): thought_eval_files(run.path) for run in result.runs}
    starts = {id(run): read_thought_eval(files[id(run)][0]) if 0 in files[id(run)] else None for run in result.runs}
    origins = {id(run): init_from(run.path) for run in result.runs}

    def base_of(run: Run) -> Run | None:
        if has_pass_at_k(starts[id(run)]):
            return run
        if run.seed is None or origins[id(run)] is None:
            return None
        return next((other for other in result.runs if other is not run and other.seed == run.seed
                     and origins[id(other)] == origins[id(run)] and has_pass_at_k(starts[id(other)])), None)

    out: dict[str, list[Elicitation]] = {}
    for group in result.groups:
        for run in group.runs:
            steps = [step for step in files[id(run)] if step > 0]
            base = base_of(run)
            if not steps or base is None:
                continue
            last = read_thought_eval(files[id(run)][steps[-1]])
            start = starts[id(base)]
            k = max(int(r.get("pass_samples", 0)) for r in start.values() if r.get("pass_correct"))
            try:
                shares = elicitation_share(last or {}, start, k)
            except (KeyError, TypeError, ValueError):
                continue
            if shares:
                out.setdefault(group.label, []).append(Elicitation(run, shares, k, base))
    return out


def elicitation_section(result: Comparison) -> list[str]:
    found = elicitation(result)
    if not found:
        return []
    lines = ["## Elicitation share", "",
             "Of the problems a run solves greedily with a thought at its last evaluation, the share its base (the "
             "model it started from, at step 0: the run's own step-0 evaluation, or that of a run of the same seed "
             "and `model.init_from`) already solved in k samples: the mean of the base's unbiased pass@k over them "
             "(`lamina.rlp.elicitation_share`). Near 1: the run solves what sampling the base already reached; "
             "lower: solutions the base did not have. Mean ± std [95% t-interval] (n runs) over the group's runs, "
             "and the problems solved (mean per run).", "",
             md_row(["group", "level", "k", "elicitation share", "problems solved", "base from"]), md_row(["---"] * 6)]
    for group in result.groups:
        items = found.get(group.label, [])
        levels = sorted({level for e in items for level in e.shares})
        for level in levels:
            have = [e for e in items if level in e.shares]
            share = summarize([e.shares[level][0] for e in have])
            solved = float(np.mean([e.shares[level][1] for e in have]))
            ks = sorted({e.k for e in have})
            bases = "own step 0" if all(e.base is e.run for e in have) else ", ".join(
                dict.fromkeys("own step 0" if e.base is e.run else e.base.label for e in have))
            lines.append(md_row([group.label, str(level), "/".join(map(str, ks)), stats_cell(share), fmt(solved, 3),
                                 bases]))
    return lines


def write_markdown(result: Comparison, plots: list[tuple[str, list[tuple[str, str]]]], path: Path,
                   headline: list[str] | None = None) -> None:
    sections = [["# lamina compare"], headline, intro(result), runs_table(result),
                *(view_table(result, view) for view in VIEWS),
                elicitation_section(result), plots_section(plots)]
    lines = [line for section in sections if section for line in ["", *section]][1:]
    path.write_text("\n".join(lines).rstrip() + "\n")


# ---- report.csv --------------------------------------------------------------------------------

# delta*: Welch's difference from the first group; paired_*: the difference paired by seed
# (paired_n seed pairs having the value; the report gives it where paired_n >= 2, else Welch's).
CSV_STATS = ("n", "mean", "std", "ci95_low", "ci95_high", "delta", "delta_ci95_low", "delta_ci95_high",
             "paired_n", "paired_delta", "paired_delta_ci95_low", "paired_delta_ci95_high")


def csv_columns() -> list[str]:
    """end_step: the step the end-of-run values are from (blank: no common step, see report.md);
    at_<axis>_budget: the matched budget."""
    columns = ["group", "metric", "runs"]
    for view in VIEWS:
        prefix = "end" if view == "end" else f"at_{view}"
        columns.append(f"{prefix}_step" if view == "end" else f"{prefix}_budget")
        columns += [f"{prefix}_{name}" for name in CSV_STATS]
    return columns


def csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def csv_cells(cell: Cell) -> list:
    s, p = cell.stats, cell.paired
    row = [s.n, *map(csv_number, (s.mean, s.std, s.lo, s.hi)), *map(csv_number, cell.welch)]
    return row + (["", "", "", ""] if p is None else [p.n, *map(csv_number, (p.mean, p.lo, p.hi))])


def write_csv(result: Comparison, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_columns())
        for group in result.groups:
            for metric in result.metrics:
                row = [group.label, metric, len(group.runs)]
                for view in VIEWS:
                    if view == "end":
                        step = result.ends[metric].step
                        row.append("" if step is None else step)
                    else:
                        row.append(csv_number(result.budgets[view][metric]))
                    row += csv_cells(result.cells[view][metric][group.label])
                writer.writerow(row)


# ---- plots -------------------------------------------------------------------------------------

ARITH = re.compile(rf"{tags.ARITH_ACC}({tags.NO_THOUGHT})?/level(\d+)")
THINK_STYLES = ("with thinking", "no thinking")  # line styles of an arithmetic plot, in LINESTYLES order
LINESTYLES = ("-", "--", ":", "-.")
MUTED = "0.45"  # grey of the legend's style, band and budget entries
SIZE_PX, DPI = (960, 600), 100
BAND_LABEL, BUDGET_LABEL = "±1 std over seeds", "matched budget"
SE_LABEL, T_LABEL = "±1.96 se (logged /se)", "95% t-interval over seeds"


@dataclass
class Series:
    """One curve: `group` names it in the legend (one colour per group); `lo`/`hi` shade a band
    (`band` names it); `style` (one of the plot's styles) picks the line style."""

    group: str
    color: str
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    style: str | None = None
    band: str = BAND_LABEL
    width: float = 2.2


class Family(NamedTuple):
    """The tags one figure shows: per panel (a level, a layer, a probe; one panel: '') its (tag, line
    style) pairs, and the figure's title and y label."""

    title: str
    ylabel: str
    panels: dict[str, list[tuple[str, str | None]]]

    @property
    def members(self) -> list[tuple[str, str | None]]:
        return [member for members in self.panels.values() for member in members]


def group_color(index: int) -> str:
    """matplotlib's default colour cycle (Tableau 10), by group index."""
    return f"C{index % 10}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "metric"


PER_LAYER = re.compile(r"(.+)/layer(\d+)")
PER_LEVEL = re.compile(r"(.+)/level(\d+)")
GAP = re.compile(rf"{tags.GAPS}/(.+)")


def placement(tag: str) -> tuple[str, str, str, str, str | None]:
    """(file stem, title, y label, panel, line style) of a tag. Arithmetic accuracy with and without
    thinking share a figure, a panel per level; any `.../level<k>` family a figure with a panel per
    level; per-layer gaps of every probe one figure, a panel per probe and layer; any other
    `.../layer<i>` family a figure with a panel per layer; the probes' gaps one figure, a panel each."""
    if m := ARITH.fullmatch(tag):
        return "arith_acc", "arithmetic accuracy", "accuracy", f"level {m[2]}", THINK_STYLES[bool(m[1])]
    if m := PER_LAYER.fullmatch(tag):
        if g := GAP.fullmatch(m[1]):
            return "sparsity_gap_per_layer", "sparsity/gap per layer", "gap", f"{g[1]}, layer {m[2]}", None
        return f"{slug(m[1])}_per_layer", f"{m[1]} per layer", m[1], f"layer {m[2]}", None
    if m := PER_LEVEL.fullmatch(tag):
        return slug(m[1].removeprefix("eval/")), m[1], m[1], f"level {m[2]}", None
    if (m := GAP.fullmatch(tag)) and tag.rpartition("/")[2] not in STATISTICS:
        return "sparsity_gap", "sparsity/gap (mean over layers)", "gap", m[1], None
    return slug(tag.removeprefix("eval/")), tag, tag, "", None


def families(metrics: list[str], hidden: set[str] = frozenset()) -> dict[str, Family]:
    """Figures by file stem (`placement`); the statistics of other tags (`hidden`) are none of them."""
    out: dict[str, Family] = {}
    for tag in metrics:
        if tag in (TOKENS, FLOPS) or tag in hidden:
            continue
        stem, title, ylabel, panel, style = placement(tag)
        family = out.setdefault(stem, Family(title, ylabel, {}))
        family.panels.setdefault(panel, []).append((tag, style))
    return out


def group_series(group: Group, index: int, tags: list[tuple[str, str | None]], axis: str,
                 se: dict[str, str] | None = None) -> list[Series]:
    """A group's curves for one panel: per tag, its mean over the group's runs where they overlap,
    with ±1 std as a band (a single run: its own curve); where the tag has a logged standard error
    (`se`: tag -> its /se tag), the band is ±1.96 se (the root mean square over the runs)."""
    se = se or {}
    per_tag = [(tag, style, [(run, c) for run in group.runs if (c := run.curve(tag, axis)) is not None])
               for tag, style in tags]
    shown = {id(run) for _, _, pairs in per_tag for run, _ in pairs}
    name, color = f"{group.label} (n={len(shown)})", group_color(index)
    series = []
    for tag, style, pairs in per_tag:
        curves = [c for _, c in pairs]
        start = max((x[0] for x, _ in curves), default=0.0)
        stop = min((x[-1] for x, _ in curves), default=0.0)
        se_curves = [c for run, _ in pairs if tag in se and (c := run.curve(se[tag], axis)) is not None]
        if se_curves and len(se_curves) == len(curves) and start <= stop:
            grid = np.unique(np.concatenate([x for x, _ in curves]))
            grid = grid[(grid >= start) & (grid <= stop)]
            mean = np.stack([np.interp(grid, x, y) for x, y in curves]).mean(axis=0)
            rms = np.sqrt(np.mean(np.stack([np.interp(grid, x, y) ** 2 for x, y in se_curves]), axis=0))
            series.append(Series(name, color, grid, mean, mean - 1.96 * rms, mean + 1.96 * rms, style=style,
                                 band=SE_LABEL))
            continue
        if len(curves) < 2 or start > stop:  # one run, or runs sharing no stretch of the axis
            series += [Series(name, color, x, y, style=style) for x, y in curves]
            continue
        grid = np.unique(np.concatenate([x for x, _ in curves]))
        grid = grid[(grid >= start) & (grid <= stop)]
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        mean, std = ys.mean(axis=0), ys.std(axis=0, ddof=1)
        series.append(Series(name, color, grid, mean, mean - std, mean + std, style=style))
    return series


def token_count(x: float, _position=None) -> str:
    """A token count as people say it: 0, 250k, 1.5M, 2B."""
    for power, suffix in ((12, "T"), (9, "B"), (6, "M"), (3, "k")):
        if abs(x) >= 10**power:
            return f"{x / 10**power:.3g}{suffix}"
    return f"{x:.3g}"


def shorten(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def legend_handles(series: list[Series], styles: tuple[str, ...], vline: bool, extra: list | None = None) -> list:
    """One entry per group (its colour), per line style where they differ, each band, the budget line."""
    colors = dict.fromkeys(s.group for s in series)  # groups in order, each with its first series' colour
    colors.update({s.group: s.color for s in reversed(series)})
    handles = [Line2D([], [], color=color, linewidth=2.2, label=shorten(group)) for group, color in colors.items()]
    used = [st for st in styles if any(s.style == st for s in series)]
    if len(used) > 1 or (used and used[0] != styles[0]):
        handles += [Line2D([], [], color=MUTED, linestyle=LINESTYLES[styles.index(st) % len(LINESTYLES)],
                           linewidth=2.2, label=shorten(st)) for st in used]
    for band in dict.fromkeys(s.band for s in series if s.lo is not None):
        handles.append(Patch(color=MUTED, alpha=0.35, label=band))
    if vline:
        handles.append(Line2D([], [], color=MUTED, linestyle=":", linewidth=1.5, label=BUDGET_LABEL))
    return handles + (extra or [])


def draw(ax, series: list[Series], styles: tuple[str, ...], vline: float | None, tokens: bool) -> None:
    for s in series:
        if s.lo is not None and s.hi is not None:
            ax.fill_between(s.x, s.lo, s.hi, color=s.color, alpha=0.22, linewidth=0)
    for s in series:
        linestyle = LINESTYLES[styles.index(s.style) % len(LINESTYLES)] if s.style in styles else "-"
        marker = "o" if len(s.x) <= 60 and s.width >= 2 else None
        ax.plot(s.x, s.y, color=s.color, linestyle=linestyle, linewidth=s.width, marker=marker,
                markersize=5, markerfacecolor=s.color if linestyle == "-" else "white",
                alpha=1.0 if s.width >= 2 else 0.5)
    if vline is not None:
        ax.axvline(vline, color=MUTED, linestyle=":", linewidth=1.5)
    ax.grid(color="0.9")
    ax.set_axisbelow(True)
    if tokens:
        ax.xaxis.set_major_formatter(FuncFormatter(token_count))


def panels_figure(panels: dict[str, list[Series]], *, title: str, xlabel: str, ylabel: str, tokens: bool = False,
                  styles: tuple[str, ...] = (), vline: float | None = None, extra: list | None = None,
                  decorate=None) -> Figure:
    """A figure of small multiples, a panel per key of `panels` (one panel: a plain plot titled
    `title`), one legend right of them. `decorate(ax)` draws more on each panel."""
    count = len(panels)
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    width, height = SIZE_PX[0] / DPI, SIZE_PX[1] / DPI
    if count > 1:
        width, height = max(width, 3.2 * cols + 2.5), max(height, 2.6 * rows + 1.0)
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True)
    every = []
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        draw(ax, series, styles, vline, tokens)
        if decorate is not None:
            decorate(ax)
        every += series
        if count == 1:
            ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        else:
            ax.set_title(panel, fontsize=9)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    if count > 1:
        figure.suptitle(title)
        figure.supxlabel(xlabel)
        figure.supylabel(ylabel)
    figure.legend(handles=legend_handles(every, styles, vline is not None, extra), loc="outside right upper",
                  frameon=False)
    return figure


def line_figure(series: list[Series], *, title: str, xlabel: str, ylabel: str, tokens: bool = False,
                styles: tuple[str, ...] = (), vline: float | None = None) -> Figure:
    """A figure of `series` (each a line; with `lo`/`hi` a shaded band), its legend right of the axes."""
    return panels_figure({"": series}, title=title, xlabel=xlabel, ylabel=ylabel, tokens=tokens, styles=styles,
                         vline=vline)


def family_figure(result: Comparison, family: Family, axis: str) -> Figure | None:
    """The figure of one family on one axis: a panel per level/layer/probe, a line per group; None
    where no run has a curve there. The budget line is drawn where several groups share one budget."""
    se = {tag: kinds["se"] for tag, kinds in result.statistics.items() if "se" in kinds}
    panels = {}
    for panel, members in family.panels.items():
        series = [s for i, group in enumerate(result.groups) for s in group_series(group, i, members, axis, se)]
        if series:
            panels[panel] = series
    if not panels:
        return None
    every = [s for series in panels.values() for s in series]
    budgets = {result.budgets[axis][tag] for tag, _ in family.members} - {None}
    shared = budgets.pop() if len(budgets) == 1 and len({s.group for s in every}) > 1 else None
    return panels_figure(panels, title=f"{family.title} vs {AXES[axis].label}", xlabel=AXES[axis].label,
                         ylabel=family.ylabel, tokens=axis == "tokens",
                         styles=THINK_STYLES if any(style for _, style in family.members) else (), vline=shared)


def paired_curves(result: Comparison, group: Group, metric: str, axis: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed pair with the reference, (x, treatment − reference) where both curves overlap."""
    out = []
    for mine, theirs in result.pairs.get(group.label, []):
        a, b = mine.curve(metric, axis), theirs.curve(metric, axis)
        if a is None or b is None:
            continue
        start, stop = max(a[0][0], b[0][0]), min(a[0][-1], b[0][-1])
        grid = np.unique(np.concatenate([a[0], b[0]]))
        grid = grid[(grid >= start) & (grid <= stop)]
        if len(grid):
            out.append((grid, np.interp(grid, *b) - np.interp(grid, *a)))
    return out


def paired_figure(result: Comparison, metric: str, axis: str, margin: float | None) -> Figure | None:
    """treatment − reference per seed (thin), mean and 95% t-interval over seeds (thick, shaded),
    against the axis, a line per group; zero and ±margin drawn. None where no group has 2 pairs."""
    from lamina.compare.stats import t_quantile

    series = []
    for index, group in enumerate(result.groups[1:], 1):
        curves = paired_curves(result, group, metric, axis)
        if len(curves) < 2:
            continue
        name, color = f"{group.label} − {result.groups[0].label} (n={len(curves)})", group_color(index)
        series += [Series(name, color, x, y, width=0.8) for x, y in curves]
        start, stop = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
        grid = np.unique(np.concatenate([x for x, _ in curves]))
        grid = grid[(grid >= start) & (grid <= stop)]
        if not len(grid):
            continue
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
        mean, half = ys.mean(axis=0), t_quantile(len(curves) - 1) * ys.std(axis=0, ddof=1) / math.sqrt(len(curves))
        series.append(Series(name, color, grid, mean, mean - half, mean + half, band=T_LABEL))
    if not series:
        return None

    def decorate(ax):
        ax.axhline(0.0, color=MUTED, linewidth=1.2)
        if margin is not None:
            for m in (margin, -margin):
                ax.axhline(m, color=MUTED, linestyle="--", linewidth=1.2)

    extra = [Line2D([], [], color=MUTED, linewidth=1.2, label="zero")]
    if margin is not None:
        extra.append(Line2D([], [], color=MUTED, linestyle="--", linewidth=1.2, label=f"margin ±{fmt(margin, 3)}"))
    budget = result.budgets[axis].get(metric)
    return panels_figure({"": series}, title=f"{metric}: difference from {result.groups[0].label} vs "
                         f"{AXES[axis].label}", xlabel=AXES[axis].label, ylabel=f"Δ {metric}",
                         tokens=axis == "tokens", vline=budget, extra=extra, decorate=decorate)


def write_plots(result: Comparison, out: Path, primary: str | None = None,
                margin: float | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """`<family>_vs_<axis>.png` in `out`, and `<primary>_difference_vs_<axis>.png` (the paired
    differences of the primary metric); returns [(title, [(axis label, file)])] for the markdown."""
    written = []
    if primary is not None and primary in result.metrics and len(result.groups) > 1:
        files = []
        for axis in AXES:
            figure = paired_figure(result, primary, axis, margin)
            if figure is not None:
                name = f"{slug(primary)}_difference_vs_{axis}.png"
                figure.savefig(out / name, dpi=DPI)
                files.append((AXES[axis].label, name))
        if files:
            written.append((f"{primary}: difference from {result.groups[0].label}, paired by seed", files))
    for stem, family in families(result.metrics, result.hidden).items():
        files = []
        for axis in AXES:
            figure = family_figure(result, family, axis)
            if figure is not None:
                figure.savefig(out / f"{stem}_vs_{axis}.png", dpi=DPI)
                files.append((AXES[axis].label, f"{stem}_vs_{axis}.png"))
        if files:
            written.append((family.title, files))
    return written
