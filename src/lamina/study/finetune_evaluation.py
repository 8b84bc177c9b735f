"""The evaluation of `finetune-fragility` (lamina.study.claims.finetune_fragility): every arm of a seed
scored on the same items after training, kept in <claim>/evals/seed<s>.json, and read back into the
report's rows, figures and notes.

- retention (`facts/one_hop`, `facts/two_hop`): the world's fact questions by forced choice
  (lamina.finetune.retention.choice_items), every arm; greedy exact match (`exact/...`) for
  EXACT_ARMS, a descriptive row;
- the new task (`arith/level<k>`, pooled `arith`): greedy with a thought, exact `A: n`, on problems
  held out of the fine-tuning text where the level has any (lamina.study.evaluation.arith_items);
- `proxy-base` (and the sweep `proxy-base@<alpha>`): the base decoded with base + alpha
  (finetuned-small − small) logits (lamina.finetune.proxy);
- `restored-lower`, `restored-upper`: finetuned-base with the base's lower or upper half of blocks
  put back (lamina.finetune.restore), and `restore/recovered` / `restore/broken` (`restore_split`);
- drift of finetuned-base and continued-base from the base, layer by layer (lamina.finetune.DriftMeter).

Items: every distinct fact question of the world (178 one-hop, 125 two-hop), in the order a world
stream of held_out_seed(s) writes them; a preset that caps `fact_items` takes a different subset in
each seed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch

from lamina import tags
from lamina.data import world
from lamina.data.tokenizer import EOT
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
from lamina.study.evaluation import arith_items, cached_json, checkpoint_key, fingerprint, training_questions
from lamina.study.finetune_runs import Preset
from lamina.study.report import Contrast, Figure, PerSeed
from lamina.study.runs import Run
from lamina.verdict import POWER

# Proxy strengths: alpha 1 is the method as Liu et al. 2024 evaluate it, and the primary's; the others a sweep.
PRIMARY_ALPHA = 1.0
ALPHAS = (0.5, 1.0, 2.0)


def proxy_arm(alpha: float) -> str:
    """`proxy-base` at the primary's alpha, `proxy-base@<alpha>` at the sweep's others."""
    return "proxy-base" if alpha == PRIMARY_ALPHA else f"proxy-base@{alpha:g}"


PROXIES = {proxy_arm(a): a for a in ALPHAS}
TRIO = ("base", "finetuned-small", "small")  # the proxy's base, expert and anti-expert
RESTORED = ("restored-lower", "restored-upper")
ARMS = ("base", "finetuned-base", *PROXIES, "continued-base", "small", "finetuned-small", *RESTORED)
EXACT_ARMS = ("base", "finetuned-base", "proxy-base", "continued-base")  # greedy exact match on the facts too
FACTS = ("facts/one_hop", "facts/two_hop")
EVALUATION = "forced choice, proxy sweep, restored halves (2026-12)"  # in the evaluation cache's key


# ---- scoring one seed ----------------------------------------------------------------------------------


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
    numbers = {arm: {tag.removeprefix(f"{tags.EVAL}/"): accuracy_numbers(acc) for tag, acc in by_tag.items()}
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
        exact = ([f"{tags.EVAL}/{fact}" for fact in FACTS if f"{tags.EVAL}/{fact}" in suite.sets]
                 if arm in EXACT_ARMS else [])
        greedy = {tag: score(complete, suite.sets[tag], suite.budgets[tag], suite.chance[tag]) for tag in arith + exact}
        for tag, acc in greedy.items():
            numbers[arm][tag.replace(tags.facts(""), "exact/")] = accuracy_numbers(acc)
        numbers[arm]["arith"] = accuracy_numbers(pooled_accuracy([greedy[tag] for tag in arith], chance))
    return numbers


def restore_split(choices: dict[str, dict[str, Accuracy]], arm: str, tag: str = tags.facts("one_hop")) -> dict:
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
    choices = {tag.removeprefix(f"{tags.EVAL}/"): sum(len(c.choices) for c in items)
               for tag, items in suite.choices.items()}
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

    def compute() -> dict:
        started = time.perf_counter()
        numbers = evaluate_seed(runs, seed, preset, device)
        numbers["seconds"] = time.perf_counter() - started
        progress(f"seed {seed}: evaluated in {numbers['seconds']:.0f} s")
        return numbers

    return cached_json(folder / "evals" / f"seed{seed}.json", key, "numbers", compute)


def base_facts(run: Run, seed: int, preset: Preset, device: torch.device) -> Accuracy:
    """One-hop forced-choice accuracy of a pretrained checkpoint (the gate before fine-tuning)."""
    loaded = load_gpt(str(run.checkpoint), "base")
    suite = RetentionSuite(loaded.tokenizer, held_out_seed(seed), preset.fact_items, families=("one_hop",))
    model = loaded.model.to(device).eval()
    results = suite.evaluate_choices(model_logits({"base": model}), loaded.tokenizer.token_to_id(EOT),
                                     model.config.block_size, device, preset.batch_size)
    return results["base"][tags.facts("one_hop")]


# ---- every seed's numbers read back: the arms' rows --------------------------------------------------------


def per_seed(numbers: dict[int, dict], arm: str, metric: str, key: str = "value") -> PerSeed:
    return {s: v["accuracy"][arm][metric][key] for s, v in numbers.items()
            if metric in v["accuracy"].get(arm, {}) and v["accuracy"][arm][metric][key] is not None}


def drift_seed(numbers: dict[int, dict], arm: str, tag: str) -> PerSeed:
    return {s: v["drift"][arm][tag] for s, v in numbers.items() if tag in v["drift"].get(arm, {})}


def accuracy_rows(numbers: dict[int, dict], arm: str) -> dict[str, PerSeed]:
    """An arm's accuracies per seed: the facts and the new task always (with their chance), exact
    match, the restore split and each level of the task where the arm has them."""
    first = numbers[sorted(numbers)[0]]
    metrics = [*FACTS, "arith", "exact/one_hop", "exact/two_hop", "restore/recovered", "restore/broken"] + [
        f"arith/level{lv}" for lv in first["levels"] if f"arith/level{lv}" in first["accuracy"]["base"]]
    rows = {m: per_seed(numbers, arm, m) for m in metrics}
    rows = {m: v for m, v in rows.items() if v or m in (*FACTS, "arith")}
    rows.update({f"{m}/chance": per_seed(numbers, arm, m, "chance") for m in (*FACTS, "arith")})
    return rows


def drift_layers(numbers: dict[int, dict]) -> int:
    first = numbers[sorted(numbers)[0]]
    return len([k for k in first["drift"]["finetuned-base"] if re.fullmatch(tags.drift(r"\d+", "cka"), k)])


def add_drift_rows(arms: dict[str, dict[str, PerSeed]], numbers: dict[int, dict]) -> None:
    """Drift per layer into the arms' rows: 1 − CKA, weight change and the fact probe of the two
    trained arms, and under `base` the nulls, fixed by the reference alone (the same in both arms'
    meters): the CKA sampling floor, an independently initialised model's 1 − CKA and weight
    change, the probe's reference and control accuracy."""
    n_layer = drift_layers(numbers)
    for arm in ("finetuned-base", "continued-base"):
        for i in range(n_layer):
            cka = drift_seed(numbers, arm, tags.drift(i, "cka"))
            arms[arm][tags.drift(i, "1-cka")] = {s: 1.0 - v for s, v in cka.items()}
            arms[arm][tags.drift(i, "weights")] = drift_seed(numbers, arm, tags.drift(i, "weights"))
            arms[arm][tags.drift(i, "probe_acc")] = drift_seed(numbers, arm, tags.drift(i, "probe_acc"))
    for i in range(n_layer):
        arm = arms["base"]
        arm[tags.drift(i, "cka_floor")] = drift_seed(numbers, "finetuned-base", tags.drift(i, "cka_floor"))
        arm[tags.drift(i, "1-cka_init")] = {s: 1 - v for s, v in
                                             drift_seed(numbers, "finetuned-base", tags.drift(i, "cka_init")).items()}
        arm[tags.drift(i, "weights_init")] = drift_seed(numbers, "finetuned-base", tags.drift(i, "weights_init"))
        arm[tags.drift(i, "probe_acc")] = drift_seed(numbers, "finetuned-base", tags.drift(i, "probe_acc_ref"))
        arm[tags.drift(i, "probe_acc_control")] = drift_seed(numbers, "finetuned-base",
                                                              tags.drift(i, "probe_acc_control"))
    arms["base"][tags.DRIFT_PROBE_CHANCE] = drift_seed(numbers, "finetuned-base", tags.DRIFT_PROBE_CHANCE)


