"""Triton kernels of lamina, each beside the plain-PyTorch reference that is its spec.

Depends on torch and triton only; triton is optional (``HAS_TRITON``), so the references import
and run where it is missing (macOS). Use ``lamina.measures`` rather than these modules directly:
it picks a kernel or its reference for the tensor at hand.

This folder is installed as ``lamina.kernels``. Imported by its folder name (the repository root on
``sys.path``: ``python -m pytest``, ``python -c`` or a notebook in the checkout) it would shadow every
other package named ``kernels``, Hugging Face's among them, which transformers imports. So imported
as ``kernels`` it steps aside: it loads the next ``kernels`` on the path into ``sys.modules``, which
the import statement then returns (a module may replace its own ``sys.modules`` entry while it is
imported: the import system reference, "Loading"), or fails as if this folder were not there.
"""

from __future__ import annotations

if __name__ == "kernels":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _folder = os.path.dirname(os.path.abspath(__file__))
    _path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != os.path.dirname(_folder)]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _path)
    if _spec is None or _spec.loader is None:
        raise ModuleNotFoundError(f"No module named 'kernels' ({_folder} is lamina.kernels)", name="kernels")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _module
    try:
        _spec.loader.exec_module(_module)
    except BaseException:
        del sys.modules["kernels"]
        raise
else:
    from .coactivation import (
        EXACT_COUNT_LIMIT,
        coactivation_reference,
        coactivation_update_,
        coactivation_update_reference_,
    )
    from .dispatch import interpreted, kernels_can_run
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
