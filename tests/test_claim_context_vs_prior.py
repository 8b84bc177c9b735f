"""The context-vs-prior claim read end to end on built models (the GPTs of test_context, whose
answer is set by a prompt's last token): a context-blind model is not supported (its gates fail,
and with them forced open its override contrast is 0), though the old primary, follow 100 − 0,
would have called it supported; a model whose prior wins where it is strong is; a perfect reader
is not. Fast: no fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.instrument.context import context_scalars, context_vs_prior
from lamina.study import world_runs
from lamina.study.claim import StudyContext
from lamina.study.claims import context_vs_prior as claim
from lamina.study.runs import Run, RunSpec
from lamina.verdict import INCONCLUSIVE, NEGLIGIBLE, NOT_TESTED, SUPPORTED, decide

from test_context import built_gpt, exposure_probe

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = (1, 2, 3, 4, 5)
END = 1500


def measured(context_p, question_p, seed, twin_p=None) -> dict[str, float]:
    probe = exposure_probe(context_p, question_p, twin_p=twin_p, seed=seed)
    return context_scalars(context_vs_prior(built_gpt(), probe, batch_size=512, device="cpu", seed=seed))


def claim_result(tables: dict[int, dict[str, float]], tmp_path, monkeypatch):
    """The claim run on runs whose end-of-training scalars are `tables` (the model learns its text)."""
    runs = {s: {world_runs.ARM: Run(RunSpec(world_runs.ARM, (), s, END), tmp_path / f"seed{s}", trained=False)}
            for s in tables}
    series = {}
    for s, values in tables.items():
        curves = {tag: (np.array([END]), np.array([v])) for tag, v in values.items()}
        curves["val/bpb"] = (np.array([0, END]), np.array([8.0, 1.0]))
        series[str(tmp_path / f"seed{s}")] = curves
    monkeypatch.setattr(world_runs, "scalars", lambda run: series[str(run.folder)])
    monkeypatch.setattr(claim, "train", lambda ctx, arms=(world_runs.ARM,): (runs, world_runs.PRESETS["test"], 0.0))
    return claim.run(StudyContext(claim.NAME, tmp_path / "study", list(tables), "test", None, device="cpu"))


def primary(tables) -> dict[int, float]:
    return {s: t["eval/context/win/100"] - t["eval/context/win/0"] for s, t in tables.items()}


@pytest.fixture(scope="module")
def blind():
    # It scores by its prior alone: with the context it chooses as with the question alone, prompt by
    # prompt. Never-seen people: answer strings lean it 0.55-0.65 to the context's answer; seen 100
    # times: the prior, 0-4% of prompts aside. Seed by seed, other leanings.
    rng = np.random.default_rng(0)
    out = {}
    for s in SEEDS:
        lean = {"0": 0.55 + 0.1 * rng.random(), "100": 0.04 * rng.random()}
        out[s] = measured(lean, None, s, twin_p={"0": 0.9, "100": 0.9})
    return out


def test_a_context_blind_model_supports_nothing(blind, tmp_path, monkeypatch):
    for values in blind.values():
        assert values["eval/context/win/0"] == values["eval/context/win/100"] == 0.0
    # The old primary reads its prior strength as an override: "supported".
    old = {s: t["eval/context/follow/100"] - t["eval/context/follow/0"] for s, t in blind.items()}
    assert decide(old, sign=-1, margin=claim.FOLLOW_MARGIN).verdict == SUPPORTED
    # The override contrast, every gate forced open: 0 in every seed, nothing to support.
    assert decide(primary(blind), sign=-1, margin=claim.FOLLOW_MARGIN).verdict == NOT_TESTED  # zero variance
    # Through the claim: it does not read its context (no more with it than without), so not tested.
    result = claim_result(blind, tmp_path, monkeypatch)
    gates = {g.name: g.passed for g in result.gates}
    assert gates["reads-context"] is False and gates["knows-priors"] is True and gates["steering-vector"] is False
    assert result.claim_verdict().verdict == NOT_TESTED
    assert SUPPORTED not in {v.verdict for v in result.verdicts().values() if v is not None}


def test_a_model_whose_context_choices_are_noise_supports_nothing():
    # The context moves choices at random: other prompts than the question alone, a share off by a
    # point or two either way.
    rng = np.random.default_rng(1)
    tables = {}
    for s in SEEDS:
        lean = {"0": 0.55 + 0.1 * rng.random(), "100": 0.04 + 0.04 * rng.random()}
        jiggled = {b: v + rng.choice([-0.02, 0.02]) for b, v in lean.items()}
        tables[s] = measured(jiggled, lean, s)
    verdict = decide(primary(tables), sign=-1, margin=claim.FOLLOW_MARGIN)
    assert verdict.verdict in (NEGLIGIBLE, INCONCLUSIVE), verdict


def test_a_prior_that_wins_where_it_is_strong_is_supported_and_a_perfect_reader_is_not(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    overridden, reader = {}, {}
    for s in SEEDS:
        # Without a context: never-seen people a coin, people seen 100 times their prior. With it: the
        # context read on never-seen people; at exposure 100 it wins a quarter of the time, or always.
        question = {"0": 0.45 + 0.1 * rng.random(), "100": 0.02 * rng.random()}
        overridden[s] = measured({"0": 1.0, "100": 0.2 + 0.1 * rng.random()}, question, s,
                                 twin_p={"0": 1.0, "100": 1.0})
        reader[s] = measured({"0": 1.0, "100": 1.0}, question, s)
    result = claim_result(overridden, tmp_path / "a", monkeypatch)
    assert all(g.passed for g in result.gates), [(g.name, g.detail) for g in result.gates if not g.passed]
    assert result.claim_verdict().verdict == SUPPORTED
    verdicts = result.verdicts()
    # The built vector turns every held-out prompt of exposure 100 to the context: the secondaries hold.
    assert verdicts["steering gain at exposure 100"].verdict == SUPPORTED
    assert verdicts["steered − random vector at exposure 100"].verdict in (SUPPORTED, INCONCLUSIVE)
    assert math.isclose(np.mean([t["eval/context/steer_heldout_n"] for t in overridden.values()]), 256)
    # Reading every context: the win is 1 in both bins, no override.
    assert decide(primary(reader), sign=-1, margin=claim.FOLLOW_MARGIN).verdict == NOT_TESTED  # 0 every seed
    assert all(abs(d) < 1e-12 for d in primary(reader).values())
