"""The finetune-fragility claim's design on built cases: its gates and its floor fail where they
must (every arm at chance; an untrained base; nothing fine-tuned, so nothing to restore), and a
planted effect is found (proxy tuning that keeps what fine-tuning loses)."""

from __future__ import annotations

import copy
import random

import torch

from lamina.data.tokenizer import byte_tokenizer
from lamina.finetune.drift import DriftMeter
from lamina.finetune.retention import RetentionSuite, held_out_seed, task_chance, token_budget
from lamina.model import GPT, GPTConfig
from lamina.study.claims import finetune_fragility as ft
from lamina.study.evaluation import arith_items
from lamina.study.finetune_evaluation import ARMS, score_arms
from lamina.study.report import ClaimResult
from lamina.verdict import NOT_TESTED, SUPPORTED, decide

EOT = 256


def acc(value: float, chance: float, n: int = 178) -> dict:
    """Accuracy numbers as evaluate_seed writes them (a Wilson-like band of ±0.07)."""
    return {"value": value, "lo": max(0.0, value - 0.07), "hi": min(1.0, value + 0.07), "n": n,
            "correct": round(n * value), "chance": chance}


def built_numbers(rng: random.Random, facts: dict[str, float], task: dict[str, float], spread: float = 0.01) -> dict:
    """One seed's numbers: each arm's one- and two-hop forced-choice accuracy around `facts[arm]`
    (default 0.7), its arithmetic around `task[arm]` (default 0.4), four layers of drift."""
    def near(x: float) -> float:
        return min(1.0, max(0.0, x + rng.gauss(0, spread)))

    accuracy = {}
    for arm in ARMS:
        level = near(task.get(arm, 0.4))
        accuracy[arm] = {"facts/one_hop": acc(near(facts.get(arm, 0.7)), 0.10),
                         "facts/two_hop": acc(near(facts.get(arm, 0.7)), 0.17, 125),
                         "arith": acc(level, 0.1, 100), "arith/level1": acc(level, 0.1, 100)}
    drift = {arm: {} for arm in ("finetuned-base", "continued-base")}
    for i in range(4):
        for arm in drift:
            drift[arm][f"drift/layer{i}/cka"] = 1 - 0.1 * (i + 1) + rng.gauss(0, 0.01)
            drift[arm][f"drift/layer{i}/weights"] = 0.2 + rng.gauss(0, 0.01)
    return {"accuracy": accuracy, "drift": drift, "levels": [1], "training_problems": 100,
            "arith_items": {"1": {"items": 100, "drawn": 100, "held_out": False}}}


def judged(numbers: dict[int, dict]) -> tuple[ClaimResult, dict]:
    result = ClaimResult(ft.NAME, ft.SENTENCE, {}, sorted(numbers))
    ft.assemble(result, numbers, len(numbers))
    return result, {name: v for name, v in result.verdicts().items() if v is not None}


UNTUNED = {"base": 0.0, "small": 0.0, "continued-base": 0.0}  # the task: only tuning brings it


def test_a_planted_effect_is_supported_and_its_absence_is_not():
    rng = random.Random(1)
    # proxy tuning keeps the base's facts, fine-tuning loses a third of them; restoring the lower
    # blocks brings them back, the upper ones do not
    kept = {"base": 0.75, "finetuned-base": 0.45, "restored-lower": 0.7, "restored-upper": 0.45}
    numbers = {s: built_numbers(rng, kept, UNTUNED) for s in range(1, 6)}
    result, verdicts = judged(numbers)
    assert all(g.passed for g in result.gates), [g for g in result.gates if not g.passed]
    assert verdicts[ft.PRIMARY].verdict == SUPPORTED and verdicts[ft.RESTORE].verdict == SUPPORTED
    assert verdicts["retention two-hop: proxy − finetuned"].verdict == SUPPORTED
    # every arm keeps the same facts: nothing is supported (and nothing is lost to restore)
    for draw in range(5):
        numbers = {s: built_numbers(rng, {}, UNTUNED) for s in range(1, 6)}
        result, verdicts = judged(numbers)
        assert SUPPORTED not in {v.verdict for v in verdicts.values()}, (draw, verdicts)
        assert verdicts[ft.PRIMARY].verdict != NOT_TESTED  # read, and found negligible
        assert not result.gate_map["finetuning-forgets"].passed and verdicts[ft.RESTORE].verdict == NOT_TESTED


