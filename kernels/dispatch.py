"""Whether the Triton kernels can run here: on CUDA, or anywhere under Triton's interpreter."""

from __future__ import annotations

import torch

from . import sparsity_stats
from .sparsity_stats import HAS_TRITON


def interpreted() -> bool:
    """Whether the kernels were built for Triton's CPU interpreter.

    Triton decides when a kernel is decorated, i.e. at import: ``TRITON_INTERPRET=1`` must be
    set before ``lamina.kernels`` is first imported.
    """
    if not HAS_TRITON:
        return False
    import triton

    return not isinstance(sparsity_stats._unit_and_token_sums_kernel, triton.runtime.JITFunction)


def kernels_can_run(tensor: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on ``tensor``: on CUDA, or anywhere when interpreted."""
    return HAS_TRITON and (tensor.is_cuda or interpreted())
