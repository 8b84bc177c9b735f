"""Activation sparsity statistics: a fused Triton reduction beside its plain-PyTorch reference.

For an activation tile ``a`` of shape ``[n, d]`` (n tokens, d units) and threshold ``eps`` (a
float, or a float tensor [d] of per-unit thresholds, +inf meaning never active), a unit is
active by one of two rules, compared in fp32 (``active_mask``):

- ``|a| > eps`` (no gate): the magnitude rule;
- ``gate > eps`` when a ``gate`` tile of the same shape is given (signed: a negative gate is
  inactive however large). The ``sign`` rule passes the MLP pre-activation as the gate with
  eps = 0; the magnitude statistics below still come from ``a``.

The statistics are (DESIGN.md, "Contracts"):

- ``frac_active``    mean of active over all n*d entries
- ``l1``             mean |a| over all entries
- ``l2``             sqrt(mean a^2) over all entries
- ``hoyer``          mean over tokens of (sqrt(d) - ||a_t||_1 / ||a_t||_2) / (sqrt(d) - 1);
                     an all-zero token counts as 1
- ``firing_rate``    per unit: mean over tokens of active[:, j]
- ``dead_frac``      share of units whose firing rate is 0
- ``top10_l1_share`` mean over tokens of the share of ||a_t||_1 held by the ceil(0.1 d) largest
                     |a_tj|; an all-zero token counts as 1

``sparsity_stats_reference`` is the spec, written for clarity. Everything else exists to stream:
a batch is reduced to ``SparsitySums`` (O(d) per-unit sums plus O(1) sums of per-token values,
nothing of size n x d), sums of batches add, and ``stats_from_sums`` turns them into the
statistics. ``sparsity_sums`` computes a batch's sums with two Triton kernels:

1. ``_unit_and_token_sums_kernel``: one pass over the tile (and the gate, if any) giving per-unit
   active count, sum |a| and sum a^2 and per-token ||a_t||_1, ||a_t||_2^2 and, on request, the
   token's active count (``token_active``: per-window density needs it). No atomics: each
   program owns a range of tokens x a block of units and writes its own partials, summed
   afterwards in torch, so results are deterministic.
2. ``_token_topk_sum_kernel``: per token, the sum of the k = ceil(0.1 d) largest |a_tj|. A top-k
   needs the whole row, which pass 1 never holds, so this is a second read of the tile; it finds
   the k-th largest |a_tj| exactly by bisection on the fp32 bit pattern (non-negative floats
   order like their bits) in registers, which is far cheaper than ``torch.topk`` (a sort).

Per-token values become ``hoyer`` and the top-10% share in ``_token_terms``, shared by the
reference and the kernel path, and are summed at once; only [n] vectors exist transiently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

try:  # Triton is optional (absent on macOS): the references still work without it.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is missing
    HAS_TRITON = False

__all__ = [
    "SparsitySums",
    "active_mask",
    "eps_arg",
    "top_count",
    "sparsity_stats_reference",
    "sparsity_sums_reference",
    "sparsity_sums",
    "stats_from_sums",
    "wide_dtype",
    "int32_row_chunks",
]


def top_count(d: int) -> int:
    """ceil(0.1 d) in integer arithmetic (``math.ceil(0.1 * 30)`` is 4 in floating point)."""
    return (d + 9) // 10


def _check_acts(acts: torch.Tensor, gate: torch.Tensor | None = None,
                token_active: torch.Tensor | None = None) -> tuple[int, int]:
    if acts.dim() != 2:
        raise ValueError(f"acts must be [tokens, d], got shape {tuple(acts.shape)}")
    n, d = acts.shape
    if d < 2:
        raise ValueError(f"sparsity statistics need d >= 2 units, got d={d}")
    if not acts.is_floating_point():
        raise ValueError(f"acts must be floating point, got {acts.dtype}")
    check_gate(gate, acts)
    if token_active is not None and (token_active.shape != (n,) or token_active.dtype != torch.float32
                                     or token_active.device != acts.device):
        raise ValueError(f"token_active must be float32 [{n}] on {acts.device}, got "
                         f"{token_active.dtype} {tuple(token_active.shape)} on {token_active.device}")
    return n, d


def check_gate(gate: torch.Tensor | None, acts: torch.Tensor) -> None:
    if gate is not None and (gate.shape != acts.shape or not gate.is_floating_point()
                             or gate.device != acts.device):
        raise ValueError(f"gate must be a float tensor shaped like acts {tuple(acts.shape)} on "
                         f"{acts.device}, got {gate.dtype} {tuple(gate.shape)} on {gate.device}")


def eps_arg(eps, d: int, device) -> tuple[float, torch.Tensor | None]:
    """``eps`` as (scalar, per-unit fp32 tensor [d] on ``device`` or None).

    A float (or 0-d tensor) is one threshold for every unit; a tensor [d] holds per-unit ones
    (+inf: never active; NaN compares false, so it also means never active).
    """
    if isinstance(eps, torch.Tensor) and eps.dim() > 0:
        if eps.shape != (d,) or not eps.is_floating_point():
            raise ValueError(f"per-unit eps must be a float tensor [{d}], got {eps.dtype} "
                             f"{tuple(eps.shape)}")
        return 0.0, eps.detach().to(device, torch.float32).contiguous()
    return float(eps), None


def active_mask(acts: torch.Tensor, eps, gate: torch.Tensor | None = None) -> torch.Tensor:
    """The active rule as a bool [n, d]: ``gate > eps`` if a gate is given, else ``|acts| > eps``;
    fp32 compare, eps a float or a per-unit tensor [d]."""
    scalar, per_unit = eps_arg(eps, acts.shape[-1], acts.device)
    x = gate.float() if gate is not None else acts.float().abs()
    return x > (scalar if per_unit is None else per_unit)


def _token_terms(tok_l1: torch.Tensor, tok_sq: torch.Tensor, tok_top: torch.Tensor, d: int):
    """Per-token Hoyer sparsity and top-10% L1 share, each in [0, 1].

    A token whose fp32 sum of squares is 0 (all zeros, or values so small that their squares
    underflow) counts as 1 for both, as DESIGN defines for all-zero tokens; this keeps every
    value finite. Clamping absorbs rounding that would step a hair outside [0, 1].
    """
    zero = tok_sq == 0
    one = torch.ones_like(tok_sq)
    root_d = math.sqrt(d)
    l1_over_l2 = tok_l1 / torch.where(zero, one, tok_sq.sqrt())
    hoyer = torch.where(zero, one, (root_d - l1_over_l2) / (root_d - 1.0))
    share = torch.where(zero, one, tok_top / torch.where(zero, one, tok_l1))
    return hoyer.clamp(0.0, 1.0), share.clamp(0.0, 1.0)


def wide_dtype(device) -> torch.dtype:
    """float64 for long-running sums, except on Apple's MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _host_floats(**values: torch.Tensor) -> dict[str, float]:
    """Move a few 0-d tensors to the host as Python floats with one synchronisation."""
    names = list(values)
    dtype = wide_dtype(values[names[0]].device)
    host = torch.stack([values[k].to(dtype) for k in names]).tolist()
    return {k: float(v) for k, v in zip(names, host)}


