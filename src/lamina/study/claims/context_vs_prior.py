"""Claim `context-vs-prior`: strong priors override context: a fact the model has seen often is
followed less when the context contradicts it than a fact it has rarely seen, and a steering vector
moves it back toward the context.

Read off the shared world-v2 run (lamina.study.world_runs): the context instrument's numbers on
counterfactual prompts by exposure bin (lamina.instrument.context): each prompt's context states
another value of a roster person's fact, and both answers (the context's, the memorised one) are
scored with the context and with the question alone. The roster is dealt into exposure bins per
data seed (lamina.data.world.exposure_roster), so the interval over seeds covers which people are
seen often; the prompts take the bins and each bin's people in turn (`instrument.context.prompts:
2048` gives 512 a bin, the gates' minimum).

Primary (fixed before any run): **override**, not prior strength. `win/<bin>` = (follow with the
context − follow with the question alone) / (1 − follow with the question alone): of the prompts
that the prior alone does not already answer the context's way, the share (net of the prompts the
context turns the other way) the context wins. The contrast is win at exposure 100 − win at
exposure 0 (predicted < 0). Why not follow at 100 − follow at 0 (the old primary): a model that
ignores its context follows at the rate its prior gives (near 0 for a fact seen 100 times, near
0.5 for a never-seen person's coin of answer strings), so that contrast is about −0.5 with no
override at all; it measures prior strength. Why the ratio and not the plain pull (with − without
the context): the pull has 1 − no-context follow to gain, about 1 at exposure 100 and 0.5 at
exposure 0, so a model that reads every context perfectly would show a larger pull at 100 and be
read as the opposite of an override for the headroom alone; the ratio is 1 for it in both bins (the
contrast 0: no override). A context-blind model, noisy or not, has win 0 in both bins (noise
symmetric around the prior moves it toward 0.5, which at exposure 100 raises win: away from the
prediction), so it cannot be read as supporting the claim; a model whose prior wins where it is
strong has win(100) < win(0).

Margin: FOLLOW_MARGIN (0.05) for every share: five points, about 1 in 20 prompts answered the other
way. Fixed here; no run's noise.

Secondary: the contrastive steering vector (consistent − counterfactual contexts, ActAdd/CAA-style;
layer and sign chosen on the fitting people, a sweep of strengths 1, 4, 16) on held-out people of
exposure 100 (≥ 256 prompts): steered − unsteered, and steered − a random direction of the same
norm, at the strength chosen on the fitting half. Descriptive: the sweep at each strength, follow
100 − follow 0 (prior strength and override together), the log-odds shift 100 − 0.

Gates: the model learns its text; it reads its context (lamina.gates.reads_context_gate: on
exposure-0 people, follow above 0.5 and above the step-0 rate, and above the no-context baseline,
on ≥ 512 prompts); it knows its priors (lamina.gates.knows_priors_gate: without a context, the
memorised answer preferred at exposure 100 above 0.5 and above never-seen people's rate, on ≥ 512
prompts); for the steering rows, a vector was fitted (only once the model reads its context), its
norm is above the one-population null and it was read on ≥ 256 held-out prompts.
"""

from __future__ import annotations

import math
import time

from lamina import tags
from lamina.gates import knows_priors_gate, reads_context_gate
from lamina.instrument.context import STRENGTHS
from lamina.study.claim import Claim, StudyContext
from lamina.study.report import ClaimResult, Contrast, Figure, Gate
from lamina.study.world_runs import ARM, at, capability_gate, has_values, per_seed, runs_gate, setup, train
from lamina.verdict import Prediction

