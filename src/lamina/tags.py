r"""The names of the TensorBoard tags lamina writes and reads, in one place.

A tag is written by one module (the training loop, a callback, an instrument) and read by others
(`lamina compare`, `lamina study`'s claims, the capability gates, the custom-scalars layout, the
series summary). Both sides build it here, so a tag renamed here is renamed for both: no reader can
go on asking for a name that no writer writes any more (tests/test_tags.py holds the strings and
checks what the world-v2 claims read against what a fit writes). The module imports nothing: every
writer and reader imports it, with no import circle.

Families (`<...>` a part the builder fills, `[...]` a part only some tags have; W: written by, R: read by;
the constants and prefixes of a family stand beside its builders in the code below):

| family         | builders                               | tags                                                 |
|----------------|----------------------------------------|------------------------------------------------------|
| training       | TRAIN_LOSS, VAL_LOSS, VAL_BPB, LR      | train/loss, val/loss, val/bpb, lr                    |
| perf           | perf(name); TOKENS_SEEN, FLOPS, ...    | perf/<name>                                          |
| density        | density(probe, layer=None)             | sparsity/<probe>/mean, sparsity/<probe>/layer<i>     |
| token stats    | sparsity_stat(probe, stat, layer=None) | sparsity/<probe>[/layer<i>]/<stat>                   |
| gaps           | gap(probe, layer=None)                 | sparsity/gap/<probe>[/layer<i>] (/se, /z, /lo, /hi)  |
| modularity     | modularity(layer, stat), q(layer),     | modularity/layer<i>/<stat>: q, q_null_<s>,           |
|                | q_null, q_shuffled(layer, stat),       | q_shuffled_<s>, specificity[_<s>], ...               |
|                | specificity(layer, stat=None)          |                                                      |
| ablation       | ablation_damage(layer, module, task)   | modularity/layer<i>/ablation/m<m>/<task>             |
| task losses    | task_loss(task), task_chance(task)     | modularity/task_loss/<task>, ...                     |
| effective rank | effective_rank(layer, kind="")         | layers/layer<i>/effective_rank[_<kind>]              |
| label probes   | label_probe(label, stat, layer=None)   | layers[/layer<i>]/probe/<label>/<stat>               |
| tiers          | tier(tier, stat); TIER_CONTRAST[_SE]   | layers/tier/<tier>/<stat>, layers/tier/contrast[_se] |
| last layer     | lastlayer(level, stat)                 | lastlayer/level<k>/<stat>, lastlayer/skipped         |
| level gaps     | lastlayer_gap(level, stat, matched)    | lastlayer/[matched_]gap/level<k>/<stat>              |
| context        | context(stat, bin=None, strength=None) | eval/context/<stat>[/s<strength>][/<bin>]            |
| thinking       | arith_acc(level, thought=True),        | eval/arith_acc[_nothink]/level<k>,                   |
|                | arith_n, think_acc_gain(level),        | eval/arith_n/level<k>, ...                           |
|                | pass_at(k, level)                      |                                                      |
| rlp            | rlp(name); RLP_SIGNAL                  | rlp/<name>                                           |
| retention      | facts(family), eval_task(name)         | eval/facts/<family>, eval/task/<name>                |
| drift          | drift(layer, stat)                     | drift/layer<i>/<stat>, drift/probe_chance            |
| name swap      | name_swap(bin, kind)                   | density/name_swap/<bin>/<kind>[/se]                  |

- training: W lamina.lm (lamina.rlp.module: `lr`); R compare (`val/*`), the study's learns-the-text gates
  (`val/bpb`), the custom-scalars layout, the progress bar.
- perf: W lamina.callbacks.throughput and the timers; R compare's x axes (`tokens_seen`, `flops`), the progress
  bar (`tokens_per_sec`).
- density, gaps: W lamina.instrument.sparsity (and .train_density, probe TRAIN_PROBE); R density-familiarity,
  sparsify-difficulty, compare (gaps), the layout.
- modularity, ablation, task losses: W lamina.instrument.modularity, .ablation; R the modularity claim, the
  strings gate, the layout and the series summary (lamina.instrument.callback.in_summary).
- effective rank, label probes, last layer, level gaps: W lamina.instrument.layers, .hierarchy, .lastlayer;
  R the series summary.
- tiers: W lamina.instrument.hierarchy; R the hierarchy claim.
- context: W lamina.instrument.context; R context-vs-prior, the reads_context and knows_priors gates, the
  series summary.
- thinking, rlp: W lamina.rlp.evaluate (through lamina.callbacks.thought_eval), lamina.rlp.module; R the thinking
  gate, compare, lamina.study.rlp_evaluation.
- retention, drift: W lamina.finetune.retention, .drift; R lamina.study.finetune_evaluation.
- name swap: density-familiarity computes them from the final checkpoint and reads them from a run first
  (no instrument logs them yet).

Conventions:

- Statistics of a tag are suffixes: `se(tag)` is `<tag>/se` (standard error), `z(tag)` `<tag>/z`,
  `lo(tag)`, `hi(tag)` a 95% band. Some families name theirs with an underscore instead
  (`q_shuffled_z`, `gain_se`, `contrast_se`): their builders take the statistic as part of the name.
- A reader that matches a family with `startswith` takes its prefix from here: a constant
  (LABEL_PROBES, LASTLAYER_LEVELS, LASTLAYER_GAPS, GAPS) or a one-name builder given an empty name
  (`task_loss("")` is `modularity/task_loss/`, `context("")` is `eval/context/`).
- A builder's numbers may be glob or regular-expression text where a reader matches a family
  (`arith_acc("*")` is `eval/arith_acc/level*`, `q(r"\d+")` is `modularity/layer\d+/q`).
- Probe names are lamina.probes' (`id`, `id_b`, `exposure/100`, `level/2`, `ood/level/4`, ...);
  context bins are exposure bins (`0`, `1`, `10`, `100`) and `all`.
"""

