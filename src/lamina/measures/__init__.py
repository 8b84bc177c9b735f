"""The public API of every measure lamina reports (DESIGN.md, "Contracts" and "Measures").

Plain functions on torch tensors; import them from here (``from lamina.measures import X`` or
``lamina.measures.X``). Each module holds one concern:

- ``activation``: activation measures of MLP units under an active rule (``|a| > eps``, or
  ``gate > eps``; eps a float or per-unit [d]): ``sparsity_stats``, ``coactivation``, and the
  streaming ``SparsityAccumulator`` (with per-window density), ``DensityAccumulator`` (the density alone,
  for the light tier) and ``CoactivationAccumulator``.
  They run a Triton kernel (``lamina.kernels``) on CUDA, or anywhere under ``TRITON_INTERPRET=1``,
  and the plain PyTorch reference otherwise; ``impl="kernel"`` or ``"reference"`` forces one.
- ``cett``: ``cett_threshold``, the CETT rule's per-layer threshold, calibrated on activations.
- ``phi``: ``phi_similarity`` (phi coefficient of unit pairs from a co-activation) and
  ``activity_phi`` (the same from 0/1 activity, exact counts).
- ``graph``: graph measures of a similarity (float64, deterministic): ``partition`` (spectral
  clustering; -1 for isolated units), ``partition_by_q`` (k chosen by Q on the graph itself or
  on another), ``partition_by_heldout`` (k chosen on another graph),
  ``modularity_q`` (Newman's weighted Q: lamina's one implementation of it), ``partition_nmi``.
- ``kmeans``: the batched, seeded k-means behind the spectral partitions.
- ``nulls``: the modularity nulls: ``permute_units`` (activity permuted independently per unit),
  ``modularity_null`` (the partition procedure on such activity) and ``shuffle_within`` (a
  weight matrix's entries permuted within it: the shuffled-weights null of Filan et al.), seeded,
  never the global RNG.
- ``rank``: ``effective_rank`` and ``effective_rank_from_singular_values``.
- ``vectors``: per-vector measures of hidden states (Jin et al.'s last-layer measures):
  ``energy_share``, ``entropy_rank``, ``hoyer``, ``top_fraction_count``.
- ``distributed``: ``sum_over_ranks`` and ``gather_rows`` over torch.distributed's default group.
- ``numeric``: the helpers shared with the rest of lamina, one copy each: ``wide_dtype``
  (float64, float32 on MPS), ``compute_device``, ``full_precision`` (autocast off),
  ``one_cpu_thread``, ``wilson_interval``.

None of the measures returns NaN on dead units or all-zero activations. Their fp32 matmuls
(co-activation and pair counts, the CETT products) run with autocast off, so a caller's bf16
autocast does not round them.
"""

from __future__ import annotations

# Kernel names the single-module lamina.measures carried; still importable from here.
from lamina.kernels import (  # noqa: F401
    EXACT_COUNT_LIMIT,
    SparsitySums,
    active_mask,
    coactivation_reference,
    coactivation_update_,
    coactivation_update_reference_,
    eps_arg,
    kernels_can_run,
    sparsity_stats_reference,
    sparsity_sums,
    sparsity_sums_reference,
    stats_from_sums,
)
from lamina.measures.activation import (  # noqa: F401  (_use_kernel: the tests' view of dispatch)
    CoactivationAccumulator,
    DensityAccumulator,
    SparsityAccumulator,
    _use_kernel,
    coactivation,
    sparsity_stats,
)
from lamina.measures.cett import cett_threshold
from lamina.measures.distributed import gather_rows, sum_over_ranks
from lamina.measures.graph import modularity_q, partition, partition_by_heldout, partition_by_q, partition_nmi
from lamina.measures.nulls import modularity_null, permute_units, shuffle_within
from lamina.measures.numeric import compute_device, full_precision, one_cpu_thread, wide_dtype, wilson_interval
from lamina.measures.phi import activity_phi, phi_similarity
from lamina.measures.rank import effective_rank, effective_rank_from_singular_values
from lamina.measures.vectors import energy_share, entropy_rank, hoyer, top_fraction_count

__all__ = [
    "CoactivationAccumulator",
    "DensityAccumulator",
    "EXACT_COUNT_LIMIT",
    "SparsityAccumulator",
    "active_mask",
    "activity_phi",
    "cett_threshold",
    "coactivation",
    "compute_device",
    "effective_rank",
    "effective_rank_from_singular_values",
    "energy_share",
    "entropy_rank",
    "full_precision",
    "gather_rows",
    "hoyer",
    "modularity_null",
    "modularity_q",
    "one_cpu_thread",
    "partition",
    "partition_by_heldout",
    "partition_by_q",
    "partition_nmi",
    "permute_units",
    "phi_similarity",
    "shuffle_within",
    "sparsity_stats",
    "sum_over_ranks",
    "top_fraction_count",
    "wide_dtype",
    "wilson_interval",
]
