"""Claim `finetune-fragility`: direct fine-tuning corrupts knowledge stored in the lower layers,
while decoding-time proxy tuning (Liu et al. 2024, "Tuning Language Models by Proxy") keeps it.

Per seed s (every run of a seed gets seed_everything = data.seed = s, so the arms of a seed share
their pretraining and their data and differ only where the arm says):

1. `base`: a tiny GPT pretrained on the world's prose (configs/finetune-base.yaml);
   `small`: a smaller one (fewer layers, narrower) on the same text (+ finetune-small.yaml).
2. Gate: the base knows its facts (one-hop exact match above chance in every seed, by its Wilson
   interval); the study stops here with one line if not.
3. `finetuned-base`, `finetuned-small`: each fine-tuned on world arithmetic, a family neither saw
   (+ finetune-tune.yaml, `model.init_from` the pretrained checkpoint, Drift and Retention on);
   `continued-base`: the base trained as many more steps on its own prose (+ finetune-continue.yaml):
   the drift and forgetting that training alone brings, the null fine-tuning is read against.
4. Evaluated, every arm on the same items: world fact questions (`facts/one_hop`, `facts/two_hop`,
   lamina.finetune.retention), arithmetic at the fine-tuned levels (`arith/level<k>`, pooled as
   `arith`: problems that never occur in the fine-tuning text, or a level's own problems where the
   text holds every one of them, as it does level 1's 100; greedy with a thought, exact `A: n`), and
   `proxy-base`, the base decoded with base + (finetuned-small - small) logits
   (lamina.finetune.proxy.ProxyTuned).
5. Drift of finetuned-base and continued-base from the base, layer by layer (DriftMeter: linear
   CKA of the residual stream on held-out windows of the *pretraining* text, and relative weight
   change), beside the CKA sampling floor and the independently-initialised-model values.

Contrasts, paired by seed: the primary, proxy - finetuned on one-hop retention; secondary
(Holm-corrected within the claim): two-hop retention, finetuned - proxy on the new task (what
proxying costs), and the lower-minus-upper-layer difference of the drift that fine-tuning adds over
continued pretraining (1 - CKA, and weight change). Margins are fixed below, each with its reason;
the power gates read the seed-to-seed spread of the retention differences against the margin.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lamina.compare.stats import summarize
from lamina.data import world
from lamina.errors import ConfigError
from lamina.finetune.drift import DriftMeter, drift_windows, fact_probe
from lamina.finetune.proxy import evaluate as proxy_evaluate
from lamina.finetune.proxy import load_trio
from lamina.finetune.retention import (
    Accuracy,
    EvalItem,
    GreedyCompleter,
    RetentionSuite,
    held_out_seed,
    task_chance,
    token_budget,
)
from lamina.pretrained import load_gpt
from lamina.probes import world_seed
from lamina.study.claim import GPU as ON_GPU
from lamina.study.claim import Claim, StudyContext, preset_for, shrunk, study_configs, yaml_value
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
# The smallest effects of interest, fixed before any run (never from a run's noise):
RETENTION_MARGIN = 0.05  # exact match on the fact questions
RETENTION_NOTE = "margin 0.05: five points of exact match (about 9 of the 178 one-hop questions, 6 of the 125 two-hop)"
TASK_MARGIN = 0.05  # exact match on the new task's problems
TASK_NOTE = "margin 0.05: five points of exact match on the arithmetic problems (5 of 100)"
CKA_MARGIN = 0.05  # 1 - CKA: 0 is the base's representation, about 0.8 an independently initialised model's
CKA_NOTE = ("margin 0.05: a sixteenth of the 1 − CKA an independently initialised model has (about 0.8), "
            "the scale of 'nothing kept'")
WEIGHTS_MARGIN = 0.02  # relative weight change
WEIGHTS_NOTE = ("margin 0.02: a tenth of the relative weight change continued pretraining alone brings "
                "(about 0.2 at the cpu preset)")
POWER = 0.8  # the power gates: an effect of twice the margin is supported 80% of the time


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
    batch_size: int = 64  # prompts decoded together
    stop_on_gate: bool = True  # stop before fine-tuning when the base does not know its facts (test: go on)


CPU = Preset()
# gpu: one seed's five fits, the gate and the evaluation in about 2.2 minutes of an H100 (all eight
# claims' one seed: about 6.5 minutes, within one 10-minute device call). Reasoning (estimates: no
# GPU has run these yet):
# - base at 6 x 256 (8 heads), 4.8M parameters, 31M training FLOPs a token; a step is 64 x 128 byte
#   tokens: 2.6e11 FLOPs, 0.7 ms at 40% of 989 TF bf16, so the step is bound by kernel launches and
#   Lightning's loop, about 6 ms: 3000 steps about 18 s (24.6M tokens, 3 passes over 8 MB of prose),
#   checkpoints every 250 (the config's) a few seconds more.
# - small at 2 x 128 (3.0M FLOPs a token): about 3 ms a step, 3000 steps about 9 s.
# - finetuned-base and continued-base: 800 steps each, about 5 s each, with Drift and Retention at
#   step 0 and the end (continued-base: also at 400, its config's cadence), a second or two each.
# - finetuned-small: as many steps as the base fine-tuning's FLOPs, 800 x 31.2M / 3.0M = about 8300,
#   about 25 s, with Drift and Retention every 800 steps and at its end (12 times, about 1.5 s each:
#   about 18 s).
# - the gate (178 one-hop questions) and the evaluation (303 fact questions and 200 held-out problems
#   a level through the proxy's three models, greedy in batches of 256; drift on 16384 tokens): about
#   10 s; the fine-tuning text's problems (2 MB generated again on one core): under a second.
# - process start and CUDA, Lightning's setup of five fits, the report's figures: about 30 s.
TUNE_STEPS = 800
GPU = Preset(
    every=(*ON_GPU, "--data.batch_size", "64", "--model.block_size", "128", "--data.max_bytes", "8000000"),
    base=("--model.n_layer", "6", "--model.n_head", "8", "--model.n_embd", "256"),
    small=("--model.n_layer", "2", "--model.n_head", "4", "--model.n_embd", "128"),
    # two-digit sums join the one-digit ones, so that held-out problems exist (level 1's 100 all occur
    # in the text); 2 MB: 800 steps of 64 x 128 tokens pass over it about 3 times (the cpu preset's
    # 400 x 16 x 128 over 200 KB: about 4); Drift and Retention at step 0 and the end of the base's
    # fine-tuning (the study measures both itself after training)
    tune=("--data.levels", "[1,2]", "--data.max_bytes", "2000000", "--drift.every_n_steps", str(TUNE_STEPS),
          "--retention.every_n_steps", str(TUNE_STEPS)),
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
    tune=("--data.max_bytes", "60000", "--drift.every_n_steps", "2", "--retention.every_n_steps", "2"),
    pretrain_steps=4, tune_steps=2, fact_items=4, arith_items=4, probe_tokens=192, batch_size=16,
    stop_on_gate=False,
)
PRESETS = {"cpu": CPU, "gpu": GPU, "test": shrunk(CPU, TOY)}

ARMS = ("base", "finetuned-base", "proxy-base", "continued-base", "small", "finetuned-small")


# ---- configs ---------------------------------------------------------------------------------------


def config_paths(folder: Path) -> dict[str, Path]:
    return study_configs(NAME, folder, CONFIGS)


# ---- the evaluation items ------------------------------------------------------------------------------


def training_questions(data: dict) -> set[str]:
    """The arithmetic questions (`Q: 47+38=?`) of a world corpus as a data module's hparams describe it
    (the same generator, seed and filters, up to max_bytes and a little beyond: it errs on the side of
    leaving a problem out)."""
    families = data.get("families") or list(world.FAMILIES)
    examples = world.generate(int(data["seed"]), families, levels=data.get("levels"), tasks=data.get("tasks"),
                              level_weights=data.get("level_weights", "by_kind"))
    budget = int(1.05 * int(data.get("max_bytes") or 0)) + 4096
    seen, taken = set(), 0
    while taken < budget:
        example = next(examples)
        taken += len(example.text.encode("utf-8")) + 1
        if example.family == "arith":
            seen.add(example.text.split(f" {world.THINK_OPEN}", 1)[0])
    return seen


def arith_items(seed: int, level: int, n: int, exclude: set[str]) -> tuple[list[EvalItem], dict]:
    """Up to n distinct problems of `level` that are not in `exclude` (held out of the fine-tuning
    text), drawn from a world stream of `seed`, as think-form items (prompt `Q: 47+38=? <think>`,
    correct when `A: 85` follows `</think>`). A level whose every problem occurs in `exclude` (level
    1 has 100 problems in all) has none held out: then its problems are taken as they are, and the
    returned facts say so (`held_out` false)."""
    held: dict[str, EvalItem] = {}
    seen: dict[str, EvalItem] = {}
    examples = world.generate(seed, ["arith"], levels=[level])
    for _ in range(200 * max(n, 1)):
        if len(held) >= n:
            break
        text = next(examples).text
        question, rest = text.split(f" {world.THINK_OPEN}", 1)
        answer = rest.rsplit("A: ", 1)[1].strip()
        item = EvalItem(f"{question} {world.THINK_OPEN}", answer, "think", rest)
        (seen if question in exclude else held).setdefault(question, item)
    drawn = len(held) + len(seen)
    if held:
        return list(held.values())[:n], {"items": min(n, len(held)), "drawn": drawn, "held_out": True}
    return list(seen.values())[:n], {"items": min(n, len(seen)), "drawn": drawn, "held_out": False}


# ---- evaluating one seed ---------------------------------------------------------------------------------


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def checkpoint_key(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, int(st.st_mtime_ns)]


def accuracy_numbers(acc: Accuracy) -> dict:
    lo, hi = acc.interval
    return {"value": acc.value, "lo": lo, "hi": hi, "n": acc.n, "correct": acc.correct, "chance": acc.chance}


def evaluate_seed(runs: dict[str, Run], seed: int, preset: Preset, device: torch.device) -> dict:
    """Every number of one seed: accuracies per arm and set (with Wilson intervals), drift per layer."""
    tune_data = read_data_hparams(runs["finetuned-base"].checkpoint)
    base_data = read_data_hparams(runs["base"].checkpoint)
    levels = list(tune_data.get("levels") or world.ARITH_LEVELS)
    exclude = training_questions(tune_data)
    trio = load_trio(str(runs["base"].checkpoint), str(runs["finetuned-small"].checkpoint), str(runs["small"].checkpoint))
    tokenizer = trio["base"].tokenizer
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
    by_arm: dict[str, dict[str, Accuracy]] = {}
    trio_results = proxy_evaluate(trio, suite, device, preset.batch_size, 1.0)
    by_arm["base"], by_arm["proxy-base"] = trio_results["base"], trio_results["proxy"]
    by_arm["small"], by_arm["finetuned-small"] = trio_results["anti"], trio_results["expert"]
    eot = tokenizer.token_to_id("<|endoftext|>")
    models = {}
    for arm in ("finetuned-base", "continued-base"):
        loaded = load_gpt(str(runs[arm].checkpoint), arm)
        models[arm] = loaded.model.to(device).eval()
        by_arm[arm] = suite.evaluate(GreedyCompleter.for_model(models[arm], tokenizer, eot, preset.batch_size))
    accuracies = {arm: {tag.removeprefix("eval/"): accuracy_numbers(acc) for tag, acc in sets.items()}
                  for arm, sets in by_arm.items()}
    pooled = {}
    for arm, sets in by_arm.items():
        parts = [acc for tag, acc in sets.items() if tag.startswith("arith/")]
        outcomes = [o for acc in parts for o in acc.outcomes]
        pooled[arm] = accuracy_numbers(Accuracy(sum(outcomes), len(outcomes), task_chance(
            [i for tag, items in suite.sets.items() if tag.startswith("arith/") for i in items]), outcomes))
        accuracies[arm]["arith"] = pooled[arm]
    drift = measure_drift(trio["base"].model.to(device), base_data, models, preset, device)
    return {"accuracy": accuracies, "drift": drift, "arith_items": {str(k): v for k, v in arith_info.items()},
            "levels": levels, "training_problems": len(exclude)}


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
                      preset.fact_items, preset.arith_items, preset.probe_tokens)
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
    """One-hop fact accuracy of a pretrained checkpoint (the gate before fine-tuning)."""
    loaded = load_gpt(str(run.checkpoint), "base")
    suite = RetentionSuite(loaded.tokenizer, held_out_seed(seed), preset.fact_items, families=("one_hop",))
    eot = loaded.tokenizer.token_to_id("<|endoftext|>")
    model = loaded.model.to(device).eval()
    return suite.evaluate(GreedyCompleter.for_model(model, loaded.tokenizer, eot, preset.batch_size))["eval/facts/one_hop"]


# ---- gates ------------------------------------------------------------------------------------------------


def detectable_difference(sd: float, seeds: int) -> float:
    """The smallest true difference beyond a bound that the 95% t-interval over `seeds` seeds clears
    with probability POWER, from the seed-to-seed standard deviation `sd` of the per-seed differences
    (earlier seeds or a pilot; the items are the same in every seed, so they are not what the
    interval over seeds is made of): (t(0.975, k - 1) + t(POWER, k - 1)) sd / sqrt(k)."""
    return detectable(sd, seeds, POWER)


def fmt3(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


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
                f"does the pretrained base answer {family.replace('_', '-')} fact questions above chance "
                "(Wilson 95% lower bound above the form's chance, every seed)?", passed, "; ".join(per))


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


def power_gate(numbers: dict[int, dict], family: str, seeds: int) -> Gate:
    """Can `seeds` seeds tell a retention difference (proxy − finetuned on `family`) of twice the
    margin from none, from the seed-to-seed spread of its per-seed differences?"""
    proxy, tuned = per_seed(numbers, "proxy-base", f"facts/{family}"), per_seed(numbers, "finetuned-base",
                                                                                 f"facts/{family}")
    diffs = {s: proxy[s] - tuned[s] for s in proxy if s in tuned}
    words = family.replace("_", "-")
    return power_gate_of(f"power-{words}", f"can {seeds} seed(s) tell a {words} retention difference (proxy − "
                         f"finetuned) of twice the margin from none (seed-to-seed spread of the per-seed differences, "
                         f"{POWER:.0%} power, two-sided 5%)?", diffs, RETENTION_MARGIN, seeds)


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
    wanted = word_value(preset.every, "--checkpoint.every_n_train_steps") or yaml_value(
        [paths["base"], paths["tune"]], "checkpoint", "every_n_train_steps")
    # last.ckpt lands at max_steps only when the checkpoint interval divides it
    small_every = ("--checkpoint.every_n_train_steps", str(checkpoint_every(small_tune, int(wanted or small_tune))))

    return {
        "finetuned-base": RunSpec("finetuned-base", base + (str(paths["tune"]),), seed, tune,
                                  preset.every + preset.base + preset.tune + init("base")),
        "finetuned-small": RunSpec("finetuned-small", small + (str(paths["tune"]),), seed, small_tune,
                                   preset.every + preset.small + preset.tune + init("small") + small_every),
        "continued-base": RunSpec("continued-base", base + (str(paths["continue"]),), seed, tune,
                                  preset.every + preset.base + init("base")),
    }


def flops_per_token(checkpoint: Path) -> int:
    """Training FLOPs per token of a checkpoint's model shape (lamina.model.GPT.flops_per_token)."""
    from lamina.model import GPT
    from lamina.pretrained import gpt_config, read_checkpoint

    config = gpt_config(dict(read_checkpoint(checkpoint, "model.init_from")["hyper_parameters"]), "model.init_from")
    with torch.device("meta"):
        return GPT(config).flops_per_token()


