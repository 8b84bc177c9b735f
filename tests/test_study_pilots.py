"""lamina.study.pilots: the power plan read before a claim runs. The repository's pilots leave out, at
5 seeds of the cpu preset, the three claims the 2026-12-08 study could not power, and let them run
at the seeds they need; a group runs whole when one of its claims is powered; a claim left out
reports "not tested" with its pilot's numbers, and nothing is fitted for it; --run-underpowered and
the presets without pilots run everything; bad pilots are one line naming file and key."""

from __future__ import annotations

import json

import pytest

from lamina.errors import ConfigError
from lamina.study import CLAIMS, main
from lamina.study import pilots
from lamina.study.claim import Claim, repo_configs
from lamina.study.claims import elicitation, finetune_fragility, reasoning_in_pretraining
from lamina.study.report import ClaimResult
from lamina.verdict import NOT_TESTED, detectable

UNDERPOWERED = ["reasoning-in-pretraining", "elicitation", "finetune-fragility"]


def test_each_claim_names_its_primary_and_margin():
    for name, claim in CLAIMS.items():
        assert claim.primary and claim.margin and claim.margin > 0, name
    for module in (reasoning_in_pretraining, elicitation, finetune_fragility):
        assert module.CLAIM.primary == module.PRIMARY


def test_the_repositorys_pilots_name_each_claims_primary_and_leave_out_what_5_seeds_cannot_power():
    found = pilots.read_pilots(repo_configs() / "study" / pilots.FILE)
    assert set(found) == {"cpu"} and set(found["cpu"]) == set(UNDERPOWERED)
    for name, pilot in found["cpu"].items():
        assert pilot.contrast == CLAIMS[name].primary, name
    plan = pilots.plan(CLAIMS, list(CLAIMS), "cpu", 5, repo_configs())
    assert list(plan.not_run) == UNDERPOWERED
    assert plan.run == ["density-familiarity", "sparsify-difficulty", "hierarchy", "modularity", "context-vs-prior"]
    gate = plan.not_run["reasoning-in-pretraining"]
    assert gate.name == pilots.GATE and not gate.passed
    assert "sd of the per-seed differences 0.122 over 3 seed(s) (the pilot: bench/results/study-cpu-2026-12-08" in gate.detail
    assert "with 5 seeds" in gate.detail and "about 49 seeds would reach it" in gate.detail
    # the seeds a pilot names are enough, and one fewer is not
    for name in UNDERPOWERED:
        pilot, margin = found["cpu"][name], CLAIMS[name].margin
        n = pilots.seeds_needed(pilot, margin)
        assert pilots.pilot_gate(CLAIMS[name], pilot, n).passed
        assert not pilots.pilot_gate(CLAIMS[name], pilot, n - 1).passed
    # elicitation is powered at 13, so its group (reasoning-in-pretraining's runs) runs whole
    assert pilots.plan(CLAIMS, list(CLAIMS), "cpu", 13, repo_configs()).not_run == {}
    assert list(pilots.plan(CLAIMS, list(CLAIMS), "cpu", 10, repo_configs()).not_run) == UNDERPOWERED[:2]
    # no pilots at the other presets, nor with --run-underpowered or in a rehearsal
    for kwargs in ({"preset": "test"}, {"preset": "gpu"}, {"preset": "cpu", "run_underpowered": True},
                   {"preset": "cpu", "rehearse": True}):
        kwargs = {"run_underpowered": False, "rehearse": False, **kwargs}
        assert pilots.plan(CLAIMS, list(CLAIMS), kwargs["preset"], 5, repo_configs(), kwargs["run_underpowered"],
                           kwargs["rehearse"]).not_run == {}


def test_the_gate_is_the_power_question_on_the_pilots_spread():
    claim = Claim("c", "a sentence", run=None, primary="a − b", margin=0.05)
    pilot = pilots.Pilot("a − b", "made up", {1: 0.0, 2: 0.1, 3: -0.1})  # sd 0.1
    for n in (3, 10, 40):
        assert pilots.pilot_gate(claim, pilot, n).passed == (detectable(0.1, n) <= 0.05)
    assert pilots.seeds_needed(pilot, 0.05) == min(n for n in range(2, 100) if detectable(0.1, n) <= 0.05)
    with pytest.raises(ConfigError, match="c.contrast: expected the claim's primary contrast 'a − b', got 'old'"):
        pilots.pilot_gate(claim, pilots.Pilot("old", "made up", pilot.differences), 5)


def test_a_study_leaves_out_an_underpowered_group_fits_nothing_for_it_and_reports_not_tested(tmp_path, monkeypatch,
                                                                                           capsys):
    ran = []

    def fake_run_claim(args, name, seeds, unit=False):
        ran.append(name)
        return ClaimResult(name, CLAIMS[name].sentence, {}, seeds, primary=CLAIMS[name].primary)

    monkeypatch.setattr("lamina.study.command.run_claim", fake_run_claim)
    out = tmp_path / "study"
    results = main([*UNDERPOWERED, "context-vs-prior", "--seeds", "5", "--out", str(out), "--preset", "cpu"])
    assert ran == ["context-vs-prior"]
    for name in UNDERPOWERED:
        verdict = results[name].claim_verdict()
        assert verdict.verdict == NOT_TESTED and "seeds cannot tell its margin" in verdict.reason
        assert "(gate pilot-power)" in verdict.reason
        saved = json.loads((out / name / "result.json").read_text())
        assert saved["verdict"]["verdict"] == NOT_TESTED and saved["primary"] == CLAIMS[name].primary
        report = (out / name / "report.md").read_text()
        assert "pilot-power" in report and "would reach it" in report and "--run-underpowered" in report
    assert "study reasoning-in-pretraining: not run: gate pilot-power failed" in capsys.readouterr().out
    assert "finetune-fragility" in (out / "index.md").read_text()

    ran.clear()
    main([*UNDERPOWERED, "--seeds", "5", "--out", str(out), "--preset", "cpu", "--run-underpowered"])
    assert ran == UNDERPOWERED


@pytest.mark.parametrize("text, message", [
    ("cpu: [1]", r"cpu: expected a mapping, got \[1\]"),
    ("cpu: {elicitation: {contrast: x, source: y}}", "cpu.elicitation: expected the keys contrast, source, "
                                                      "differences, got no differences"),
    ("cpu: {elicitation: {contrast: x, source: y, differences: {1: 0.1, 2: 0.2}, sd: 3}}", "got an unknown key 'sd'"),
    ("cpu: {elicitation: {contrast: x, source: y, differences: {1: 0.1}}}", "expected two seeds or more"),
    ("cpu: {elicitation: {contrast: x, source: y, differences: {1: 0.1, 2: .nan}}}", "expected seed: finite number"),
    ("cpu: {elicitation: {contrast: '', source: y, differences: {1: 0.1, 2: 0.2}}}", "contrast: expected a text"),
    ("cpu: {a: [", "expected a readable YAML file of pilots"),
])
def test_a_bad_pilot_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "pilots.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        pilots.read_pilots(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert pilots.read_pilots(tmp_path / "none.yaml") == {}
