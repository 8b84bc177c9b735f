"""The decision rule of a study: a verdict from the 95% interval (over seeds, paired) of a contrast.

A claim predicts that a contrast (arm A minus arm B, per seed) has sign s (+1: A above B, -1: A
below B), and states an equivalence margin m >= 0 (a difference within [-m, +m] is too small to
count). With the 95% interval [lo, hi] of the mean per-seed difference:

- `supported` when the interval lies entirely on side s of 0 (lo > 0 for s = +1, hi < 0 for s = -1);
- `not supported` when it lies entirely on the other side of 0, or entirely within [-m, +m];
- `inconclusive` otherwise (it holds 0 and reaches beyond the margin, or there is no interval:
  fewer than two seeds, or a gate the contrast needs failed).

The rules are tried in that order, so an interval on side s that also lies within the margin is
`supported`, and the report says that the effect is smaller than the margin. A negative result,
with its interval, is a result: `not supported` is written as plainly as `supported`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lamina.errors import ConfigError

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)

RULE = (
    "For a contrast the claim predicts to have sign s, with equivalence margin m: **supported** when the "
    "95% interval over seeds (paired by seed) lies entirely on side s of 0; **not supported** when it lies "
    "entirely on the other side, or entirely within [-m, +m]; **inconclusive** otherwise (the interval holds "
    "0 and reaches past the margin, there are fewer than two seeds, or a gate the contrast needs failed). "
    "The rules are tried in this order."
)


@dataclass(frozen=True)
class Prediction:
    """What a claim predicts of one contrast: its sign, and the margin within which a difference is
    too small to count (in the contrast's own units), with where the margin comes from in words."""

    sign: int
    margin: float = 0.0
    margin_note: str = ""

    def __post_init__(self):
        if self.sign not in (1, -1):
            raise ConfigError(f"prediction sign: expected +1 or -1, got {self.sign!r}")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigError(f"prediction margin: expected a finite number >= 0, got {self.margin!r}")

    @property
    def words(self) -> str:
        side = "> 0" if self.sign > 0 else "< 0"
        return f"predicted {side}, margin ±{self.margin:.4g}"


@dataclass(frozen=True)
class Verdict:
    verdict: str  # one of VERDICTS
    reason: str  # the part of the rule that decided it, in words

    def __str__(self) -> str:
        return f"{self.verdict} ({self.reason})"


def decide(lo: float | None, hi: float | None, prediction: Prediction, blocked: str | None = None) -> Verdict:
    """The verdict of the rule above for the interval [lo, hi]; `blocked` names a failed gate."""
    if blocked:
        return Verdict(INCONCLUSIVE, f"not tested: {blocked}")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return Verdict(INCONCLUSIVE, "no interval (fewer than two seeds)")
    if lo > hi:
        raise ValueError(f"an interval needs lo <= hi, got [{lo}, {hi}]")
    m, s = prediction.margin, prediction.sign
    within = -m <= lo and hi <= m
    if (s > 0 and lo > 0) or (s < 0 and hi < 0):
        note = ", smaller than the margin" if within else ""
        return Verdict(SUPPORTED, f"the interval lies entirely on the predicted side of 0{note}")
    if (s > 0 and hi < 0) or (s < 0 and lo > 0):
        return Verdict(NOT_SUPPORTED, "the interval lies entirely on the other side of 0")
    if within:
        return Verdict(NOT_SUPPORTED, f"the interval lies within the equivalence margin ±{m:.4g}")
    return Verdict(INCONCLUSIVE, "the interval holds 0 and reaches past the margin")


__all__ = ["INCONCLUSIVE", "NOT_SUPPORTED", "Prediction", "RULE", "SUPPORTED", "VERDICTS", "Verdict", "decide"]
