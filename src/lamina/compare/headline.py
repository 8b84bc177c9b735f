"""The headline of a comparison: for each group against the reference group (the first), the
primary metric at matched tokens and at matched FLOPs, its paired difference with its 95%
interval, the seeds, and the verdict of lamina's one rule (`lamina.verdict.decide`, the rule
`lamina study` uses), from a margin fixed in advance (`--margin`) and a predicted sign
(`--predict`). Without a margin: the interval, and no verdict. Then one sentence per contrast.

Each contrast is read at its own matched budget: the largest tokens seen (FLOPs) that its runs and
the reference's all reached. The tables' budget is the one every run of the comparison reached, so
a control that costs less per token (a token-matched next-token run beside RLP) would drag every
contrast down to its FLOPs, and a FLOP-matched control would be read far short of the budget it
was matched at."""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from lamina import tags
from lamina.compare.runs import AXES, Group, event_dirs, value_at
from lamina.compare.stats import Cell, Comparison, budget, table_row
from lamina.verdict import Verdict, decide

DEFAULT_PRIMARY = tags.VAL_BPB
LOWER_IS_BETTER = re.compile(r"(bpb|loss|perplexity|ppl|error|nll)", re.IGNORECASE)
NO_MARGIN = "no margin given: no verdict"


def default_prediction(metric: str) -> tuple[int, str]:
    """(sign, why): lower for a bpb/loss-like metric, higher otherwise."""
    if LOWER_IS_BETTER.search(metric):
        return -1, "lower (the default for a bpb/loss-like metric)"
    return 1, "higher (the default for a metric that is not bpb/loss-like)"


def seed_key(seed) -> str:
    return f"{seed[0]}/{seed[1]}" if isinstance(seed, tuple) else str(seed)


@dataclass
class Contrast:
    """One group against the reference on one axis: the difference, its interval, n, the verdict."""

    group: str
    axis: str
    budget: float | None
    diff: float | None
    lo: float | None
    hi: float | None
    n: int
    paired: bool
    verdict: Verdict | None  # None: no margin given


def contrast(cell: Cell, group: str, axis: str, budget: float | None, sign: int, margin: float | None) -> Contrast:
    """The rule on one cell: paired by seed where it has 2 pairs or more (every planned pair named:
    one without the value is a missing seed), else Welch's interval over min(n) runs."""
    if cell.paired is not None and cell.paired.n >= 2:
        p = cell.paired
        verdict = None
        if margin is not None:
            per_seed = {seed_key(s): (math.nan if d is None else d) for s, d in cell.per_seed.items()}
            verdict = decide(per_seed, sign=sign, margin=margin, planned=list(per_seed))
        return Contrast(group, axis, budget, p.mean, p.lo, p.hi, p.n, True, verdict)
    diff, lo, hi = cell.welch
    n = min(cell.stats.n, cell.paired.n if cell.paired is not None and cell.paired.n else cell.stats.n)
    verdict = None
    if margin is not None and diff is not None:
        interval = (math.nan if lo is None else lo, math.nan if hi is None else hi)
        verdict = decide(interval=interval, n=n, sign=sign, margin=margin)
    return Contrast(group, axis, budget, diff, lo, hi, n, False, verdict)


def matched_cell(result: Comparison, group: Group, metric: str, axis: str) -> tuple[float | None, Cell]:
    """(budget, cell) of `group` against the reference on one axis, at the largest budget that the
    runs of the two groups logging `metric` all reached (not the one every group reached)."""
    ref = result.groups[0]
    runs = ref.runs + [run for run in group.runs if run not in ref.runs]
    curves = {id(run): run.curve(metric, axis) for run in runs}
    at = budget([c for c in curves.values() if c is not None])
    values = {id(run): value_at(curves[id(run)], at) for run in runs}
    return at, table_row([ref, group], {group.label: result.pairs.get(group.label, [])}, values)[group.label]


def contrasts(result: Comparison, primary: str, sign: int, margin: float | None) -> list[Contrast]:
    if primary not in result.metrics:
        return []
    out = []
    for group in result.groups[1:]:
        for axis in AXES:
            at, cell = matched_cell(result, group, primary, axis)
            out.append(contrast(cell, group.label, axis, at, sign, margin))
    return out