def word_value(words: tuple[str, ...], key: str) -> str | None:
    """The value after the last `key` in CLI words (None: not there)."""
    at = [i for i, w in enumerate(words[:-1]) if w == key]
    return words[at[-1] + 1] if at else None


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
        "runs": f"under `{ctx.out / 'runs'}` (`lamina compare {ctx.out / 'runs'}/<arm> ...` reads them)",
    }
    if some:
        facts = some["accuracy"]["base"]
        setup["items"] = (f"{facts['facts/one_hop']['n']} one-hop and {facts['facts/two_hop']['n']} two-hop fact "
                          f"questions (all distinct; every arm the same items); arithmetic levels "
                          f"{', '.join(map(str, some['levels']))}: "
                          + "; ".join(f"level {lv}: {info['items']} problems, "
                                      + ("held out (none is among the fine-tuning text's problems)" if info["held_out"]
                                         else "all of the level's own: every one occurs in the fine-tuning text, "
                                              "which leaves none held out")
                                      for lv, info in some["arith_items"].items())
                          + f"; {some['training_problems']} distinct problems in the fine-tuning text")
    if seconds:
        setup["wall time"] = (f"{wall:.0f} s this call (training {sum(seconds.values()):.0f} s over all runs, "
                              "reused runs counted at their own training time; " +
                              ", ".join(f"{a} {s:.0f} s" for a, s in seconds.items()) + ")")
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
    metrics = ["facts/one_hop", "facts/two_hop", "arith"] + [f"arith/level{lv}" for lv in first["levels"]
                                                                      if f"arith/level{lv}" in first["accuracy"]["base"]]
    for arm in ARMS:
        result.arms[arm] = {m: per_seed(numbers, arm, m) for m in metrics}
        result.arms[arm].update({f"{m}/chance": per_seed(numbers, arm, m, "chance") for m in metrics[:3]})
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

    # gates
    gates = [knows_facts_gate({s: numbers[s]["accuracy"]["base"]["facts/one_hop"] for s in seeds})]
    gates.append(power_gate(numbers, "one_hop", n_seeds))
    gates.append(knows_facts_gate({s: numbers[s]["accuracy"]["base"]["facts/two_hop"] for s in seeds}, "two_hop"))
    gates.append(power_gate(numbers, "two_hop", n_seeds))
    gates.append(learns_task_gate("finetuning-learns-task", "finetuned-base", "base", numbers))
    gates.append(learns_task_gate("expert-learns-task", "finetuned-small", "small", numbers))
    result.gates = gates

    def arm(a: str, m: str) -> PerSeed:
        return result.arms[a][m]

    result.primary = PRIMARY
    retention_needs = ("base-knows-one-hop", "power-one-hop", "expert-learns-task")

    def chance(m: str) -> float | None:  # the floor: at or below the form's chance in every seed
        values = [v for v in arm("base", f"{m}/chance").values() if math.isfinite(v)]
        return max(values) if values else None

    c = [
        Contrast.paired(PRIMARY, "facts/one_hop, proxy-base minus finetuned-base",
                        arm("proxy-base", "facts/one_hop"), arm("finetuned-base", "facts/one_hop"),
                        labels=("proxy-base", "finetuned-base"),
                        prediction=Prediction(1, RETENTION_MARGIN, RETENTION_NOTE), needs=retention_needs,
                        floor=chance("facts/one_hop"), ceiling=1.0),
        Contrast.paired("retention two-hop: proxy − finetuned", "facts/two_hop, proxy-base minus finetuned-base",
                        arm("proxy-base", "facts/two_hop"), arm("finetuned-base", "facts/two_hop"),
                        labels=("proxy-base", "finetuned-base"),
                        prediction=Prediction(1, RETENTION_MARGIN, RETENTION_NOTE),
                        needs=("base-knows-two-hop", "power-two-hop", "expert-learns-task"),
                        floor=chance("facts/two_hop"), ceiling=1.0),
        Contrast.paired("new task: finetuned − proxy", "arith, finetuned-base minus proxy-base "
                        "(what proxying costs on the new task)",
                        arm("finetuned-base", "arith"), arm("proxy-base", "arith"),
                        labels=("finetuned-base", "proxy-base"), prediction=Prediction(1, TASK_MARGIN, TASK_NOTE),
                        needs=("finetuning-learns-task", "expert-learns-task"), floor=chance("arith"), ceiling=1.0),
    ]
    # drift: what fine-tuning adds over continued pretraining, lower half of the layers minus upper half
    lower, upper = list(range(n_layer // 2)), list(range(n_layer // 2, n_layer))
    excess_cka = {i: Contrast.paired("", "", arm("finetuned-base", f"drift/layer{i}/1-cka"),
                                     arm("continued-base", f"drift/layer{i}/1-cka")).per_seed for i in range(n_layer)}
    excess_w = {i: Contrast.paired("", "", arm("finetuned-base", f"drift/layer{i}/weights"),
                                   arm("continued-base", f"drift/layer{i}/weights")).per_seed for i in range(n_layer)}

    def half_difference(excess: dict[int, PerSeed]) -> PerSeed:
        common = set.intersection(*(set(excess[i]) for i in range(n_layer))) if n_layer else set()
        return {s: sum(excess[i][s] for i in lower) / len(lower) - sum(excess[i][s] for i in upper) / len(upper)
                for s in sorted(common)} if lower and upper else {}

    drift_needs = ("base-knows-one-hop", "finetuning-learns-task")
    halves = f"layers {lower[0]}–{lower[-1]} vs {upper[0]}–{upper[-1]}" if lower and upper else "n/a"
    c += [
        Contrast("drift lower − upper (1 − CKA)",
                 f"(finetuned − continued) 1 − CKA, mean of {halves}: lower minus upper",
                 half_difference(excess_cka), Prediction(1, CKA_MARGIN, CKA_NOTE), needs=drift_needs),
        Contrast("drift lower − upper (weights)",
                 f"(finetuned − continued) relative weight change, mean of {halves}: lower minus upper",
                 half_difference(excess_w), Prediction(1, WEIGHTS_MARGIN, WEIGHTS_NOTE), needs=drift_needs),
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
        Contrast.paired("transfer: proxy − base", "arith: what the small expert's delta brings the base",
                        arm("proxy-base", "arith"), arm("base", "arith")),
        Contrast.paired("excess drift, all layers (1 − CKA)", "finetuned − continued, mean over layers",
                        {s: sum(v) / len(v) for s, v in _stack([excess_cka[i] for i in range(n_layer)]).items()}),
    ]
    c += [Contrast(f"excess drift layer {i} (1 − CKA)", "finetuned − continued", excess_cka[i]) for i in range(n_layer)]
    c += [Contrast(f"excess drift layer {i} (weights)", "finetuned − continued", excess_w[i]) for i in range(n_layer)]
    result.contrasts = c

    layers = [str(i) for i in range(n_layer)]
    result.figures = [
        Figure("drift_cka_by_layer", "Representation drift from the base, by layer (mean, 95% band over seeds)",
               "layer", "1 − linear CKA with the base",
               layers, {a: [arm(a, f"drift/layer{i}/1-cka") for i in range(n_layer)]
                        for a in ("finetuned-base", "continued-base")},
               {"CKA sampling floor": [arm("base", f"drift/layer{i}/cka_floor") for i in range(n_layer)]}),
        Figure("drift_weights_by_layer", "Relative weight change from the base, by layer", "layer",
               "‖W − W_base‖ / ‖W_base‖", layers,
               {a: [arm(a, f"drift/layer{i}/weights") for i in range(n_layer)] for a in ("finetuned-base", "continued-base")}),
        Figure("accuracy_by_arm", "Exact match by arm (mean, 95% interval over seeds)", "evaluation", "accuracy",
               ["facts/one_hop", "facts/two_hop", "arith"],
               {a: [arm(a, m) for m in ("facts/one_hop", "facts/two_hop", "arith")]
                for a in ("base", "finetuned-base", "proxy-base", "continued-base", "finetuned-small")},
               {"chance": [arm("base", f"{m}/chance") for m in ("facts/one_hop", "facts/two_hop", "arith")]},
               kind="bar"),
    ]
    result.notes = [
        "Drift is measured after training by lamina.finetune.DriftMeter on held-out windows of the pretraining "
        "text (the base's val split) for both arms; the Drift callback in the fine-tuning runs' TensorBoard reads "
        "the run's own val split (arithmetic), so its CKA is not comparable across arms.",
        "`1 − cka_init` and `weights_init` (an independently initialised model of the base's shape) are the scale "
        "of 'nothing kept'; `cka_floor` is what sampling the windows moves CKA by.",
        "proxy-base decodes base + 1.0 × (finetuned-small − small) logits, greedy, each model with its KV cache; "
        "its weights are the base's, so it has no drift of its own. The same logits are finetuned-small + (base − "
        "small): on questions the base and the small model answer alike, the proxy answers as the tuned expert does, "
        "so read its retention beside `expert forgetting`.",
        "Fact questions are the world's fixed questions, which also occur in pretraining text: the measure is "
        "whether trained knowledge survives. Arithmetic problems are held out of the fine-tuning text where the "
        "level has problems the text lacks (see Setup: items); a level the text covers whole is scored on its own "
        "problems, which measures whether the new family was learned, not whether it generalises.",
        f"The power gates read the seed-to-seed spread of the retention differences (proxy − finetuned, per "
        f"seed) against the margin ({POWER:.0%} power for an effect of twice the margin, two-sided 5%): the "
        "items are the same in every seed, so the interval over seeds is made of training noise, not item "
        "sampling. Each verdict prints the achieved half-width beside the margin.",
    ]


def _stack(series: list[PerSeed]) -> dict[int, list[float]]:
    common = set.intersection(*(set(s) for s in series)) if series else set()
    return {seed: [s[seed] for s in series] for seed in sorted(common)}


CLAIM = Claim(NAME, SENTENCE, run)

__all__ = ["CLAIM", "PRESETS", "Preset", "TOY", "arith_items", "assemble", "detectable_difference", "run",
           "training_questions"]
