"""The Triton kernels compiled ahead of time for an H100 (sm_90), on a machine without a GPU.

The suite runs the kernels in Triton's CPU interpreter, which checks nothing the GPU compiler does:
`coactivation_update_(block_k=8)` counts right there and fails to compile for sm_90 (tl.dot's K >= 16).
Here every variant the code launches (a kernel at one set of constexprs, pointer dtypes, Triton's
integer specialisations and launch options) is compiled by `triton.compile` for
`GPUTarget("cuda", 90, 32)` with the ptxas in the triton wheel, and what ptxas -v reports of it
(registers, spills) and Triton's shared memory are held to sm_90's limits.

The launches come from the wrappers themselves: their kernels are swapped for recorders and the
wrappers called the way lamina calls them (nothing runs). A subprocess without TRITON_INTERPRET (Triton
decides interpreted or compiled when it is imported) turns each launch, through Triton's own binder,
into the signature, constants and attributes its JIT would compile, and compiles each distinct one once.

- production: the instrument's `measure_probes` under every active rule, and `lamina.measures`'
  co-activation and one-shot statistics on the same activations, for the MLP of every model config in
  configs/ at the precision it names. These must not spill.
- tests: the call forms of tests/test_kernels.py at its shapes, dtypes and blocks, which
  bench/gpu_check.sh runs compiled on a GPU (tests/test_measures.py, also run there, calls the wrappers
  with their default blocks, as production does). They may spill (blocks far from production, there to
  reach edge cases) but must fit.
- largest: the largest tile each wrapper accepts at its default block, in fp32 with every flag on
  (the inputs that take the most memory). Must fit.

Skipped, saying why, where triton or the ptxas of its wheel is missing. About 40 s of CPU, most of it
compiling some 100 variants (45-50 s wall on the development machine's two shared cores).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# sm_90's limits (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability", 9.0):
# 255 registers a thread; 64K 32-bit registers a block; 227 KB of shared memory a block (228 KB an SM,
# 1 KB of which is reserved per block). 227 KB is what an H100 reports as sharedMemPerBlockOptin, the
# bound Triton holds a kernel's shared memory to when it loads it.
ARCH = 90
MAX_REGISTERS_PER_THREAD = 255
REGISTERS_PER_BLOCK = 64 * 1024
REGISTER_ALLOCATION_UNIT = 8  # a thread's registers are allocated in multiples of 8
SHARED_PER_BLOCK = 227 * 1024


def ptxas():
    """The ptxas that Triton compiles for sm_90 with: the one in its wheel (3.9: ptxas-blackwell from
    sm_90 on; earlier wheels ship one ptxas), unless TRITON_PTXAS_PATH names another."""
    import triton
    from triton.backends.nvidia import compiler as nvidia

    return nvidia.get_ptxas(ARCH) if hasattr(nvidia, "get_ptxas") else triton.knobs.nvidia.ptxas


def missing() -> str | None:
    """Why the check cannot run here, or None."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource, make_backend  # noqa: F401
    except ImportError as err:
        return f"needs triton with its NVIDIA backend ({err})"
    try:
        ptxas().path
    except Exception as err:  # the knobs raise RuntimeError("Cannot find ptxas...") when the wheel lacks it
        return f"needs the ptxas of triton's NVIDIA backend ({type(err).__name__}: {err})"
    return None


pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


# ------------------------------------------------------------------------------------------
# Recording launches (in the test process: interpreted or not, the wrappers are the same)
# ------------------------------------------------------------------------------------------


def triton_functions() -> dict[tuple[str, str], object]:
    """Every Triton function in the modules of lamina.kernels (kernels/): (module, name) -> it."""
    import pkgutil

    from triton.runtime.jit import KernelInterface

    import lamina.kernels

    found = {}
    for info in pkgutil.iter_modules(lamina.kernels.__path__):
        module = importlib.import_module(f"lamina.kernels.{info.name}")
        found.update({(info.name, attr): obj for attr, obj in vars(module).items() if isinstance(obj, KernelInterface)})
    return found


def encode(value):
    """A launch argument as JSON: a tensor by what Triton specialises on (dtype, 16-byte alignment)."""
    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "aligned": value.data_ptr() % 16 == 0}
    assert value is None or isinstance(value, (bool, int, float)), f"cannot record {type(value)}"
    return value


