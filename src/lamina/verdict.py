"""The one decision rule of lamina (`lamina study` and `lamina compare` both read their contrasts
with it; it imports nothing of either): a verdict on one contrast from its per-seed paired differences (or their
interval), the predicted sign, the margin, the planned seeds, and what could keep it from being
tested (gates, a floor, a ceiling). `lamina study` reads every contrast with it; it knows nothing
of studies (plain numbers and mappings in, a `Verdict` out), so `lamina compare` can use it too.

A claim predicts that a contrast (arm A minus arm B, per seed) has sign s (+1: A above B, -1: A
below B) and fixes, before any run, a margin m > 0: the smallest effect of interest, in the
contrast's own units, with its reason in words (a fraction of what training changes the same
measure by, a share of the items, ...), never derived from the run's own noise. With the
interval [lo, hi] of the mean per-seed difference (Student's t over seeds, 95% unless said), the
outcomes, tried in this order:

1. **not tested**, with its reason: a gate the contrast needs failed or was not run; a floor or a
   ceiling (every arm, every seed, at or below chance, or at or above the top of the scale); a
   seed of the planned ones missing (a non-finite value or none: the seeds are named); fewer than
   two seeds (no interval); zero variance across seeds (every seed the same difference: the
   interval is a point, which says nothing about the next seed).
2. **supported**: the interval lies on side s beyond the margin (lo > m for s = +1, hi < -m for
   s = -1).
3. **negligible**: the interval lies inside [-m, m]; where it also lies on side s of 0 the effect
   is real but **trivial** (smaller than the margin), and the reason says so.
4. **against**: the interval lies on the other side beyond the margin (hi < -m for s = +1,
   lo > m for s = -1).
5. **inconclusive**: the rest (the interval holds 0 and reaches past the margin; or it lies on one
   side of 0 and straddles the margin there: an effect of undetermined size).

A claim names one **primary** contrast before it runs; the claim's verdict is the primary's, read
from its 95% interval. Its other judged contrasts are **secondary**: their two-sided p-values
(t-test of the mean difference against 0) are Holm-corrected within the claim (over the secondary
contrasts that were tested), and each is read by the same rule from its Holm-adjusted interval:
the t-interval at confidence 1 - alpha * p / p_Holm, the level Holm's step-down procedure tests
that contrast at (1 - alpha / (k - j + 1) for the j-th smallest of k p-values when no smaller one
was adjusted above it), so that it excludes 0 exactly when p_Holm < alpha. Contrasts that cannot
fail by construction are **descriptive**: a number, no verdict.

Holm (1979): sort the k p-values, p_(1) <= ... <= p_(k); p_Holm_(j) = max over i <= j of
min(1, (k - i + 1) p_(i)). (scipy has no Holm; `holm` below is the whole of it.)

A statistic over every seed at once (cross-seed matching: its pairs of seeds share seeds, so the
pairs are no sample of independent values) is read from its **permutation null** instead
(`PermutationTest`): the effect is the observed statistic minus the null's mean, its interval the
test inverted under a shift (the observed statistic minus the null's (1 + c)/2 and (1 - c)/2
quantiles), its p two-sided, (1 + #draws at least as far from the null's mean) / (1 + draws).

Power (`detectable`, `half_width`): from the seed-to-seed standard deviation sd of a contrast's
per-seed differences (earlier seeds or a pilot), with n seeds the 95% interval's half-width is
t(0.975, n - 1) sd / sqrt(n), and the smallest true difference beyond a bound that the interval
clears 80% of the time is (t(0.975, n - 1) + t(0.8, n - 1)) sd / sqrt(n). A design has the power
to tell an effect of twice the margin from none when that is at most the margin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scipy import stats as scipy_stats

from lamina.errors import ConfigError

PREDICTIONS = {"lower": -1, "higher": 1}


@dataclass(frozen=True)
class Question:
    """What a comparison of this run against others judges, fixed in its config before it runs (the
    `compare` section of `lamina fit`; `lamina compare` reads it from the reference group's runs,
    and its own --primary, --margin and --predict win)."""

    primary: str | None = None
    """The one metric the comparison is about (a scalar tag, e.g. `val/bpb` or
    `eval/arith_acc/level2`); null: lamina compare's default, val/bpb."""
    margin: float | None = None
    """The smallest difference of the primary metric that matters, in its units (> 0), with its
    reason in a comment beside it; null: no verdict, the interval only."""
    predict: str | None = None
    """`lower` or `higher`: each other group's primary metric against this run's group; null: the
    metric's default direction."""

    def __post_init__(self) -> None:
        if self.primary is not None and (not isinstance(self.primary, str) or not self.primary.strip()):
            raise ConfigError(f"compare.primary: expected a scalar tag such as val/bpb, got {self.primary!r}")
        margin = self.margin
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                                   or not (0 < margin < math.inf)):
            raise ConfigError(f"compare.margin: expected a finite number > 0 (the smallest difference of interest), "
                              f"got {margin!r}")
        if self.predict is not None and self.predict not in PREDICTIONS:
            raise ConfigError(f"compare.predict: expected one of {', '.join(PREDICTIONS)}, got {self.predict!r}")

