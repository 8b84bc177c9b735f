"""A phase on a pretrained checkpoint, measured: how far the model drifts from its reference, how
much of the world's knowledge it keeps, and proxy tuning (a base steered by a tuned expert).

- `drift`: the `Drift` callback (`drift/layer<i>/cka`, `cka_mlp`, `weights`, `probe_acc`, each
  beside its floor, its independently-initialised-model value or its control) and `DriftMeter`,
  the same measurement outside Lightning
- `retention`: exact-match accuracy on world fact questions and task (prompt, answer) pairs with
  Wilson intervals and chance levels (`eval/facts/<family>`, `eval/task/<name>`); the `Retention`
  callback
- `proxy`: `ProxyTuned` (batched, KV-cached decoding of base + alpha (expert - anti)) and
  `lamina proxy`
- `similarity`: linear CKA (streamed) and its permutation null, relative weight change, ridge probes
- `load`: lamina checkpoints as plain GPTs with their tokenizer
"""

from lamina.finetune.drift import Drift, DriftMeter, FactProbe, fact_probe
from lamina.pretrained import LoadedCheckpoint, load_gpt, same_tokenizer
from lamina.finetune.proxy import ProxyTuned
from lamina.finetune.retention import (
    Accuracy,
    EvalItem,
    GreedyCompleter,
    Retention,
    RetentionSuite,
    fact_items,
    wilson_interval,
)
from lamina.finetune.similarity import CKAAccumulator, cka_permutation_null, fit_ridge_probe, linear_cka, weight_changes

__all__ = [
    "Accuracy",
    "CKAAccumulator",
    "Drift",
    "DriftMeter",
    "EvalItem",
    "FactProbe",
    "GreedyCompleter",
    "LoadedCheckpoint",
    "ProxyTuned",
    "Retention",
    "RetentionSuite",
    "cka_permutation_null",
    "fact_items",
    "fact_probe",
    "fit_ridge_probe",
    "linear_cka",
    "load_gpt",
    "same_tokenizer",
    "weight_changes",
    "wilson_interval",
]
