"""Modularity: partition a layer's units by co-activation, Newman Q against its nulls.

Inputs per layer: the 0/1 activity of the MLP units (the instrument's active rule) on two
disjoint samples of the training distribution, `id` [n, d] and `id_b` [n_b, d].

Similarity. From the co-activation C = B^T B / tokens (B: active as 0/1, exact counts; diag C =
firing rate p) the similarity of units i, j is their phi coefficient (the Pearson correlation of
their binary activity), clipped at 0:

    S_ij = max(0, (C_ij - p_i p_j) / sqrt(p_i (1 - p_i) p_j (1 - p_j)))

Subtracting p_i p_j removes the background that joint firing of frequent units would otherwise
put between every pair (independent units have S = 0 up to sampling noise); units that never or
always fire (p = 0 or 1) have no edge and are excluded (label -1; `excluded_frac`).

Partition. Spectral clustering of the `id` graph (`lamina.measures.partition_by_q`), for each k
in 2..max_modules from one eigendecomposition; k is the one whose partition has the highest Q on
that same `id` graph (Newman's rule; with `n_modules` set, k is fixed). `id_b` is held out from
both the partition and the choice of k: the held-out Q is scored on a graph that nothing was
chosen on. (k used to be chosen by Q on `id_b`, and the "held-out" Q was that same maximum,
biased up by the choice: by about +0.02 on independent units.)

What is logged, per layer i (`modularity/layer{i}/...`), and how to read it:

- `q`: Newman Q of the `id` partition on the `id` graph. Not a finding on its own: spectral
  clustering finds some Q > 0 in any graph, noise included.
- `q_heldout`: the same partition scored on `id_b`. Close to `q` when the modules are a property
  of the layer; well below it (about 0 or below on noise) when the partition fits the sampling
  noise of `id`.
- `q_shuffled_mean`, `q_shuffled_std`: the null that decides. The same network with the entries of
  every weight matrix of its blocks permuted within the matrix (Filan et al., "Clusterability in
  Neural Networks", arXiv 2103.03386: the same weight statistics, no learned arrangement), the
  same windows, the same rule and procedure (`shuffled_weights_null`), `instrument.modularity.shuffled_draws`
  draws. What Q is for a network of these weight statistics reading this input.
- `q_shuffled_z` = (q - q_shuffled_mean) / q_shuffled_std: how far the learned arrangement puts Q
  above (or below) that (`q_shuffled_lo`, `q_shuffled_hi` = mean -/+ 2 std: the band
  TensorBoard's custom-scalars chart draws around q). z > 3 reads as learned modularity; z < -3 as a network less modular
  than its own shuffles. With n draws, a network that is itself a draw of the null (a freshly
  initialised one) gives z ~ sqrt(1 + 1/n) t_(n-1): |z| > 3 in about 7% of layers with 4 draws,
  3% with 8, 1% with 16, so read one layer's z at 3 with that in mind.
- `q_heldout_shuffled_mean`, `..._std`, `..._z`: the same for the held-out Q (the shuffled
  copies' partitions scored on their own `id_b` activity): modules that replicate on a second
  sample, against the same for the shuffles. Less moved by noise-fitting, which depends on
  firing rates that training changes.
- `q_null_mean`, `q_null_std`: descriptive. The same procedure on activity whose tokens are
  permuted independently per unit (firing rates kept exactly, co-activation destroyed),
  `null_draws` (>= 8) draws, seeded, never the global RNG (`lamina.measures.modularity_null`):
  what Q is for units that share nothing. Every network clears it, an untrained one too (units
  that read the same tokens co-fire): q above it is not a finding.
  `q_null_lo`, `q_null_hi` = q_null_mean -/+ 2 q_null_std.
- `q_z` = (q - q_null_mean) / q_null_std (0 when the null has no spread): how far Q is above
  what independent units with these firing rates score; descriptive, as its null. The picture
  `modularity/q_vs_null` shows q, q_heldout and the null's draws over steps.
- `modules`: k. Compare with the k the null draws choose (`LayerModules.k_null`).
- `stability`: NMI of this partition with the previous measurement's, read against
- `stability_floor`: NMI of the `id` partition with the `id_b` partition (found the same way, k
  by Q on `id_b`) at the same step: how much two samples of the same moment agree.
  A stability at the floor is as stable as the measurement can show; below it, the modules moved.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lamina import measures, tags
from lamina.instrument.precision import in_full_precision
from lamina.instrument.sparsity import ActiveRule, forward_recorded
from lamina.measures import phi_similarity

__all__ = [
    "LayerModules", "ShuffledNull", "find_modules", "modularity_scalars", "phi_similarity", "shuffled_copy",
    "shuffled_modules", "shuffled_weights_null", "with_shuffled_null",
]

MIN_MODULES = 2
# k-means++ restarts per partition (the real ones and every null draw alike): on unit-normalised
# spectral embeddings 4 restarts find the same partitions as 8 on the planted tests, at half the cost.
KMEANS_RESTARTS = 4


@dataclass
class LayerModules:
    """A layer's partition and its null (see the module docstring). `labels`: CPU LongTensor
    [d], -1 excluded; `similarity`: the `id` phi matrix (CPU, for pictures); `q_null`, `k_null`:
    Q and k of each permutation-null draw (empty, and their summaries None, where it was not
    drawn); `stability`: None at the first measurement;
    `q_shuffled`, `q_heldout_shuffled` and their summaries: the shuffled-weights null (empty and
    None until `with_shuffled_null` sets them: it needs the model, `find_modules` only activity)."""

    labels: torch.Tensor
    similarity: torch.Tensor
    k: int
    q: float
    q_heldout: float
    q_null: list[float]
    q_null_mean: float | None
    q_null_std: float | None
    q_z: float | None
    stability: float | None
    stability_floor: float
    k_null: list[int] = field(default_factory=list)
    q_shuffled: list[float] = field(default_factory=list)
    q_shuffled_mean: float | None = None
    q_shuffled_std: float | None = None
    q_shuffled_z: float | None = None
    q_heldout_shuffled: list[float] = field(default_factory=list)
    q_heldout_shuffled_mean: float | None = None
    q_heldout_shuffled_std: float | None = None
    q_heldout_shuffled_z: float | None = None

    def module_units(self) -> list[torch.Tensor]:
        """Unit indices of each module 0..k-1."""
        return [torch.nonzero(self.labels == m).flatten() for m in range(self.k)]


def null_summary(q: float, null: list[float]) -> tuple[float, float, float]:
    """(mean, standard deviation with n - 1, z) of a value against its null draws; z = 0 when
    the draws have no spread (or fewer than 2)."""
    t = torch.tensor(null, dtype=torch.float64)
    mean = float(t.mean()) if t.numel() else 0.0
    std = float(t.std()) if t.numel() > 1 else 0.0
    z = (q - mean) / std if std > 0 and math.isfinite(std) else 0.0
    return mean, std, z


def _partition(active: torch.Tensor, kw: dict) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(phi similarity, labels, k, Q) of one sample's activity: k chosen by Q on its own graph."""
    similarity = measures.activity_phi(active)
    labels, k, q = measures.partition_by_q(similarity, **kw)
    return similarity, labels, k, q


