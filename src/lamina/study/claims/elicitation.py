"""Claim `elicitation`: base models hold latent reasoning that RL elicits. Read off the runs and the
evaluations of `reasoning-in-pretraining` (lamina.study.claims.reasoning_in_pretraining; reused when finished, trained when not):
the base is the phase-1 model, the RL model the `rlp` arm at the end of phase 2, both scored greedily
in every prompt format on the seed's held-out problems (drawn per seed, none in either phase's text),
the base also sampled n times a problem at temperature 1 in its best thinking format (n: the preset's
`samples`, 16 at the cpu preset).

Design, per seed (lamina.rlp.elicitation has each piece):

1. The problems' odd positions are the *choice* half, the even ones the *score* half. On the choice
   half: each model's prompt format (its best greedy accuracy there), and the k of pass@k, the one
   whose mean unbiased pass@k (Chen et al. 2021, eq. 1, from n samples with c correct) over those
   problems is closest to 0.5: there a problem's pass@k best tells one the base can reach from one
   it cannot (at k = n nearly every problem is reached, at k = 1 few are). Choosing k on the
   problems scored would bend the contrast toward whatever k suits them; the other half cannot.
2. On the score half: the problems the base misses greedily (in its format), and among them those
   the RL model now solves greedily (in its format): the **gained** problems.
3. The **share**: the mean base pass@k over the gained problems (how often the base already reached
   them by sampling). The **difficulty-matched null**: the mean, over the gained problems, of the mean
   pass@k of all missed problems of the same difficulty stratum (lamina.rlp.elicitation.arith_stratum:
   operators, carrying or borrowing columns, answer digits): what the share would be were RL's gains
   drawn within each stratum without regard to what the base reaches. Problems RL solves are easier
   ones, which the base also reaches more often; matching on difficulty takes that out, where the
   unmatched null (the mean pass@k over all missed problems, the 2026-12-01 design) leaves it in. The
   strata come from the problems' structure, never from the base's answers: matched on the base's
   own pass rate, the null would be the share itself, by construction.

Primary: `rlp: share − matched null` (> 0: RL's gains are the problems the base reached, beyond their
difficulty), margin SHARE_MARGIN. Secondary (Holm): `rlp − shuffled: share above the matched null`
(the same excess beyond RLP with shuffled rewards, whose updates move the model as far without
information: near-threshold problems flip under any perturbation). Descriptive: matched − unmatched
null (what easiness alone gives), and each other arm's excess.

Gates: `base-in-range` (every seed: the chosen k's mean pass@k on the choice half within
K_RANGE of 0.5; a base at chance reaches nothing even at k = n, one at the ceiling everything at
k = 1, and then the share cannot tell anything: not tested, with which end); `rl-improved` (RL's
score minus the base's, the reasoning-in-pretraining primary: its 95% interval over seeds lies above
0; else RL elicited nothing and the claim is not tested); `power` (the primary's seed-to-seed spread
against the margin, lamina.study.report.power_gate).
"""

from __future__ import annotations

import math
from dataclasses import replace

from lamina.compare.stats import summarize
from lamina.rlp.elicitation import arith_stratum, best_format, choose_k, elicited_share, halves, mean_pass
from lamina.rlp.evaluate import pass_at_k
from lamina.study.claims import reasoning_in_pretraining as rlp
from lamina.study.claim import Claim, StudyContext
from lamina.study.report import ClaimResult, Contrast, Gate, PerSeed, every_seed_gate
from lamina.study.report import power_gate as power_gate_of
from lamina.verdict import POWER, Prediction

NAME = "elicitation"
PRIMARY = "rlp: share − matched null"
# The smallest effect of interest, fixed before any run: five points of pass@k, a tenth of the base's
# mean pass@k at the chosen k (0.5 by that choice). No run's noise.
SHARE_MARGIN = 0.05
SHARE_NOTE = ("margin 0.05: five points of the base's pass@k, a tenth of its mean pass@k (0.5 at the k chosen)")
K_TARGET = 0.5
K_RANGE = 0.2  # base-in-range: the chosen k's mean pass@k on the choice half within 0.5 ± 0.2
SENTENCE = (
    "Base models hold latent reasoning that RL elicits: the held-out problems RLP teaches the model to solve "
    "greedily, of those the base missed greedily, are ones the base already reached by sampling, more often than "
    "problems of the same difficulty."
)
ARMS = ("rlp", "rlp-shuffled", "rlp-paper", "ntp-tokens", "ntp-flops")