@contextlib.contextmanager
def recording(group: str, into: list):
    """Every Triton function of lamina.kernels swapped for a recorder of `fn[grid](*args, **kwargs)`
    that appends the launch to `into`, tagged `group`. Nothing runs: the wrappers' outputs stay unwritten."""

    class Recorder:
        def __init__(self, key):
            self.key = key

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                into.append({"group": group, "module": self.key[0], "kernel": self.key[1],
                             "args": [encode(a) for a in args],
                             "kwargs": {k: encode(v) for k, v in kwargs.items()}})
            return launch

    found = triton_functions()
    modules = {key: importlib.import_module(f"lamina.kernels.{key[0]}") for key in found}
    try:
        for key in found:
            setattr(modules[key], key[1], Recorder(key))
        yield into
    finally:  # restored before anything compiles: a kernel finds its callees in its module
        for key, fn in found.items():
            setattr(modules[key], key[1], fn)


# ---- production: how lamina launches them --------------------------------------------------

# What each trainer.precision computes the MLP in: its autocast dtype (Lightning's MixedPrecision),
# None for full precision. A config naming another precision fails below until it is added here.
AUTOCAST = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def production_models() -> list[tuple[object, str]]:
    """(GPTConfig, precision) of every model config in configs/, one per distinct MLP and precision.

    A config without a model section (an overlay such as ddp.yaml) has none; one without a precision
    trains in Lightning's default, 32-true. The MLP is all the kernels see, so the model is cut to one
    layer, one head and a small vocabulary, and the block to the largest power of two up to 16 dividing
    it: probe windows are blocks, and Triton specialises on a token count's divisibility by 16."""
    import yaml

    from lamina.model import GPTConfig
    from lamina.pretrained import SHAPE_KEYS, model_init_args

    found = {}
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        if "model" not in config:
            continue
        precision = str((config.get("trainer") or {}).get("precision", "32-true"))
        assert precision in AUTOCAST, f"{path.name}: trainer.precision {precision!r}: add its dtype to AUTOCAST"
        shape = {k: v for k, v in model_init_args(config["model"]).items() if k in SHAPE_KEYS}
        shape.update(n_layer=1, n_head=1, vocab_size=64, block_size=math.gcd(shape.get("block_size", 256), 16))
        model = GPTConfig(**shape)
        found.setdefault((model.n_embd, model.d_ff, model.activation, model.bias, precision), (model, precision))
    assert found, "no model config found under configs/"
    return list(found.values())


def record_production(K, into: list) -> None:
    """The launches of a measurement (lamina.instrument.sparsity.measure_probes under every active rule
    at the instrument's defaults) and of lamina.measures' co-activation and one-shot statistics on the
    activations each measurement streams, for every production model."""
    from lamina import measures
    from lamina.instrument.callback import Instrumentation
    from lamina.instrument.sparsity import ACTIVE_RULES, active_rule, default_eps, measure_probes
    from lamina.model import GPT

    defaults = inspect.signature(Instrumentation).parameters["sparsity"].default  # a SparsityConfig
    stream = measures.SparsityAccumulator.update
    inside: list = []  # sparsity_stats streams through update too: once is enough

    def update(self, acts, gate=None):
        stream(self, acts, gate)
        if not inside:
            inside.append(self)
            try:
                measures.coactivation(acts, self.eps, gate=gate, impl="kernel")
                measures.sparsity_stats(acts, self.eps, gate=gate, impl="kernel")
            finally:
                inside.pop()

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    # impl="kernel" takes host tensors under TRITON_INTERPRET=1 (tests/conftest.py sets it): measures then
    # dispatches to the wrappers as it does on CUDA, and the recorders stop the launches.
    with pytest.MonkeyPatch.context() as mp, recording("production", into):
        mp.setattr(measures.SparsityAccumulator, "update", update)
        torch.set_num_threads(1)  # tiny forwards: threads only wait for each other
        try:
            for config, precision in production_models():
                model = GPT(config).eval()
                windows = torch.randint(config.vocab_size, (2, config.block_size))
                dtype = AUTOCAST[precision]
                with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    eps = defaults.eps
                    eps = default_eps(config.activation) if eps is None else eps
                    for name in ACTIVE_RULES:
                        rule = active_rule(name, model, eps=eps, cett=defaults.cett,
                                           calibration=windows, batch_size=len(windows), device=cpu)
                        measure_probes(model, {"id": windows}, rule=rule, batch_size=len(windows), device=cpu,
                                       impl="kernel")
        finally:
            torch.set_num_threads(threads)


