"""What a claim's study found, written out: DIR/<claim>/report.md, result.json (every number) and
PNG figures (matplotlib, object-oriented), and DIR/index.md, which gathers the verdicts of every
claim whose result.json is in DIR.

A claim hands over a `ClaimResult`: its sentence, its setup, its gates, the per-seed values of
every metric of every arm, its contrasts (per-seed differences, paired by seed, each with the
claim's `Prediction`) and its figures. Means and 95% t-intervals over seeds are those of
`lamina.compare.stats.summarize` (Student's t, n - 1 degrees of freedom); a contrast's interval
is that of the mean of its per-seed differences, so what a seed shares across arms cancels.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from lamina.compare.report import fmt
from lamina.compare.stats import Stats, summarize
from lamina.errors import ConfigError, write_failure
from lamina.study.verdict import RULE, Prediction, Verdict, decide

PerSeed = dict[int, float]  # seed -> value


@dataclass
class Gate:
    """A check that must pass before a contrast can show its effect (the model can do the task, the
    treatment has something to add, the evaluation can see a difference), with the numbers in words."""

    name: str
    question: str
    passed: bool
    detail: str


@dataclass
class Contrast:
    """A per-seed difference (a - b, matched by seed) and what the claim predicts of it (None: a
    descriptive row, no verdict). `needs`: the gates it cannot be read without."""

    name: str
    description: str
    per_seed: PerSeed
    prediction: Prediction | None = None
    needs: tuple[str, ...] = ()

    @classmethod
    def paired(cls, name: str, description: str, a: PerSeed, b: PerSeed | None = None, **kwargs) -> Contrast:
        """a - b over the seeds both have (b None: a against 0)."""
        seeds = sorted(a.keys() & b.keys()) if b is not None else sorted(a)
        diffs = {s: a[s] - (b[s] if b is not None else 0.0) for s in seeds
                 if _finite(a[s]) and (b is None or _finite(b[s]))}
        return cls(name, description, diffs, **kwargs)

    @property
    def stats(self) -> Stats:
        return summarize([self.per_seed[s] for s in sorted(self.per_seed)])

    def verdict(self, gates: dict[str, Gate]) -> Verdict | None:
        if self.prediction is None:
            return None
        failed = [g for g in self.needs if g in gates and not gates[g].passed]
        missing = [g for g in self.needs if g not in gates]
        blocked = None
        if failed or missing:
            blocked = "gate " + ", ".join(failed + missing) + (" failed" if failed else " not run")
        st = self.stats
        return decide(st.lo, st.hi, self.prediction, blocked)


@dataclass
class Figure:
    """Per series, the mean over seeds at each x with its 95% interval: a line with a band (`line`)
    or grouped bars with error bars (`bar`). `series[label][x_index]` is a PerSeed; `reference`
    series are drawn dashed (a null, a floor, a chance level)."""

    name: str  # file stem: <name>.png
    title: str
    xlabel: str
    ylabel: str
    x: list[str]
    series: dict[str, list[PerSeed]]
    reference: dict[str, list[PerSeed]] = field(default_factory=dict)
    kind: str = "line"  # line: a line per series over x; bar: grouped bars with 95% error bars


@dataclass
class ClaimResult:
    claim: str
    sentence: str
    setup: dict[str, str]  # label -> text (configs, steps, seeds, items, preset, wall time)
    seeds: list[int]
    gates: list[Gate] = field(default_factory=list)
    arms: dict[str, dict[str, PerSeed]] = field(default_factory=dict)  # arm -> metric -> seed -> value
    contrasts: list[Contrast] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the study stopped before its comparison (a failed gate)

    @property
    def gate_map(self) -> dict[str, Gate]:
        return {g.name: g for g in self.gates}

    def metrics(self) -> list[str]:
        """Every metric some arm has, in first-seen order."""
        return list(dict.fromkeys(m for by_metric in self.arms.values() for m in by_metric))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---- numbers as text -----------------------------------------------------------------------------


def interval_text(st: Stats, sign: bool = False) -> str:
    if st.n == 0:
        return ""
    mean = fmt(st.mean, 3, sign=sign)
    if st.n == 1:
        return f"{mean} (n=1)"
    return f"{mean} [{fmt(st.lo, 3, sign=sign)}, {fmt(st.hi, 3, sign=sign)}]"


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def verdict_line(contrast: Contrast, gates: dict[str, Gate]) -> str:
    v = contrast.verdict(gates)
    st = contrast.stats
    return (f"**{contrast.name}**: {v.verdict} — {interval_text(st, sign=True)} over {st.n} seed(s); "
            f"{contrast.prediction.words}{'; ' + contrast.prediction.margin_note if contrast.prediction.margin_note else ''}"
            f"; {v.reason}.")


def markdown(result: ClaimResult, figure_files: list[str]) -> str:
    gates = result.gate_map
    lines = [f"# {result.claim}", "", f"**Claim.** {result.sentence}", ""]
    judged = [c for c in result.contrasts if c.prediction is not None]
    lines += ["## Verdicts", "", f"Rule: {RULE}", ""]
    if result.stopped:
        lines += [f"**Stopped before the comparison:** {result.stopped}", ""]
    lines += [f"- {verdict_line(c, gates)}" for c in judged] or ["- (no contrast was reached)"]
    lines += ["", "## Setup", ""]
    lines += [f"- {label}: {text}" for label, text in result.setup.items()]
    lines += ["", "## Gates", "", md_row(["gate", "question", "passed", "numbers"]), md_row(["---"] * 4)]
    lines += [md_row([g.name, g.question, "yes" if g.passed else "**no**", g.detail]) for g in result.gates]
    if result.arms:
        arms = list(result.arms)
        lines += ["", "## Arms", "", "Mean over seeds [95% t-interval] (n=1: one seed, no interval).", "",
                  md_row(["metric", *arms]), md_row(["---"] * (len(arms) + 1))]
        for metric in result.metrics():
            cells = []
            for arm in arms:
                values = result.arms[arm].get(metric)
                cells.append(interval_text(summarize([values[s] for s in sorted(values) if _finite(values[s])]))
                             if values else "")
            lines.append(md_row([metric, *cells]))
    if result.contrasts:
        lines += ["", "## Contrasts", "", "Each row: the mean of the per-seed differences (paired by seed) with its "
                  "95% t-interval over seeds, and each seed's difference.", "",
                  md_row(["contrast", "what", "mean [95% interval]", "seeds", "per seed", "prediction", "verdict"]),
                  md_row(["---"] * 7)]
        for c in result.contrasts:
            v = c.verdict(gates)
            per_seed = ", ".join(f"{s}: {fmt(c.per_seed[s], 3, sign=True)}" for s in sorted(c.per_seed))
            lines.append(md_row([c.name, c.description, interval_text(c.stats, sign=True), str(c.stats.n), per_seed,
                                 c.prediction.words if c.prediction else "descriptive",
                                 v.verdict if v else ""]))
    if figure_files:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({name})" for name in figure_files]
    if result.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


# ---- figures ---------------------------------------------------------------------------------------


def mean_band(points: list[PerSeed]) -> tuple[list[float], list[float], list[float]]:
    means, los, his = [], [], []
    for per_seed in points:
        st = summarize([per_seed[s] for s in sorted(per_seed) if _finite(per_seed[s])])
        means.append(st.mean if st.n else math.nan)
        los.append(st.lo if st.lo is not None else math.nan)
        his.append(st.hi if st.hi is not None else math.nan)
    return means, los, his


def draw(figure: Figure, path: Path) -> None:
    fig = MplFigure(figsize=(6.4, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(figure.x)))
    if figure.kind == "bar":
        width = 0.8 / max(1, len(figure.series))
        for k, (label, points) in enumerate(figure.series.items()):
            means, los, his = mean_band(points)
            at = [x - 0.4 + width * (k + 0.5) for x in xs]
            errors = [[m - lo if math.isfinite(lo) else 0.0 for m, lo in zip(means, los)],
                      [hi - m if math.isfinite(hi) else 0.0 for m, hi in zip(means, his)]]
            ax.bar(at, means, width, yerr=errors, capsize=2, label=label)
        for label, points in figure.reference.items():
            means, _, _ = mean_band(points)
            for x, m in zip(xs, means):
                ax.hlines(m, x - 0.45, x + 0.45, colors="black", linestyles="--", linewidth=1,
                          label=label if x == 0 else None)
    else:
        for dashed, group in ((False, figure.series), (True, figure.reference)):
            for label, points in group.items():
                means, los, his = mean_band(points)
                (line,) = ax.plot(xs, means, marker="o", linestyle="--" if dashed else "-", label=label)
                if any(math.isfinite(v) for v in los):
                    ax.fill_between(xs, los, his, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xticks(xs, figure.x)
    ax.set_xlabel(figure.xlabel)
    ax.set_ylabel(figure.ylabel)
    ax.set_title(figure.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


# ---- files -------------------------------------------------------------------------------------------


def to_json(result: ClaimResult) -> dict:
    gates = result.gate_map

    def stats(st: Stats) -> dict:
        return asdict(st)

    contrasts = []
    for c in result.contrasts:
        v = c.verdict(gates)
        contrasts.append({
            "name": c.name, "description": c.description, "needs": list(c.needs),
            "per_seed": {str(s): c.per_seed[s] for s in sorted(c.per_seed)}, "stats": stats(c.stats),
            "prediction": asdict(c.prediction) if c.prediction else None,
            "verdict": v.verdict if v else None, "reason": v.reason if v else None,
        })
    arms = {
        arm: {metric: {"per_seed": {str(s): values[s] for s in sorted(values)},
                       "stats": stats(summarize([values[s] for s in sorted(values) if _finite(values[s])]))}
              for metric, values in by_metric.items()}
        for arm, by_metric in result.arms.items()
    }
    figures = [{"name": f.name, "title": f.title, "kind": f.kind, "x": f.x,
                "series": {k: [{str(s): p[s] for s in sorted(p)} for p in v] for k, v in f.series.items()},
                "reference": {k: [{str(s): p[s] for s in sorted(p)} for p in v] for k, v in f.reference.items()}}
               for f in result.figures]
    return {
        "claim": result.claim, "sentence": result.sentence, "rule": RULE, "setup": result.setup,
        "seeds": result.seeds, "stopped": result.stopped, "gates": [asdict(g) for g in result.gates],
        "arms": arms, "contrasts": contrasts, "figures": figures, "notes": result.notes,
    }


def _jsonable(value):
    """NaN and infinities as null (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_report(result: ClaimResult, out: str | Path) -> Path:
    """DIR/<claim>/report.md, result.json and <figure>.png; then DIR/index.md. Returns report.md's path."""
    root = Path(out)
    folder = root / result.claim
    try:
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for figure in result.figures:
            draw(figure, folder / f"{figure.name}.png")
            names.append(f"{figure.name}.png")
        (folder / "result.json").write_text(json.dumps(_jsonable(to_json(result)), indent=2) + "\n", encoding="utf-8")
        report = folder / "report.md"
        report.write_text(markdown(result, names), encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--out: expected a writable folder, got {str(folder)!r} ({write_failure(err)})") from err
    write_index(root)
    return report


def span_text(st: dict) -> str:
    """A contrast's saved stats as `mean [lo, hi]` (the mean alone without an interval)."""
    if st.get("lo") is not None:
        return f"{fmt(st['mean'], 3, sign=True)} [{fmt(st['lo'], 3, sign=True)}, {fmt(st['hi'], 3, sign=True)}]"
    return fmt(st.get("mean"), 3, sign=True) or "no value"


def summary_table(results: list[dict]) -> list[str]:
    """One row per judged contrast of every claim: the verdict, the mean and 95% interval, the seeds."""
    rows = []
    for data in results:
        claim = data.get("claim", "?")
        for c in data.get("contrasts", []):
            if c.get("verdict") is None:
                continue
            st = c["stats"]
            span = span_text(st)
            rows.append(md_row([f"[{claim}]({claim}/report.md)", c["name"], f"**{c['verdict']}**", span,
                                str(st["n"])]))
    if not rows:
        return []
    return [md_row(["claim", "contrast", "verdict", "mean [95% interval]", "seeds"]),
            md_row(["---"] * 5), *rows, ""]


def write_index(out: str | Path) -> Path:
    """DIR/index.md: every claim with a result.json under DIR, its verdicts and its gates."""
    from lamina.study import CLAIMS  # (the claims' order: the research note's)

    root = Path(out)
    order = {name: i for i, name in enumerate(CLAIMS)}
    paths = sorted(root.glob("*/result.json"), key=lambda p: (order.get(p.parent.name, len(order)), p.parent.name))
    results = []
    for path in paths:
        try:
            results.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError):
            results.append((path, None))
    lines = ["# Findings", "", f"Rule: {RULE}", ""]
    lines += summary_table([data for _, data in results if data is not None])
    found = 0
    for path, data in results:
        if data is None:
            lines += [f"## {path.parent.name}", "", f"(unreadable {path})", ""]
            continue
        found += 1
        claim = data.get("claim", path.parent.name)
        lines += [f"## [{claim}]({claim}/report.md)", "", data.get("sentence", ""), ""]
        if data.get("stopped"):
            lines += [f"- stopped before the comparison: {data['stopped']}"]
        failed = [g["name"] for g in data.get("gates", []) if not g.get("passed")]
        lines += [f"- gates: {len(data.get('gates', [])) - len(failed)} of {len(data.get('gates', []))} passed"
                  + (f" (failed: {', '.join(failed)})" if failed else "")]
        for c in data.get("contrasts", []):
            if c.get("verdict") is None:
                continue
            st = c["stats"]
            span = span_text(st)
            lines.append(f"- {c['name']}: **{c['verdict']}** ({span}, {st['n']} seed(s))")
        lines.append("")
    if not found:
        lines.append("(no claim has a result here yet)")
    index = root / "index.md"
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Whole or not at all: a --jobs unit whose gate stops its claim writes it too, beside the others.
        tmp = index.with_name(f"index.md.tmp-{os.getpid()}")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, index)
    except OSError as err:
        raise ConfigError(f"--out: expected a writable folder, got {str(root)!r} ({write_failure(err)})") from err
    return index


__all__ = ["ClaimResult", "Contrast", "Figure", "Gate", "PerSeed", "draw", "markdown", "to_json", "write_index",
           "write_report"]