# ------------------------------------------------------------------------------------------
# Reference (the spec)
# ------------------------------------------------------------------------------------------


def sparsity_stats_reference(acts: torch.Tensor, eps, gate: torch.Tensor | None = None) -> dict:
    """The statistics of one tile, straight from the definitions (fp32 values, exact counts).

    Scalars are Python floats; ``firing_rate`` is a float32 tensor [d] on ``acts``' device;
    ``tokens`` is the number of tokens n.
    """
    n, d = _check_acts(acts, gate)
    if n == 0:
        raise ValueError("sparsity statistics need at least one token")
    a = acts.float()
    absa = a.abs()
    active_count = active_mask(acts, eps, gate).sum(dim=0)  # int64: counts stay exact
    wide = wide_dtype(acts.device)
    tok_l1 = absa.sum(dim=1)
    tok_sq = (a * a).sum(dim=1)
    tok_top = absa.topk(top_count(d), dim=1).values.sum(dim=1)
    hoyer, share = _token_terms(tok_l1, tok_sq, tok_top, d)
    scalars = _host_floats(
        frac_active=active_count.sum().to(wide) / (n * d),
        l1=absa.mean(),
        l2=(a * a).mean().sqrt(),
        hoyer=hoyer.mean(),
        dead_frac=(active_count == 0).sum().to(wide) / d,
        top10_l1_share=share.mean(),
    )
    firing_rate = (active_count.to(wide) / n).float()
    return {**scalars, "firing_rate": firing_rate, "tokens": n}