NAME = "context-vs-prior"
SENTENCE = (
    "Strong priors override context: a fact the model has seen often is followed less when the context "
    "contradicts it than a fact it has rarely seen, and a steering vector moves it back toward the context."
)
PRIMARY = "override: context's win, exposure 100 − exposure 0"
# Follow rates are shares of prompts: five points (about 1 in 20 prompts answered the other way) is the
# smallest change of interest. Fixed here, before any run; no run's noise.
FOLLOW_MARGIN = 0.05
FOLLOW_MARGIN_NOTE = "margin 0.05: five points of a share of prompts (about 1 in 20 answered the other way)"
MIN_STEERED = 256  # held-out prompts of exposure 100 the steering is read on


def steering_gate(runs) -> Gate:
    """A vector was fitted (the model read its context), its norm stands above the one-population
    null, and it was read on at least MIN_STEERED held-out prompts, every seed."""
    rows, passed = [], True
    for seed, by_arm in sorted(runs.items()):
        run = by_arm[ARM]
        layer, norm, null = (at(run, tags.context(t)) for t in ("steer_layer", "steer_norm", "steer_norm_null"))
        n = at(run, tags.context("steer_heldout_n"))
        ok = (math.isfinite(layer) and layer >= 0 and math.isfinite(null) and norm > null
              and math.isfinite(n) and n >= MIN_STEERED)
        passed &= ok
        rows.append(f"seed {seed}: no vector (the context was not read, or no layer moved it)" if not layer >= 0
                    else f"seed {seed}: norm {norm:.3f} vs null {null:.3f}, {n:.0f} held-out prompts")
    return Gate("steering-vector", "is there a direction to steer along: a contrastive vector fitted (the model read "
                "its context), its norm above the norm of a mean of paired differences drawn from one population "
                f"(`steer_norm_null`), read on >= {MIN_STEERED} held-out prompts of exposure 100, every seed?",
                passed, "; ".join(rows))