def seed_elicitation(numbers: dict) -> dict:
    """One seed's numbers (lamina.study.rlp_evaluation.seed_numbers) read for elicitation: the k, the base's
    pass@1, pass@k and pass@n on the choice half, and per arm elicited_share() on the score half."""
    samples = numbers.get("samples") or {}
    counts, n = samples.get("counts") or [], int(samples.get("n") or 0)
    outcomes, questions = numbers["outcomes"], numbers["questions"]
    if not counts or rlp.BASE not in outcomes:
        return {}
    choice, scored = halves(len(counts))
    k = choose_k([counts[i] for i in choice], n, K_TARGET)
    out = {"k": k, "n": n, **{f"choice pass@{label}": mean_pass([counts[i] for i in choice], n, kk)
                                for label, kk in (("1", 1), ("k", k), ("n", n))}}
    base = outcomes[rlp.BASE][best_format(outcomes[rlp.BASE], choice)]
    missed = [i for i in scored if not base[i]]
    reach = [pass_at_k(n, counts[i], k) for i in missed]
    strata = [arith_stratum(questions[i]) for i in missed]
    out["score pass@k"] = mean_pass([counts[i] for i in scored], n, k)
    out["arms"] = {}
    for arm in ARMS:
        if outcomes.get(arm):
            solved = outcomes[arm][best_format(outcomes[arm], choice)]
            out["arms"][arm] = elicited_share([bool(solved[i]) for i in missed], reach, strata)
    return out


def range_gate(read: dict[int, dict]) -> Gate:
    """base-in-range: every seed's chosen k gives a mean pass@k within K_RANGE of K_TARGET on the choice half."""
    def check(r: dict) -> tuple[bool, str]:
        value, ok = r["choice pass@k"], abs(r["choice pass@k"] - K_TARGET) <= K_RANGE
        why = "" if ok else (f": at a ceiling, pass@1 already {r['choice pass@1']:.3f}" if value > K_TARGET else
                             f": near chance, pass@{r['n']} only {r['choice pass@n']:.3f}")
        return ok, (f"k {r['k']}, pass@{r['k']} {value:.3f} on the choice half (pass@1 {r['choice pass@1']:.3f}, "
                    f"pass@{r['n']} {r['choice pass@n']:.3f}){why}")

    return every_seed_gate("base-in-range", f"does some k of the base's samples give a mean pass@k within {K_TARGET} "
                           f"± {K_RANGE} on the choice half (neither at chance nor at the ceiling), every seed?", read,
                           check, "no samples of the base")


def improved_gate(differences: PerSeed) -> Gate:
    """rl-improved: the 95% interval over seeds of RL's score minus the base's lies above 0."""
    st = summarize([differences[s] for s in sorted(differences)])
    question = ("did RL improve greedy accuracy over the base (rlp − base, each in its best format: its 95% "
                "interval over seeds above 0; else RL elicited nothing)?")
    if st.n < 2 or st.lo is None or not math.isfinite(st.lo):
        return Gate("rl-improved", question, False, f"no interval over seeds ({st.n} seed(s) with a value)")
    return Gate("rl-improved", question, st.lo > 0,
                f"rlp − base {st.mean:+.3f} [{st.lo:+.3f}, {st.hi:+.3f}] over {st.n} seeds")


def arm_values(read: dict[int, dict], arm: str, key: str) -> PerSeed:
    out = {}
    for s, r in read.items():
        value = r.get("arms", {}).get(arm, {}).get(key)
        if value is not None:
            out[s] = value  # nan where the arm gained nothing: the seed drops out, named
    return out


def excess(read: dict[int, dict], arm: str) -> PerSeed:
    share, matched = arm_values(read, arm, "share"), arm_values(read, arm, "matched")
    return {s: share[s] - matched[s] for s in share if s in matched}


