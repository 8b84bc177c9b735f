"""Claim `finetune-fragility`: direct fine-tuning corrupts knowledge stored in the lower layers,
while decoding-time proxy tuning (Liu et al. 2024, "Tuning Language Models by Proxy", arXiv
2401.08565) keeps it.

Per seed s (every run of a seed gets seed_everything = data.seed = s, so the arms of a seed share
their pretraining and their data and differ only where the arm says):

1. `base`: a tiny GPT pretrained on the world's prose (configs/finetune-base.yaml);
   `small`: a smaller one (half the blocks) on the same text (+ finetune-small.yaml).
2. Gate: the base knows its facts (one-hop forced choice above chance in every seed, by its Wilson
   interval); the study stops here with one line if not.
3. `finetuned-base`, `finetuned-small`: each fine-tuned on world arithmetic, a family neither saw,
   with a fifth of the examples drawn from the pretraining prose (about 36% of the bytes), at the
   pretraining peak lr, 600 steps (the small one as many training FLOPs) (+ finetune-tune.yaml,
   `model.init_from` the pretrained checkpoint); `continued-base`: the base trained as many more
   steps on its own prose at the same lr (+ finetune-continue.yaml): the drift and forgetting that
   training alone brings. Why mixed and why this lr: a one-seed pilot (its table is in
   finetune-tune.yaml) found that arithmetic alone brings the facts to chance (forced choice 0.10 at
   lr 1e-3, 0.12 at 3e-4 against the base's 0.74), that at 3e-4 neither model learns the task in
   this budget, mixed or not (exact match 0.00 to 0.02), and that at 1e-3 the small expert stays
   near chance (0.15 after 600 steps); mixed at 3e-3 for 600 steps, both learned it (0.64 and 0.28)
   and the fine-tuned base read 0.69 of its one-hop facts (the base 0.74). The prose share rehearses
   the pretraining text, the fact questions included: the claim is read for fine-tuning as it is
   done with replay, where a difference between it and proxy tuning is not at a floor. The pilot
   chose the recipe only: the primary, its alpha and the margins below were fixed before it.
4. Evaluated, every arm on the same items:
   - retention, `facts/one_hop` and `facts/two_hop`: the world's fact questions read by forced
     choice (lamina.finetune.retention.choice_items): the right answer against every other answer
     its question form takes, each scored by the model's summed log-probability of the
     continuation; chance is the better of a uniform guesser and one that picks the form's
     commonest answer (0.10 one-hop, 0.17 two-hop). Exact match (greedy, `exact/...`) needs the
     answer's format as well as the fact: the first design fine-tuned at the pretraining peak lr on
     pure arithmetic, lost the format, and read 0.000 for every tuned arm, below chance, in every
     seed (bench/results/study-cpu-2026-12-01), which says nothing about what was kept. Exact match
     stays as a descriptive row for the base, the fine-tuned base, the proxy and continued pretraining;
   - the new task, `arith` (`arith/level<k>`): greedy with a thought, exact `A: n`, on problems
     held out of the fine-tuning text where the level has any (level 1's 100 all occur in it);
   - `proxy-base`: the base decoded with base + alpha (finetuned-small − small) logits
     (lamina.finetune.proxy), at alpha = 1 (the paper's) and, as a sweep of strength, at 0.5
     (`proxy-base@0.5`) and 2 (`proxy-base@2`);
   - `restored-lower`, `restored-upper`: finetuned-base with the base's weights put back into its
     lower half of blocks, or its upper half (lamina.finetune.restore): the causal test of where
     the lost facts were stored. A restored half also meets fine-tuned blocks it was never trained
     beside, which can cost facts by itself (in the pilot seed both restorations read below the
     fine-tuned model), so each is also split, question by question, into `restore/recovered` (of
     the facts fine-tuning lost, the share it gets right) and `restore/broken` (of those the
     fine-tuned model still knows, the share it gets wrong), descriptive rows;
   - drift of finetuned-base and continued-base from the base, layer by layer (DriftMeter: linear
     CKA on held-out windows of the pretraining text, relative weight change): descriptive only.

The primary contrast, named before any run: proxy − finetuned on one-hop forced-choice retention
(proxy at alpha = 1), predicted > 0. Alpha stays at 1 for the primary because that is the method
as Liu et al. define and evaluate it; 0.5 and 2 are descriptive rows, so that the sweep cannot pick
the primary's alpha after the fact.

Secondary (Holm within the claim): two-hop retention, proxy − finetuned (> 0); the new task,
finetuned − proxy (> 0: what proxying costs); restore lower − restore upper on one-hop retention
(> 0: the claim's "stored in the lower layers": restoring the base's lower blocks brings back more
facts than restoring its upper ones). The review of the first design found its test of "lower" the
wrong one: 1 − CKA grows with depth under continued pretraining as much as under fine-tuning (each
layer's representation carries every earlier layer's change), and Adam evens out the relative
weight change across layers, so neither drift can say where the facts were lost; the drift rows stay
as numbers, with no verdict.

Margins, fixed here before any run, each with its reason (never from a run's noise):
- retention (one- and two-hop, forced choice) 0.05: five points, about 9 of the 178 one-hop
  questions and 6 of the 125 two-hop; about a thirteenth of the base's room above chance (the
  pilot's base: 0.74 one-hop against chance 0.10);
- the new task 0.05: five points of exact match (5 of 100 problems);
- restore lower − upper 0.05: five points of one-hop retention, the same scale as retention.

Gates (a contrast that needs a failed gate is not tested): the base knows its one-hop and two-hop
facts (Wilson lower bound above chance, every seed); fine-tuning and the expert learn the task
(Wilson lower bound above their untuned model and chance, every seed); fine-tuning forgets (the
base − finetuned one-hop retention at least the margin in every seed: without a loss there is
nothing for a restoration to bring back); power (from the seed-to-seed standard deviation of each
judged retention contrast's per-seed differences, an effect of twice the margin is supported 80%
of the time at the planned seeds: lamina.verdict.detectable against the margin). A floor or a
ceiling (every arm a retention contrast compares at or below chance, or at 1, in every seed) is
not tested with that reason (lamina.verdict).

Power, measured once (cpu preset, seeds 1-3, 2026-12-07): the seed-to-seed standard deviation of
the primary's per-seed differences was 0.050, so the power gate wants about 10 seeds at the margin
0.05 (two-hop 0.017: 4 seeds; restore 0.063: 15 seeds); three seeds leave the primary not tested.

Items: every distinct fact question of the world (178 one-hop, 125 two-hop), in the order a world
stream of held_out_seed(s) writes them: the world is fixed, so the set is the whole population and
there is no sampling of items for an interval to cover; a preset that caps `fact_items` (the toy
one) takes a different subset in each seed, and then the interval over seeds covers that draw too.
The seed interval is made of training noise (the pretraining data's order and the fine-tuning's).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lamina.compare.stats import summarize
from lamina.data import world
from lamina.data.tokenizer import EOT
from lamina.errors import ConfigError
from lamina.finetune.drift import DriftMeter, drift_windows, fact_probe
from lamina.finetune.proxy import ProxyTuned, load_trio, proxy_completer, sweep_logits
from lamina.finetune.restore import halves, restored
from lamina.finetune.retention import (
    Accuracy,
    GreedyCompleter,
    RetentionSuite,
    held_out_seed,
    model_logits,
    score,
    task_chance,
    token_budget,
)
from lamina.pretrained import load_gpt
from lamina.probes import world_seed
from lamina.study.claim import GPU as ON_GPU
from lamina.study.claim import Claim, StudyContext, fmt3, preset_for, shrunk, study_configs, word_value, yaml_value
from lamina.study.evaluation import arith_items, checkpoint_key, device_of, fingerprint, training_questions
from lamina.study.report import ClaimResult, Contrast, Figure, Gate, PerSeed, write_report
from lamina.study.report import power_gate as power_gate_of
from lamina.study.runs import Run, RunSpec
from lamina.verdict import Prediction, detectable

NAME = "finetune-fragility"
SENTENCE = (
    "Direct fine-tuning corrupts knowledge stored in the lower layers, while decoding-time proxy tuning "
    "(Liu et al. 2024) keeps it."
)
CONFIGS = {
    "base": "finetune-base.yaml",
    "small": "finetune-small.yaml",
    "tune": "finetune-tune.yaml",
    "continue": "finetune-continue.yaml",
}
# The primary contrast, named before any run: does proxy tuning keep more one-hop facts than fine-tuning?
PRIMARY = "retention one-hop: proxy − finetuned"
RESTORE = "restore lower − restore upper"
# Proxy strengths: alpha 1 is the method as Liu et al. 2024 evaluate it, and the primary's; the others a sweep.
PRIMARY_ALPHA = 1.0
ALPHAS = (0.5, 1.0, 2.0)
# The smallest effects of interest, fixed before any run (never from a run's noise):
RETENTION_MARGIN = 0.05  # forced-choice accuracy on the fact questions
RETENTION_NOTE = ("margin 0.05: five points of forced-choice accuracy (about 9 of the 178 one-hop questions, "
                  "6 of the 125 two-hop)")
TASK_MARGIN = 0.05  # exact match on the new task's problems
TASK_NOTE = "margin 0.05: five points of exact match on the arithmetic problems (5 of 100)"
RESTORE_MARGIN = 0.05  # forced-choice one-hop accuracy, restored-lower minus restored-upper
RESTORE_NOTE = ("margin 0.05: five points of one-hop forced-choice accuracy (about 9 of 178 questions), "
                "the retention contrasts' scale")
POWER = 0.8  # the power gates: an effect of twice the margin is supported 80% of the time
EVALUATION = "forced choice, proxy sweep, restored halves (2026-12)"  # in the evaluation cache's key


def proxy_arm(alpha: float) -> str:
    """`proxy-base` at the primary's alpha, `proxy-base@<alpha>` at the sweep's others."""
    return "proxy-base" if alpha == PRIMARY_ALPHA else f"proxy-base@{alpha:g}"


PROXIES = {proxy_arm(a): a for a in ALPHAS}
TRIO = ("base", "finetuned-small", "small")  # the proxy's base, expert and anti-expert
RESTORED = ("restored-lower", "restored-upper")
ARMS = ("base", "finetuned-base", *PROXIES, "continued-base", "small", "finetuned-small", *RESTORED)
EXACT_ARMS = ("base", "finetuned-base", "proxy-base", "continued-base")  # greedy exact match on the facts too
FACTS = ("facts/one_hop", "facts/two_hop")


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset: CLI words after the configs (for every run, the base's shape, the small
    one's), steps (None: the configs' trainer.max_steps), evaluation items and the drift probe."""

    every: tuple[str, ...] = ()
    base: tuple[str, ...] = ()
    small: tuple[str, ...] = ()
    tune: tuple[str, ...] = ()  # CLI words for the fine-tuning runs only (both models)
    pretrain_steps: int | None = None
    tune_steps: int | None = None
    fact_items: int | None = None  # distinct questions per fact family (None: all, 178 and 125)
    arith_items: int = 100  # held-out problems per fine-tuned level
    probe_tokens: int = 4096  # drift: tokens of held-out pretraining windows CKA is computed on
    batch_size: int = 64  # prompts decoded (and choices scored) together
    stop_on_gate: bool = True  # stop before fine-tuning when the base does not know its facts (test: go on)