def _options(n_modules: int | None, max_modules: int, seed: int) -> dict:
    """The keywords of `measures.partition_by_q` (and of the nulls) for a layer."""
    return dict(min_k=MIN_MODULES, max_k=max(MIN_MODULES, max_modules), k=n_modules, n_init=KMEANS_RESTARTS,
                seed=seed)


@in_full_precision  # the counts X^T X are an fp32 matmul: under autocast, a bf16 one
def find_modules(
    active_id: torch.Tensor,
    active_id_b: torch.Tensor,
    previous: torch.Tensor | None = None,
    n_modules: int | None = None,
    max_modules: int = 8,
    null_draws: int = 8,
    seed: int = 0,
) -> LayerModules:
    """Partition one layer's units and measure Q against its permutation null (see the module
    docstring; the shuffled-weights null, which needs the model, is `shuffled_weights_null`).

    active_id [n, d], active_id_b [n_b, d]: 0/1 activity (bool) of the same d units on the two
    samples, on any device; previous: the previous measurement's labels of this layer, or None;
    n_modules: a fixed k (None: chosen by Q on the `id` graph in 2..max_modules); null_draws:
    draws of the permutation null (0: none drawn: `q_null` and `k_null` empty, their summaries
    None, no `q_null_*` tags); seed: all randomness (k-means seeding, null draws) comes from it.
    """
    kw = _options(n_modules, max_modules, seed)
    active_id_b = active_id_b.to(active_id.device)
    similarity, labels, k, q = _partition(active_id, kw)
    similarity_b, labels_b, _, _ = _partition(active_id_b, kw)
    q_heldout = measures.modularity_q(similarity_b, labels)  # neither the partition nor its k saw id_b
    stability_floor = measures.partition_nmi(labels, labels_b)
    q_null, k_null = measures.modularity_null(active_id, draws=null_draws, **kw) if null_draws else ([], [])
    q_null_mean, q_null_std, q_z = null_summary(q, q_null) if q_null else (None, None, None)
    labels = labels.cpu()
    stability = None if previous is None else measures.partition_nmi(labels, previous)
    return LayerModules(
        labels, similarity.cpu(), k, q, q_heldout, q_null, q_null_mean, q_null_std, q_z,
        stability, stability_floor, k_null,
    )