def tensorboard_command(result: Comparison) -> str:
    """`tensorboard --logdir_spec name:path,...`: each group under its own name (a folder holding
    exactly its runs), else each of its runs as `<group>.<i>`."""
    specs = []
    for group in result.groups:
        name = re.sub(r"[:,\s]+", "_", group.label)
        paths = [str(run.path) for run in group.runs]
        try:
            common = Path(os.path.commonpath(paths))
        except ValueError:
            common = None
        if common is not None and {d.resolve() for d in event_dirs(common)} == {run.path.resolve() for run in group.runs}:
            specs.append(f"{name}:{common}")
        else:
            specs += [f"{name}.{i}:{path}" for i, path in enumerate(paths)]
    return "tensorboard --logdir_spec " + shlex.quote(",".join(specs))


def _fmt(value: float | None, sign: bool = False) -> str:
    from lamina.compare.report import fmt

    return fmt(value, 3, sign=sign)


def difference_text(c: Contrast) -> str:
    if c.diff is None:
        return ""
    interval = f" [{_fmt(c.lo, True)}, {_fmt(c.hi, True)}]" if c.lo is not None else ""
    return f"{_fmt(c.diff, True)}{interval}"


def n_text(c: Contrast) -> str:
    return f"{c.n} ({'paired by seed' if c.paired else 'Welch'})" if c.diff is not None else ""


def verdict_text(c: Contrast) -> str:
    if c.diff is None:
        return ""
    return NO_MARGIN if c.verdict is None else c.verdict.label


def sentence(result: Comparison, primary: str, ref: str, group: str, items: list[Contrast]) -> str:
    parts = []
    for c in items:
        where = f"at matched {AXES[c.axis].label} ({_fmt(c.budget)} each)"
        if c.diff is None:
            parts.append(f"{where}, no value to compare")
            continue
        word = "lower" if c.diff < 0 else "higher"
        how = "paired by seed" if c.paired else "Welch, unpaired"
        text = f"{where}, {group}'s {primary} is {word} than {ref}'s by {_fmt(abs(c.diff))}"
        if c.lo is not None:
            text += f" (95% interval of the difference {_fmt(c.lo, True)} to {_fmt(c.hi, True)}, {c.n} seeds, {how})"
        if c.verdict is None:
            text += f"; {NO_MARGIN}"
        elif c.verdict.reason.startswith(c.verdict.verdict):
            text += f": {c.verdict.reason}"
        else:
            text += f": {c.verdict.label}, {c.verdict.reason}"
        parts.append(text)
    return f"- **{group} vs {ref}**: " + "; ".join(parts) + "."


def headline_section(result: Comparison, primary: str, sign: int, sign_note: str, margin: float | None) -> list[str]:
    groups = result.groups
    ref = groups[0].label
    lines = [f"## Headline: {primary}, each group − {ref}", ""]
    if len(groups) < 2:
        return lines + [f"One group ({ref}): nothing to compare against.", "",
                        f"Live: `{tensorboard_command(result)}`"]
    found = contrasts(result, primary, sign, margin)
    if not found:
        return lines + [f"No run logs `{primary}` (choose the primary metric with `--primary`).", "",
                        f"Live: `{tensorboard_command(result)}`"]
    predicted = ("below" if sign < 0 else "above") + f" {ref}"
    rule = (f"margin ±{_fmt(margin)} (`--margin` or the reference's `compare.margin`, fixed in advance)"
            if margin is not None
            else f"{NO_MARGIN} (set `--margin M`, the smallest difference of interest, fixed before the runs)")
    lines += [f"Difference (group − {ref}) of `{primary}` at a matched budget: per contrast, the largest tokens "
              f"seen and the largest training FLOPs that its runs and {ref}'s all reached (the *at* columns; the "
              "tables below use the budget every run reached), mean and 95% t-interval over seeds; predicted: "
              f"{predicted}, i.e. {sign_note} (`--predict` or `compare.predict`); {rule}. Verdict by the rule `lamina study` uses "
              "(`lamina.verdict.decide`): supported / negligible / against / inconclusive / not tested.", ""]
    head = ["contrast", "at tokens", "difference [95%]", "n seeds", "verdict", "at FLOPs", "difference [95%]",
            "n seeds", "verdict"]
    from lamina.compare.report import md_row

    lines += [md_row(head), md_row(["---"] * len(head))]
    by_group: dict[str, list[Contrast]] = {}
    for c in found:
        by_group.setdefault(c.group, []).append(c)
    for group, items in by_group.items():
        row = [f"{group} − {ref}"]
        for c in items:
            row += [_fmt(c.budget), difference_text(c), n_text(c), verdict_text(c)]
        lines.append(md_row(row))
    lines += [""] + [sentence(result, primary, ref, group, items) for group, items in by_group.items()]
    lines += ["", f"Live, side by side (each group under its own name): `{tensorboard_command(result)}`"]
    return lines
