"""The numeric helpers every measure shares, and lamina's other modules with them.

- ``wide_dtype(device)``: float64 for sums and linear algebra, float32 on Apple's MPS (no float64).
  It is ``lamina.kernels``' own (the kernels sit below lamina and import nothing of it): this is
  the one copy, re-exported, so that every module outside the kernels imports it from here.
- ``compute_device(t)``: where float64 linear algebra on ``t`` runs (its device; the CPU for MPS).
- ``full_precision(device)``: autocast off for that device's type inside the block, so an fp32
  matmul of a statistic stays fp32 when a caller runs it under a bf16 autocast.
- ``one_cpu_thread()``: torch's CPU ops on one thread inside the block.
- ``wilson_interval(correct, n, level)``: the Wilson score interval of a binomial proportion.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from lamina.kernels import wide_dtype


def compute_device(t: torch.Tensor) -> torch.device:
    """Where float64 linear algebra runs: the tensor's device, except MPS (no float64)."""
    return torch.device("cpu") if t.device.type == "mps" else t.device


@contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Autocast off for ``device``'s type inside the block (restored after): under autocast an fp32
    matmul becomes a bf16 one with a bf16 result, which no statistic may be
    (``lamina.instrument.precision`` says why; this is the same switch for one device type,
    without importing the instrumentation)."""
    with torch.autocast(torch.device(device).type, enabled=False):
        yield


@contextmanager
def one_cpu_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block (restored after). The clustering is
    hundreds of tiny ops: on a loaded machine, threads that wait for each other in every one of
    them make it tens of times slower than one thread alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def wilson_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion correct / n (scipy); (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy import stats

    ci = stats.binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


__all__ = ["compute_device", "full_precision", "one_cpu_thread", "wide_dtype", "wilson_interval"]
