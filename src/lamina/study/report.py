"""What a claim's study found, written out: DIR/<claim>/report.md, result.json (every number) and
PNG figures (matplotlib, object-oriented), and DIR/index.md, which gathers the verdicts of every
claim whose result.json is in DIR.

A claim hands over a `ClaimResult`: its sentence, its setup, its gates, the per-seed values of
every metric of every arm, its contrasts (per-seed differences, paired by seed, each with the
claim's `Prediction`), the name of its primary contrast and its figures. Means and 95%
t-intervals over seeds are those of `lamina.compare.stats.summarize` (Student's t, n - 1 degrees
of freedom); a contrast's interval is that of the mean of its per-seed differences, so what a seed
shares across arms cancels. Verdicts are lamina.verdict's rule: `ClaimResult.verdicts()`
reads the primary contrast from its 95% interval and each secondary one from its Holm-adjusted
interval (Holm within the claim); descriptive contrasts (no prediction) get none. A seed that drops
out of a contrast (no value, or a non-finite one, in an arm) is named in `Contrast.dropped`, and a
contrast with fewer seeds than the claim planned is not tested.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from lamina.compare.report import fmt
from lamina.compare.stats import Stats, summarize
from lamina.errors import ConfigError, write_failure
from lamina.verdict import (
    ALPHA,
    DESCRIPTIVE,
    NOT_TESTED,
    PRIMARY,
    RULE,
    SECONDARY,
    PermutationTest,
    Prediction,
    Verdict,
    decide,
    detectable,
    half_width,
    holm,
    holm_confidence,
)

PerSeed = dict[int, float]  # seed -> value


@dataclass
class Gate:
    """A check that must pass before a contrast can show its effect (the model can do the task, the
    treatment has something to add, the evaluation can see a difference), with the numbers in words."""

    name: str
    question: str
    passed: bool
    detail: str


def every_seed_gate(name: str, question: str, per_seed: dict, check, missing: str) -> Gate:
    """A gate that must hold in every seed (and with at least one): `check(value) -> (passed, words)`
    on each seed's value; a seed whose value is empty fails with `missing`."""
    per, passed = [], bool(per_seed)
    for seed in sorted(per_seed):
        ok, words = check(per_seed[seed]) if per_seed[seed] else (False, missing)
        passed &= ok
        per.append(f"seed {seed}: {words}")
    return Gate(name, question, passed, "; ".join(per))


