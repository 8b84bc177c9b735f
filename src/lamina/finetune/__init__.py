"""A phase on a pretrained checkpoint, measured: how far the model drifts from its reference, how
much of the world's knowledge it keeps, proxy tuning (a base steered by a tuned expert), and which
blocks held what it lost (some blocks put back to the reference's weights).

- `drift`: the `Drift` callback (`drift/layer<i>/cka`, `cka_mlp`, `weights`, `probe_acc`, each
  beside its floor, its independently-initialised-model value or its control) and `DriftMeter`,
  the same measurement outside Lightning
- `retention`: exact-match accuracy on world fact questions and task (prompt, answer) pairs with
  Wilson intervals and chance levels (`eval/facts/<family>`, `eval/task/<name>`); the same fact
  questions by forced choice among the answers of their form, read by log-probability
  (`choice_items`, `choice_accuracy`, `RetentionSuite.evaluate_choices`); the `Retention` callback
- `proxy`: `ProxyTuned` (batched, KV-cached decoding of base + alpha (expert - anti)),
  `sweep_logits` (the proxy's logits at several alphas from one forward of each model) and
  `lamina proxy`
- `restore`: `restored` (a tuned model with some blocks put back to a reference's weights) and
  `halves`
- `similarity`: linear CKA (streamed) and its permutation null, relative weight change, ridge probes
- `load`: lamina checkpoints as plain GPTs with their tokenizer
"""

from lamina.finetune.drift import Drift, DriftMeter, FactProbe, fact_probe
from lamina.pretrained import LoadedCheckpoint, load_gpt, same_tokenizer
from lamina.finetune.proxy import ProxyTuned, sweep_logits
from lamina.finetune.restore import halves, restored
from lamina.finetune.retention import (
    Accuracy,
    ChoiceItem,
    EvalItem,
    GreedyCompleter,
    Retention,
    RetentionSuite,
    choice_accuracy,
    choice_items,
    fact_items,
    wilson_interval,
)
from lamina.finetune.similarity import CKAAccumulator, cka_permutation_null, fit_ridge_probe, linear_cka, weight_changes

__all__ = [
    "Accuracy",
    "CKAAccumulator",
    "ChoiceItem",
    "Drift",
    "DriftMeter",
    "EvalItem",
    "FactProbe",
    "GreedyCompleter",
    "LoadedCheckpoint",
    "ProxyTuned",
    "Retention",
    "RetentionSuite",
    "choice_accuracy",
    "choice_items",
    "cka_permutation_null",
    "fact_items",
    "fact_probe",
    "fit_ridge_probe",
    "halves",
    "linear_cka",
    "load_gpt",
    "restored",
    "same_tokenizer",
    "sweep_logits",
    "weight_changes",
    "wilson_interval",
]