def test_every_arm_at_chance_is_not_tested_whatever_the_interval():
    rng = random.Random(2)
    # the 2026-12-01 design's outcome: every tuned arm at (or below) chance in every seed, the base
    # still knowing its facts and both tunings learning the task
    floor = {"finetuned-base": 0.05, "proxy-base": 0.08, "restored-lower": 0.06, "restored-upper": 0.04}
    numbers = {s: built_numbers(rng, floor, UNTUNED, spread=0.015) for s in range(1, 6)}
    for s in numbers:  # never above chance (0.10 one-hop, 0.17 two-hop)
        for arm in floor:
            for fact, chance in (("facts/one_hop", 0.10), ("facts/two_hop", 0.17)):
                numbers[s]["accuracy"][arm][fact]["value"] = min(numbers[s]["accuracy"][arm][fact]["value"], chance)
    result, verdicts = judged(numbers)
    assert result.gate_map["finetuning-learns-task"].passed and result.gate_map["base-knows-one-hop"].passed
    for name in (ft.PRIMARY, "retention two-hop: proxy − finetuned", ft.RESTORE):
        assert verdicts[name].verdict == NOT_TESTED and "a floor" in verdicts[name].reason, verdicts[name]
    assert result.claim_verdict().verdict == NOT_TESTED
    # at the top of the scale: a ceiling, not "no difference"
    top = {s: built_numbers(rng, {a: 1.0 for a in ARMS}, UNTUNED, spread=0.0) for s in range(1, 4)}
    _, verdicts = judged(top)
    assert verdicts[ft.PRIMARY].verdict == NOT_TESTED and "a ceiling" in verdicts[ft.PRIMARY].reason


def tiny_gpt(seed: int, n_layer: int) -> GPT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(GPTConfig(vocab_size=259, block_size=128, n_layer=n_layer, n_head=2, n_embd=16)).eval()


def untouched_seed(seed: int) -> dict:
    """A seed where nothing was fine-tuned: every tuned arm is its untuned model, weight for weight
    (and the base an untrained network), scored by the study's own evaluation."""
    base, small = tiny_gpt(seed, 2), tiny_gpt(100 + seed, 1)
    models = {"base": base, "small": small, "finetuned-small": copy.deepcopy(small),
              "finetuned-base": copy.deepcopy(base), "continued-base": copy.deepcopy(base)}
    tok = byte_tokenizer()
    suite = RetentionSuite(tok, held_out_seed(seed), items=4)
    items, _ = arith_items(seed, 1, 5, set())
    suite.sets["arith/level1"], suite.chance["arith/level1"] = items, task_chance(items)
    suite.budgets["arith/level1"] = token_budget(items, tok)
    accuracy = score_arms(models, suite, EOT, torch.device("cpu"), 64)
    windows = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(seed))
    meter = DriftMeter(base, windows, batch_rows=4)
    drift = {arm: meter.measure(models[arm]) for arm in ("finetuned-base", "continued-base")}
    return {"accuracy": accuracy, "drift": drift, "levels": [1], "training_problems": 0,
            "arith_items": {"1": {"items": 5, "drawn": 5, "held_out": True}}}


def test_nothing_fine_tuned_restores_nothing_and_supports_nothing(one_thread):
    numbers = {s: untouched_seed(s) for s in (1, 2)}
    for s, seed_numbers in numbers.items():
        by_arm = seed_numbers["accuracy"]
        # every restored or tuned arm reads exactly as its untuned model, on every measure
        for arm in ("finetuned-base", "restored-lower", "restored-upper", "continued-base", "proxy-base"):
            assert by_arm[arm]["facts/one_hop"] == by_arm["base"]["facts/one_hop"], (s, arm)
            assert by_arm[arm]["arith"] == by_arm["base"]["arith"], (s, arm)
        assert by_arm["proxy-base@2"]["facts/two_hop"] == by_arm["base"]["facts/two_hop"]
        assert set(by_arm) == set(ARMS) and "exact/one_hop" in by_arm["proxy-base"]
    result, verdicts = judged(numbers)
    assert SUPPORTED not in {v.verdict for v in verdicts.values()}
    gates = result.gate_map
    assert not gates["finetuning-forgets"].passed and not gates["base-knows-one-hop"].passed  # an untrained base
    assert not gates["finetuning-learns-task"].passed
    restore = next(c for c in result.contrasts if c.name == ft.RESTORE)
    assert set(restore.per_seed.values()) == {0.0}
    # the rule alone, gates aside: the same difference in every seed is a point, not an interval
    assert "zero variance" in decide(restore.per_seed, sign=1, margin=ft.RESTORE_MARGIN, planned=[1, 2]).reason
    assert all(v.verdict == NOT_TESTED for name, v in verdicts.items()), verdicts