CPU = Preset()
# gpu: one seed's five fits, the gate and the evaluation in about 2 minutes of an H100 (all eight
# claims' one seed: about 6.5 minutes, within one 10-minute device call). Reasoning (estimates: no
# GPU has run these yet):
# - base at 6 x 256 (8 heads), 4.8M parameters, 31M training FLOPs a token; a step is 64 x 128 byte
#   tokens: 2.6e11 FLOPs, 0.7 ms at 40% of 989 TF bf16, so the step is bound by kernel launches and
#   Lightning's loop, about 6 ms: 3000 steps about 18 s (24.6M tokens, 3 passes over 8 MB of prose),
#   checkpoints every 250 (the config's) a few seconds more.
# - small at 2 x 128 (3.0M FLOPs a token): about 3 ms a step, 3000 steps about 9 s.
# - finetuned-base and continued-base: 800 steps each, about 5 s each (their Drift and Retention
#   callbacks off: the study measures both after training, MEASURED_AFTER).
# - finetuned-small: as many steps as the base fine-tuning's FLOPs, 800 x 31.2M / 3.0M = about 8300,
#   about 25 s.
# - the gate (178 one-hop questions by forced choice) and the evaluation (303 fact questions, each
#   against 8 to 16 choices, scored by every model in one pass: about 3500 sequences of at most 128
#   tokens through seven models; 200 held-out problems a level decoded greedily by ten arms, three of
#   them proxies of three models each, in batches of 256; drift on 16384 tokens): about 20 s; the
#   fine-tuning text's problems (2 MB generated again on one core): under a second.
# - process start and CUDA, Lightning's setup of five fits, the report's figures: about 30 s.
TUNE_STEPS = 800
GPU = Preset(
    every=(*ON_GPU, "--data.batch_size", "64", "--model.block_size", "128", "--data.max_bytes", "8000000"),
    base=("--model.n_layer", "6", "--model.n_head", "8", "--model.n_embd", "256"),
    small=("--model.n_layer", "2", "--model.n_head", "4", "--model.n_embd", "128"),
    # two-digit sums join the one-digit ones, so that held-out problems exist (level 1's 100 all occur
    # in the text); 2 MB: 800 steps of 64 x 128 tokens pass over it about 3 times (the cpu preset's
    # 600 x 16 x 128 over 200 KB: about 6)
    tune=("--data.levels", "[1,2]", "--data.max_bytes", "2000000"),
    pretrain_steps=3000, tune_steps=TUNE_STEPS, arith_items=200, probe_tokens=16384, batch_size=256,
)
# A handful of steps at toy sizes (the test preset, and a rehearsal of any preset): its words come
# after the preset's, so each key a preset sets for size is set here again.
TOY = Preset(
    every=("--data.max_bytes", "60000", "--data.val_tokens", "512", "--data.batch_size", "4",
           "--model.block_size", "48", "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "2",
           "--checkpoint.every_n_train_steps", "2", "--model.warmup_steps", "0", "--retention.items", "3",
           "--drift.probe_tokens", "192"),
    base=("--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "16"),
    small=("--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "8"),
    tune=("--data.max_bytes", "60000"),
    pretrain_steps=4, tune_steps=2, fact_items=4, arith_items=4, probe_tokens=192, batch_size=16,
    stop_on_gate=False,
)
PRESETS = {"cpu": CPU, "gpu": GPU, "test": shrunk(CPU, TOY)}
# The fine-tuning and continued-pretraining runs without their Drift and Retention callbacks: the
# study measures drift and retention itself after training (evaluate_seed), on every arm alike, and
# the callbacks would repeat the greedy fact questions and the CKA at step 0 and the end of every
# run (about 10 to 15 s a run on one CPU thread).
MEASURED_AFTER = ("--drift.enabled", "false", "--retention.enabled", "false")


# ---- configs ---------------------------------------------------------------------------------------


def config_paths(folder: Path) -> dict[str, Path]:
    return study_configs(NAME, folder, CONFIGS)


# ---- the evaluation items ------------------------------------------------------------------------------


# ---- evaluating one seed ---------------------------------------------------------------------------------


def accuracy_numbers(acc: Accuracy) -> dict:
    lo, hi = acc.interval
    return {"value": acc.value, "lo": lo, "hi": hi, "n": acc.n, "correct": acc.correct, "chance": acc.chance}


def pooled_accuracy(parts: list[Accuracy], chance: float) -> Accuracy:
    outcomes = [o for acc in parts for o in acc.outcomes]
    return Accuracy(sum(outcomes), len(outcomes), chance, outcomes)


def score_arms(models: dict[str, torch.nn.Module], suite: RetentionSuite, eot: int, device: torch.device,
               batch_size: int) -> dict[str, dict[str, dict]]:
    """Every arm's numbers from its models in memory: `models` holds base, small, finetuned-small,
    finetuned-base and continued-base (GPTs of one tokenizer, in eval mode, on `device`); the
    restored halves and the proxies at every alpha are built here. arm -> metric -> accuracy
    numbers: `facts/<family>` by forced choice (every arm), `exact/<family>` greedy exact match
    (EXACT_ARMS), `arith/level<k>` and `arith` pooled (every arm, greedy)."""
    lower, upper = halves(models["finetuned-base"].config.n_layer)
    readers = {**models, "restored-lower": restored(models["finetuned-base"], models["base"], lower),
               "restored-upper": restored(models["finetuned-base"], models["base"], upper)}
    block = min(m.config.block_size for m in readers.values())
    choices = suite.evaluate_choices(sweep_logits(readers, TRIO, PROXIES), eot, block, device, batch_size)
    numbers = {arm: {tag.removeprefix("eval/"): accuracy_numbers(acc) for tag, acc in by_tag.items()}
               for arm, by_tag in choices.items()}
    for arm in RESTORED:
        numbers[arm].update(restore_split(choices, arm))
    tokenizer = suite.tokenizer
    completers = {arm: GreedyCompleter.for_model(m, tokenizer, eot, batch_size) for arm, m in readers.items()}
    completers.update({arm: proxy_completer(ProxyTuned(*(models[m] for m in TRIO), alpha), tokenizer, eot, device,
                                            batch_size) for arm, alpha in PROXIES.items()})
    arith = [tag for tag in suite.sets if tag.startswith("arith/")]
    chance = task_chance([item for tag in arith for item in suite.sets[tag]])
    for arm, complete in completers.items():
        exact = [f"eval/{fact}" for fact in FACTS if f"eval/{fact}" in suite.sets] if arm in EXACT_ARMS else []
        greedy = {tag: score(complete, suite.sets[tag], suite.budgets[tag], suite.chance[tag]) for tag in arith + exact}
        for tag, acc in greedy.items():
            numbers[arm][tag.replace("eval/facts/", "exact/")] = accuracy_numbers(acc)
        numbers[arm]["arith"] = accuracy_numbers(pooled_accuracy([greedy[tag] for tag in arith], chance))
    return numbers


def restore_split(choices: dict[str, dict[str, Accuracy]], arm: str, tag: str = "eval/facts/one_hop") -> dict:
    """What a restoration does, question by question (forced choice, `tag`): `restore/recovered`,
    the share of the facts fine-tuning lost (the base right, finetuned-base not) that `arm` gets
    right, and `restore/broken`, the share of those finetuned-base still knows that `arm` gets
    wrong. Putting half the blocks back also pairs them with fine-tuned blocks they were never
    trained beside, which can cost facts by itself: `broken` shows that cost apart from what comes
    back."""
    base, tuned, mine = (choices[a][tag].outcomes for a in ("base", "finetuned-base", arm))
    lost = [m for b, t, m in zip(base, tuned, mine, strict=True) if b and not t]
    kept = [m for t, m in zip(tuned, mine, strict=True) if t]
    return {"restore/recovered": accuracy_numbers(Accuracy(sum(lost), len(lost), outcomes=lost)),
            "restore/broken": accuracy_numbers(Accuracy(len(kept) - sum(kept), len(kept),
                                                        outcomes=[not m for m in kept]))}


def evaluate_seed(runs: dict[str, Run], seed: int, preset: Preset, device: torch.device) -> dict:
    """Every number of one seed: accuracies per arm and set (with Wilson intervals), drift per layer."""
    tune_data = read_data_hparams(runs["finetuned-base"].checkpoint)
    base_data = read_data_hparams(runs["base"].checkpoint)
    levels = list(tune_data.get("levels") or world.ARITH_LEVELS)
    exclude = training_questions(tune_data)
    trio = load_trio(*(str(runs[arm].checkpoint) for arm in TRIO))
    tokenizer = trio["base"].tokenizer
    models = {"base": trio["base"].model, "finetuned-small": trio["expert"].model, "small": trio["anti"].model}
    for arm in ("finetuned-base", "continued-base"):
        models[arm] = load_gpt(str(runs[arm].checkpoint), arm).model
    models = {arm: model.to(device).eval() for arm, model in models.items()}
    suite = RetentionSuite(tokenizer, held_out_seed(seed), preset.fact_items)
    arith_info = {}
    for level in levels:
        items, info = arith_items(world_seed(seed, level, "study/finetune/arith"), level, preset.arith_items, exclude)
        arith_info[level] = info
        if items:
            tag = f"arith/level{level}"
            suite.sets[tag] = items
            suite.chance[tag] = task_chance(items)
            suite.budgets[tag] = token_budget(items, tokenizer)
    numbers = score_arms(models, suite, tokenizer.token_to_id(EOT), device, preset.batch_size)
    drift = measure_drift(models["base"], base_data, {arm: models[arm] for arm in ("finetuned-base", "continued-base")},
                          preset, device)
    lower, upper = halves(models["base"].config.n_layer)
    choices = {tag.removeprefix("eval/"): sum(len(c.choices) for c in items) for tag, items in suite.choices.items()}
    return {"accuracy": numbers, "drift": drift, "arith_items": {str(k): v for k, v in arith_info.items()},
            "levels": levels, "training_problems": len(exclude), "halves": [list(lower), list(upper)],
            "choices": choices}


def read_data_hparams(path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in (checkpoint.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}


def measure_drift(reference, data: dict, models: dict, preset: Preset, device: torch.device) -> dict:
    """DriftMeter of each model against the reference on held-out windows of the reference's own
    (pretraining) val split and on the fact probe, as the Drift callback builds them."""
    from lamina.data import TextDataModule

    module = TextDataModule(**data)
    module.prepare_data()
    module.setup("validate")
    windows = drift_windows(module, preset.probe_tokens, 0)
    seed = world_seed(int(data["seed"]), 0, "drift/facts")
    facts = fact_probe(module.tokenizer, module.eot_id, seed, int(data["block_size"]))
    meter = DriftMeter(reference.eval(), windows, facts)
    return {arm: meter.measure(model) for arm, model in models.items()}


def evaluate_cached(folder: Path, runs: dict[str, Run], seed: int, preset: Preset, device: torch.device,
                    progress) -> dict:
    """evaluate_seed, kept in <claim>/evals/seed<s>.json and reused while the checkpoints and
    evaluation settings it was made from are unchanged."""
    key = fingerprint({arm: checkpoint_key(run.checkpoint) for arm, run in sorted(runs.items())},
                      preset.fact_items, preset.arith_items, preset.probe_tokens, EVALUATION, ALPHAS)
    path = folder / "evals" / f"seed{seed}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            progress(f"seed {seed}: evaluation reused ({path})")
            return cached["numbers"]
    except (OSError, json.JSONDecodeError):
        pass
    started = time.perf_counter()
    numbers = evaluate_seed(runs, seed, preset, device)
    numbers["seconds"] = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "numbers": numbers}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    progress(f"seed {seed}: evaluated in {numbers['seconds']:.0f} s")
    return numbers


def base_facts(run: Run, seed: int, preset: Preset, device: torch.device) -> Accuracy:
    """One-hop forced-choice accuracy of a pretrained checkpoint (the gate before fine-tuning)."""
    loaded = load_gpt(str(run.checkpoint), "base")
    suite = RetentionSuite(loaded.tokenizer, held_out_seed(seed), preset.fact_items, families=("one_hop",))
    model = loaded.model.to(device).eval()
    results = suite.evaluate_choices(model_logits({"base": model}), loaded.tokenizer.token_to_id(EOT),
                                     model.config.block_size, device, preset.batch_size)
    return results["base"]["eval/facts/one_hop"]


# ---- gates ------------------------------------------------------------------------------------------------


def detectable_difference(sd: float, seeds: int) -> float:
    """The smallest true difference beyond a bound that the 95% t-interval over `seeds` seeds clears
    with probability POWER, from the seed-to-seed standard deviation `sd` of the per-seed differences
    (earlier seeds or a pilot): (t(0.975, k - 1) + t(POWER, k - 1)) sd / sqrt(k)."""
    return detectable(sd, seeds, POWER)


def above(acc: dict, floor: float) -> bool:
    return acc["lo"] is not None and math.isfinite(acc["lo"]) and acc["lo"] > floor


def knows_facts_gate(values: dict[int, dict], family: str = "one_hop") -> Gate:
    per = []
    passed = bool(values)
    for seed in sorted(values):
        acc = values[seed]
        ok = above(acc, acc["chance"])
        passed &= ok
        per.append(f"seed {seed}: {fmt3(acc['value'])} [{fmt3(acc['lo'])}, {fmt3(acc['hi'])}] vs chance "
                   f"{fmt3(acc['chance'])} (n {acc['n']})")
    return Gate(f"base-knows-{family.replace('_', '-')}",
                f"does the pretrained base know its {family.replace('_', '-')} facts (forced choice: Wilson 95% lower "
                "bound above chance, every seed)?", passed, "; ".join(per))


def learns_task_gate(name: str, arm: str, before: str, numbers: dict[int, dict]) -> Gate:
    per, passed = [], bool(numbers)
    for seed in sorted(numbers):
        acc, was = numbers[seed]["accuracy"][arm]["arith"], numbers[seed]["accuracy"][before]["arith"]
        floor = max(was["value"], acc["chance"])
        ok = above(acc, floor)
        passed &= ok
        per.append(f"seed {seed}: {fmt3(acc['value'])} [{fmt3(acc['lo'])}, {fmt3(acc['hi'])}] vs {before} "
                   f"{fmt3(was['value'])}, chance {fmt3(acc['chance'])} (n {acc['n']})")
    return Gate(name, f"does {arm} solve the arithmetic items above {before} and chance (Wilson 95% lower bound, "
                "every seed)?", passed, "; ".join(per))


def forgets_gate(numbers: dict[int, dict]) -> Gate:
    """Does fine-tuning lose one-hop facts (base − finetuned at least the retention margin, every
    seed)? Without a loss a restoration has nothing to bring back."""
    base, tuned = per_seed(numbers, "base", "facts/one_hop"), per_seed(numbers, "finetuned-base", "facts/one_hop")
    seeds = sorted(set(base) & set(tuned))
    passed = bool(seeds) and len(seeds) == len(numbers) and all(
        base[s] - tuned[s] >= RETENTION_MARGIN for s in seeds)
    detail = "; ".join(f"seed {s}: base {fmt3(base[s])}, finetuned {fmt3(tuned[s])}, loss {fmt3(base[s] - tuned[s])}"
                       for s in seeds) or "no seed with both values"
    return Gate("finetuning-forgets", f"does fine-tuning lose one-hop facts (base − finetuned forced choice at least "
                f"the margin {RETENTION_MARGIN:g}, every seed)?", passed, detail)


def power_gate(numbers: dict[int, dict], name: str, what: str, arms: tuple[str, str], metric: str, margin: float,
               seeds: int) -> Gate:
    """Can `seeds` seeds tell a difference (arms[0] − arms[1] on `metric`) of twice the margin from
    none, from the seed-to-seed spread of its per-seed differences?"""
    a, b = per_seed(numbers, arms[0], metric), per_seed(numbers, arms[1], metric)
    diffs = {s: a[s] - b[s] for s in a if s in b}
    return power_gate_of(name, f"can {seeds} seed(s) tell a {what} ({arms[0]} − {arms[1]}) of twice the margin from "
                         f"none (seed-to-seed spread of the per-seed differences, {POWER:.0%} power, two-sided 5%)?",
                         diffs, margin, seeds)


# ---- the study ------------------------------------------------------------------------------------------


def specs_for(paths: dict[str, Path], preset: Preset, seed: int, steps: tuple[int, int],
              pretrained: dict[str, Run] | None = None) -> dict[str, RunSpec]:
    pretrain, tune = steps
    base = (str(paths["base"]),)
    small = base + (str(paths["small"]),)
    if pretrained is None:
        return {
            "base": RunSpec("base", base, seed, pretrain, preset.every + preset.base),
            "small": RunSpec("small", small, seed, pretrain, preset.every + preset.small),
        }

    def init(arm: str) -> tuple[str, ...]:
        return ("--model.init_from", str(pretrained[arm].checkpoint))

    small_tune = matched_steps(tune, pretrained["base"].checkpoint, pretrained["small"].checkpoint)
    wanted = word_value(preset.every, "checkpoint.every_n_train_steps") or yaml_value(
        [paths["base"], paths["tune"]], "checkpoint", "every_n_train_steps")
    # last.ckpt lands at max_steps only when the checkpoint interval divides it
    small_every = ("--checkpoint.every_n_train_steps", str(checkpoint_every(small_tune, int(wanted or small_tune))))

    return {
        "finetuned-base": RunSpec("finetuned-base", base + (str(paths["tune"]),), seed, tune,
                                  preset.every + preset.base + preset.tune + init("base") + MEASURED_AFTER),
        "finetuned-small": RunSpec("finetuned-small", small + (str(paths["tune"]),), seed, small_tune,
                                   preset.every + preset.small + preset.tune + init("small") + small_every
                                   + MEASURED_AFTER),
        "continued-base": RunSpec("continued-base", base + (str(paths["continue"]),), seed, tune,
                                  preset.every + preset.base + init("base") + MEASURED_AFTER),
    }


def flops_per_token(checkpoint: Path) -> int:
    """Training FLOPs per token of a checkpoint's model shape (lamina.model.GPT.flops_per_token)."""
    from lamina.model import GPT
    from lamina.pretrained import gpt_config, read_checkpoint

    config = gpt_config(dict(read_checkpoint(checkpoint, "model.init_from")["hyper_parameters"]), "model.init_from")
    with torch.device("meta"):
        return GPT(config).flops_per_token()


def checkpoint_every(steps: int, wanted: int) -> int:
    """The divisor of `steps` nearest `wanted` (by ratio): a checkpoint interval that puts the last
    checkpoint at `steps` exactly."""
    divisors = [d for d in range(1, steps + 1) if steps % d == 0]
    return min(divisors, key=lambda d: (abs(math.log(d / max(wanted, 1))), -d))


def matched_steps(steps: int, base: Path, small: Path) -> int:
    """Fine-tuning steps of the small model with the training FLOPs of `steps` steps of the base
    (the same tokens a step): the expert costs what direct fine-tuning costs, not what it saves."""
    return max(1, round(steps * flops_per_token(base) / flops_per_token(small)))


def run(ctx: StudyContext) -> ClaimResult:
    preset = preset_for(ctx, PRESETS, TOY)
    started = time.perf_counter()
    paths = config_paths(ctx.configs)
    pretrain = preset.pretrain_steps or yaml_value([paths["base"]], "trainer", "max_steps")
    tune = preset.tune_steps or yaml_value([paths["base"], paths["tune"]], "trainer", "max_steps")
    cont = preset.tune_steps or yaml_value([paths["base"], paths["continue"]], "trainer", "max_steps")
    if not (isinstance(pretrain, int) and isinstance(tune, int)) or cont != tune:
        raise ConfigError(f"study {NAME}: expected trainer.max_steps in {paths['base']} and the same in "
                          f"{paths['tune']} and {paths['continue']}, got {pretrain}, {tune}, {cont}")
    device = device_of(ctx.device)
    n = len(ctx.seeds)
    result = ClaimResult(NAME, SENTENCE, {}, list(ctx.seeds), primary=PRIMARY)  # named before it runs
    numbers: dict[int, dict] = {}
    gate_facts: dict[int, dict] = {}
    seconds: dict[str, float] = {}
    for k, seed in enumerate(ctx.seeds, 1):
        pretrained = {arm: ctx.runner.run(spec, k, n)
                      for arm, spec in specs_for(paths, preset, seed, (pretrain, tune)).items()}
        acc = base_facts(pretrained["base"], seed, preset, device)
        gate_facts[seed] = accuracy_numbers(acc)
        gate = knows_facts_gate({seed: gate_facts[seed]})
        if not gate.passed and preset.stop_on_gate:
            result.gates = [knows_facts_gate(gate_facts)]
            result.stopped = (f"the pretrained base does not know its facts ({gate.detail}); raise "
                              f"trainer.max_steps in {paths['base']}")
            result.setup = setup_text(ctx, paths, preset, pretrain, tune, {}, time.perf_counter() - started)
            write_report(result, ctx.out)
            raise ConfigError(f"study {NAME}: gate {gate.name} failed: {gate.detail}; report in "
                              f"{ctx.folder / 'report.md'}")
        tuned = {arm: ctx.runner.run(spec, k, n)
                 for arm, spec in specs_for(paths, preset, seed, (pretrain, tune), pretrained).items()}
        runs = {**pretrained, **tuned}
        for arm, r in runs.items():
            seconds[arm] = seconds.get(arm, 0.0) + r.seconds
        numbers[seed] = evaluate_cached(ctx.folder, runs, seed, preset, device, ctx.progress)
    assemble(result, numbers, n)
    small_tune = tuned["finetuned-small"].spec.max_steps if numbers else None
    result.setup = setup_text(ctx, paths, preset, pretrain, tune, numbers, time.perf_counter() - started, seconds,
                              small_tune)
    return result



def setup_text(ctx, paths, preset: Preset, pretrain: int, tune: int, numbers: dict, wall: float,
               seconds: dict | None = None, small_tune: int | None = None) -> dict[str, str]:
    some = next(iter(numbers.values()), None)
    setup = {
        "preset": f"`{ctx.preset_text}`" + (f" (CLI words after the configs: every run {' '.join(preset.every)}; base "
                                       f"{' '.join(preset.base)}; small {' '.join(preset.small)}; fine-tuning {' '.join(preset.tune)})"
                                       if preset.every or preset.base or preset.small or preset.tune else ""),
        "configs": (f"base `{paths['base']}`; small `+ {paths['small'].name}`; fine-tuning `+ {paths['tune'].name}` "
                    f"(model.init_from the pretrained checkpoint); continued pretraining `+ {paths['continue'].name}`"),
        "steps": (f"pretraining {pretrain} (both models); fine-tuning the base and continued pretraining {tune} each; "
                  f"fine-tuning the small model {small_tune or 'as many steps as match the base fine-tuning’s FLOPs'}"
                  + (" (the base fine-tuning's training FLOPs: steps × the base's FLOPs per token over the small's)"
                     if small_tune else "")),
        "seeds": (f"{', '.join(map(str, ctx.seeds))} (seed_everything = data.seed = the seed for every run of it; "
                  "contrasts are paired by seed)"),
        "proxy": (f"base + alpha × (finetuned-small − small) logits at alpha {', '.join(f'{a:g}' for a in ALPHAS)} "
                  f"(the primary's: {PRIMARY_ALPHA:g}); arms {', '.join(PROXIES)}"),
        "runs": f"under `{ctx.out / 'runs'}` (`lamina compare {ctx.out / 'runs'}/<arm> ...` reads them)",
    }
    if some:
        facts = some["accuracy"]["base"]
        choices = some.get("choices", {})
        lower, upper = some.get("halves", [[], []])
        setup["items"] = (f"{facts['facts/one_hop']['n']} one-hop and {facts['facts/two_hop']['n']} two-hop fact "
                          f"questions (all distinct; every arm the same items), read by forced choice among "
                          f"{choices.get('facts/one_hop', '?')} and {choices.get('facts/two_hop', '?')} continuations "
                          f"in all (each question against every answer its form takes); arithmetic levels "
                          f"{', '.join(map(str, some['levels']))}: "
                          + "; ".join(f"level {lv}: {info['items']} problems, "
                                      + ("held out (none is among the fine-tuning text's problems)" if info["held_out"]
                                         else "all of the level's own: every one occurs in the fine-tuning text, "
                                              "which leaves none held out")
                                      for lv, info in some["arith_items"].items())
                          + f"; {some['training_problems']} distinct problems in the fine-tuning text")
        setup["restored"] = (f"finetuned-base with the base's blocks {', '.join(map(str, lower))} (restored-lower) or "
                             f"{', '.join(map(str, upper))} (restored-upper) put back; embeddings and the final norm "
                             "stay the fine-tuned model's")
    if seconds:
        setup["wall time"] = (f"{wall:.0f} s this call (training {sum(seconds.values()):.0f} s over all runs, "
                              "reused runs counted at their own training time; " +
                              ", ".join(f"{a} {s:.0f} s" for a, s in seconds.items()) +
                              (f"; evaluation {sum(v.get('seconds', 0.0) for v in numbers.values()):.0f} s over all "
                               "seeds, reused evaluations counted at their own time" if numbers else "") + ")")
    else:
        setup["wall time"] = f"{wall:.0f} s"
    return setup


def per_seed(numbers: dict[int, dict], arm: str, metric: str, key: str = "value") -> PerSeed:
    return {s: v["accuracy"][arm][metric][key] for s, v in numbers.items()
            if metric in v["accuracy"].get(arm, {}) and v["accuracy"][arm][metric][key] is not None}


def drift_seed(numbers: dict[int, dict], arm: str, tag: str) -> PerSeed:
    return {s: v["drift"][arm][tag] for s, v in numbers.items() if tag in v["drift"].get(arm, {})}


def mean_of(values: PerSeed) -> float:
    st = summarize(list(values.values()))
    return st.mean if st.n else float("nan")


def assemble(result: ClaimResult, numbers: dict[int, dict], n_seeds: int) -> None:
    seeds = sorted(numbers)
    first = numbers[seeds[0]]
    n_layer = len([k for k in first["drift"]["finetuned-base"] if k.endswith("/cka") and k.startswith("drift/layer")])
    metrics = [*FACTS, "arith", "exact/one_hop", "exact/two_hop", "restore/recovered", "restore/broken"] + [
        f"arith/level{lv}" for lv in first["levels"] if f"arith/level{lv}" in first["accuracy"]["base"]]
    for arm in ARMS:
        result.arms[arm] = {m: per_seed(numbers, arm, m) for m in metrics}
        result.arms[arm] = {m: v for m, v in result.arms[arm].items() if v or m in (*FACTS, "arith")}
        result.arms[arm].update({f"{m}/chance": per_seed(numbers, arm, m, "chance") for m in (*FACTS, "arith")})
    for arm in ("finetuned-base", "continued-base"):
        for i in range(n_layer):
            cka = drift_seed(numbers, arm, f"drift/layer{i}/cka")
            result.arms[arm][f"drift/layer{i}/1-cka"] = {s: 1.0 - v for s, v in cka.items()}
            result.arms[arm][f"drift/layer{i}/weights"] = drift_seed(numbers, arm, f"drift/layer{i}/weights")
            result.arms[arm][f"drift/layer{i}/probe_acc"] = drift_seed(numbers, arm, f"drift/layer{i}/probe_acc")
    for i in range(n_layer):  # the nulls, fixed by the reference alone (the same in both arms' meters)
        arm = result.arms["base"]
        arm[f"drift/layer{i}/cka_floor"] = drift_seed(numbers, "finetuned-base", f"drift/layer{i}/cka_floor")
        arm[f"drift/layer{i}/1-cka_init"] = {s: 1 - v for s, v in
                                             drift_seed(numbers, "finetuned-base", f"drift/layer{i}/cka_init").items()}
        arm[f"drift/layer{i}/weights_init"] = drift_seed(numbers, "finetuned-base", f"drift/layer{i}/weights_init")
        arm[f"drift/layer{i}/probe_acc"] = drift_seed(numbers, "finetuned-base", f"drift/layer{i}/probe_acc_ref")
        arm[f"drift/layer{i}/probe_acc_control"] = drift_seed(numbers, "finetuned-base",
                                                              f"drift/layer{i}/probe_acc_control")
    result.arms["base"]["drift/probe_chance"] = drift_seed(numbers, "finetuned-base", "drift/probe_chance")

    def arm(a: str, m: str) -> PerSeed:
        return result.arms[a].get(m, {})

    # gates
    result.gates = [
        knows_facts_gate({s: numbers[s]["accuracy"]["base"]["facts/one_hop"] for s in seeds}),
        power_gate(numbers, "power-one-hop", "one-hop retention difference", ("proxy-base", "finetuned-base"),
                   "facts/one_hop", RETENTION_MARGIN, n_seeds),
        knows_facts_gate({s: numbers[s]["accuracy"]["base"]["facts/two_hop"] for s in seeds}, "two_hop"),
        power_gate(numbers, "power-two-hop", "two-hop retention difference", ("proxy-base", "finetuned-base"),
                   "facts/two_hop", RETENTION_MARGIN, n_seeds),
        learns_task_gate("finetuning-learns-task", "finetuned-base", "base", numbers),
        learns_task_gate("expert-learns-task", "finetuned-small", "small", numbers),
        forgets_gate(numbers),
        power_gate(numbers, "power-restore", "difference in facts brought back", RESTORED, "facts/one_hop",
                   RESTORE_MARGIN, n_seeds),
    ]
    result.primary = PRIMARY

    def chance(m: str) -> float | None:  # the floor: at or below the form's chance in every seed
        values = [v for v in arm("base", f"{m}/chance").values() if math.isfinite(v)]
        return max(values) if values else None

    tuned_needs = ("finetuning-learns-task", "expert-learns-task")  # both tunings did something
    c = [
        Contrast.paired(PRIMARY, "facts/one_hop (forced choice), proxy-base (alpha 1) minus finetuned-base",
                        arm("proxy-base", "facts/one_hop"), arm("finetuned-base", "facts/one_hop"),
                        labels=("proxy-base", "finetuned-base"),
                        prediction=Prediction(1, RETENTION_MARGIN, RETENTION_NOTE),
                        needs=("base-knows-one-hop", "power-one-hop", *tuned_needs),
                        floor=chance("facts/one_hop"), ceiling=1.0),
        Contrast.paired("retention two-hop: proxy − finetuned",
                        "facts/two_hop (forced choice), proxy-base (alpha 1) minus finetuned-base",
                        arm("proxy-base", "facts/two_hop"), arm("finetuned-base", "facts/two_hop"),
                        labels=("proxy-base", "finetuned-base"),
                        prediction=Prediction(1, RETENTION_MARGIN, RETENTION_NOTE),
                        needs=("base-knows-two-hop", "power-two-hop", *tuned_needs),
                        floor=chance("facts/two_hop"), ceiling=1.0),
        Contrast.paired("new task: finetuned − proxy", "arith, finetuned-base minus proxy-base "
                        "(what proxying costs on the new task)",
                        arm("finetuned-base", "arith"), arm("proxy-base", "arith"),
                        labels=("finetuned-base", "proxy-base"), prediction=Prediction(1, TASK_MARGIN, TASK_NOTE),
                        needs=tuned_needs, floor=chance("arith"), ceiling=1.0),
        Contrast.paired(RESTORE, "facts/one_hop (forced choice), finetuned-base with the base's lower half of blocks "
                        "put back minus with its upper half put back",
                        arm("restored-lower", "facts/one_hop"), arm("restored-upper", "facts/one_hop"),
                        labels=RESTORED, prediction=Prediction(1, RESTORE_MARGIN, RESTORE_NOTE),
                        needs=("base-knows-one-hop", "finetuning-forgets", "power-restore"),
                        floor=chance("facts/one_hop"), ceiling=1.0),
    ]
    # descriptive rows: where the differences come from
    c += [
        Contrast.paired("forgetting: finetuned − base", "facts/one_hop", arm("finetuned-base", "facts/one_hop"),
                        arm("base", "facts/one_hop")),
        Contrast.paired("forgetting: continued − base", "facts/one_hop (training alone)",
                        arm("continued-base", "facts/one_hop"), arm("base", "facts/one_hop")),
        Contrast.paired("forgetting: proxy − base", "facts/one_hop", arm("proxy-base", "facts/one_hop"),
                        arm("base", "facts/one_hop")),
        Contrast.paired("expert forgetting: finetuned-small − small", "facts/one_hop",
                        arm("finetuned-small", "facts/one_hop"), arm("small", "facts/one_hop")),
        Contrast.paired("facts back: restored-lower − finetuned",
                        "facts/one_hop: what the base's lower blocks bring back",
                        arm("restored-lower", "facts/one_hop"), arm("finetuned-base", "facts/one_hop")),
        Contrast.paired("facts back: restored-upper − finetuned",
                        "facts/one_hop: what the base's upper blocks bring back",
                        arm("restored-upper", "facts/one_hop"), arm("finetuned-base", "facts/one_hop")),
        Contrast.paired("facts recovered: restored-lower − restored-upper", "of the one-hop facts fine-tuning lost "
                        "(the base right, finetuned-base wrong), the share each restoration gets right",
                        arm("restored-lower", "restore/recovered"), arm("restored-upper", "restore/recovered")),
        Contrast.paired("facts broken: restored-lower − restored-upper", "of the one-hop facts finetuned-base still "
                        "knows, the share each restoration gets wrong (the cost of mismatched blocks)",
                        arm("restored-lower", "restore/broken"), arm("restored-upper", "restore/broken")),
        Contrast.paired("task kept: restored-lower − finetuned",
                        "arith: what putting the lower blocks back costs the task",
                        arm("restored-lower", "arith"), arm("finetuned-base", "arith")),
        Contrast.paired("task kept: restored-upper − finetuned",
                        "arith: what putting the upper blocks back costs the task",
                        arm("restored-upper", "arith"), arm("finetuned-base", "arith")),
        Contrast.paired("exact match one-hop: proxy − finetuned",
                        "exact/one_hop, greedy: the answer's format as well as the fact", arm("proxy-base", "exact/one_hop"), arm("finetuned-base", "exact/one_hop")),
        Contrast.paired("exact forgetting: finetuned − base", "exact/one_hop, greedy",
                        arm("finetuned-base", "exact/one_hop"), arm("base", "exact/one_hop")),
    ]
    for name, alpha in PROXIES.items():  # the strength sweep
        c.append(Contrast.paired(f"retention one-hop: {name} − finetuned", f"facts/one_hop, alpha {alpha:g}",
                                 arm(name, "facts/one_hop"), arm("finetuned-base", "facts/one_hop")))
        c.append(Contrast.paired(f"transfer: {name} − base", f"arith, alpha {alpha:g}: what the small expert's delta "
                                 "brings the base", arm(name, "arith"), arm("base", "arith")))
    # drift: numbers, no verdict (it cannot say where facts were lost; see the module doc)
    lower, upper = list(range(n_layer // 2)), list(range(n_layer - n_layer // 2, n_layer))
    excess_cka = {i: Contrast.paired("", "", arm("finetuned-base", f"drift/layer{i}/1-cka"),
                                     arm("continued-base", f"drift/layer{i}/1-cka")).per_seed for i in range(n_layer)}
    excess_w = {i: Contrast.paired("", "", arm("finetuned-base", f"drift/layer{i}/weights"),
                                   arm("continued-base", f"drift/layer{i}/weights")).per_seed for i in range(n_layer)}

    def half_difference(excess: dict[int, PerSeed]) -> PerSeed:
        common = set.intersection(*(set(excess[i]) for i in range(n_layer))) if n_layer else set()
        return {s: sum(excess[i][s] for i in lower) / len(lower) - sum(excess[i][s] for i in upper) / len(upper)
                for s in sorted(common)} if lower and upper else {}

    halves_text = f"layers {lower[0]}–{lower[-1]} vs {upper[0]}–{upper[-1]}" if lower and upper else "n/a"
    c += [
        Contrast("drift lower − upper (1 − CKA)",
                 f"(finetuned − continued) 1 − CKA, mean of {halves_text}: lower minus upper",
                 half_difference(excess_cka)),
        Contrast("drift lower − upper (weights)",
                 f"(finetuned − continued) relative weight change, mean of {halves_text}: lower minus upper",
                 half_difference(excess_w)),
        Contrast.paired("excess drift, all layers (1 − CKA)", "finetuned − continued, mean over layers",
                        {s: sum(v) / len(v) for s, v in _stack([excess_cka[i] for i in range(n_layer)]).items()}),
    ]
    c += [Contrast(f"excess drift layer {i} (1 − CKA)", "finetuned − continued", excess_cka[i]) for i in range(n_layer)]
    c += [Contrast(f"excess drift layer {i} (weights)", "finetuned − continued", excess_w[i]) for i in range(n_layer)]
    result.contrasts = c

    layers = [str(i) for i in range(n_layer)]
    shown = ("base", "finetuned-base", "proxy-base", *RESTORED, "continued-base", "finetuned-small")
    result.figures = [
        Figure("drift_cka_by_layer", "Representation drift from the base, by layer (mean, 95% band over seeds)",
               "layer", "1 − linear CKA with the base",
               layers, {a: [arm(a, f"drift/layer{i}/1-cka") for i in range(n_layer)]
                        for a in ("finetuned-base", "continued-base")},
               {"CKA sampling floor": [arm("base", f"drift/layer{i}/cka_floor") for i in range(n_layer)]}),
        Figure("drift_weights_by_layer", "Relative weight change from the base, by layer", "layer",
               "‖W − W_base‖ / ‖W_base‖", layers,
               {a: [arm(a, f"drift/layer{i}/weights") for i in range(n_layer)] for a in ("finetuned-base", "continued-base")}),
        Figure("accuracy_by_arm", "Facts by forced choice, the new task by exact match (mean, 95% interval over seeds)",
               "evaluation", "accuracy", [*FACTS, "arith"],
               {a: [arm(a, m) for m in (*FACTS, "arith")] for a in shown},
               {"chance": [arm("base", f"{m}/chance") for m in (*FACTS, "arith")]}, kind="bar"),
        Figure("proxy_sweep", "Proxy tuning by strength alpha: facts kept and the new task (mean, 95% band)",
               "alpha", "accuracy", [f"{a:g}" for a in ALPHAS],
               {m: [arm(name, m) for name in PROXIES] for m in (*FACTS, "arith")},
               {f"finetuned-base {m}": [arm("finetuned-base", m)] * len(ALPHAS) for m in ("facts/one_hop", "arith")}),
    ]
    result.notes = [
        "Facts are read by forced choice (lamina.finetune.retention.choice_items): each question's right answer "
        "against every other answer its form takes in the world, each scored by the summed log-probability of the "
        "continuation the corpus writes (two-hop: the thought and the answer, the answer put in wherever it is "
        "written); chance is the better of a uniform guess and the form's commonest answer. `exact/...` is greedy "
        "exact match, which needs the answer's format too.",
        "A proxy's log-probabilities are those of softmax(base + alpha (expert − anti)) logits, the proxy's "
        "distribution as Liu et al. 2024 define it; its greedy answers decode the same logits, each model with "
        "its KV cache. The same logits are "
        "finetuned-small + (base − small) at alpha 1: where the expert forgot what the small model knew, the "
        "proxy subtracts the small model's knowledge from the base's, so read its retention beside "
        "`expert forgetting`.",
        "restored-lower / restored-upper: finetuned-base with the base's weights put back into the lower or the "
        "upper half of its blocks (lamina.finetune.restore; the embeddings, tied to the output layer, and the final "
        "norm stay fine-tuned in both). `restore lower − restore upper` is the claim's 'stored in the lower layers' "
        "read causally; drift says how far each layer moved, not what the move cost (1 − CKA grows with depth "
        "under continued pretraining too), so its rows carry no verdict.",
        "Drift is measured after training by lamina.finetune.DriftMeter on held-out windows of the pretraining "
        "text (the base's val split) for both arms; `1 − cka_init` and `weights_init` (an independently "
        "initialised model of the base's shape) are the scale of 'nothing kept'; `cka_floor` is what sampling the "
        "windows moves CKA by.",
        "Fact questions are the world's fixed questions, which also occur in pretraining text (and in the prose "
        "share of the fine-tuning text, where the config mixes one in): the measure is whether trained knowledge "
        "survives. Arithmetic problems are held out of the fine-tuning text where the level has problems the text "
        "lacks (see Setup: items); a level the text covers whole is scored on its own problems.",
        f"The power gates read the seed-to-seed spread of each judged retention contrast's per-seed differences "
        f"against its margin ({POWER:.0%} power for an effect of twice the margin, two-sided 5%). Every distinct "
        "question is an item in every seed (the whole population of the fixed world), so the interval over seeds "
        "is made of training noise. Each verdict prints the achieved half-width beside the margin.",
    ]


def _stack(series: list[PerSeed]) -> dict[int, list[float]]:
    common = set.intersection(*(set(s) for s in series)) if series else set()
    return {seed: [s[seed] for s in series] for seed in sorted(common)}


CLAIM = Claim(NAME, SENTENCE, run)

__all__ = ["CLAIM", "PRESETS", "Preset", "TOY", "assemble", "detectable_difference", "run",
           "score_arms"]