@dataclass
class Contrast:
    """A per-seed difference (a - b, matched by seed) and what the claim predicts of it (None: a
    descriptive row, no verdict). `needs`: the gates it cannot be read without. `dropped`: the
    seeds left out, each with why (a non-finite value, no value in one arm). `planned`: the keys
    planned (None: the claim's seeds). `arms`, `floor`, `ceiling`: the per-seed values of the arms
    compared and the scale's chance level and top, for the rule's floor and ceiling. `permutation`:
    a statistic over every seed at once read against its permutation null (the verdict's interval
    and p are the test's; `per_seed` then only describes, e.g. per pair of seeds)."""

    name: str
    description: str
    per_seed: PerSeed
    prediction: Prediction | None = None
    needs: tuple[str, ...] = ()
    dropped: dict = field(default_factory=dict)
    planned: tuple | None = None
    arms: dict[str, PerSeed] = field(default_factory=dict)
    floor: float | None = None
    ceiling: float | None = None
    permutation: PermutationTest | None = None

    def __post_init__(self):
        self.per_seed = dict(self.per_seed)  # (never the caller's dict)
        self.dropped = dict(self.dropped)
        for s in [s for s, v in self.per_seed.items() if not _finite(v)]:  # a non-finite value: the seed drops out
            self.dropped.setdefault(s, f"a non-finite value ({self.per_seed[s]})")
            del self.per_seed[s]

    @classmethod
    def paired(cls, name: str, description: str, a: PerSeed, b: PerSeed | None = None,
               labels: tuple[str, str] = ("a", "b"), **kwargs) -> Contrast:
        """a - b over the seeds both have with finite values (b None: a against 0). A seed that
        either lacks, or holds a non-finite value in either, drops out and is named (`dropped`)."""
        seeds = sorted(set(a) | set(b or {}))
        diffs, dropped = {}, {}
        for s in seeds:
            why = []
            for label, arm in ((labels[0], a), (labels[1], b)) if b is not None else ((labels[0], a),):
                if s not in arm:
                    why.append(f"no value in {label}")
                elif not _finite(arm[s]):
                    why.append(f"{label} is {arm[s]}")
            if why:
                dropped[s] = ", ".join(why)
            else:
                diffs[s] = a[s] - (b[s] if b is not None else 0.0)
        if (kwargs.get("floor") is not None or kwargs.get("ceiling") is not None) and "arms" not in kwargs:
            kwargs["arms"] = {labels[0]: a, **({labels[1]: b} if b is not None else {})}
        return cls(name, description, diffs, dropped=dropped, **kwargs)

    @property
    def stats(self) -> Stats:
        return summarize([self.per_seed[s] for s in sorted(self.per_seed)])

    def verdict(self, gates: dict[str, Gate], planned=None, confidence: float = 1 - ALPHA) -> Verdict | None:
        """The rule on this contrast alone (a secondary contrast's Holm level: ClaimResult.verdicts)."""
        if self.prediction is None:
            return None
        if self.permutation is not None:
            return self.permutation_verdict(gates, planned, confidence)
        differences = {**{s: math.nan for s in self.dropped}, **self.per_seed}
        planned = self.planned if self.planned is not None else (list(planned) if planned is not None else None)
        return decide(differences, sign=self.prediction.sign, margin=self.prediction.margin, planned=planned,
                      gates={g: (gates[g].passed if g in gates else None) for g in self.needs},
                      arms=self.arms or None, floor=self.floor, ceiling=self.ceiling, confidence=confidence)


    def permutation_verdict(self, gates: dict[str, Gate], planned, confidence: float) -> Verdict:
        """The rule on the permutation test's interval over the seeds it used (planned: the claim's seeds)."""
        test = self.permutation
        planned = self.planned if self.planned is not None else (list(planned) if planned is not None else None)
        count = len(planned) if planned is not None and not isinstance(planned, int) else planned
        v = decide(sign=self.prediction.sign, margin=self.prediction.margin, interval=test.interval(confidence),
                   n=len(test.seeds), planned=count, confidence=confidence,
                   gates={g: (gates[g].passed if g in gates else None) for g in self.needs})
        if v.lo is None:
            return v
        return replace(v, mean=test.effect, p=test.p,
                       reason=f"{v.reason} (permutation test, {len(test.null)} draws, p {test.p:.3g})")


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
    primary: str = ""  # the name of the primary contrast, fixed in the claim's code before it runs

    @property
    def gate_map(self) -> dict[str, Gate]:
        return {g.name: g for g in self.gates}

    def role(self, contrast: Contrast) -> str:
        if contrast.prediction is None:
            return DESCRIPTIVE
        return PRIMARY if contrast.name == self.primary else SECONDARY

    def verdicts(self) -> dict[str, Verdict | None]:
        """Every contrast's verdict (None: descriptive): the primary's from its 95% interval, each
        secondary's from its Holm-adjusted interval (Holm over the claim's tested secondary ones)."""
        gates = self.gate_map
        out: dict[str, Verdict | None] = {}
        family: list[Contrast] = []
        for c in self.contrasts:
            if c.name == self.primary and c.prediction is None:
                raise ValueError(f"claim {self.claim}: the primary contrast {c.name!r} has no prediction")
            out[c.name] = v = c.verdict(gates, self.seeds)
            if v is not None and c.name != self.primary and v.verdict != NOT_TESTED:
                family.append(c)
        ps = [out[c.name].p for c in family]
        for c, p, p_holm in zip(family, ps, holm(ps)):
            v = c.verdict(gates, self.seeds, holm_confidence(p, p_holm))
            out[c.name] = replace(v, p=p, p_holm=p_holm)
        return out

    def claim_verdict(self, verdicts: dict[str, Verdict | None] | None = None) -> Verdict:
        """The claim's verdict: its primary contrast's (not tested where the primary was not reached)."""
        verdicts = self.verdicts() if verdicts is None else verdicts
        v = verdicts.get(self.primary) if self.primary else None
        if v is not None:
            return v
        if self.stopped:
            return Verdict(NOT_TESTED, f"not tested: the study stopped before its comparison ({self.stopped})")
        if not self.primary:
            return Verdict(NOT_TESTED, "not tested: the claim names no primary contrast")
        return Verdict(NOT_TESTED, f"not tested: the primary contrast {self.primary!r} was not reached")

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