# ---- tests: the call forms of tests/test_kernels.py ----------------------------------------


def record_test_shapes(K, into: list) -> None:
    """The wrappers called as tests/test_kernels.py calls them, from its own shapes, dtypes, blocks,
    rules and inputs (eps values aside: a float eps is never specialised on)."""
    from tests import test_kernels as T

    def counts(a):
        return torch.empty(a.shape[0])

    def gram(a):
        return torch.zeros(a.shape[1], a.shape[1])

    with recording("tests", into):
        for dtype in T.DTYPES:
            for n, d in T.SHAPES:
                a = T.make_acts(n, d, dtype)
                for blocks in (T.SMALL_BLOCKS, {}):
                    K.sparsity_sums(a, 0.5, **blocks)
                for tiles in (T.SMALL_TILES, {}):
                    K.coactivation_update_(gram(a), a, 0.5, **tiles)
            for n, d in T.RULE_SHAPES:
                a = T.make_acts(n, d, dtype)
                for eps, gate in T.rules(n, d, dtype).values():
                    K.sparsity_sums(a, eps, gate=gate, token_active=counts(a), **T.SMALL_BLOCKS)
                    K.coactivation_update_(gram(a), a, eps, gate=gate, **T.SMALL_TILES)
        for dtype in (torch.bfloat16, torch.float32):  # test_sparsity_kernel_wide_units
            K.sparsity_sums(T.make_acts(5, 3072, dtype), 0.0)
        wide = T.make_acts(6, 3072, torch.bfloat16)  # test_coactivation_kernel_wide_units
        K.coactivation_update_(gram(wide), wide, 0.5, block=K.coactivation.MAX_BLOCK, block_k=16)
        base = T.make_acts(90, 70, torch.float32)  # test_sparsity_kernel_strided_input
        for a in (T.make_acts(41, 90, torch.float32).T, base[:, ::2], base[1::3]):
            K.sparsity_sums(a, 0.3, **T.SMALL_BLOCKS)
        for a in (T.make_acts(77, 60, torch.float16).T,  # test_coactivation_kernel_strided_input_and_accumulates
                  T.make_acts(90, 154, torch.float16, seed=1)[:, ::2]):
            K.coactivation_update_(gram(a), a, 0.1, **T.SMALL_TILES)
        a = T.make_acts(41, 90, torch.bfloat16).T  # test_rules_with_strided_acts_and_gate
        gate = T.make_gate(90, 82, torch.float32)[:, ::2]
        K.sparsity_sums(a, T.unit_eps(41), gate=gate, token_active=counts(a), **T.SMALL_BLOCKS)
        K.coactivation_update_(gram(a), a, T.unit_eps(41), gate=gate, **T.SMALL_TILES)
        with pytest.MonkeyPatch.context() as mp:  # int32 ending at 103: slices whose base pointers are unaligned
            mp.setattr(K.sparsity_stats, "INT32_MAX", 12 + 13 * 7)
            for a in (T.make_acts(13, 50, torch.float32).T,  # test_large_tiles_are_cut_into_int32_addressable_slices
                      T.make_acts(50, 13, torch.float32)):
                K.sparsity_sums(a, 0.3)
                K.coactivation_update_(gram(a), a, 0.3)
            a = T.make_acts(50, 13, torch.float32)  # test_int32_slices_keep_gate_and_token_counts_aligned
            gate = T.make_gate(100, 13, torch.float32)[::2]
            K.sparsity_sums(a, 0.1, gate=gate, token_active=counts(a))
            K.coactivation_update_(gram(a), a, 0.1, gate=gate)
        a = T.make_acts(150, 45, torch.bfloat16)  # test_sparsity_sums_stream_like_one_batch: row offsets
        for chunk in a.split([40, 1, 77, 32]):
            K.sparsity_sums(chunk, 0.2, **T.SMALL_BLOCKS)
        a = T.make_acts(100, 13, torch.bfloat16)  # test_scalar_eps_path_is_bit_identical_to_the_new_forms
        K.sparsity_sums(a, 0.3, token_active=counts(a), **T.SMALL_BLOCKS)
        K.sparsity_sums(a, torch.full((13,), 0.3), **T.SMALL_BLOCKS)
        K.coactivation_update_(gram(a), a, torch.full((13,), 0.3), **T.SMALL_TILES)
        for a in (torch.zeros(4, 20), torch.full((20, 5), 0.5), torch.full((20, 18), 0.5)):  # known answers
            K.sparsity_sums(a, 0.5)
            K.coactivation_update_(gram(a), a, 0.5)
        acts, gate = torch.full((7, 37), 3.0), torch.full((7, 37), -2.0)  # test_active_rules_known_answer
        K.sparsity_sums(acts, torch.zeros(37), gate=gate, token_active=counts(acts), **T.SMALL_BLOCKS)
        K.sparsity_sums(acts, torch.zeros(37), **T.SMALL_BLOCKS)
        acts, gate = torch.full((8, 18), 1.0), torch.full((8, 18), -4.0)  # test_coactivation_gate_known_answer
        K.coactivation_update_(gram(acts), acts, torch.zeros(18), gate=gate)


