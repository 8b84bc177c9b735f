"""Kernel tests written for host tensors, run on a CUDA device (bench/gpu_check.sh).

Under TRITON_INTERPRET=1 (the suite, CPU only) the Triton kernels take host tensors and nothing
here applies: `kernel_device()` is None and the tests call lamina's modules as they are. On a CUDA
machine with TRITON_INTERPRET=0 the kernels are compiled for the GPU and only take CUDA tensors;
there `on_device(module, device, names)` stands in for the module: each call of one of `names`
copies its host tensor arguments to the device with their layout (strides and storage offset, so
that strided views stay strided), runs there, writes back into a host argument what the call
changed in its device copy (a Gram matrix being updated, per-token counts), and returns its results
on the host. Objects it returns (the accumulators) are wrapped the same way, so a test body reads
the same on both. Every other attribute is the module's own, monkeypatch included.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from lamina import kernels as K


def kernel_device() -> str | None:
    """'cuda' where the kernels are compiled for a CUDA device (not interpreted); else None."""
    if K.HAS_TRITON and not K.interpreted() and torch.cuda.is_available():
        return "cuda"
    return None


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A copy of `t` on `device` with the same sizes, strides and storage offset."""
    numel = t.untyped_storage().nbytes() // t.element_size()
    whole = t.new_empty(0).set_(t.untyped_storage(), 0, (numel,), (1,))
    return whole.to(device, copy=True).as_strided(t.shape, t.stride(), t.storage_offset())


def to_host(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: to_host(getattr(value, f.name))
                                             for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value)
    return value


def run_on(device, fn, when=None):
    """`fn` run on `device` (see the module docstring); `when(args, kwargs)` False runs it as it is."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if when is not None and not when(args, kwargs):
            return fn(*args, **kwargs)
        sent = []

        def send(x):
            if isinstance(x, torch.Tensor) and x.device.type == "cpu":
                copy = to_device(x, device)
                sent.append((x, copy))
                return copy
            return x

        out = fn(*[send(a) for a in args], **{k: send(v) for k, v in kwargs.items()})
        for host, copy in sent:
            back = copy.cpu()
            if not torch.equal(host, back):
                host.copy_(back)
        if isinstance(out, (torch.Tensor, dict, list, tuple, int, float, bool, type(None))) or (
            dataclasses.is_dataclass(out)
        ):
            return to_host(out)
        return Remote(out, device)

    return run


class Remote:
    """An object made on the device (an accumulator): its methods run through `run_on`, its
    tensor attributes read on the host."""

    def __init__(self, target, device):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_device", device)

    def __getattr__(self, name):
        value = getattr(self._target, name)
        return run_on(self._device, value) if callable(value) else to_host(value)

    def __setattr__(self, name, value):
        setattr(self._target, name, value)


def on_device(module, device, names, when=None):
    """A stand-in for `module` whose `names` run on `device` (when `when(args, kwargs)`, if given).
    It shares the module's namespace (its __dict__ is the module's), so every other attribute, and
    monkeypatch.setattr on it, reads and writes the module itself."""
    wrapped = {name: run_on(device, getattr(module, name), when) for name in names}
    # Properties are data descriptors: they win over the shared namespace for the wrapped names.
    stand_in = type(f"{module.__name__}_on_{device}", (),
                    {name: property(lambda self, fn=fn: fn) for name, fn in wrapped.items()})()
    stand_in.__dict__ = module.__dict__
    return stand_in