def num(x, sign: bool = True) -> str:
    return fmt(x, 3, sign=sign) if x is not None and _finite(x) else "n/a"


def verdict_interval(v: Verdict) -> str:
    """The interval the rule read: `mean [lo, hi]` (with its level where not 95%)."""
    if v.lo is None:
        return num(v.mean) if v.mean is not None else "no interval"
    level = "" if abs(v.confidence - (1 - ALPHA)) < 1e-12 else f" at {100 * v.confidence:.3g}% (Holm)"
    return f"{num(v.mean)} [{num(v.lo)}, {num(v.hi)}]{level}"


def power_text(v: Verdict) -> str:
    """The achieved half-width beside the margin."""
    if v.half_width is None or v.margin is None:
        return ""
    return f"achieved half-width {fmt(v.half_width, 3)} vs margin {fmt(v.margin, 3)}"


def verdict_line(contrast: Contrast, v: Verdict, role: str) -> str:
    p = contrast.prediction
    if v.lo is None:  # not read: the numbers as they are
        st = contrast.stats
        span = f"{interval_text(st, sign=True) or 'no value'} over {st.n} seed(s)"
    else:
        span = f"{verdict_interval(v)} over {v.n} seed(s)"
    parts = [span, p.words + (f" ({p.margin_note})" if p.margin_note else "")]
    if power_text(v):
        parts.append(power_text(v))
    if role == SECONDARY and v.p_holm is not None:
        parts.append(f"p {v.p:.3g}, Holm-adjusted p {v.p_holm:.3g}")
    if contrast.dropped:
        parts.append(dropped_text(contrast))
    return f"**{contrast.name}** ({role}): **{v.label}** — " + "; ".join(parts) + f"; {v.reason}."


def dropped_text(contrast: Contrast) -> str:
    return "dropped out: " + "; ".join(f"seed {s} ({why})" for s, why in sorted(contrast.dropped.items(), key=str))


def power_gate(name: str, question: str, differences: PerSeed, margin: float, planned: int,
               source: str = "the seeds at hand") -> Gate:
    """Can `planned` seeds tell an effect of twice the margin from none? From the seed-to-seed
    standard deviation of the per-seed differences (`source`: the seeds at hand, earlier seeds or a
    pilot): the difference the 95% interval clears 80% of the time, (t + t_0.8) sd / sqrt(n), at
    most the margin. The detail gives the half-width the seeds give beside the margin."""
    values = [v for v in differences.values() if _finite(v)]
    if len(values) < 2:
        return Gate(name, question, False, f"fewer than two seeds with a value in {source}: no seed-to-seed spread "
                    f"to plan from (margin {fmt(margin, 3)})")
    st = summarize(values)
    if not st.std > 0:  # every seed alike: the rule reads the contrast as not tested (zero variance), and names it
        return Gate(name, question, True, f"no seed-to-seed spread in {source} ({len(values)} seeds, every "
                    f"difference {fmt(values[0], 3)}): nothing to plan from; the rule names zero variance itself")
    d, h = detectable(st.std, planned), half_width(st.std, planned)
    return Gate(name, question, d <= margin,
                f"sd of the per-seed differences {fmt(st.std, 3)} over {len(values)} seed(s) ({source}); with "
                f"{planned} seeds the 95% half-width is {fmt(h, 3)} and the difference seen with 80% power "
                f"{fmt(d, 3)}, against the margin {fmt(margin, 3)}")


