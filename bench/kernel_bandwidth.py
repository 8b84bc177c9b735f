"""Time lamina's Triton kernels against their eager PyTorch references; write JSON.

    python bench/kernel_bandwidth.py --out bench/results    # -> bench/results/kernels-<device>-<date>.json

On a CUDA device: for each shape (default tokens 65536, d in 1024/3072/4096, bf16) it times

- the sparsity reduction: the full kernel path (``sparsity_sums``: the one-pass kernel plus the
  top-k pass), the one-pass kernel alone, and the eager reference; achieved GB/s counts the
  input tile once (the least any implementation must read) and is set against the HBM peak;
- the co-activation Gram update: kernel vs eager reference; TFLOP/s counts the FLOPs the
  kernel executes (upper-triangle tiles only) against the dense bf16 peak, and also the dense
  equivalent 2 n d^2;

each under two active rules (``rule`` in the row): ``eps`` (|a| > eps on the post-activation)
and ``sign`` (gate > 0 on the pre-activation, passed as ``gate=``: the sparsity pass reads
both tiles, so its input bytes count both; the Gram builds B from the gate alone). Timings are
``triton.testing.do_bench``'s median (CUDA events, L2 flushed before each call, after a first
call that compiles), and the kernel is checked against the reference on the same input. The
HBM peaks are a small table by device name (H200 4.8 TB/s, H100 SXM 3.35, H100 PCIe 2.0, A100);
the dense bf16 peaks are lamina's table (lamina.callbacks.PEAK_FLOPS).

Without CUDA it times the references, on small shapes; under TRITON_INTERPRET=1 it also runs
the kernels through Triton's CPU interpreter and checks them (``kernels_timed`` is then
"interpreted": a correctness run of the same code path, whose timings mean nothing). It never
fails for lack of a GPU. Benchmarks are not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from lamina import kernels as K
from lamina.callbacks import peak_flops_of
from lamina.kernels import coactivation as coactivation_module
from lamina.kernels import sparsity_stats as sparsity_module

# HBM bandwidth by device family (the vendors' datasheets); an unknown device gets null rather
# than a wrong fraction. The dense bf16 FLOP/s peaks are lamina's one table (lamina.callbacks).
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "A100 80GB": 2.0e12,
                   "A100": 1.555e12}
FAMILY_NAMES = {"H200": "NVIDIA H200", "H100 SXM": "NVIDIA H100 SXM", "H100 PCIe": "NVIDIA H100 PCIe",
                "A100 80GB": "NVIDIA A100 80GB", "A100": "NVIDIA A100"}


def device_family(name: str) -> str | None:
    """Map a CUDA device name to a key of the peak tables (None when unknown)."""
    upper = name.upper()
    if "H200" in upper:
        return "H200"
    if "H100" in upper and "PCIE" in upper:  # "NVIDIA H100 PCIe"
        return "H100 PCIe"
    if "H100" in upper and ("SXM" in upper or "HBM3" in upper):  # "NVIDIA H100 80GB HBM3"
        return "H100 SXM"
    if "A100" in upper:
        return "A100 80GB" if "80GB" in upper else "A100"
    return None


def dense_bf16_flops(family: str | None) -> float | None:
    return None if family is None else peak_flops_of(FAMILY_NAMES[family], "bf16-mixed")


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu-{platform.machine() or 'unknown'}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def median_seconds(fn, *, warmup: int, iters: int) -> float:
    """Median time of ``fn()``: on a GPU ``triton.testing.do_bench`` (CUDA events, the L2 cache
    flushed before each call, warm-up first, which includes Triton's compilation); elsewhere the
    host clock over ``iters`` calls after ``warmup``."""
    if torch.cuda.is_available():
        from triton.testing import do_bench

        fn()  # compile (Triton) and warm the allocator before do_bench's own warm-up estimate
        torch.cuda.synchronize()
        return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ratio(numerator, denominator):
    return None if numerator is None or denominator in (None, 0) else numerator / denominator


def make_acts(tokens: int, d: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU-like activations (roughly half the entries near zero, as an MLP produces) and the
    pre-activation they come from, the gate of the ``sign`` rule."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(tokens, d, generator=g, device=device, dtype=torch.float32)
    return torch.nn.functional.gelu(x).to(dtype), x.to(dtype)


def bench_sparsity(acts, eps, run_kernel, family, warmup, iters, gate=None) -> dict:
    n, d = acts.shape
    bytes_min = sum(t.numel() * t.element_size() for t in (acts, gate) if t is not None)
    row = {"measure": "sparsity_stats", "rule": "eps" if gate is None else "sign", "tokens": n,
           "d": d, "dtype": str(acts.dtype), "eps": eps, "bytes_input": bytes_min}
    t_ref = median_seconds(lambda: K.sparsity_sums_reference(acts, eps, gate),
                           warmup=warmup, iters=iters)
    row.update(reference_ms=t_ref * 1e3, reference_gbps=bytes_min / t_ref / 1e9)
    if not run_kernel:
        return row
    t_kernel = median_seconds(lambda: K.sparsity_sums(acts, eps, gate=gate), warmup=warmup, iters=iters)
    t_one_pass = median_seconds(
        lambda: sparsity_module._unit_and_token_sums(acts, eps, 32, 128, None, gate),
        warmup=warmup, iters=iters)
    peak = HBM_BYTES_PER_S.get(family)
    got, want = K.sparsity_sums(acts, eps, gate=gate), K.sparsity_sums_reference(acts, eps, gate)
    row.update(
        kernel_ms=t_kernel * 1e3,
        kernel_gbps=bytes_min / t_kernel / 1e9,
        kernel_hbm_fraction=ratio(bytes_min / t_kernel, peak),
        one_pass_ms=t_one_pass * 1e3,
        one_pass_gbps=bytes_min / t_one_pass / 1e9,
        one_pass_hbm_fraction=ratio(bytes_min / t_one_pass, peak),
        hbm_peak_bytes_per_s=peak,
        speedup=t_ref / t_kernel,
        active_counts_equal=bool(torch.equal(got.active, want.active)),
        max_rel_err_abs_sum=float(((got.abs_sum - want.abs_sum).abs()
                                   / want.abs_sum.abs().clamp_min(1e-6)).max()),
        hoyer_sum_rel_err=float((got.hoyer_sum - want.hoyer_sum).abs() / want.hoyer_sum.abs()),
        top10_sum_rel_err=float((got.top10_sum - want.top10_sum).abs() / want.top10_sum.abs()),
    )
    return row


def bench_coactivation(acts, eps, run_kernel, family, warmup, iters, gate=None) -> dict:
    n, d = acts.shape
    block = 128  # the kernel's default output tile
    tiles = -(-d // block)
    flops_executed = 2.0 * n * (tiles * (tiles + 1) // 2) * block * block
    flops_dense = 2.0 * n * d * d
    row = {"measure": "coactivation", "rule": "eps" if gate is None else "sign", "tokens": n, "d": d,
           "dtype": str(acts.dtype), "eps": eps,
           "flops_executed": flops_executed, "flops_dense_equivalent": flops_dense}
    gram_ref = torch.zeros(d, d, device=acts.device)
    t_ref = median_seconds(lambda: K.coactivation_update_reference_(gram_ref, acts, eps, gate),
                           warmup=warmup, iters=iters)
    row.update(reference_ms=t_ref * 1e3, reference_tflops_dense=flops_dense / t_ref / 1e12)
    if not run_kernel:
        return row
    gram = torch.zeros(d, d, device=acts.device)
    t_kernel = median_seconds(lambda: K.coactivation_update_(gram, acts, eps, gate=gate),
                              warmup=warmup, iters=iters)
    peak = dense_bf16_flops(family)
    got, want = torch.zeros_like(gram), torch.zeros_like(gram)
    K.coactivation_update_(got, acts, eps, gate=gate)
    K.coactivation_update_reference_(want, acts, eps, gate)
    row.update(
        kernel_ms=t_kernel * 1e3,
        kernel_tflops=flops_executed / t_kernel / 1e12,
        kernel_tflops_dense_equivalent=flops_dense / t_kernel / 1e12,
        kernel_peak_fraction=ratio(flops_executed / t_kernel, peak),
        dense_bf16_peak_flops=peak,
        speedup=t_ref / t_kernel,
        max_abs_err_counts=float((got - want).abs().max()),
    )
    return row


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--tokens", type=int, default=None, help="default 65536 (GPU), 4096 (CPU)")
    parser.add_argument("--dims", type=int, nargs="+", default=None,
                        help="default 1024 3072 4096 (GPU), 256 1024 (CPU)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--iters", type=int, default=None, help="CPU: timed calls (default 3); a GPU uses do_bench")
    parser.add_argument("--warmup", type=int, default=1, help="CPU: untimed calls first (default 1)")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    compiled = cuda and K.HAS_TRITON and not K.interpreted()
    run_kernel = compiled or (K.HAS_TRITON and K.interpreted())
    device = torch.device("cuda" if cuda else "cpu")
    tokens = args.tokens or (65536 if cuda else 4096)
    dims = args.dims or ([1024, 3072, 4096] if cuda else [256, 1024])
    iters = args.iters or (20 if cuda else 3)
    warmup = 3 if cuda else args.warmup
    name = device_name()
    family = device_family(name) if cuda else None

    results = []
    for d in dims:
        acts, pre = make_acts(tokens, d, getattr(torch, args.dtype), device)
        for bench in (bench_sparsity, bench_coactivation):
            # the eps rule at --eps, then the sign rule: gate = pre-activation, eps = 0
            for eps, gate in ((args.eps, None), (0.0, pre)):
                row = bench(acts, eps, run_kernel, family, warmup, iters, gate=gate)
                results.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in row.items()}), flush=True)
        del acts, pre
        if cuda:
            torch.cuda.empty_cache()

    now = dt.datetime.now(dt.timezone.utc)
    if compiled:
        note = "kernels and eager references timed with triton.testing.do_bench (median)"
    elif run_kernel:
        note = ("kernels run under Triton's CPU interpreter (TRITON_INTERPRET=1) and checked against the "
                "references; their timings mean nothing, the references' are host-clock medians")
    elif cuda:
        note = "CUDA present but Triton unavailable: timed the references only"
    else:
        note = "no CUDA device: timed the eager references only, on small shapes"
    report = {
        "device": name,
        "device_family": family,
        "cuda": cuda,
        "kernels_timed": True if compiled else ("interpreted" if run_kernel else False),
        "note": note,
        "torch": torch.__version__,
        "triton": getattr(sys.modules.get("triton"), "__version__", None),
        "cuda_runtime": torch.version.cuda,
        "date": now.isoformat(timespec="seconds"),
        "timing": ("triton.testing.do_bench(warmup=25 ms, rep=100 ms), median" if cuda
                   else f"host clock, median of {iters} calls after {warmup}"),
        "hbm_peak_bytes_per_s": HBM_BYTES_PER_S.get(family),
        "dense_bf16_peak_flops": dense_bf16_flops(family),
        "block_sizes": {"sparsity": {"block_t": 32, "block_d": 128},
                        "coactivation": {"block": 128, "block_k": 32},
                        "coactivation_exact_count_limit": coactivation_module.EXACT_COUNT_LIMIT},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kernels-{slug(name)}-{now.date().isoformat()}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