# ---- the shuffled-weights null (Filan et al., arXiv 2103.03386) ---------------------------------


def shuffled_modules(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The layers whose weight matrices the shuffled-weights null shuffles: every nn.Linear inside
    the transformer blocks (attention `c_attn`, `c_proj`; MLP `c_fc`, `c_proj`). Kept: the token and
    position embeddings (and the output layer, tied to the token embedding), the LayerNorms and
    every bias (see `shuffled_weights_null`)."""
    blocks = getattr(getattr(model, "transformer", None), "h", None)
    if blocks is None:
        raise TypeError("the shuffled-weights null needs a lamina GPT (model.transformer.h)")
    return [m for block in blocks for m in block.modules() if isinstance(m, torch.nn.Linear)]


def shuffled_copy(model: torch.nn.Module) -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A copy of `model` that shares every parameter and buffer with it except the weights of
    `shuffled_modules`, which are its own; returns (copy, [(model's weight, copy's weight)]). The
    model is not touched: nothing of it is written, and the copy holds no gradients."""
    targets = {id(m.weight) for m in shuffled_modules(model)}
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()] if id(t) not in targets}
    copied = copy.deepcopy(model, memo)
    if getattr(copied, "_compiled_call_impl", None) is not None:  # a model compiled in place: the copy runs eagerly
        copied._compiled_call_impl = None
    pairs = [(a.weight, b.weight) for a, b in zip(shuffled_modules(model), shuffled_modules(copied))]
    for _, weight in pairs:
        weight.requires_grad_(False)
    return copied, pairs


def _sign_rule(model: torch.nn.Module) -> ActiveRule:
    return ActiveRule("sign", [0.0])


