"""Co-activation Gram matrix: a Triton kernel beside its plain-PyTorch reference.

For activations ``a`` of shape ``[n, d]`` and B = active as 0/1 (``active_mask``: ``|a| > eps``,
or ``gate > eps`` when a gate tile is given; eps a float or a per-unit tensor [d]; compared in
fp32), the co-activation matrix is C = B^T B / n: C[i, j] is the share of tokens on which units
i and j are both active, and its diagonal is the firing rate (DESIGN.md, "Contracts").

Streaming form: ``coactivation_update_(gram, acts, eps, gate=None)`` adds the counts B^T B of one batch
into an fp32 ``[d, d]`` buffer on the device; dividing by the tokens seen gives C.

The kernel builds B inside the kernel from the raw tile (B never exists in memory): each program
loads two [BLOCK_K tokens, BLOCK units] slabs of ``a`` (of the gate instead, when there is one:
B depends on nothing else), thresholds them into 0/1 fp16 tiles and
feeds them to ``tl.dot`` with fp32 accumulation. Products of 0/1 values summed in fp32 are exact
integers up to 2**24, so the counts are exact and independent of summation order, which is why
the token dimension can be split across programs that ``atomic_add`` into the same output tile
without losing determinism. C is symmetric, so only tiles on or above the diagonal are computed;
an off-diagonal tile is added at (i, j) and, transposed, at (j, i).
"""

from __future__ import annotations

import torch

from .sparsity_stats import INT32_MAX, _num_sms, active_mask, check_block, check_gate, eps_arg, int32_row_chunks

try:  # Triton is optional (absent on macOS): the reference still works without it.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is missing
    HAS_TRITON = False

__all__ = [
    "EXACT_COUNT_LIMIT",
    "coactivation_reference",
    "coactivation_update_reference_",
    "coactivation_update_",
]

# fp32 represents every integer up to 2**24 exactly: a count buffer that has seen fewer tokens
# than this holds exact counts. Streaming callers fold the buffer into float64 before it fills.
EXACT_COUNT_LIMIT = 2**24

# Block sizes the kernel can be built with for the GPU (tests/test_kernels_compile.py compiles them
# for sm_90; Triton's CPU interpreter checks none of this: block_k = 8 counts right there and fails to
# compile for the GPU).
# - tl.dot's M, N and K are block, block and block_k: each at least 16 (Triton refuses K < 16).
# - the [block, block] fp32 accumulator: where d (gram's row stride) is not a multiple of 16 the
#   atomic adds take it whole through shared memory, block * block * 4 bytes: 64 KB at 128, 256 KB at
#   256, over the 227 KB a block may have on sm_90. At 256 it also fills the 64K-register file and
#   spills some 4 KB a thread whatever d is.
# - the operand slabs [block_k, block] are staged in shared memory (num_stages=3), as loaded: fp32
#   inputs take 20 bytes per element of block * block_k, so 8192 of them take 160 KB, and 16384
#   (128 x 128, 64 x 256, ...) take 320 KB.
MIN_DOT = 16
MAX_BLOCK = 128
MAX_TILE = 8192


def _check(gram: torch.Tensor | None, acts: torch.Tensor) -> tuple[int, int]:
    if acts.dim() != 2:
        raise ValueError(f"acts must be [tokens, d], got shape {tuple(acts.shape)}")
    if not acts.is_floating_point():
        raise ValueError(f"acts must be floating point, got {acts.dtype}")
    n, d = acts.shape
    if gram is not None:
        if gram.shape != (d, d) or gram.dtype != torch.float32:
            raise ValueError(f"gram must be float32 [{d}, {d}], got {gram.dtype} {tuple(gram.shape)}")
        if gram.device != acts.device:
            raise ValueError(f"gram is on {gram.device} but acts are on {acts.device}")
    return n, d


# ------------------------------------------------------------------------------------------
# Reference (the spec)
# ------------------------------------------------------------------------------------------


def coactivation_reference(acts: torch.Tensor, eps, gate: torch.Tensor | None = None) -> torch.Tensor:
    """C = B^T B / n with B = active as 0/1; float32 [d, d] on ``acts``' device."""
    n, d = _check(None, acts)
    check_gate(gate, acts)
    if n == 0:
        raise ValueError("co-activation needs at least one token")
    active = active_mask(acts, eps, gate).float()
    return active.T @ active / n


def coactivation_update_reference_(gram: torch.Tensor, acts: torch.Tensor, eps,
                                   gate: torch.Tensor | None = None) -> None:
    """gram += B^T B (counts) for one batch; the reference for ``coactivation_update_``."""
    _check(gram, acts)
    check_gate(gate, acts)
    active = active_mask(acts, eps, gate).float()
    gram += active.T @ active