from __future__ import annotations

# ---- statistics of a tag -----------------------------------------------------------------------

SE, Z, LO, HI = "se", "z", "lo", "hi"


def se(tag: str) -> str:
    """`<tag>/se`: its standard error."""
    return f"{tag}/{SE}"


def z(tag: str) -> str:
    """`<tag>/z`: its value over its standard error."""
    return f"{tag}/{Z}"


def lo(tag: str) -> str:
    """`<tag>/lo`: the lower end of its 95% band."""
    return f"{tag}/{LO}"


def hi(tag: str) -> str:
    """`<tag>/hi`: the upper end of its 95% band."""
    return f"{tag}/{HI}"


# ---- training (lamina.lm) ----------------------------------------------------------------------

TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_BPB = "val/bpb"
LR = "lr"


# ---- perf (lamina.callbacks.throughput, the timers) -------------------------------------------------


def perf(name: str) -> str:
    """`perf/<name>`: throughput, cumulative counters and timers."""
    return f"perf/{name}"


TOKENS_SEEN, FLOPS, TOKENS_PER_SEC = perf("tokens_seen"), perf("flops"), perf("tokens_per_sec")


# ---- sparsity (lamina.instrument.sparsity, .train_density) ---------------------------------------------

TRAIN_PROBE = "train"  # the training batches' density (lamina.instrument.train_density) is probe `train`'s
GAPS = "sparsity/gap"


def density(probe: str, layer: int | str | None = None) -> str:
    """`sparsity/<probe>/mean` (over layers) or `sparsity/<probe>/layer<i>`: the share of MLP units active."""
    return f"sparsity/{probe}/mean" if layer is None else f"sparsity/{probe}/layer{layer}"