def markdown(result: ClaimResult, figure_files: list[str]) -> str:
    verdicts = result.verdicts()
    claim = result.claim_verdict(verdicts)
    lines = [f"# {result.claim}", "", f"**Claim.** {result.sentence}", ""]
    lines += ["## Verdicts", "", f"Rule: {RULE}", ""]
    if result.stopped:
        lines += [f"**Stopped before the comparison:** {result.stopped}", ""]
    lines += [f"**Claim verdict: {claim.label}** (its primary contrast, {result.primary or 'none named'}: "
              f"{claim.reason}).", ""]
    by_role = {PRIMARY: [], SECONDARY: [], DESCRIPTIVE: []}
    for c in result.contrasts:
        by_role[result.role(c)].append(c)
    lines += ["### Primary", ""]
    lines += [f"- {verdict_line(c, verdicts[c.name], PRIMARY)}" for c in by_role[PRIMARY]] or [
        f"- {result.primary or '(none)'}: not reached"]
    if by_role[SECONDARY]:
        lines += ["", "### Secondary (Holm-corrected within the claim)", ""]
        lines += [f"- {verdict_line(c, verdicts[c.name], SECONDARY)}" for c in by_role[SECONDARY]]
    if by_role[DESCRIPTIVE]:
        lines += ["", "### Descriptive (a number, no verdict: these cannot fail by construction, or only describe)", ""]
        lines += [f"- **{c.name}**: {interval_text(c.stats, sign=True) or 'no value'} over {c.stats.n} seed(s) — "
                  f"{c.description}" + (f"; {dropped_text(c)}" if c.dropped else "") for c in by_role[DESCRIPTIVE]]
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
                  "95% t-interval over seeds, and each seed's difference; the verdict of a secondary row is read "
                  "from its Holm-adjusted interval (in Verdicts).", "",
                  md_row(["contrast", "role", "what", "mean [95% interval]", "seeds", "per seed", "prediction",
                          "verdict"]),
                  md_row(["---"] * 8)]
        for c in result.contrasts:
            v = verdicts[c.name]
            per_seed = ", ".join(f"{s}: {fmt(c.per_seed[s], 3, sign=True)}" for s in sorted(c.per_seed))
            if c.dropped:
                per_seed += ("; " if per_seed else "") + ", ".join(f"{s}: dropped" for s in sorted(c.dropped, key=str))
            lines.append(md_row([c.name, result.role(c), c.description, interval_text(c.stats, sign=True),
                                 str(c.stats.n), per_seed, c.prediction.words if c.prediction else "descriptive",
                                 v.label if v else ""]))
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


def verdict_json(v: Verdict | None) -> dict | None:
    if v is None:
        return None
    return {"verdict": v.verdict, "label": v.label, "reason": v.reason, "trivial": v.trivial, "n": v.n,
            "mean": v.mean, "lo": v.lo, "hi": v.hi, "confidence": v.confidence, "half_width": v.half_width,
            "p": v.p, "p_holm": v.p_holm, "margin": v.margin, "missing": [str(s) for s in v.missing]}


