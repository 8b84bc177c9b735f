"""Triton kernels of lamina, each beside the plain-PyTorch reference that is its spec.

Depends on torch and triton only; triton is optional (``HAS_TRITON``), so the references import
and run where it is missing (macOS). Use ``lamina.measures`` rather than these modules directly:
it picks a kernel or its reference for the tensor at hand.
"""

from __future__ import annotations

import torch

from . import sparsity_stats as _sparsity_stats
from .coactivation import (
    EXACT_COUNT_LIMIT,
    coactivation_reference,
    coactivation_update_,
    coactivation_update_reference_,
)
from .sparsity_stats import (
    HAS_TRITON,
    SparsitySums,
    active_mask,
    eps_arg,
    int32_row_chunks,
    sparsity_stats_reference,
    sparsity_sums,
    sparsity_sums_reference,
    stats_from_sums,
    top_count,
    wide_dtype,
)


def interpreted() -> bool:
    """Whether the kernels were built for Triton's CPU interpreter.

    Triton decides when a kernel is decorated, i.e. at import: ``TRITON_INTERPRET=1`` must be
    set before ``lamina.kernels`` is first imported.
    """
    if not HAS_TRITON:
        return False
    import triton

    return not isinstance(_sparsity_stats._unit_and_token_sums_kernel, triton.runtime.JITFunction)


def kernels_can_run(tensor: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on ``tensor``: on CUDA, or anywhere when interpreted."""
    return HAS_TRITON and (tensor.is_cuda or interpreted())


__all__ = [
    "HAS_TRITON",
    "EXACT_COUNT_LIMIT",
    "SparsitySums",
    "active_mask",
    "coactivation_reference",
    "coactivation_update_",
    "coactivation_update_reference_",
    "eps_arg",
    "int32_row_chunks",
    "interpreted",
    "kernels_can_run",
    "sparsity_stats_reference",
    "sparsity_sums",
    "sparsity_sums_reference",
    "stats_from_sums",
    "top_count",
    "wide_dtype",
]