def from_rlp(inner: ClaimResult, numbers: dict[int, dict]) -> ClaimResult:
    """The elicitation claim's result from the reasoning-in-pretraining study's result and numbers."""
    read = {s: seed_elicitation(v) for s, v in numbers.items()}
    result = ClaimResult(NAME, SENTENCE, dict(inner.setup), list(inner.seeds), primary=PRIMARY)
    rl_minus_base = next((c.per_seed for c in inner.contrasts if c.name == rlp.PRIMARY), {})
    primary = excess(read, "rlp")
    result.gates = [range_gate(read), improved_gate(rl_minus_base),
                    power_gate_of("power", f"can {len(inner.seeds)} seed(s) tell a share − matched null of twice the "
                                  f"margin from none (seed-to-seed spread, {POWER:.0%} power, two-sided 5%)?",
                                  primary, SHARE_MARGIN, len(inner.seeds))]
    needs = tuple(g.name for g in result.gates)
    result.arms = {rlp.LABELS[rlp.BASE]: {
        "k (chosen on the choice half)": {s: float(r["k"]) for s, r in read.items() if r},
        "pass@k (choice half)": {s: r["choice pass@k"] for s, r in read.items() if r},
        "pass@k (score half)": {s: r["score pass@k"] for s, r in read.items() if r},
    }}
    for arm in ARMS:
        metrics = {f"{key} (gained problems)": arm_values(read, arm, key) for key in ("share", "matched", "unmatched")}
        metrics["gained problems"] = {s: float(v) for s, v in arm_values(read, arm, "gained").items()}
        metrics["missed by the base"] = {s: float(v) for s, v in arm_values(read, arm, "missed").items()}
        if any(metrics.values()):
            result.arms[rlp.LABELS[arm]] = metrics
    prediction = Prediction(1, SHARE_MARGIN, SHARE_NOTE)
    share, matched = arm_values(read, "rlp", "share"), arm_values(read, "rlp", "matched")
    result.contrasts = [
        Contrast.paired(PRIMARY, "of the scored problems the base missed greedily, those RLP now solves greedily: "
                        "the base's mean pass@k over them minus the same mean over problems of their difficulty "
                        "strata (what the share would be were RL's gains blind to the base's reach)",
                        share, matched, labels=("share", "matched null"), prediction=prediction, needs=needs,
                        floor=0.0, ceiling=1.0),
        Contrast.paired("rlp − shuffled: share above the matched null", "the same excess for RLP minus RLP with "
                        "shuffled rewards (as many updates, no information in them)", primary,
                        excess(read, "rlp-shuffled"), labels=("rlp", "rlp-shuffled"), prediction=prediction,
                        needs=needs),
        Contrast.paired("rlp: matched − unmatched null", "what the easiness of the gained problems gives alone: "
                        "the matched null minus the mean pass@k over every missed problem", matched,
                        arm_values(read, "rlp", "unmatched"), labels=("matched null", "unmatched null")),
    ]
    result.contrasts += [Contrast.paired(f"{arm}: share − matched null", "the same excess for another arm",
                                         excess(read, arm), labels=(arm, "")) for arm in ARMS
                         if arm not in ("rlp", "rlp-shuffled")]
    result.notes = [
        f"Numbers from the {rlp.NAME} study's evaluations (its report: {rlp.NAME}/report.md): the base is the "
        "phase-1 model, the arms are phase 2's last checkpoints, each greedy in its best prompt format (chosen on the "
        "choice half); the base's samples are in its best thinking format.",
        "k per seed (chosen on the choice half): " + ", ".join(
            f"seed {s}: {r['k']}" if r else f"seed {s}: none" for s, r in sorted(read.items())),
    ]
    return result


def run(ctx: StudyContext) -> ClaimResult:
    inner, numbers = rlp.study(replace(ctx, claim=rlp.NAME))
    result = from_rlp(inner, numbers)
    result.setup["runs from"] = f"claim {rlp.NAME} (its report: {ctx.out / rlp.NAME / 'report.md'})"
    return result


CLAIM = Claim(NAME, SENTENCE, run, presets=rlp.CLAIM.presets, group=rlp.NAME, primary=PRIMARY,
              margin=SHARE_MARGIN)  # on the RLP study's runs, at its presets

__all__ = ["CLAIM", "NAME", "PRIMARY", "SENTENCE", "from_rlp", "range_gate", "run", "seed_elicitation"]
