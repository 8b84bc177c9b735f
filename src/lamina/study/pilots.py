"""Pilots: a power plan read before a claim runs, so that a preset spends its CPU where it buys verdicts.

configs/study/pilots.yaml holds, per preset and claim, the per-seed differences of the claim's primary
contrast in a finished study (its `source`). Before the study fits anything, `plan` asks of each
claim with a pilot the claim's own power question (lamina.study.report.power_gate, with the pilot's
seed-to-seed spread in place of the seeds at hand): can the planned seeds tell an effect of twice
the claim's margin from none, 80% of the time? A group of claims that share runs (a `Claim.group`)
is not run when every claim in it fails: each such claim's report says "not tested", the failed
`pilot-power` gate with the pilot's numbers, and the seeds the pilot says it would need. A group
with one claim that passes (or has no pilot) runs whole, each claim judged by its own gates.
`lamina study --run-underpowered` runs every claim whatever its pilot (to refresh a pilot, or for
the runs themselves). Rehearsals and presets without pilots run everything.

The file's format: `<preset>: {<claim>: {contrast, source, differences: {<seed>: <value>}}}`; the
contrast must be the claim's primary (`Claim.primary`), so a renamed primary cannot keep a stale
pilot. Bad input is one line naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from lamina.compare.stats import summarize
from lamina.errors import ConfigError
from lamina.study.claim import Claim, StudyContext
from lamina.study.report import ClaimResult, Gate, power_gate
from lamina.verdict import detectable

FILE = "pilots.yaml"  # under <configs>/study/
GATE = "pilot-power"
KEYS = ("contrast", "source", "differences")


@dataclass(frozen=True)
class Pilot:
    """A finished study's per-seed differences of one claim's primary contrast."""

    contrast: str
    source: str  # where the numbers come from (a results folder, its date and preset)
    differences: dict[int, float]


def read_pilots(path: Path) -> dict[str, dict[str, Pilot]]:
    """preset -> claim -> Pilot from the pilots file at `path` ({} where there is no file)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: expected a readable YAML file of pilots, got {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of presets to claims' pilots, got {type(data).__name__}")
    return {preset: {claim: pilot_of(path, f"{preset}.{claim}", entry) for claim, entry in mapping(path, preset,
                     claims).items()} for preset, claims in data.items()}


def mapping(path: Path, where: str, value) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where}: expected a mapping, got {value!r}")
    return value


def pilot_of(path: Path, where: str, entry) -> Pilot:
    entry = mapping(path, where, entry)
    unknown = [k for k in entry if k not in KEYS]
    missing = [k for k in KEYS if k not in entry]
    if unknown or missing:
        got = f"an unknown key {unknown[0]!r}" if unknown else f"no {missing[0]}"
        raise ConfigError(f"{path}: {where}: expected the keys {', '.join(KEYS)}, got {got}")
    for key in ("contrast", "source"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise ConfigError(f"{path}: {where}.{key}: expected a text, got {entry[key]!r}")
    differences = mapping(path, f"{where}.differences", entry["differences"])
    for seed, value in differences.items():
        if not (isinstance(seed, int) and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value)):
            raise ConfigError(f"{path}: {where}.differences: expected seed: finite number pairs, got "
                              f"{seed!r}: {value!r}")
    if len(differences) < 2:
        raise ConfigError(f"{path}: {where}.differences: expected two seeds or more (a seed-to-seed spread), "
                          f"got {len(differences)}")
    return Pilot(entry["contrast"], entry["source"], {int(s): float(v) for s, v in differences.items()})


def seeds_needed(pilot: Pilot, margin: float, most: int = 1000) -> int | None:
    """The fewest seeds whose detectable difference (80% power, two-sided 5%) is within `margin`
    at the pilot's spread (None: more than `most`)."""
    sd = summarize(list(pilot.differences.values())).std
    return next((n for n in range(2, most + 1) if detectable(sd, n) <= margin), None)


def pilot_gate(claim: Claim, pilot: Pilot, planned: int) -> Gate:
    """The claim's power question asked of its pilot for `planned` seeds."""
    if pilot.contrast != claim.primary:
        raise ConfigError(f"{FILE}: {claim.name}.contrast: expected the claim's primary contrast "
                          f"{claim.primary!r}, got {pilot.contrast!r}")
    gate = power_gate(GATE, f"can {planned} seed(s) tell a {pilot.contrast} of twice the margin from none "
                      f"(the pilot's seed-to-seed spread, 80% power, two-sided 5%)?", pilot.differences, claim.margin,
                      planned, source=f"the pilot: {pilot.source}")
    return gate if gate.passed else Gate(gate.name, gate.question, False, f"{gate.detail}; {reach(claim, pilot)}")


def reach(claim: Claim, pilot: Pilot) -> str:
    """How many seeds the pilot says would reach the claim's margin, in words."""
    needed = seeds_needed(pilot, claim.margin)
    return f"{f'about {needed}' if needed else 'more than 1000'} seeds would reach it"


@dataclass(frozen=True)
class Plan:
    """What a study runs: the claims to run, and each claim left out with its failed pilot gate and
    the seeds its pilot says would reach the margin (`reach`)."""

    run: list[str]
    not_run: dict[str, Gate]
    reach: dict[str, str]


def plan(claims: dict[str, Claim], names: list[str], preset: str, seeds: int, configs: Path,
         run_underpowered: bool = False, rehearse: bool = False) -> Plan:
    """Which of `names` run at `preset` with `seeds` seeds: a group whose every claim fails its
    pilot's power gate does not (module docstring)."""
    pilots = {} if run_underpowered or rehearse else read_pilots(Path(configs) / "study" / FILE).get(preset, {})
    failed = {}
    for name in names:
        if name in pilots and claims[name].margin is not None:
            gate = pilot_gate(claims[name], pilots[name], seeds)
            if not gate.passed:
                failed[name] = gate
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(claims[name].runs_with, []).append(name)
    idle = {name for group in groups.values() if all(n in failed for n in group) for name in group}
    left = [n for n in names if n in idle]
    return Plan([n for n in names if n not in idle], {n: failed[n] for n in left},
                {n: reach(claims[n], pilots[n]) for n in left})


def not_run_result(claim: Claim, ctx: StudyContext, gate: Gate, needed: str) -> ClaimResult:
    """The report of a claim its pilot left out: not tested, with the failed gate and its numbers
    (`needed`: the plan's `reach` of the claim)."""
    setup = {"preset": ctx.preset_text, "seeds planned": " ".join(map(str, ctx.seeds)),
             "runs": "none: not run (its pilot's power gate failed for every claim that shares its runs); "
                     "lamina study --run-underpowered runs it"}
    return ClaimResult(claim.name, claim.sentence, setup, list(ctx.seeds), gates=[gate], primary=claim.primary,
                       stopped=f"not run: by its pilot, {len(ctx.seeds)} seeds cannot tell its margin; {needed} "
                               f"(gate {gate.name})")


__all__ = ["FILE", "GATE", "Pilot", "Plan", "not_run_result", "pilot_gate", "plan", "reach", "read_pilots",
           "seeds_needed"]
