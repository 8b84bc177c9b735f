"""Reading the base's reach and the arms' greedy answers on held-out problems, as `lamina study` does
for `reasoning-in-pretraining` and `elicitation` (lamina.study.claims.reasoning_in_pretraining, lamina.study.claims.elicitation). Plain
functions of per-problem outcomes; lamina.rlp.evaluate.FormatScorer makes them.

- `halves`: every choice a score depends on (the k of pass@k, an arm's prompt format) is made on one
  half of the problems (`choice`, the odd positions of a random draw) and the score read on the
  other (`score`, the even positions), so that picking the best of several noisy numbers does not
  lift the number that is then compared.
- `choose_k`: the k whose mean unbiased pass@k (Chen et al. 2021, eq. 1, from n samples with c
  correct: lamina.rlp.evaluate.pass_at_k) is closest to 0.5, where it tells problems the base can
  reach from those it cannot best (at 0 or 1 every problem looks the same).
- `best_format`: the prompt format an arm answers best in.
- `arith_stratum`: a problem's difficulty from its structure alone (operators, how many columns
  carry or borrow, the answer's digits), never from a model's answers.
- `elicited_share`: of the problems the base misses greedily, those an arm now solves greedily
  ("gained"): their mean base pass@k (the share), against the same mean over problems of the same
  strata (the difficulty-matched null) and over all missed problems (the unmatched one).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from lamina.data import world
from lamina.rlp.evaluate import PROMPT_FORMATS, pass_at_k


def halves(n: int) -> tuple[list[int], list[int]]:
    """(choice, score): the odd and the even positions of n problems (a random draw, so a random split)."""
    return list(range(1, n, 2)), list(range(0, n, 2))


def mean_pass(counts: Sequence[int], samples: int, k: int) -> float:
    """The mean over problems of the unbiased pass@k from `samples` samples with `counts` correct."""
    return float(np.mean([pass_at_k(samples, int(c), k) for c in counts])) if len(counts) else math.nan


def choose_k(counts: Sequence[int], samples: int, target: float = 0.5) -> int:
    """The k in 1 ... samples whose mean pass@k over `counts` is closest to `target` (the smaller k on a tie)."""
    if samples < 1 or not len(counts):
        raise ValueError(f"choose_k: expected samples >= 1 and some problems, got {samples} and {len(counts)}")
    return min(range(1, samples + 1), key=lambda k: (abs(mean_pass(counts, samples, k) - target), k))


def accuracy_on(outcomes: Sequence[int], indices: Sequence[int]) -> float:
    return float(np.mean([outcomes[i] for i in indices])) if len(indices) else math.nan


def best_format(outcomes: dict[str, Sequence[int]], indices: Sequence[int]) -> str:
    """The format whose greedy accuracy over `indices` is highest (ties: the first in PROMPT_FORMATS)."""
    order = [f for f in PROMPT_FORMATS if f in outcomes] + [f for f in outcomes if f not in PROMPT_FORMATS]
    if not order:
        raise ValueError("best_format: no format scored")
    return max(order, key=lambda f: (accuracy_on(outcomes[f], indices), -order.index(f)))


OPERAND_OR_OPERATOR = re.compile(r"\d+|[+\-*]")


def arith_stratum(question: str) -> str:
    """A world arithmetic question's difficulty from its structure: its operators, how many column
    steps of its worked thought carry or borrow (lamina.data.world's own steps), and the digits of its
    answer, e.g. `+ 1 regrouping, 3-digit answer` for `Q: 47+58=?`."""
    body = question.removeprefix("Q: ").removesuffix("=?")
    parts = OPERAND_OR_OPERATOR.findall(body)
    if len(parts) < 3 or len(parts) % 2 == 0 or "".join(parts) != body:
        raise ValueError(f"arith_stratum: expected a world arithmetic question such as 'Q: 47+38=?', got {question!r}")
    value, ops, regroupings = int(parts[0]), [], 0
    for op, operand in zip(parts[1::2], parts[2::2]):
        steps = world.STEPS_BY_OP[op](value, int(operand))
        regroupings += sum(step.count("carry") + step.count("borrow") for step in steps)
        value = world.APPLY_OP[op](value, int(operand))
        ops.append(op)
    return f"{''.join(ops)} {regroupings} regrouping{'s' * (regroupings != 1)}, {len(str(value))}-digit answer"


def elicited_share(gained: Sequence[bool], reach: Sequence[float], strata: Sequence[Hashable]) -> dict:
    """Over the problems the base misses greedily (one entry each): `gained` (the arm now solves it
    greedily), `reach` (the base's pass@k on it), `strata` (its difficulty, arith_stratum).

    share: the mean reach over the gained problems; matched: the mean over the gained problems of
    their stratum's mean reach (all missed problems of that stratum, gained or not): the share were
    the arm's gains drawn within each stratum without regard to what the base reaches; unmatched: the
    mean reach over all missed problems. nan where nothing was gained."""
    if not (len(gained) == len(reach) == len(strata)):
        raise ValueError(f"elicited_share: expected one entry per problem, got {len(gained)}, {len(reach)}, {len(strata)}")
    by_stratum: dict[Hashable, list[float]] = defaultdict(list)
    for r, s in zip(reach, strata):
        by_stratum[s].append(float(r))
    stratum_mean = {s: float(np.mean(v)) for s, v in by_stratum.items()}
    picked = [i for i, g in enumerate(gained) if g]
    share = float(np.mean([reach[i] for i in picked])) if picked else math.nan
    matched = float(np.mean([stratum_mean[strata[i]] for i in picked])) if picked else math.nan
    unmatched = float(np.mean(reach)) if len(reach) else math.nan
    return {"share": share, "matched": matched, "unmatched": unmatched, "gained": len(picked), "missed": len(reach)}


__all__ = ["accuracy_on", "arith_stratum", "best_format", "choose_k", "elicited_share", "halves", "mean_pass"]
