"""Claim `elicitation`: base models hold latent reasoning that RL elicits. Read off the runs of
`reasoning-in-pretraining` (lamina.study.rlp; reused when finished, trained when not).

Of the held-out problems the RLP arm solves greedily at the end of phase 2, the elicitation share
is the share the base (phase 2's step-0 model) already solved in its k samples (the mean of its
unbiased pass@k over them, lamina.rlp.elicitation_share). Its null: were RL's solutions drawn
without regard to what the base could reach, the share would be the base's mean pass@k over all
the problems. Elicitation predicts share − pass@k > 0. Problems RL solves are easier ones, which
the base also reaches more often, so the same share of next-token training at the same tokens is
reported beside it: RL's elicitation is what exceeds that.
"""

from __future__ import annotations

from dataclasses import replace

from lamina.study import rlp
from lamina.study.claim import Claim, StudyContext
from lamina.study.report import ClaimResult, Contrast
from lamina.verdict import Prediction

NAME = "elicitation"
# The primary contrast, named before any run (its name carries the k of the base's pass@k).
PRIMARY_PREFIX = "rlp share − base "
# The smallest effect of interest, fixed before any run: five points of share (of the problems RL
# solves greedily, 1 in 20 more of them within the base's reach than its pass@k gives). No run's noise.
SHARE_MARGIN = 0.05
SHARE_NOTE = ("margin 0.05: five points of share (1 in 20 of the problems RL solves greedily more within the base's "
              "reach than its pass@k gives)")
SENTENCE = (
    "Base models hold latent reasoning that RL elicits: the held-out problems RLP teaches the model to solve "
    "greedily are ones the base model already solved by sampling, more often than its pass@k alone gives."
)


def run(ctx: StudyContext) -> ClaimResult:
    inner = rlp.run(replace(ctx, claim=rlp.NAME))
    result = from_rlp(inner)
    result.setup["runs from"] = f"claim {rlp.NAME} (its report: {ctx.out / rlp.NAME / 'report.md'})"
    return result


def from_rlp(inner: ClaimResult) -> ClaimResult:
    """The elicitation claim's result from the reasoning-in-pretraining study's."""
    level = rlp.GATE_LEVEL
    base = inner.arms.get(rlp.BASE, {})
    passes = [m for m in base if m.startswith("pass@") and m.endswith(f"/level{level}")]
    pass_k = base[passes[0]] if passes else {}
    k = passes[0].split("/")[0] if passes else "pass@k"
    share = lambda arm: inner.arms.get(rlp.LABELS[arm], {}).get(f"elicitation/level{level}", {})  # noqa: E731
    result = ClaimResult(NAME, SENTENCE, dict(inner.setup), list(inner.seeds))
    result.gates = [g for g in inner.gates if g.name in ("base-thinks", "room-to-elicit")]
    needs = tuple(g.name for g in result.gates)
    result.arms = {
        rlp.BASE: {f"{k}/level{level}": pass_k},
        **{rlp.LABELS[arm]: {f"elicitation share/level{level}": share(arm)} for arm in rlp.ARMS if share(arm)},
    }
    result.primary = f"{PRIMARY_PREFIX}{k}"
    result.contrasts = [
        Contrast.paired(result.primary, f"level {level}: of the problems RLP solves greedily, the share the "
                        f"base reached in its samples, minus the base's {k} over all problems (the share were RL's "
                        "solutions unrelated to the base's reach)", share("rlp"), pass_k,
                        labels=("rlp share", f"base {k}"), prediction=Prediction(1, SHARE_MARGIN, SHARE_NOTE),
                        needs=needs, floor=0.0, ceiling=1.0),
        Contrast.paired("rlp share − ntp-tokens share", f"level {level}: the same share for RLP minus next-token "
                        "training on the same tokens (what the easiness of the solved problems gives alone)",
                        share("rlp"), share("ntp-tokens")),
        Contrast.paired("rlp share − shuffled-reward share", f"level {level}: RLP minus RLP with rewards shuffled",
                        share("rlp"), share("rlp-shuffled")),
    ]
    result.notes = [
        f"Numbers from the {rlp.NAME} study's evaluations: each arm's last thought evaluation (256 held-out problems "
        f"per level, greedy with a thought) against the base's samples at phase 2's step 0.",
    ]
    return result


CLAIM = Claim(NAME, SENTENCE, run, presets=rlp.CLAIM.presets, group=rlp.NAME)  # on the RLP study's runs, at its presets

__all__ = ["CLAIM", "NAME", "SENTENCE", "from_rlp", "run"]
