"""Precision of a measurement: the model's forward in the run's precision, every statistic in fp32 or wider.

A `bf16-mixed` run trains under autocast, and a measurement runs the model the same way: what is
measured is the network as training computes it. The statistics over what the forward records
must not run that way. Under autocast an fp32 matmul becomes a bf16 matmul with a bf16 result: the
co-activation counts X^T X (integers up to the tokens measured) keep 8 significant bits (off by
up to 32 at 16384 tokens), and the CETT calibration's W a and the hierarchy probe's scores lose
the digits their comparisons read. The damage lands on the nulls: the phi similarity of
independent units is sampling noise of the size of that rounding, so Q against its permutation
null moves most exactly where the null decides.

So inside `measuring(...)` autocast is off for every device, and only the model's own
computation turns the run's autocast back on: `model_forward` (every forward a measurement makes)
and `forward_precision()` (the model's modules called outside its forward, such as the final
norm of the last-layer measures). A bf16 forward records bf16 tensors; each statistic takes them
to fp32 (`wide`) or float64 before any arithmetic, so none runs as a bf16 matmul even where no
autocast is on.

The statistic entry points of this package (`find_modules`, `active_rule`, `measure_probes`,
`probe_layer`) enter `measuring()` themselves: called directly under an autocast, their forwards
run under that autocast and their statistics in full precision, as inside a measurement.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar

import torch

# A factory of the context every forward of a measurement runs in (a fresh one per forward: the
# trainer's `forward_context()` is a one-shot generator context).
AutocastFactory = Callable[[], AbstractContextManager]

# Device types whose autocast state a measurement reads and switches off (those this torch knows).
AUTOCAST_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "hpu")

_FORWARD: ContextVar[AutocastFactory | None] = ContextVar("lamina_measurement_forward", default=None)


def _autocast_on() -> list[str]:
    """The device types with autocast on now."""
    on = []
    for device_type in AUTOCAST_DEVICE_TYPES:
        try:
            if torch.is_autocast_enabled(device_type):
                on.append(device_type)
        except (RuntimeError, ValueError):  # a device type this build does not know
            pass
    return on


def ambient_autocast() -> AutocastFactory:
    """The autocast in force now (dtype per device type), as a factory that enters it again."""
    state = [(device_type, torch.get_autocast_dtype(device_type)) for device_type in _autocast_on()]
    cache = torch.is_autocast_cache_enabled()

    @contextmanager
    def enter() -> Iterator[None]:
        with ExitStack() as stack:
            for device_type, dtype in state:
                stack.enter_context(torch.autocast(device_type, dtype=dtype, cache_enabled=cache))
            yield

    return enter


@contextmanager
def autocast_off() -> Iterator[None]:
    """Autocast off for every device type that has it on (restored on exit)."""
    with ExitStack() as stack:
        for device_type in _autocast_on():
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


@contextmanager
def measuring(autocast: AutocastFactory | None = None) -> Iterator[None]:
    """Inside: autocast off (the statistics in full precision) and every `model_forward` under
    `autocast`, a factory called once per forward (e.g. `trainer.precision_plugin.forward_context`).
    None: the forward precision of an enclosing `measuring`, or else the autocast in force on entry."""
    if autocast is not None and hasattr(autocast, "__enter__"):
        # An entered-once context cannot wrap each forward (and Lightning's is a one-shot generator).
        raise TypeError(
            "autocast: expected a factory of contexts (e.g. trainer.precision_plugin.forward_context, "
            "not forward_context()): each forward of the measurement enters a fresh one"
        )
    token = _FORWARD.set(autocast or _FORWARD.get() or ambient_autocast())
    try:
        with autocast_off():
            yield
    finally:
        _FORWARD.reset(token)


def in_full_precision(fn: Callable) -> Callable:
    """`fn` run inside `measuring()`: its statistics in full precision, its forwards as before."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with measuring():
            return fn(*args, **kwargs)

    return wrapped


@contextmanager
def forward_precision() -> Iterator[None]:
    """The measurement's forward precision (the ambient one outside any measurement): for the
    model's own computation, its forward and any of its modules called beside it."""
    factory = _FORWARD.get()
    if factory is None:
        yield
        return
    with factory():
        yield


def model_forward(model: torch.nn.Module, idx: torch.Tensor, **kwargs):
    """`model.forward(idx, **kwargs)` in the measurement's forward precision. `model.forward` rather
    than `model(...)`: a model compiled in place (`model.compile()`) would otherwise recompile for
    eval mode and the record; the measurement runs eagerly."""
    with forward_precision():
        return model.forward(idx, **kwargs)


def wide(x: torch.Tensor) -> torch.Tensor:
    """x as fp32 when it is a narrower float (bf16 or fp16 from an autocast forward); else as is."""
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x


__all__ = [
    "AutocastFactory",
    "ambient_autocast",
    "autocast_off",
    "forward_precision",
    "in_full_precision",
    "measuring",
    "model_forward",
    "wide",
]