# ------------------------------------------------------------------------------------------
# Triton kernel
# ------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _active_tile(a_ptr, stride_t, stride_d, rows, row_ok, cols, col_ok, thr,
                     SIGNED: tl.constexpr):
        """0/1 fp16 tile (a > thr if SIGNED else |a| > thr) of a [tokens, units] slab; padding 0."""
        mask = row_ok[:, None] & col_ok[None, :]
        ptrs = a_ptr + rows[:, None] * stride_t + cols[None, :] * stride_d  # int32 offsets
        # Upcast before comparing: the compare is in fp32 whatever the input dtype.
        a = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        if not SIGNED:
            a = tl.abs(a)
        return ((a > thr) & mask).to(tl.float16)

    @triton.jit
    def _coactivation_kernel(
        a_ptr, stride_t, stride_d, n_tokens, d, eps,
        eps_ptr,  # [d] per-unit thresholds (read only if EPS_PER_UNIT)
        gram_ptr, stride_g,
        tokens_per_split,
        BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
        SIGNED: tl.constexpr, EPS_PER_UNIT: tl.constexpr,
    ):
        """Program (i, j, split): gram[i-tile, j-tile] += B_i^T B_j over one range of tokens.

        ``a_ptr`` is the gate when SIGNED (gate > eps), else the acts (|a| > eps).
        """
        tile_i = tl.program_id(0)
        tile_j = tl.program_id(1)
        if tile_i > tile_j:  # C is symmetric: program (j, i) adds this tile as its transpose
            return
        split = tl.program_id(2)
        cols_i = tile_i * BLOCK + tl.arange(0, BLOCK)
        cols_j = tile_j * BLOCK + tl.arange(0, BLOCK)
        ok_i = cols_i < d
        ok_j = cols_j < d
        if EPS_PER_UNIT:  # loaded once per program, not per token step
            thr_i = tl.load(eps_ptr + cols_i, mask=ok_i, other=0.0)[None, :]
            thr_j = tl.load(eps_ptr + cols_j, mask=ok_j, other=0.0)[None, :]
        else:
            thr_i = eps
            thr_j = eps

        acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        t_start = split * tokens_per_split
        t_end = tl.minimum(t_start + tokens_per_split, n_tokens)
        for t0 in range(t_start, t_end, BLOCK_K):
            rows = t0 + tl.arange(0, BLOCK_K)
            row_ok = rows < t_end
            b_i = _active_tile(a_ptr, stride_t, stride_d, rows, row_ok, cols_i, ok_i, thr_i, SIGNED)
            b_j = _active_tile(a_ptr, stride_t, stride_d, rows, row_ok, cols_j, ok_j, thr_j, SIGNED)
            acc = tl.dot(tl.trans(b_i), b_j, acc)  # 0/1 fp16 in, fp32 out: exact counts

        # acc[r, c] counts units (cols_i[r], cols_j[c]): add it at gram[i, j] and, off the
        # diagonal, at gram[j, i] by transposed addressing (no register transpose of acc).
        out_mask = ok_i[:, None] & ok_j[None, :]
        tl.atomic_add(gram_ptr + cols_i[:, None] * stride_g + cols_j[None, :], acc, mask=out_mask)
        if tile_i != tile_j:
            tl.atomic_add(gram_ptr + cols_j[None, :] * stride_g + cols_i[:, None], acc, mask=out_mask)


def coactivation_update_(gram: torch.Tensor, acts: torch.Tensor, eps, *,
                         gate: torch.Tensor | None = None, block: int = 128, block_k: int = 32,
                         num_splits: int | None = None) -> None:
    """gram += B^T B (counts) for one batch, B built inside the kernel; any strides and dtypes.

    ``eps`` is a float or a per-unit tensor [d]; with a ``gate`` (shaped like acts) B = gate > eps
    and acts are not read. ``gram`` is float32 [d, d] on ``acts``' device. Its counts are exact
    while every entry is below ``EXACT_COUNT_LIMIT``. ``block`` (output tile) and ``block_k`` (tokens per step) are
    powers of two >= 16 (``tl.dot``'s minimum), ``block <= MAX_BLOCK`` and ``block * block_k <= MAX_TILE``
    (else a ValueError); ``num_splits`` splits the tokens across programs.
    """
    check_block("block", block, MIN_DOT)
    check_block("block_k", block_k, MIN_DOT)
    if block > MAX_BLOCK:
        raise ValueError(f"block must be <= {MAX_BLOCK} (its [block, block] fp32 accumulator outgrows a block's "
                         f"registers and shared memory), got {block}")
    if block * block_k > MAX_TILE:
        raise ValueError(f"block * block_k must be <= {MAX_TILE} (the operand slabs are staged in shared "
                         f"memory), got {block} * {block_k} = {block * block_k}")
    if not HAS_TRITON:
        raise RuntimeError("the co-activation kernel needs triton; use coactivation_update_reference_")
    n, d = _check(gram, acts)
    check_gate(gate, acts)
    if not gram.is_contiguous():
        raise ValueError("the kernel needs a contiguous gram buffer")
    if d * d > INT32_MAX:
        raise ValueError(f"d={d} is too wide for the kernel's int32 offsets into gram")
    eps = eps_arg(eps, d, acts.device)
    for chunk in int32_row_chunks(acts if gate is None else gate):
        _launch(gram, chunk, eps, gate is not None, block, block_k, num_splits)


def _launch(gram, acts, eps, signed, block, block_k, num_splits):
    n, d = acts.shape
    eps, eps_per_unit = eps
    if n == 0:
        return
    tiles = triton.cdiv(d, block)
    token_blocks = triton.cdiv(n, block_k)
    if num_splits is None:  # enough programs for about 2 per SM over the upper-triangle tiles
        upper_tiles = tiles * (tiles + 1) // 2
        num_splits = triton.cdiv(2 * _num_sms(acts.device), upper_tiles)
    num_splits = max(1, min(num_splits, token_blocks))
    tokens_per_split = triton.cdiv(token_blocks, num_splits) * block_k
    num_splits = triton.cdiv(n, tokens_per_split)
    _coactivation_kernel[(tiles, tiles, num_splits)](
        acts, acts.stride(0), acts.stride(1), n, d, eps,
        acts if eps_per_unit is None else eps_per_unit,  # a stand-in pointer: never read
        gram, gram.stride(0), tokens_per_split,
        BLOCK=block, BLOCK_K=block_k, SIGNED=signed, EPS_PER_UNIT=eps_per_unit is not None,
        num_warps=8 if block >= 128 else 4, num_stages=3,
    )
