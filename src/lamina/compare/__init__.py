"""`lamina compare RUN [RUN ...] --out DIR`: runs side by side, aligned on tokens seen and on FLOPs.

A RUN is a run version folder (`runs/<name>/version_<n>`), a folder above run folders
(`runs/<name>`: all its versions; `runs`: every run), or a glob of them. The runs' TensorBoard
scalars are read back, every tag is placed on two x axes, cumulative training tokens
(`perf/tokens_seen`) and cumulative training FLOPs (`perf/flops`), by interpolating those
counters (logged at the logging steps) at the tag's steps, and runs are grouped into arms: by
default one group per run name (the versions of `runs/<name>` are seeds of one arm), or as
`--group LABEL=RUN[,RUN...]` says.

Written to `DIR`:
- `report.md`, opening with the headline: for each group against the reference group (the first),
  the primary metric (`--primary`, default val/bpb) at matched tokens and at matched FLOPs (per
  contrast, the largest budget its runs and the reference's all reached), its
  difference paired by seed with the 95% t-interval and n seeds, and the verdict of lamina's one
  rule (`lamina.verdict.decide`, the rule `lamina study` uses) from the margin `--margin` (fixed in
  advance; without it: the interval, no verdict) and the predicted sign `--predict` (default lower
  for a bpb/loss-like metric); a sentence per contrast; the TensorBoard command that shows the
  groups side by side. Then per group and key metric, the value at the last step every run reached and at a
  matched budget (the largest tokens seen, and the largest FLOPs, that every run logging the metric
  reached), as mean ± std [95% t-interval] over the group's runs, and the difference of each
  group from the first one: paired by seed where the runs of the two groups match by seed (see
  below), else the difference of means with Welch's 95% interval;
- `report.csv`: the same numbers, one row per group x metric, blank where no run has the value,
  with both the Welch and the paired difference;
- `<metric>_vs_tokens.png` and `<metric>_vs_flops.png`: one figure per metric family (levels,
  layers and probes as small panels of one figure), a line per group (its mean over runs) with a
  shaded band of ±1 std where the group has several runs (±1.96 se where the metric logs a `/se`);
  with the default patterns a tag's `/se` and `/z` are its band and a table column, not metrics;
- `<primary>_difference_vs_tokens.png` and `..._vs_flops.png`: group − reference per seed, their
  mean and 95% t-interval, zero and the margin drawn.

Paired by seed: a run's seed is the pair (`seed_everything`, `data.seed`) of the config.yaml that
LightningCLI saved in its folder. Runs of the two groups with the same seed (one run per seed in
each group) make a pair; where at least 2 pairs have the value, the difference is the mean over
pairs of (run of the group - run of the first group with the same seed), with the 95% t-interval
over the n pairs (n - 1 degrees of freedom). Seed-to-seed spread shared by the arms (the same
validation text, the same initialisation) cancels in each pair, where Welch's interval counts it
as noise. Fewer than 2 pairs (runs without seeds in their config, seeds that differ between the
groups): Welch's interval, as the report says per column and cell.

At the last step every run reached: per metric, the last step at which every run logging it has a
value, named in the row (with the groups whose runs went further, and to what step). Side by side,
one run's last value from step 0 and another's from step 31 would read as a difference between the
runs; so a metric whose runs share no step after step 0 (the untrained model) is refused: the
report says so in a line naming the runs that stopped short, and so does the command, on stderr,
in one line however many series it refuses (how many, their families, each group's last steps).
Runs of different lengths on purpose compare at matched tokens and FLOPs.

Nothing is invented: a run that lacks a metric, or whose curve does not reach a budget, is left
out of that cell, and a cell no run fills is blank.

Modules: `runs` (finding and reading runs, grouping them), `stats` (intervals and differences,
the cells of every table), `report` (markdown, CSV, PNG).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lamina.compare.headline import DEFAULT_PRIMARY, default_prediction, headline_section
from lamina.verdict import PREDICTIONS, Question
from lamina.compare.report import (
    delta_cell, refusal_summary, refusals, write_csv, write_markdown, write_plots,
)
from lamina.compare.runs import (
    AXES, FLOPS, KEY_METRICS, TOKENS, Group, Run, assemble, load_run, read_seed, resolve, select_metrics,
    statistics_of,
)
from lamina.compare.stats import (
    Cell, Comparison, Difference, EndStep, Stats, compare_groups, end_step, summarize, welch,
)
from lamina.errors import ConfigError

__all__ = [
    "AXES", "FLOPS", "KEY_METRICS", "TOKENS", "Cell", "Comparison", "Difference", "EndStep", "Group", "Run",
    "Stats", "assemble", "compare_groups", "delta_cell", "end_step", "load_run", "main", "parser", "read_seed",
    "refusal_summary", "refusals", "resolve", "select_metrics", "summarize", "welch", "write_csv", "write_markdown",
    "write_plots",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line through lamina's ConfigError, not usage + exit
        raise ConfigError(f"compare: {message}")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lamina compare",
        description="Compare runs (groups of seeds) on tokens seen and training FLOPs: report.md, report.csv, PNGs. "
        "report.md opens with the headline, the answer to one question: for each group against the reference group "
        "(the first RUN or --group named: name the arm the question is about, or its baseline, first), the primary "
        "metric (--primary, default val/bpb) at matched tokens and at matched FLOPs (per contrast, the largest "
        "budget its runs and the reference's all reached): the difference paired by seed, its 95% interval, n "
        "seeds, and the verdict (supported / negligible / against / inconclusive / not tested) of the rule lamina "
        "study uses, from the margin --margin (the smallest difference of interest, fixed in advance, never from "
        "the data; without it: no verdict) and the predicted direction --predict. "
        "Then three tables: at the last step every run reached (per metric, the last step at which every run logging "
        "it has a value, named in the row; a metric whose runs share no step after step 0 is refused, with a "
        "line naming the runs that stopped short), at matched tokens seen and at matched FLOPs (runs of "
        "different lengths on purpose: the largest budget every run reached).",
        epilog="Examples: lamina compare runs/base runs/rlp --out cmp;  "
        "lamina compare --group base='runs/base/version_*' --group rlp=runs/rlp/version_0,runs/rlp/version_1 "
        "--out cmp;  "
        "lamina compare runs/rlp runs/ntp --primary val/bpb --predict higher --margin 0.005 --out cmp "
        "(RLP as the reference: the next-token control predicted above it, by more than 0.005 bpb)",
    )
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="a run folder runs/<name>/version_<n>, a folder above runs "
                   "(runs/<name>: all its versions), or a glob; the first group is the reference")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, report.csv and the plots")
    p.add_argument("--group", action="append", default=[], metavar="LABEL=RUN[,RUN...]",
                   help="put these runs in one group (repeatable); other runs are grouped by run name")
    p.add_argument("--metrics", action="append", metavar="PATTERN[,PATTERN...]",
                   help="scalar tags to report, glob patterns (comma-separated, repeatable); default: "
                   + ", ".join(KEY_METRICS))
    p.add_argument("--primary", metavar="METRIC",
                   help="the headline's metric, a scalar tag: the one measure the question is about, chosen before "
                   f"the runs (default: the reference runs' compare.primary, else {DEFAULT_PRIMARY}; e.g. "
                   "eval/arith_acc/level1); every other metric is in the tables. A run's config can fix the "
                   "question before it trains: compare.primary, compare.margin, compare.predict, read from the "
                   "reference group's runs; these flags win")
    p.add_argument("--margin", type=float, metavar="M",
                   help="the smallest difference of the primary metric that matters, in its units (> 0), fixed "
                   "before the runs, never derived from them; required for a verdict (without it the headline "
                   "gives the interval and no verdict). Choose it as a fraction of what training itself moves the "
                   "metric by over the runs' steps, or as the smallest difference you would act on; never from the "
                   "runs' seed-to-seed spread")
    p.add_argument("--predict", choices=("lower", "higher"),
                   help="the predicted direction of each group against the reference, one for every contrast "
                   "(default: lower for a bpb/loss-like metric, higher otherwise); with the treatment as the "
                   "reference, each control is predicted worse than it")
    return p


def reference_question(group) -> dict:
    """The `compare` section its runs' configs agree on (lamina.verdict.Question: primary, margin,
    predict); {} where none sets one. Runs that disagree are one line naming them."""
    asked = {run.label: run.question for run in group.runs if run.question}
    if not asked:
        return {}
    distinct = {tuple(sorted(q.items())) for q in asked.values()}
    if len(distinct) > 1 or len(asked) < len(group.runs):
        detail = "; ".join(f"{label}: {q or 'none'}" for label, q in
                           ((run.label, run.question) for run in group.runs))
        raise ConfigError(f"compare: the reference group's runs ask different questions in their configs' compare "
                          f"section ({detail}); make them agree, or give --primary, --margin and --predict")
    Question(**next(iter(asked.values())))  # checked as `lamina fit` checks it: one line for a bad key
    return next(iter(asked.values()))


def note_missing_axes(runs: list[Run]) -> None:
    for run in runs:
        missing = [axis.counter for key, axis in AXES.items() if run.axes[key] is None]
        if missing:
            print(f"lamina compare: note: {run.path} logs no {' or '.join(missing)}: "
                  "left off that axis (its end-of-run values are still reported)", file=sys.stderr)


def note_refusals(result: Comparison, report: Path) -> None:
    """One line on stderr however many series the end-of-run table refuses (a per-layer family is
    dozens); report.md lists each with the runs that stopped short."""
    summary = refusal_summary(result)
    if summary is not None:
        print(f"lamina compare: note: {summary} (each in {report})", file=sys.stderr)


def make_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create the folder ({err.strerror})") from err


def main(argv: list[str]) -> Comparison:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a folder")
    groups = assemble(args.runs, args.group)
    runs = [run for group in groups for run in group.runs]
    note_missing_axes(runs)
    patterns = [p.strip() for item in args.metrics for p in item.split(",") if p.strip()] if args.metrics else None
    if args.margin is not None and not (args.margin > 0 and args.margin != float("inf")):
        raise ConfigError(f"--margin {args.margin}: expected a finite number > 0 (the smallest difference of interest)")
    asked = reference_question(groups[0])
    primary = args.primary or asked.get("primary", DEFAULT_PRIMARY)
    margin = args.margin if args.margin is not None else asked.get("margin")
    predict = args.predict or asked.get("predict")
    metrics = select_metrics(runs, patterns)
    if primary not in metrics and any(primary in run.scalars for run in runs):
        metrics.append(primary)
    elif primary not in metrics and primary != DEFAULT_PRIMARY:
        key = "--primary" if args.primary else "compare.primary (in the reference runs' config.yaml)"
        raise ConfigError(f"{key} {primary}: no run logs this scalar tag")
    statistics = {} if patterns else statistics_of(metrics)  # with the defaults: se/z are bands and columns
    result = compare_groups(groups, metrics, statistics)
    if predict is None:
        sign, note = default_prediction(primary)
    else:
        given = "as given" if args.predict else "as the reference's config says"
        sign, note = PREDICTIONS[predict], f"{predict}, {given}"
    make_out_dir(out)
    plots = write_plots(result, out, primary, margin)
    headline = headline_section(result, primary, sign, note, margin)
    write_markdown(result, plots, out / "report.md", headline)
    write_csv(result, out / "report.csv")
    note_refusals(result, out / "report.md")
    print(f"lamina compare: {len(runs)} runs in {len(groups)} groups -> {out / 'report.md'}, "
          f"{out / 'report.csv'}, {sum(len(files) for _, files in plots)} plots")
    return result