@dataclass
class SparsitySums:
    """What a batch contributes to the statistics; sums of batches add with ``+``.

    Per unit (shape [d]): ``active`` (int64 count of active tokens), ``abs_sum``, ``sq_sum``.
    Per batch (0-d tensors): ``hoyer_sum`` and ``top10_sum``, sums over tokens of the per-token
    values. ``tokens`` is a Python int so that adding batches never synchronises the device.
    """

    active: torch.Tensor
    abs_sum: torch.Tensor
    sq_sum: torch.Tensor
    hoyer_sum: torch.Tensor
    top10_sum: torch.Tensor
    tokens: int

    def __add__(self, other: "SparsitySums") -> "SparsitySums":
        return SparsitySums(
            self.active + other.active.to(self.active.device),
            self.abs_sum + other.abs_sum.to(self.abs_sum),
            self.sq_sum + other.sq_sum.to(self.sq_sum),
            self.hoyer_sum + other.hoyer_sum.to(self.hoyer_sum),
            self.top10_sum + other.top10_sum.to(self.top10_sum),
            self.tokens + other.tokens,
        )

    @classmethod
    def zeros(cls, d: int, device=None, dtype: torch.dtype | None = None) -> "SparsitySums":
        """Empty sums; float64 (``wide_dtype``) by default so that long streams stay accurate."""
        device = torch.device("cpu" if device is None else device)
        dtype = dtype or wide_dtype(device)

        def z(*shape):
            return torch.zeros(*shape, dtype=dtype, device=device)

        return cls(torch.zeros(d, dtype=torch.int64, device=device), z(d), z(d), z(()), z(()), 0)


def sparsity_sums_reference(acts: torch.Tensor, eps, gate: torch.Tensor | None = None,
                            token_active: torch.Tensor | None = None) -> SparsitySums:
    """A batch's ``SparsitySums`` in plain PyTorch (fp32); the reference for ``sparsity_sums``.

    If ``token_active`` (float32 [n] on ``acts``' device) is given, each token's number of active
    units is written into it.
    """
    n, d = _check_acts(acts, gate, token_active)
    a = acts.float()
    absa = a.abs()
    # Counted in fp32 (exact below 2**24 tokens a batch, far more than a probe batch holds): summing a
    # bool tensor on the CPU is several times slower.
    active = active_mask(acts, eps, gate).to(torch.float32)
    if token_active is not None:
        token_active.copy_(active.sum(dim=1))
    tok_top = absa.topk(top_count(d), dim=1, sorted=False).values.sum(dim=1)
    hoyer, share = _token_terms(absa.sum(dim=1), (a * a).sum(dim=1), tok_top, d)
    return SparsitySums(
        active=active.sum(dim=0).to(torch.int64),
        abs_sum=absa.sum(dim=0),
        sq_sum=(a * a).sum(dim=0),
        hoyer_sum=hoyer.sum(),
        top10_sum=share.sum(),
        tokens=n,
    )


def stats_from_sums(sums: SparsitySums) -> dict:
    """The statistics (same keys and types as ``sparsity_stats_reference``) from summed batches."""
    n, d = sums.tokens, sums.active.numel()
    if n == 0:
        raise ValueError("sparsity statistics need at least one token")
    entries = float(n) * d
    active = sums.active.to(wide_dtype(sums.active.device))
    scalars = _host_floats(
        frac_active=active.sum() / entries,
        l1=sums.abs_sum.sum() / entries,
        l2=(sums.sq_sum.sum() / entries).sqrt(),
        hoyer=sums.hoyer_sum / n,
        dead_frac=(active == 0).sum().to(active.dtype) / d,
        top10_l1_share=sums.top10_sum / n,
    )
    return {**scalars, "firing_rate": (active / n).float(), "tokens": n}