def to_json(result: ClaimResult) -> dict:
    verdicts = result.verdicts()

    def stats(st: Stats) -> dict:
        return asdict(st)

    contrasts = []
    for c in result.contrasts:
        v = verdicts[c.name]
        contrasts.append({
            "name": c.name, "description": c.description, "role": result.role(c), "needs": list(c.needs),
            "per_seed": {str(s): c.per_seed[s] for s in sorted(c.per_seed)}, "stats": stats(c.stats),
            "dropped": {str(s): why for s, why in c.dropped.items()},
            "prediction": asdict(c.prediction) if c.prediction else None,
            "verdict": v.verdict if v else None, "reason": v.reason if v else None,
            "judged": verdict_json(v),
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
        "primary": result.primary, "verdict": verdict_json(result.claim_verdict(verdicts)),
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


def judged_span(judged: dict | None, st: dict) -> str:
    """The interval a saved verdict was read from (with its Holm level where not 95%)."""
    if not judged or judged.get("lo") is None:
        return span_text(st)
    level = judged.get("confidence") or 1 - ALPHA
    tail = "" if abs(level - (1 - ALPHA)) < 1e-12 else f" at {100 * level:.3g}% (Holm)"
    return (f"{fmt(judged['mean'], 3, sign=True)} [{fmt(judged['lo'], 3, sign=True)}, "
            f"{fmt(judged['hi'], 3, sign=True)}]{tail}")


def margin_text(c: dict) -> str:
    p = c.get("prediction")
    if not p:
        return ""
    side = "> 0" if p["sign"] > 0 else "< 0"
    return f"{side}, ±{fmt(p['margin'], 3)}"


def claim_table(results: list[dict]) -> list[str]:
    """One row per claim: its primary contrast and the claim's verdict (the primary's)."""
    rows = []
    for data in results:
        claim = data.get("claim", "?")
        link = f"[{claim}]({claim}/report.md)"
        verdict = data.get("verdict")
        if verdict is None:  # a result.json written before claims named a primary contrast
            rows.append(md_row([link, "(none: written by the old rule)", "", "", "", ""]))
            continue
        primary = next((c for c in data.get("contrasts", []) if c["name"] == data.get("primary")), None)
        span = judged_span(verdict, primary["stats"]) if primary else "no value"
        margin = margin_text(primary) if primary else ""
        note = primary["prediction"].get("margin_note", "") if primary and primary.get("prediction") else ""
        rows.append(md_row([link, data.get("primary") or "(none)", f"**{verdict.get('label', verdict['verdict'])}**",
                            span, margin + (f" ({note})" if note else ""),
                            str(primary["stats"]["n"] if primary else 0)]))
    if not rows:
        return []
    return ["## Claims", "", "The claim's verdict is its primary contrast's (named in the claim's code before it runs).",
            "", md_row(["claim", "primary contrast", "verdict", "mean [95% interval]", "predicted, margin (reason)",
                        "seeds"]), md_row(["---"] * 6), *rows, ""]


def other_rows(results: list[dict]) -> list[str]:
    """The secondary (Holm-corrected) and descriptive rows of every claim, marked as such."""
    rows = []
    for data in results:
        claim = data.get("claim", "?")
        for c in data.get("contrasts", []):
            role = c.get("role") or ("descriptive" if c.get("prediction") is None else "")
            if c["name"] == data.get("primary") or not role or role == PRIMARY:
                continue
            judged = c.get("judged")
            verdict = f"**{judged.get('label', c['verdict'])}**" if judged else "(descriptive: no verdict)"
            span = judged_span(judged, c["stats"]) if judged else span_text(c["stats"])
            rows.append(md_row([f"[{claim}]({claim}/report.md)", c["name"], role, verdict, span, margin_text(c),
                                str(c["stats"]["n"])]))
    if not rows:
        return []
    return ["## Secondary and descriptive rows", "",
            "Secondary: read by the rule from the Holm-adjusted interval (Holm within the claim). Descriptive: a "
            "number, no verdict.", "",
            md_row(["claim", "contrast", "role", "verdict", "mean [interval]", "predicted, margin", "seeds"]),
            md_row(["---"] * 7), *rows, ""]


def not_tested_list(results: list[dict]) -> list[str]:
    """Every "not tested", with its reason."""
    lines = []
    for data in results:
        claim = data.get("claim", "?")
        verdict = data.get("verdict")
        if verdict and verdict["verdict"] == NOT_TESTED and data.get("primary") not in {
                c["name"] for c in data.get("contrasts", [])}:
            lines.append(f"- {claim} (the claim): {verdict['reason']}")
        for c in data.get("contrasts", []):
            judged = c.get("judged")
            if judged and judged["verdict"] == NOT_TESTED:
                role = c.get("role", "")
                lines.append(f"- {claim}: {c['name']} ({role}): {judged['reason']}")
    return ["## Not tested", "", *lines, ""] if lines else []


def write_index(out: str | Path) -> Path:
    """DIR/index.md: every claim with a result.json under DIR: one row per claim (its primary
    contrast's verdict), then the secondary and descriptive rows, every "not tested" with its
    reason, and each claim's gates."""
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
    readable = [data for _, data in results if data is not None]
    lines = ["# Findings", "", f"Rule: {RULE}", ""]
    lines += claim_table(readable) + other_rows(readable) + not_tested_list(readable)
    found = 0
    for path, data in results:
        if data is None:
            lines += [f"## {path.parent.name}", "", f"(unreadable {path})", ""]
            continue
        found += 1
        claim = data.get("claim", path.parent.name)
        lines += [f"## [{claim}]({claim}/report.md)", "", data.get("sentence", ""), ""]
        if data.get("verdict"):
            lines += [f"- claim verdict: **{data['verdict'].get('label', data['verdict']['verdict'])}** (primary: "
                      f"{data.get('primary')}; {data['verdict']['reason']})"]
        if data.get("stopped"):
            lines += [f"- stopped before the comparison: {data['stopped']}"]
        failed = [g["name"] for g in data.get("gates", []) if not g.get("passed")]
        lines += [f"- gates: {len(data.get('gates', [])) - len(failed)} of {len(data.get('gates', []))} passed"
                  + (f" (failed: {', '.join(failed)})" if failed else "")]
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


__all__ = ["ClaimResult", "Contrast", "Figure", "Gate", "PerSeed", "draw", "every_seed_gate", "markdown", "power_gate", "to_json",
           "write_index", "write_report"]