def _activity(model: torch.nn.Module, windows: torch.Tensor, rule: ActiveRule, tokens: int | None, batch_size: int,
              device: torch.device) -> list[torch.Tensor]:
    """Per layer, the 0/1 activity bool [tokens, d] of the first `tokens` tokens of `windows`
    (rows in the order `measure_probes` keeps them: window by window)."""
    n = windows.shape[0] if tokens is None else min(windows.shape[0], -(-tokens // windows.shape[1]))
    parts: list[list[torch.Tensor]] = []
    for batch in windows[:n].split(batch_size):
        record = forward_recorded(model, batch.to(device, non_blocking=True))
        if not parts:
            parts = [[] for _ in record["mlp"]]
        for layer, layer_parts in enumerate(parts):
            layer_parts.append(rule.active(record, layer))
        del record
    return [torch.cat(layer_parts)[:tokens] for layer_parts in parts]


@dataclass
class ShuffledNull:
    """The shuffled-weights null of one measurement: per layer, the Q (`q`) and held-out Q
    (`q_heldout`) of each draw, and the seconds it took."""

    q: list[list[float]]
    q_heldout: list[list[float]]
    seconds: float


@in_full_precision
def shuffled_weights_null(
    model: torch.nn.Module,
    id_windows: torch.Tensor,
    id_b_windows: torch.Tensor | None = None,
    *,
    draws: int = 4,
    seed: int = 0,
    layer_seeds: list[int] | None = None,
    tokens: int | None = None,
    n_modules: int | None = None,
    max_modules: int = 8,
    rule: Callable[[torch.nn.Module], ActiveRule] | None = None,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> ShuffledNull:
    """The shuffled-weights null of every layer's co-activation Q (Filan et al., arXiv 2103.03386).

    Filan, Casper, Hod, Wild, Critch and Russell read a network's clusterability against networks
    with its weights shuffled: each weight matrix's entries permuted within the matrix, which keeps
    the network's weight statistics matrix by matrix (the multiset of each matrix's values) and
    erases its learned arrangement (for pruned networks they shuffle the nonzero entries only;
    lamina's networks are dense, where the two agree). Here each of `draws` draws does so to a copy
    of `model` (`shuffled_copy`; the model itself is never written) and runs the same `id` and
    `id_b` windows through it (the first `tokens` tokens of each, as the real measurement reads
    them), takes each layer's 0/1 activity under `rule` (a function of the model giving its
    `ActiveRule`, so a calibrated rule such as cett is calibrated on the shuffled copy as on the
    real one; default the sign rule), and computes Q exactly as `find_modules` does for the real
    network: the same phi similarity, the same choice of k by Q on the `id` graph, the same
    k-means seed (`layer_seeds[i]`, default `seed`), and the held-out Q on `id_b`.

    What is shuffled: every nn.Linear weight inside the transformer blocks (`shuffled_modules`),
    each matrix on its own, attention's included: attention decides what each token's residual
    stream holds before the MLP reads it, so an arrangement it learned would survive an MLP-only
    shuffle and be credited to the null. Kept: the embeddings (with byte tokens the embedding is
    the input itself; Filan et al. keep the inputs and shuffle the network that reads them), the
    LayerNorm gains and the biases (vectors that belong to units, not connections between them:
    their graph is of the weight matrices). So what the null leaves is what any network with these
    weight statistics inherits from the structured input: units co-fire because they read the
    same tokens, and a trained network must beat that. The copy of a freshly initialised GPT is a
    draw of the same distribution as the network itself (its matrices are i.i.d. entries), so there
    the real Q is one more draw of the null.

    The shuffles come from a torch.Generator on the model's device seeded with `seed` (never the
    global RNG); draw j is the same whatever `draws` is. Runs on `device` (default the model's),
    eval mode and no grad are the caller's (the measurement's). Returns per layer the Q and held-out
    Q of each draw (`ShuffledNull`); `id_b_windows` None: the held-out Q on `id` itself.
    """
    started = time.perf_counter()
    device = device or next(model.parameters()).device
    rule = rule or _sign_rule
    copied, pairs = shuffled_copy(model)
    generator = torch.Generator(device=device).manual_seed(seed % 2**64)
    qs: list[list[float]] = []
    qs_heldout: list[list[float]] = []
    with torch.no_grad():
        for _ in range(draws):
            for weight, shuffled in pairs:
                shuffled.copy_(measures.shuffle_within(weight.to(device), generator))
            active_rule = rule(copied)
            active = _activity(copied, id_windows, active_rule, tokens, batch_size, device)
            active_b = active if id_b_windows is None else _activity(
                copied, id_b_windows, active_rule, tokens, batch_size, device
            )
            if not qs:
                qs, qs_heldout = [[] for _ in active], [[] for _ in active]
            for layer, (act, act_b) in enumerate(zip(active, active_b)):
                layer_seed = seed if layer_seeds is None else layer_seeds[layer]
                _, labels, _, q = _partition(act, _options(n_modules, max_modules, layer_seed))
                qs[layer].append(q)
                qs_heldout[layer].append(measures.modularity_q(measures.activity_phi(act_b), labels))
    del copied, pairs
    return ShuffledNull(qs, qs_heldout, time.perf_counter() - started)


def with_shuffled_null(mods: LayerModules, q: list[float], q_heldout: list[float]) -> LayerModules:
    """`mods` with its shuffled-weights null (the draws of one layer from `shuffled_weights_null`)."""
    mods.q_shuffled = list(q)
    mods.q_shuffled_mean, mods.q_shuffled_std, mods.q_shuffled_z = null_summary(mods.q, mods.q_shuffled)
    mods.q_heldout_shuffled = list(q_heldout)
    (mods.q_heldout_shuffled_mean, mods.q_heldout_shuffled_std,
     mods.q_heldout_shuffled_z) = null_summary(mods.q_heldout, mods.q_heldout_shuffled)
    return mods


def modularity_scalars(layers: list[LayerModules]) -> dict[str, float]:
    """The scalars of each layer's modules, `modularity/layer{i}/...` (module docstring)."""
    scalars: dict[str, float] = {}
    for i, mods in enumerate(layers):
        scalars[tags.q(i)] = mods.q
        scalars[tags.modularity(i, "q_heldout")] = mods.q_heldout
        if mods.q_null:  # the permutation null, where it was drawn
            scalars[tags.q_null(i, "mean")] = mods.q_null_mean
            scalars[tags.q_null(i, "std")] = mods.q_null_std
            scalars[tags.q_null(i, "lo")] = mods.q_null_mean - 2 * mods.q_null_std
            scalars[tags.q_null(i, "hi")] = mods.q_null_mean + 2 * mods.q_null_std
            scalars[tags.modularity(i, "q_z")] = mods.q_z
        if mods.q_shuffled:
            scalars[tags.q_shuffled(i, "mean")] = mods.q_shuffled_mean
            scalars[tags.q_shuffled(i, "std")] = mods.q_shuffled_std
            scalars[tags.q_shuffled(i, "z")] = mods.q_shuffled_z
            scalars[tags.q_shuffled(i, "lo")] = mods.q_shuffled_mean - 2 * mods.q_shuffled_std
            scalars[tags.q_shuffled(i, "hi")] = mods.q_shuffled_mean + 2 * mods.q_shuffled_std
            scalars[tags.modularity(i, "q_heldout_shuffled_mean")] = mods.q_heldout_shuffled_mean
            scalars[tags.modularity(i, "q_heldout_shuffled_std")] = mods.q_heldout_shuffled_std
            scalars[tags.modularity(i, "q_heldout_shuffled_z")] = mods.q_heldout_shuffled_z
        scalars[tags.modularity(i, "modules")] = float(mods.k)
        scalars[tags.modularity(i, "excluded_frac")] = (
            float((mods.labels < 0).float().mean()) if mods.labels.numel() else 0.0
        )
        if mods.stability is not None:
            scalars[tags.modularity(i, "stability")] = mods.stability
        scalars[tags.modularity(i, "stability_floor")] = mods.stability_floor
    return scalars