# ------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _unit_and_token_sums_kernel(
        a_ptr, stride_t, stride_d, n_tokens, d, eps,
        eps_ptr,  # [d] per-unit thresholds (read only if EPS_PER_UNIT)
        g_ptr, g_stride_t, g_stride_d,  # the gate tile (read only if HAS_GATE)
        unit_active_ptr, unit_abs_ptr, unit_sq_ptr,  # [num_splits, d] partials
        tok_abs_ptr, tok_sq_ptr, tok_active_ptr,  # [num_unit_blocks, n_tokens] partials
        tokens_per_split,
        BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
        EPS_PER_UNIT: tl.constexpr, HAS_GATE: tl.constexpr, COUNT_TOKENS: tl.constexpr,
    ):
        """Program (split, unit block): tokens [split * tokens_per_split, ...) x BLOCK_D units.

        The three flags are compile-time, so the plain call (scalar eps, no gate, no token
        counts) compiles to the same loop as before they existed.
        """
        split = tl.program_id(0)
        unit_block = tl.program_id(1)
        cols = unit_block * BLOCK_D + tl.arange(0, BLOCK_D)
        col_ok = cols < d
        col_offs = cols * stride_d  # int32 offsets: see int32_row_chunks
        if EPS_PER_UNIT:  # loaded once per program; padding is masked below anyway
            thr = tl.load(eps_ptr + cols, mask=col_ok, other=0.0)[None, :]
        else:
            thr = eps

        active = tl.zeros((BLOCK_D,), dtype=tl.int32)
        abs_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
        sq_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)

        t_start = split * tokens_per_split
        t_end = tl.minimum(t_start + tokens_per_split, n_tokens)
        tok_row = unit_block * n_tokens
        for t0 in range(t_start, t_end, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            row_ok = rows < t_end
            mask = row_ok[:, None] & col_ok[None, :]
            ptrs = a_ptr + rows[:, None] * stride_t + col_offs[None, :]
            # Upcast before anything else: fp32 compare and accumulation, whatever the input.
            a = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
            absa = tl.abs(a)
            sq = a * a
            if HAS_GATE:  # signed compare on the gate; the magnitudes stay those of `a`
                g_ptrs = g_ptr + rows[:, None] * g_stride_t + (cols * g_stride_d)[None, :]
                on = tl.load(g_ptrs, mask=mask, other=0.0).to(tl.float32) > thr
            else:
                on = absa > thr
            # `& mask`: padding must not count as active even for eps < 0.
            on = (on & mask).to(tl.int32)
            active += tl.sum(on, axis=0)
            abs_sum += tl.sum(absa, axis=0)
            sq_sum += tl.sum(sq, axis=0)
            tl.store(tok_abs_ptr + tok_row + rows, tl.sum(absa, axis=1), mask=row_ok)
            tl.store(tok_sq_ptr + tok_row + rows, tl.sum(sq, axis=1), mask=row_ok)
            if COUNT_TOKENS:
                tl.store(tok_active_ptr + tok_row + rows, tl.sum(on, axis=1), mask=row_ok)

        unit_offs = split * d + cols
        tl.store(unit_active_ptr + unit_offs, active, mask=col_ok)
        tl.store(unit_abs_ptr + unit_offs, abs_sum, mask=col_ok)
        tl.store(unit_sq_ptr + unit_offs, sq_sum, mask=col_ok)

    @triton.jit
    def _token_topk_sum_kernel(
        a_ptr, stride_t, stride_d, n_tokens, d, k, out_ptr,
        BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """Per token, the exact sum of the k largest |a_tj|; whole rows (BLOCK_D >= d) in registers."""
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.arange(0, BLOCK_D)
        row_ok = rows < n_tokens
        mask = row_ok[:, None] & (cols < d)[None, :]
        ptrs = a_ptr + rows[:, None] * stride_t + cols[None, :] * stride_d
        absa = tl.abs(tl.load(ptrs, mask=mask, other=0.0).to(tl.float32))
        # For x >= 0 the int32 bit pattern orders like the float, so the k-th largest value is
        # the largest bit pattern `lo` with count(bits >= lo) >= k. Padding gets -1: never counted.
        bits = tl.where(mask, absa.to(tl.int32, bitcast=True), -1)
        lo = tl.zeros((BLOCK_T,), dtype=tl.int32)  # count(bits >= 0) = d >= k
        hi = tl.full((BLOCK_T,), 0x7F800001, dtype=tl.int32)  # above +inf: count = 0 < k
        for _ in range(31):  # hi - lo < 2**31 halves each step, so 31 steps leave hi = lo + 1
            mid = lo + (hi - lo) // 2
            count = tl.sum((bits >= mid[:, None]).to(tl.int32), axis=1)
            enough = count >= k
            lo = tl.where(enough, mid, lo)
            hi = tl.where(enough, hi, mid)
        above = bits > lo[:, None]
        n_above = tl.sum(above.to(tl.int32), axis=1)
        sum_above = tl.sum(tl.where(above, absa, 0.0), axis=1)
        kth = lo.to(tl.float32, bitcast=True)
        # Ties at the k-th value: take exactly as many copies as are still needed.
        tl.store(out_ptr + rows, sum_above + (k - n_above).to(tl.float32) * kth, mask=row_ok)


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a few programs, enough to exercise the split logic


INT32_MAX = 2**31 - 1

# The largest [block_t, block_d] tile of the one-pass kernel. The tile lives in the registers of its
# 128 threads (num_warps=4): 16384 values are 128 a thread, which with every flag on (gate, per-unit
# eps, token counts) takes all 255 registers on sm_90 and spills a little where d is not a multiple
# of 16; larger tiles spill far more (128 x 1024: 16 KB a thread, and half a minute in ptxas).
# tests/test_kernels_compile.py compiles this largest tile for sm_90.
MAX_SUMS_TILE = 16384


def check_block(name: str, value, minimum: int = 1) -> None:
    """Refuse, in one line naming the argument, a block size the kernels cannot be built with:
    ``tl.arange`` takes powers of two only; ``minimum`` is the kernel's own floor."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {minimum}, got {value!r}")


def int32_row_chunks(acts: torch.Tensor) -> list[torch.Tensor]:
    """Row slices of ``acts`` in which every element offset fits in int32.

    The kernels index with 32-bit arithmetic: 64-bit offsets double the registers that a tile's
    addresses take (the co-activation kernel spills with them). A tile of more than 2**31
    elements is processed as several slices, each with its own base pointer.
    """
    return [chunk for chunk, in _row_chunks(acts)]


def _row_chunks(*tensors: torch.Tensor | None) -> list[tuple]:
    """``int32_row_chunks`` of several [n, d] tensors (None passes through) cut at the same rows,
    so that a tile and its gate stay aligned: tuples of slices, one per tensor."""
    compact, rows = [], INT32_MAX
    for t in tensors:
        if t is not None:
            d = t.shape[1]
            if (d - 1) * t.stride(1) > INT32_MAX // 2:  # a wide strided view: make rows compact
                t = t.contiguous()
            rows = min(rows, (INT32_MAX - (d - 1) * t.stride(1)) // max(t.stride(0), 1))
        compact.append(t)
    n, rows = tensors[0].shape[0], max(1, rows)
    return [tuple(None if t is None else t[start:start + rows] for t in compact)
            for start in range(0, n, rows)] or [tuple(compact)]


def _unit_and_token_sums(acts, eps, block_t, block_d, num_splits, gate=None, token_active=None):
    """Pass 1: per-unit sums and per-token L1 and L2^2 (and active counts into token_active)."""
    n, d = acts.shape
    eps, eps_per_unit = eps_arg(eps, d, acts.device)
    unit_blocks = triton.cdiv(d, block_d)
    token_blocks = triton.cdiv(n, block_t)
    if num_splits is None:  # about 4 programs per SM, never more splits than token blocks
        num_splits = triton.cdiv(4 * _num_sms(acts.device), unit_blocks)
    num_splits = max(1, min(num_splits, token_blocks))
    tokens_per_split = triton.cdiv(token_blocks, num_splits) * block_t
    num_splits = triton.cdiv(n, tokens_per_split)

    dev = acts.device
    unit_active = torch.empty(num_splits, d, dtype=torch.int32, device=dev)
    unit_abs = torch.empty(num_splits, d, dtype=torch.float32, device=dev)
    unit_sq = torch.empty(num_splits, d, dtype=torch.float32, device=dev)
    tok_abs = torch.empty(unit_blocks, n, dtype=torch.float32, device=dev)
    tok_sq = torch.empty(unit_blocks, n, dtype=torch.float32, device=dev)
    count_tokens = token_active is not None
    tok_active = torch.empty(unit_blocks, n, dtype=torch.int32, device=dev) if count_tokens else tok_sq
    g = acts if gate is None else gate  # a stand-in pointer when there is no gate: never read
    _unit_and_token_sums_kernel[(num_splits, unit_blocks)](
        acts, acts.stride(0), acts.stride(1), n, d, eps,
        acts if eps_per_unit is None else eps_per_unit,
        g, g.stride(0), g.stride(1),
        unit_active, unit_abs, unit_sq, tok_abs, tok_sq, tok_active, tokens_per_split,
        BLOCK_T=block_t, BLOCK_D=block_d, EPS_PER_UNIT=eps_per_unit is not None,
        HAS_GATE=gate is not None, COUNT_TOKENS=count_tokens, num_warps=4,
    )
    if count_tokens:
        token_active.copy_(tok_active.sum(dim=0))
    return (unit_active.sum(dim=0, dtype=torch.int64), unit_abs.sum(dim=0), unit_sq.sum(dim=0),
            tok_abs.sum(dim=0), tok_sq.sum(dim=0))


def _token_topk_sum(acts: torch.Tensor, k: int) -> torch.Tensor:
    n, d = acts.shape
    block_d = max(16, triton.next_power_of_2(d))
    block_t = max(1, min(64, 4096 // block_d))  # about 4K values of the row block in registers
    out = torch.empty(n, dtype=torch.float32, device=acts.device)
    _token_topk_sum_kernel[(triton.cdiv(n, block_t),)](
        acts, acts.stride(0), acts.stride(1), n, d, k, out,
        BLOCK_T=block_t, BLOCK_D=block_d, num_warps=4 if block_t * block_d <= 2048 else 8,
    )
    return out


def sparsity_sums(acts: torch.Tensor, eps, *, gate: torch.Tensor | None = None,
                  token_active: torch.Tensor | None = None, block_t: int = 32,
                  block_d: int = 128, num_splits: int | None = None) -> SparsitySums:
    """A batch's ``SparsitySums`` from the Triton kernels (fp32/bf16/fp16, any strides).

    ``eps``, ``gate`` and ``token_active`` as in ``sparsity_sums_reference`` (the gate may have
    its own dtype and strides). ``block_t``, ``block_d`` and ``num_splits`` are tuning knobs: the
    blocks are powers of two with ``block_t * block_d <= MAX_SUMS_TILE`` (else a ValueError); tests
    shrink them to reach edge cases on small tensors.
    """
    check_block("block_t", block_t)
    check_block("block_d", block_d)
    if block_t * block_d > MAX_SUMS_TILE:
        raise ValueError(f"block_t * block_d must be <= {MAX_SUMS_TILE} (the tile is held in registers), "
                         f"got {block_t} * {block_d} = {block_t * block_d}")
    if not HAS_TRITON:
        raise RuntimeError("the sparsity kernel needs triton; use sparsity_sums_reference")
    n, d = _check_acts(acts, gate, token_active)
    if n == 0:
        return SparsitySums.zeros(d, acts.device, torch.float32)
    scalar, per_unit = eps_arg(eps, d, acts.device)
    eps = scalar if per_unit is None else per_unit  # validated and moved once, not per chunk
    total, start = None, 0
    for chunk, gate_chunk in _row_chunks(acts, gate):
        rows = chunk.shape[0]
        counts = None if token_active is None else token_active[start:start + rows]
        active, abs_sum, sq_sum, tok_l1, tok_sq = _unit_and_token_sums(
            chunk, eps, block_t, block_d, num_splits, gate_chunk, counts)
        hoyer, share = _token_terms(tok_l1, tok_sq, _token_topk_sum(chunk, top_count(d)), d)
        sums = SparsitySums(active, abs_sum, sq_sum, hoyer.sum(), share.sum(), rows)
        total = sums if total is None else total + sums
        start += rows
    return total