def sparsity_stat(probe: str, stat: str, layer: int | str | None = None) -> str:
    """`sparsity/<probe>/<stat>` (mean over layers) or `sparsity/<probe>/layer<i>/<stat>`: a
    per-token statistic other than density (l1, hoyer, ...; `firing_rate`, a histogram)."""
    return f"sparsity/{probe}/{stat}" if layer is None else f"sparsity/{probe}/layer{layer}/{stat}"


def gap(probe: str, layer: int | str | None = None) -> str:
    """`sparsity/gap/<probe>` (over layers) or `.../layer<i>`: density on `id` minus the probe's."""
    return f"{GAPS}/{probe}" if layer is None else f"{GAPS}/{probe}/layer{layer}"


# ---- modularity and ablation (lamina.instrument.modularity, .ablation) --------------------------------


def modularity(layer: int | str, stat: str) -> str:
    """`modularity/layer<i>/<stat>`: any per-layer modularity number (q_heldout, modules, stability, ...)."""
    return f"modularity/layer{layer}/{stat}"


def q(layer: int | str) -> str:
    """`modularity/layer<i>/q`: Newman Q of the layer's co-activation partition."""
    return modularity(layer, "q")


def q_null(layer: int | str, stat: str) -> str:
    """`modularity/layer<i>/q_null_<stat>` (mean, std, lo, hi): Q's per-unit permutation null."""
    return modularity(layer, f"q_null_{stat}")


def q_shuffled(layer: int | str, stat: str) -> str:
    """`modularity/layer<i>/q_shuffled_<stat>` (mean, std, z, lo, hi): Q's shuffled-weights null."""
    return modularity(layer, f"q_shuffled_{stat}")


def specificity(layer: int | str, stat: str | None = None) -> str:
    """`modularity/layer<i>/specificity` or `..._<stat>` (null_mean, null_std, z): ablation specificity."""
    return modularity(layer, "specificity" if stat is None else f"specificity_{stat}")


def ablation_prefix(layer: int | str) -> str:
    """`modularity/layer<i>/ablation/m`: what every ablation_damage tag of the layer starts with."""
    return modularity(layer, "ablation/m")


def ablation_damage(layer: int | str, module: int | str, task: str) -> str:
    """`modularity/layer<i>/ablation/m<m>/<task>`: the task's loss increase with module m ablated."""
    return f"{ablation_prefix(layer)}{module}/{task}"


def task_loss(task: str) -> str:
    """`modularity/task_loss/<task>`: the task probe's loss (no ablation)."""
    return f"modularity/task_loss/{task}"


def task_chance(task: str) -> str:
    """`modularity/task_chance/<task>`: the task's chance loss."""
    return f"modularity/task_chance/{task}"


UNLEARNED_TASKS = "modularity/unlearned_tasks"


# ---- layers (lamina.instrument.layers, .hierarchy) ------------------------------------------------------


def effective_rank(layer: int | str, kind: str = "") -> str:
    """`layers/layer<i>/effective_rank` or `..._<kind>` (rows, floor, or the second sample's name)."""
    return f"layers/layer{layer}/effective_rank" + (f"_{kind}" if kind else "")


LABEL_PROBES = "layers/probe/"  # the prefix of label_probe's tags over layers


def label_probe(label: str, stat: str, layer: int | str | None = None) -> str:
    """`layers/probe/<label>/<stat>` (over layers) or `layers/layer<i>/probe/<label>/<stat>`: a
    linear probe's reading of one label."""
    return f"{LABEL_PROBES}{label}/{stat}" if layer is None else f"layers/layer{layer}/probe/{label}/{stat}"


def tier(tier_name: str, stat: str) -> str:
    """`layers/tier/<tier>/<stat>` (gain, gain_se, depth, depth_se, labels_read): a tier's labels pooled."""
    return f"layers/tier/{tier_name}/{stat}"


TIER_CONTRAST, TIER_CONTRAST_SE = "layers/tier/contrast", "layers/tier/contrast_se"  # higher − lexical depth


# ---- last layer (lamina.instrument.lastlayer) ------------------------------------------------------------