# ---- drift's rows, the figures and the notes of the report -------------------------------------------------


def drift_contrasts(arm, n_layer: int) -> list[Contrast]:
    """Drift's descriptive rows (`arm(name, metric)`: the arms' rows): the excess of finetuned over
    continued per layer, and its lower half minus its upper half. No verdict: drift says how far a
    layer moved, not what the move cost (docs/studies.md, "finetune-fragility: the design")."""
    lower, upper = list(range(n_layer // 2)), list(range(n_layer - n_layer // 2, n_layer))
    excess_cka = {i: Contrast.paired("", "", arm("finetuned-base", tags.drift(i, "1-cka")),
                                     arm("continued-base", tags.drift(i, "1-cka"))).per_seed for i in range(n_layer)}
    excess_w = {i: Contrast.paired("", "", arm("finetuned-base", tags.drift(i, "weights")),
                                   arm("continued-base", tags.drift(i, "weights"))).per_seed for i in range(n_layer)}

    def half_difference(excess: dict[int, PerSeed]) -> PerSeed:
        common = set.intersection(*(set(excess[i]) for i in range(n_layer))) if n_layer else set()
        return {s: sum(excess[i][s] for i in lower) / len(lower) - sum(excess[i][s] for i in upper) / len(upper)
                for s in sorted(common)} if lower and upper else {}

    halves_text = f"layers {lower[0]}–{lower[-1]} vs {upper[0]}–{upper[-1]}" if lower and upper else "n/a"
    c = [
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
    return c


def _stack(series: list[PerSeed]) -> dict[int, list[float]]:
    common = set.intersection(*(set(s) for s in series)) if series else set()
    return {seed: [s[seed] for s in series] for seed in sorted(common)}


def figures(arm, n_layer: int) -> list[Figure]:
    """The report's figures (`arm(name, metric)`: the arms' rows): drift by layer, accuracy by arm,
    the proxy sweep."""
    layers = [str(i) for i in range(n_layer)]
    shown = ("base", "finetuned-base", "proxy-base", *RESTORED, "continued-base", "finetuned-small")
    return [
        Figure("drift_cka_by_layer", "Representation drift from the base, by layer (mean, 95% band over seeds)",
               "layer", "1 − linear CKA with the base",
               layers, {a: [arm(a, tags.drift(i, "1-cka")) for i in range(n_layer)]
                        for a in ("finetuned-base", "continued-base")},
               {"CKA sampling floor": [arm("base", tags.drift(i, "cka_floor")) for i in range(n_layer)]}),
        Figure("drift_weights_by_layer", "Relative weight change from the base, by layer", "layer",
               "‖W − W_base‖ / ‖W_base‖", layers,
               {a: [arm(a, tags.drift(i, "weights")) for i in range(n_layer)] for a in ("finetuned-base", "continued-base")}),
        Figure("accuracy_by_arm", "Facts by forced choice, the new task by exact match (mean, 95% interval over seeds)",
               "evaluation", "accuracy", [*FACTS, "arith"],
               {a: [arm(a, m) for m in (*FACTS, "arith")] for a in shown},
               {"chance": [arm("base", f"{m}/chance") for m in (*FACTS, "arith")]}, kind="bar"),
        Figure("proxy_sweep", "Proxy tuning by strength alpha: facts kept and the new task (mean, 95% band)",
               "alpha", "accuracy", [f"{a:g}" for a in ALPHAS],
               {m: [arm(name, m) for name in PROXIES] for m in (*FACTS, "arith")},
               {f"finetuned-base {m}": [arm("finetuned-base", m)] * len(ALPHAS) for m in ("facts/one_hop", "arith")}),
    ]


NOTES = (
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
)


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


__all__ = ["ALPHAS", "ARMS", "EVALUATION", "FACTS", "NOTES", "PRIMARY_ALPHA", "PROXIES", "RESTORED",
           "accuracy_numbers", "accuracy_rows", "add_drift_rows", "base_facts", "drift_contrasts", "drift_layers",
           "evaluate_cached", "evaluate_seed", "figures", "per_seed", "restore_split", "score_arms", "setup_text"]