# ---- the largest tiles the wrappers accept, and block_k = 8 -----------------------------------


def default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def record_largest(K, into: list) -> None:
    """Each wrapper at its default block with the other block as large as its check allows, in fp32
    (staged and held at 4 bytes an element) with a gate and per-unit eps, at a width that is not a
    multiple of 16 (unvectorised addressing: the co-activation epilogue then needs the most shared memory)."""
    n, d = 64, 16 * 16 + 1
    acts, gate, eps = torch.randn(n, d), torch.randn(n, d), torch.rand(d)
    block = default(K.coactivation_update_, "block")
    block_d = default(K.sparsity_sums, "block_d")
    with recording("largest", into):
        K.coactivation_update_(torch.zeros(d, d), acts, eps, gate=gate, block=block,
                               block_k=K.coactivation.MAX_TILE // block)
        K.sparsity_sums(acts, eps, gate=gate, token_active=torch.empty(n), block_d=block_d,
                        block_t=K.sparsity_stats.MAX_SUMS_TILE // block_d)


PLANTED_BLOCK_K = 8  # the case: it counts right under the interpreter, and tl.dot needs K >= 16


def planted_inputs():
    """(acts, gram, eps) for coactivation_update_ in bf16, as a bf16-mixed run measures."""
    d = 256
    return torch.randn(64, d, dtype=torch.bfloat16), torch.zeros(d, d), 0.5


def record_planted(K, into: list) -> None:
    """block_k = 8 launched past the wrapper's check (its `_launch`), as the wrapper did before it had one."""
    acts, gram, eps = planted_inputs()
    with recording("planted", into):
        K.coactivation._launch(gram, acts, K.eps_arg(eps, acts.shape[1], acts.device), False,
                               default(K.coactivation_update_, "block"), PLANTED_BLOCK_K, None)


# ------------------------------------------------------------------------------------------
# Compiling (in a subprocess: `python tests/test_kernels_compile.py LAUNCHES.json RESULTS.json`)
# ------------------------------------------------------------------------------------------


def decode(value):
    """A launch argument back: a tensor of the dtype, its data pointer aligned to 16 bytes or not."""
    if isinstance(value, dict):
        base = torch.empty(32, dtype=getattr(torch, value["tensor"]))
        offset = next(i for i in range(16) if (base[i:].data_ptr() % 16 == 0) == value["aligned"])
        return base[offset:]
    return value


def specialise(fn, args, kwargs, backend):
    """(options, signature, constexprs, attrs) of a launch, as Triton's JIT would compile it."""
    import triton
    from triton.runtime import jit

    kwargs = dict(kwargs)
    kwargs.setdefault("debug", bool(fn.debug or triton.knobs.runtime.debug))  # as JITFunction.run sets it
    binder = jit.create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    # JITFunction.run's own next step (Triton 3.6 and 3.9 have it; checked on both)
    return fn._pack_args(backend, kwargs, bound, specialization, options)


def label(fn, options, signature, constexprs) -> str:
    names = [p.name for p in fn.params]
    pointers = ",".join(f"{n}:{t[1:]}" for n, t in signature.items() if t.startswith("*"))
    consts = ",".join(f"{names[path[0]]}={value}" for path, value in sorted(constexprs.items()))
    return f"{fn.__name__}({pointers}; {consts}; num_warps={options.num_warps})"


def ptxas_usage(log: str) -> dict:
    """What ptxas -v said of the kernel it assembled: registers a thread, and the bytes a thread spills
    to local memory. (Not the stack frame: ptxas gives some of these kernels 8 bytes of it with no
    spill, which is what Triton's n_spills, read from the loaded kernel's local memory size, counts.)"""
    found = {key: re.search(pattern, log) for key, pattern in (
        ("registers", r"Used (\d+) registers"), ("spill_stores", r"(\d+) bytes spill stores"),
        ("spill_loads", r"(\d+) bytes spill loads"))}
    missing_keys = [key for key, match in found.items() if match is None]
    assert not missing_keys, f"ptxas -v printed no {missing_keys} (TRITON_DUMP_PTXAS_LOG ignored?):\n{log}"
    return {key: int(match[1]) for key, match in found.items()}


TARGET = (ARCH, 32)  # GPUTarget("cuda", *TARGET): sm_90, 32 threads a warp
_VARIANTS: list[tuple] = []  # what the forked compilers compile, by index


def compile_launches(launches: list[dict]) -> list[dict]:
    """Each distinct variant among `launches` compiled for sm_90 once: its groups and what it took.
    The variants are compiled in forked processes, one per core: ptxas and LLVM are most of the time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", *TARGET))
    found: dict[tuple, dict] = {}
    for launch in launches:
        fn = getattr(importlib.import_module(f"lamina.kernels.{launch['module']}"), launch["kernel"])
        args = [decode(a) for a in launch["args"]]
        options, signature, constexprs, attrs = specialise(fn, args, launch["kwargs"], backend)
        key = (fn.__name__, repr(signature), repr(sorted(constexprs.items())), repr(sorted(attrs.items())),
               repr(sorted(options.__dict__.items())))
        if key in found:
            found[key]["groups"].append(launch["group"])
            continue
        found[key] = {"groups": [launch["group"]], "label": label(fn, options, signature, constexprs)}
        _VARIANTS.append((fn, options, signature, constexprs, attrs))
    workers = max(1, min(len(os.sched_getaffinity(0)), len(_VARIANTS)))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        compiled = list(pool.map(compile_variant, range(len(_VARIANTS))))
    return [{**variant, **result} for variant, result in zip(found.values(), compiled)]


def compile_variant(index: int) -> dict:
    """Compile _VARIANTS[index] for sm_90: what ptxas reported, Triton's shared memory and the threads
    of a block, or the error compiling raised (reported, and failed by the test of its group)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, options, signature, constexprs, attrs = _VARIANTS[index]
    start, log, result = time.perf_counter(), io.StringIO(), {}
    try:
        with contextlib.redirect_stdout(log):  # where TRITON_DUMP_PTXAS_LOG has ptxas -v's log printed
            kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", *TARGET),
                                    options=options.__dict__)
    except Exception as err:
        result["error"] = f"{type(err).__name__}: {err}"
    else:
        result.update(ptxas_usage(log.getvalue()), shared=kernel.metadata.shared,
                      threads=kernel.metadata.num_warps * kernel.metadata.warp_size)
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def main(launch_file: str, result_file: str) -> None:
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET: the kernels must compile"
    launches = json.loads(Path(launch_file).read_text())
    results = compile_launches(launches)
    Path(result_file).write_text(json.dumps(results, indent=1))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> list[dict]:
    """Every variant recorded (production, tests, largest, planted) compiled for sm_90, with its
    registers, spilled bytes, shared memory and threads, or the error compiling it raised."""
    from lamina import kernels as K

    launches: list[dict] = []
    record_production(K, launches)
    record_test_shapes(K, launches)
    record_largest(K, launches)
    record_planted(K, launches)
    folder = tmp_path_factory.mktemp("sm90")
    (folder / "launches.json").write_text(json.dumps(launches))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # ptxas -v's log printed at every compilation; a fresh cache, and no cache hit, so that ptxas runs each time
    env.update(TRITON_DUMP_PTXAS_LOG="1", TRITON_ALWAYS_COMPILE="1", TRITON_CACHE_DIR=str(folder / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, __file__, str(folder / "launches.json"), str(folder / "results.json")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"the compiling subprocess failed:\n{done.stderr[-4000:]}"
    results = json.loads((folder / "results.json").read_text())
    for variant in results:
        print(row(variant))
    return results


def row(variant: dict) -> str:
    groups = "/".join(sorted(set(variant["groups"])))
    if "error" in variant:
        return f"[{groups}] {variant['label']}: {reason(variant['error'])}"
    return (f"[{groups}] {variant['label']}: {variant['registers']} registers, {variant['spill_stores']} B spill stores, "
            f"{variant['shared']} B shared, {variant['threads']} threads, {variant['seconds']} s")


def reason(error: str) -> str:
    """A compile error in one line: where (Triton's first line) and why (its last)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def over_limits(variant: dict) -> list[str]:
    if "error" in variant:
        return [reason(variant["error"])]
    broken = []
    if variant["registers"] > MAX_REGISTERS_PER_THREAD:
        broken.append(f"{variant['registers']} registers a thread > {MAX_REGISTERS_PER_THREAD}")
    allocated = -(-variant["registers"] // REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT
    if allocated * variant["threads"] > REGISTERS_PER_BLOCK:
        broken.append(f"{allocated} registers x {variant['threads']} threads > {REGISTERS_PER_BLOCK} a block")
    if variant["shared"] > SHARED_PER_BLOCK:
        broken.append(f"{variant['shared']} B of shared memory > {SHARED_PER_BLOCK} a block")
    return broken


def of_group(compiled: list[dict], group: str) -> list[dict]:
    found = [v for v in compiled if group in v["groups"]]
    assert found, f"no {group} variant was recorded"
    return found


def failures(variants: list[dict], spills: bool) -> str:
    broken = {}
    for v in variants:
        spilled = v.get("spill_stores", 0) + v.get("spill_loads", 0)
        problems = over_limits(v) + ([f"spills ({v['spill_stores']} B stored, {v['spill_loads']} B loaded a thread)"]
                                     if spills and spilled else [])
        if problems:
            broken[v["label"]] = problems
    return "\n".join(f"  {k}: {'; '.join(v)}" for k, v in broken.items())


# ------------------------------------------------------------------------------------------
# The checks
# ------------------------------------------------------------------------------------------


def test_every_kernel_is_launched_in_production(compiled):
    # A kernel that production never launches here would escape every check below; a Triton function
    # that is not launched must be a device helper, called by a kernel that is.
    launched = {v["label"].split("(")[0] for v in of_group(compiled, "production")}
    sources = {key[1]: inspect.getsource(fn.fn) for key, fn in triton_functions().items()}
    orphans = [name for name in sources if name not in launched
               and not any(re.search(rf"\b{name}\(", sources[k]) for k in launched)]
    assert not orphans, f"Triton functions neither launched in production nor called by a kernel that is: {orphans}"


def test_production_variants_compile_for_sm90_without_spills(compiled):
    broken = failures(of_group(compiled, "production"), spills=True)
    assert not broken, f"production variants that fail on sm_90, break its limits or spill:\n{broken}"


def test_test_variants_compile_within_sm90_limits(compiled):
    broken = failures(of_group(compiled, "tests"), spills=False)
    assert not broken, f"variants of tests/test_kernels.py that fail on sm_90 or break its limits:\n{broken}"


def test_largest_accepted_tiles_fit_sm90(compiled):
    broken = failures(of_group(compiled, "largest"), spills=False)
    assert not broken, f"the largest tiles the wrappers accept fail on sm_90 or break its limits:\n{broken}"


def test_block_k_8_is_refused_by_the_wrapper_and_fails_to_compile(compiled):
    from lamina import kernels as K

    acts, gram, eps = planted_inputs()
    refusal = rf"^block_k must be a power of two >= {K.coactivation.MIN_DOT}, got {PLANTED_BLOCK_K}$"
    with pytest.raises(ValueError, match=refusal):
        K.coactivation_update_(gram, acts, eps, block_k=PLANTED_BLOCK_K)
    # Past the check, the launch the interpreter runs fine does not compile for the GPU, at its tl.dot.
    (planted,) = of_group(compiled, "planted")
    assert "error" in planted, f"block_k={PLANTED_BLOCK_K} compiled for sm_90: {row(planted)}"
    assert planted["error"].startswith("CompilationError") and "tl.dot(" in planted["error"], planted["error"]


if __name__ == "__main__":
    main(*sys.argv[1:])