def run(ctx: StudyContext) -> ClaimResult:
    started = time.perf_counter()
    runs, preset, seconds = train(ctx)
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds))
    value = lambda stat, bin=None, strength=None: per_seed(  # noqa: E731
        runs, lambda r: at(r, tags.context(stat, bin, strength)))
    bins = [b for b in ("0", "1", "10", "100") if has_values(value("follow", b))]
    result.gates = [
        runs_gate(runs),
        capability_gate(runs, reads_context_gate, "reads-context",
                        "does the model read its context: on counterfactual contexts about people it has never seen "
                        "(exposure bin 0, no prior to override), does it prefer the context's answer beyond the "
                        "forced choice's chance, beyond the untrained network's rate at step 0 and beyond what it "
                        "prefers from the question alone (follow/0 Wilson lower bound > 0.5 and > the step-0 rate, "
                        "pull/0 lower bound > 0, on >= 512 prompts), every seed?"),
        capability_gate(runs, knows_priors_gate, "knows-priors",
                        "without a contradicting context (the question alone), does the model prefer the memorised "
                        "answer for people seen 100 times (nocontext_prior/100 Wilson lower bound > 0.5 and > the "
                        "share for never-seen people, on >= 512 prompts), every seed?"),
        steering_gate(runs),
    ]
    result.arms[ARM] = {
        **{f"win/{b}": value("win", b) for b in bins},
        **{f"follow/{b}": value("follow", b) for b in bins},
        **{f"follow without context/{b}": value("nocontext_follow", b) for b in bins},
        **{f"prior without context/{b}": value("nocontext_prior", b) for b in bins},
        **{f"pull/{b}": value("pull", b) for b in bins},
        **{f"shift/{b}": value("shift", b) for b in bins},
        **{f"prompts/{b}": value("n", b) for b in bins},
        "follow held-out/100": value("follow_heldout", "100"),
        **{f"follow steered s{s:g}/100": value("follow_steered", "100", s) for s in STRENGTHS},
        **{f"follow steered random s{s:g}/100": value("follow_steered_random", "100", s) for s in STRENGTHS},
        "steer strength": value("steer_strength"),
        "steer layer": value("steer_layer"),
        "steer norm": value("steer_norm"),
        "steer norm null": value("steer_norm_null"),
        "steered held-out prompts": value("steer_heldout_n"),
    }
    needs = ("learns-the-text", "reads-context", "knows-priors")
    steer_needs = needs + ("steering-vector",)
    result.primary = PRIMARY
    lower, higher = Prediction(-1, FOLLOW_MARGIN, FOLLOW_MARGIN_NOTE), Prediction(1, FOLLOW_MARGIN, FOLLOW_MARGIN_NOTE)
    result.contrasts = [
        Contrast.paired(PRIMARY, "of the prompts the question alone leaves to the context, the share (net) the "
                        "context wins, people seen 100x minus never-seen people (bin 0): (follow with − without the "
                        "context) / (1 − follow without it), per bin", value("win", "100"), value("win", "0"),
                        prediction=lower, needs=needs),
        Contrast.paired("steering gain at exposure 100", "follow rate with the contrastive vector added minus "
                        "without, on held-out people's prompts, at the strength chosen on the fitting people",
                        value("steer_gain", "100"), prediction=higher, needs=steer_needs),
        Contrast.paired("steered − random vector at exposure 100", "the vector against a random direction of the "
                        "same norm at the same layer and strength, the same held-out prompts",
                        value("steer_vs_random", "100"), prediction=higher, needs=steer_needs),
        *[Contrast.paired(f"steered − random, strength {s:g}", "descriptive: the sweep (the secondary reads the "
                          "strength chosen on the fitting half)", value("steer_vs_random", "100", s))
          for s in STRENGTHS],
        Contrast.paired("follow: exposure 100 − exposure 0", "descriptive: prior strength and override together (a "
                        "model that ignores its context gives about −0.5 here)", value("follow", "100"),
                        value("follow", "0")),
        Contrast.paired("log-odds shift: exposure 100 − exposure 0", "descriptive: the mean change the context "
                        "brings to log p(context's answer) − log p(memorised one), in nats", value("shift", "100"),
                        value("shift", "0")),
    ]
    series = {"with context": [value("follow", b) for b in bins],
              "question alone": [value("nocontext_follow", b) for b in bins],
              "context's win": [value("win", b) for b in bins]}
    sweep = [f"s{s:g}" for s in STRENGTHS]
    result.figures = [
        Figure("follow_by_exposure", "Follow rate (answer from the context) by exposure bin, with the context and "
               "with the question alone, and the context's win", "exposure bin", "share", bins, series, kind="bar"),
        Figure("steering_sweep", "Held-out exposure-100 prompts: follow rate steered along the vector and along a "
               "random direction of its norm, by strength", "strength", "follow rate", sweep,
               {"vector": [value("follow_steered", "100", s) for s in STRENGTHS],
                "random direction": [value("follow_steered_random", "100", s) for s in STRENGTHS]},
               {"unsteered": [value("follow_heldout", "100") for _ in STRENGTHS]}),
    ]
    result.notes = [
        "Counterfactual prompts (lamina.instrument.context): a context states an attribute of a roster person that "
        "contradicts the bios the model was trained on; follow = the context's answer scores above the memorised "
        "one; the same two answers are scored after the question alone (`nocontext_follow`, `nocontext_prior`). "
        "win = (follow − nocontext_follow) / (1 − nocontext_follow): a model that ignores its context has 0.",
        "Steering: the mean over pairs of the residual with a consistent context (stating the true value) minus "
        "with the counterfactual one, at the last prompt position, fitted on half of each bin's people; layer and "
        f"sign chosen on the fitting people of exposure 100 over strengths {', '.join(f'{s:g}' for s in STRENGTHS)}; "
        "read on the other people's prompts against a random direction of the same norm. Fitted only when the model "
        "reads its context in that measurement.",
    ]
    result.setup = setup(ctx, preset, runs, seconds, started)
    return result


CLAIM = Claim(NAME, SENTENCE, run, group=ARM, primary=PRIMARY, margin=FOLLOW_MARGIN)