LASTLAYER_LEVELS, LASTLAYER_GAPS = "lastlayer/level", "lastlayer/gap/"  # the prefixes of the two builders' tags


def lastlayer(level: int | str, stat: str) -> str:
    """`lastlayer/level<k>/<stat>`: a last-layer measure's mean over level k's problems (`length` too)."""
    return f"{LASTLAYER_LEVELS}{level}/{stat}"


def lastlayer_gap(level: int | str, stat: str, matched: bool = False) -> str:
    """`lastlayer/gap/level<k>/<stat>` (lowest level minus level k), or at matched prompt length
    `lastlayer/matched_gap/level<k>/<stat>`."""
    return f"{'lastlayer/matched_gap/' if matched else LASTLAYER_GAPS}level{level}/{stat}"


LASTLAYER_SKIPPED = "lastlayer/skipped"


# ---- context against memory (lamina.instrument.context) ---------------------------------------------------

CONTEXT = "eval/context"


def context(stat: str, bin: str | None = None, strength: float | None = None, prefix: str = CONTEXT) -> str:
    """`eval/context/<stat>`, `.../<stat>/<bin>` (an exposure bin or `all`), or with a steering
    strength `.../<stat>/s<strength>/<bin>`; `prefix` another root than `eval/context`."""
    parts = [f"{prefix}/{stat}"]
    if strength is not None:
        parts.append(f"s{strength:g}")
    if bin is not None:
        parts.append(str(bin))
    return "/".join(parts)


# ---- thinking and RLP (lamina.rlp.evaluate through lamina.callbacks.thought_eval; lamina.rlp.module) -------

ARITH_ACC, NO_THOUGHT = "eval/arith_acc", "_nothink"


def arith_acc(level: int | str, thought: bool = True) -> str:
    """`eval/arith_acc/level<k>` (greedy, with a thought) or `eval/arith_acc_nothink/level<k>`."""
    return f"{ARITH_ACC}{'' if thought else NO_THOUGHT}/level{level}"


def arith_n(level: int | str) -> str:
    """`eval/arith_n/level<k>`: the problems scored."""
    return f"eval/arith_n/level{level}"


def think_acc_gain(level: int | str) -> str:
    """`eval/think_acc_gain/level<k>`: accuracy with minus without a thought (with /se, /lo, /hi)."""
    return f"eval/think_acc_gain/level{level}"


def pass_at(k: int | str, level: int | str) -> str:
    """`eval/pass_at_<k>/level<level>`."""
    return f"eval/pass_at_{k}/level{level}"


def rlp(name: str) -> str:
    """`rlp/<name>`: an RLP step's numbers."""
    return f"rlp/{name}"


# what can show RLP learning: rewards that differ within a group, and few groups without any
RLP_SIGNAL = (rlp("reward_std"), rlp("advantage_abs_mean"), rlp("zero_variance_frac"))


# ---- fine-tuning (lamina.finetune.retention, .drift) --------------------------------------------------------

EVAL = "eval"


def facts(family: str) -> str:
    """`eval/facts/<family>` (one_hop, two_hop): the world's fact questions."""
    return f"{EVAL}/facts/{family}"


def eval_task(name: str) -> str:
    """`eval/task/<name>`: a fine-tuning task's held-out items."""
    return f"{EVAL}/task/{name}"


def drift(layer: int | str, stat: str) -> str:
    """`drift/layer<i>/<stat>` (cka, cka_mlp, weights, probe_acc, and their `_init`, `_floor`, `_ref`, ...)."""
    return f"drift/layer{layer}/{stat}"


DRIFT_PROBE_CHANCE = "drift/probe_chance"


# ---- density-familiarity's name-swapped windows --------------------------------------------------------------


def name_swap(bin: str, kind: str) -> str:
    """`density/name_swap/<bin>/<kind>` (kind: both, name, attribute; `se(...)` its standard error)."""
    return f"density/name_swap/{bin}/{kind}"