NOT_TESTED, SUPPORTED, NEGLIGIBLE, AGAINST, INCONCLUSIVE = (
    "not tested", "supported", "negligible", "against", "inconclusive")
VERDICTS = (NOT_TESTED, SUPPORTED, NEGLIGIBLE, AGAINST, INCONCLUSIVE)
PRIMARY, SECONDARY, DESCRIPTIVE = "primary", "secondary", "descriptive"
ALPHA = 0.05  # the intervals are 95%
POWER = 0.8  # power gates: the difference an interval clears 80% of the time

RULE = (
    "Each claim names one **primary** contrast before it runs, with a predicted sign s and a margin m > 0 (the "
    "smallest effect of interest, fixed in the claim's code with its reason, never derived from the run's noise); "
    "the claim's verdict is the primary's. From the 95% t-interval [lo, hi] over seeds of the mean per-seed "
    "(paired) difference, in this order: **not tested** (a gate failed or was not run; a floor or ceiling: every "
    "arm at chance, or at the top of the scale, in every seed; a planned seed missing, named; fewer than two "
    "seeds; zero variance across seeds), **supported** (the interval on side s beyond the margin: lo > m for "
    "s = +1, hi < -m for s = -1), **negligible** (inside [-m, m]; \"trivial\" when also on side s of 0), "
    "**against** (on the other side beyond the margin), **inconclusive** (the rest). **Secondary** contrasts are "
    "read by the same rule from their Holm-adjusted interval (the t-interval at confidence 1 - 0.05 p / p_Holm, "
    "p two-sided against 0, Holm over the claim's tested secondary contrasts), so that it excludes 0 exactly when "
    "p_Holm < 0.05. **Descriptive** rows cannot fail by construction: a number, no verdict."
)


@dataclass(frozen=True)
class Prediction:
    """What a claim predicts of one contrast: its sign, and the margin (the smallest effect of
    interest, in the contrast's own units, > 0) with its reason in words."""

    sign: int
    margin: float
    margin_note: str = ""

    def __post_init__(self):
        if self.sign not in (1, -1):
            raise ConfigError(f"prediction sign: expected +1 or -1, got {self.sign!r}")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin > 0):
            raise ConfigError(f"prediction margin: expected a finite number > 0 (the smallest effect of interest), "
                              f"got {self.margin!r}")

    @property
    def words(self) -> str:
        side = "> 0" if self.sign > 0 else "< 0"
        return f"predicted {side}, margin ±{self.margin:.4g}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of the rule, the part of it that decided (`reason`), and the numbers read:
    the interval [lo, hi] at `confidence` of the mean over `n` seeds, its half-width, the
    two-sided p against 0 (and p_holm where a family adjusted it)."""

    verdict: str  # one of VERDICTS
    reason: str
    trivial: bool = False  # negligible, and on the predicted side of 0
    n: int = 0
    mean: float | None = None
    lo: float | None = None
    hi: float | None = None
    half_width: float | None = None
    confidence: float = 1 - ALPHA
    p: float | None = None
    p_holm: float | None = None
    margin: float | None = None
    missing: tuple = field(default=())  # planned seeds without a value

    def __str__(self) -> str:
        return f"{self.verdict} ({self.reason})"

    @property
    def label(self) -> str:
        """The verdict as the reports write it ("negligible (trivial)" where it is)."""
        return f"{self.verdict} (trivial)" if self.trivial else self.verdict


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(x: float) -> str:
    return f"{x:+.4g}"


def seeds_text(seeds: Iterable) -> str:
    seeds = list(seeds)
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def t_quantile(q: float, df: int) -> float:
    return float(scipy_stats.t.ppf(q, df))


def half_width(sd: float, n: int, confidence: float = 1 - ALPHA) -> float:
    """Half-width of the t-interval of a mean of n values with standard deviation sd."""
    if n < 2:
        return math.inf
    return t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)


def detectable(sd: float, n: int, power: float = POWER, confidence: float = 1 - ALPHA) -> float:
    """The smallest true difference beyond a bound that the t-interval over n seeds (seed-to-seed
    standard deviation sd) clears with probability `power`: (t((1+c)/2, n-1) + t(power, n-1)) sd / sqrt(n)."""
    if n < 2:
        return math.inf
    return (t_quantile(0.5 + confidence / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (Holm 1979): sorted ascending,
    p_Holm_(j) = max_{i <= j} min(1, (k - i + 1) p_(i)), k = len(pvalues)."""
    k = len(pvalues)
    order = sorted(range(k), key=lambda i: pvalues[i])
    adjusted = [1.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def holm_confidence(p: float, p_holm: float, alpha: float = ALPHA) -> float:
    """The confidence of a Holm-adjusted interval: 1 - alpha p / p_Holm (it excludes 0 exactly
    when p_Holm < alpha)."""
    if not (p_holm > 0 and p > 0):
        return 1 - alpha
    return 1 - alpha * min(1.0, p / p_holm)


@dataclass(frozen=True)
class PermutationTest:
    """A statistic over the seeds `seeds` and its permutation null (`null`: the statistic with the
    exchangeable labels permuted, one value a draw): effect = observed - mean(null)."""

    observed: float
    null: tuple[float, ...]
    seeds: tuple = ()

    def __post_init__(self):
        if len(self.null) < 20:
            raise ValueError(f"a permutation null needs at least 20 draws, got {len(self.null)}")

    @property
    def null_mean(self) -> float:
        return sum(self.null) / len(self.null)

    @property
    def effect(self) -> float:
        return self.observed - self.null_mean

    @property
    def p(self) -> float:
        far = abs(self.effect) - 1e-12
        return (1 + sum(abs(x - self.null_mean) >= far for x in self.null)) / (1 + len(self.null))

    def interval(self, confidence: float = 1 - ALPHA) -> tuple[float, float]:
        """The effect's interval at `confidence`, inverting the test under a shift: the observed
        statistic minus the null's upper and lower (1 +- confidence) / 2 quantiles."""
        null = sorted(self.null)

        def quantile(q: float) -> float:  # linear interpolation between order statistics (numpy's default)
            x = q * (len(null) - 1)
            i = min(int(x), len(null) - 2)
            return null[i] + (x - i) * (null[i + 1] - null[i])

        return self.observed - quantile(0.5 + confidence / 2), self.observed - quantile(0.5 - confidence / 2)


def _values(arm) -> list[float]:
    if isinstance(arm, Mapping):
        arm = arm.values()
    return [float(v) for v in arm if _finite(v)]


def _bound_reason(arms: Mapping[str, object] | None, floor: float | None, ceiling: float | None) -> str | None:
    if not arms:
        return None
    by_arm = {name: _values(values) for name, values in arms.items()}
    every = [v for values in by_arm.values() for v in values]
    if not every or any(not values for values in by_arm.values()):
        return None
    names = ", ".join(by_arm)
    if floor is not None and all(v <= floor + 1e-12 for v in every):
        top = max(every)
        return f"a floor: every arm ({names}) at or below chance ({floor:.4g}) in every seed (the highest {top:.4g})"
    if ceiling is not None and all(v >= ceiling - 1e-12 for v in every):
        low = min(every)
        return f"a ceiling: every arm ({names}) at the top of the scale ({ceiling:.4g}) in every seed (the lowest {low:.4g})"
    return None


def decide(differences: Mapping | Sequence[float] | None = None, *, sign: int, margin: float,
           planned: int | Sequence | None = None, interval: tuple[float, float] | None = None,
           n: int | None = None, gates: Mapping[str, bool | None] | None = None,
           arms: Mapping[str, object] | None = None, floor: float | None = None, ceiling: float | None = None,
           confidence: float = 1 - ALPHA) -> Verdict:
    """The rule above on one contrast.

    differences: per-seed paired differences, {seed: value} (or a sequence: seeds 1, 2, ...); a
        non-finite value is a seed that dropped out. Or, without them, `interval` (lo, hi) at
        `confidence` over `n` seeds.
    sign, margin: the prediction (+1 / -1; the smallest effect of interest, > 0).
    planned: the seeds planned (a sequence of seed ids: the missing ones are named) or their count.
    gates: gate name -> passed (None: not run) for the gates the contrast needs.
    arms, floor, ceiling: the per-seed values of the arms compared ({arm: {seed: value}} or
        {arm: [values]}) and the scale's chance level and top: every value at or below `floor`,
        or every one at or above `ceiling`, is not tested.
    confidence: of the interval the rule reads (0.95; a Holm-adjusted level for a secondary contrast).
    """
    Prediction(sign, margin)  # the same checks
    failed = [g for g, ok in (gates or {}).items() if ok is False]
    not_run = [g for g, ok in (gates or {}).items() if ok is None]

    def not_tested(reason: str, **numbers) -> Verdict:
        return Verdict(NOT_TESTED, f"not tested: {reason}", margin=margin, confidence=confidence, **numbers)

    if failed or not_run:
        parts = ([f"gate {', '.join(failed)} failed"] if failed else []) + (
            [f"gate {', '.join(not_run)} not run"] if not_run else [])
        return not_tested("; ".join(parts))
    bound = _bound_reason(arms, floor, ceiling)
    if bound:
        return not_tested(bound)

    if differences is None:
        if interval is None:
            raise ValueError("decide: expected per-seed differences or an interval")
        return _from_interval(interval, n, sign, margin, planned, confidence)

    if not isinstance(differences, Mapping):
        differences = {i: v for i, v in enumerate(differences, 1)}
    finite = {s: float(v) for s, v in differences.items() if _finite(v)}
    dropped = {s: v for s, v in differences.items() if not _finite(v)}
    if planned is None:
        planned = list(differences)
    if isinstance(planned, int):
        missing = tuple(dropped) if len(finite) < planned else ()
        short = planned - len(finite)
        if short > 0:
            named = f" ({seeds_text(dropped)}: no finite value)" if dropped else ""
            return not_tested(f"{len(finite)} of {planned} planned seeds have a value{named}",
                              n=len(finite), missing=missing)
    else:
        missing = tuple(s for s in planned if s not in finite)
        if missing:
            what = "; ".join(f"seed {s}: {'no value' if s not in differences else differences[s]}" for s in missing)
            return not_tested(f"{seeds_text(missing)} missing ({what}); {len(finite)} of {len(planned)} planned seeds",
                              n=len(finite), missing=missing)
    values = list(finite.values())
    k = len(values)
    if k < 2:
        return not_tested("fewer than two seeds: no interval over seeds", n=k, mean=values[0] if values else None)
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # (rounding aside)
        return not_tested(f"zero variance across seeds (every seed gives {_num(values[0])})", n=k, mean=mean)
    half = half_width(sd, k, confidence)
    t = mean / (sd / math.sqrt(k))
    p = float(2 * scipy_stats.t.sf(abs(t), k - 1))
    return _classify(mean - half, mean + half, sign, margin, n=k, mean=mean, half_width=half, confidence=confidence,
                     p=p)


def _from_interval(interval, n, sign, margin, planned, confidence) -> Verdict:
    lo, hi = interval
    if not (_finite(lo) and _finite(hi)):
        return Verdict(NOT_TESTED, "not tested: no interval (fewer than two seeds)", n=n or 0, margin=margin)
    if lo > hi:
        raise ValueError(f"an interval needs lo <= hi, got [{lo}, {hi}]")
    count = planned if isinstance(planned, int) else (len(planned) if planned is not None else None)
    if n is not None and count is not None and n < count:
        return Verdict(NOT_TESTED, f"not tested: {n} of {count} planned seeds have a value", n=n, margin=margin)
    if n is not None and n < 2:
        return Verdict(NOT_TESTED, "not tested: fewer than two seeds: no interval over seeds", n=n, margin=margin)
    if lo == hi:
        return Verdict(NOT_TESTED, f"not tested: zero variance across seeds (a zero-width interval at {_num(lo)})",
                       n=n or 0, mean=lo, margin=margin)
    return _classify(lo, hi, sign, margin, n=n or 0, mean=(lo + hi) / 2, half_width=(hi - lo) / 2,
                     confidence=confidence)


def _classify(lo: float, hi: float, sign: int, margin: float, **numbers) -> Verdict:
    m = margin
    a, b = (lo, hi) if sign > 0 else (-hi, -lo)  # the interval with the predicted side made positive
    where = f"[{_num(lo)}, {_num(hi)}]"
    kw = dict(lo=lo, hi=hi, margin=m, **numbers)
    if a > m:
        return Verdict(SUPPORTED, f"the interval {where} lies beyond the margin ±{m:.4g} on the predicted side", **kw)
    if -m <= a and b <= m:
        if a > 0:
            return Verdict(NEGLIGIBLE, f"trivial: the interval {where} lies on the predicted side of 0 but inside the "
                           f"margin ±{m:.4g} (a real effect smaller than the smallest of interest)", trivial=True, **kw)
        return Verdict(NEGLIGIBLE, f"the interval {where} lies inside the margin ±{m:.4g}", **kw)
    if b < -m:
        return Verdict(AGAINST, f"the interval {where} lies beyond the margin ±{m:.4g} on the other side", **kw)
    if a > 0:
        why = "lies on the predicted side of 0 but reaches inside the margin: an effect of undetermined size"
    elif b < 0:
        why = "lies on the other side of 0 but reaches inside the margin"
    else:
        why = "holds 0 and reaches past the margin"
    return Verdict(INCONCLUSIVE, f"the interval {where} {why} (±{m:.4g})", **kw)


__all__ = ["AGAINST", "ALPHA", "DESCRIPTIVE", "INCONCLUSIVE", "NEGLIGIBLE", "NOT_TESTED", "POWER", "PRIMARY",
           "PermutationTest", "Prediction", "RULE", "SECONDARY", "SUPPORTED", "VERDICTS", "Verdict", "decide", "detectable",
           "half_width", "holm", "holm_confidence", "seeds_text"]
