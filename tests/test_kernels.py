"""Triton kernels against their plain-PyTorch references (kernels run under TRITON_INTERPRET=1).

Shapes are awkward on purpose: tokens not a multiple of any block, d = 2, odd d, d = 3072 (with
few tokens, to keep the interpreter fast). Small block sizes and several token splits are forced
so that edge masks and the split logic run on small tensors.
"""

import pytest
import torch

from lamina import kernels as K

pytestmark = pytest.mark.skipif(not (K.HAS_TRITON and K.interpreted()),
                                reason="needs triton with TRITON_INTERPRET=1 set before import")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(37, 2), (100, 13), (130, 67)]
SMALL_BLOCKS = dict(block_t=16, block_d=32, num_splits=3)  # sparsity kernel
SMALL_TILES = dict(block=16, block_k=16, num_splits=3)  # co-activation kernel


def make_acts(n, d, dtype, seed=0):
    """Random activations with exact zeros, planted dead units and ReLU/GELU-like mass."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g)
    a = torch.where(torch.rand(n, d, generator=g) < 0.3, torch.zeros(()), a)  # exact zeros
    a[:, 0] = 0.0  # dead at any eps >= 0
    if d > 2:
        a[:, d // 2] = 0.4 * (2 * torch.rand(n, generator=g) - 1)  # dead at eps >= 0.4
    return a.to(dtype)


def assert_sums_close(got: K.SparsitySums, want: K.SparsitySums):
    assert got.tokens == want.tokens
    assert torch.equal(got.active.cpu(), want.active.cpu())
    for name in ("abs_sum", "sq_sum", "hoyer_sum", "top10_sum"):
        torch.testing.assert_close(getattr(got, name).double(), getattr(want, name).double(),
                                   rtol=2e-5, atol=1e-4, msg=name)


# ------------------------------------------------------------------------------------------
# Sparsity statistics
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_sparsity_kernel_matches_reference(n, d, dtype, eps):
    a = make_acts(n, d, dtype)
    want = K.sparsity_sums_reference(a, eps)
    assert_sums_close(K.sparsity_sums(a, eps, **SMALL_BLOCKS), want)
    assert_sums_close(K.sparsity_sums(a, eps), want)  # default blocks: one block covers d


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_sparsity_kernel_wide_units(dtype):
    a = make_acts(5, 3072, dtype)
    for eps in (0.0, 1.0):
        assert_sums_close(K.sparsity_sums(a, eps), K.sparsity_sums_reference(a, eps))


def test_sparsity_kernel_strided_input():
    base = make_acts(90, 70, torch.float32)
    views = {
        "transposed": make_acts(41, 90, torch.float32).T,  # stride_d != 1
        "column_step": base[:, ::2],
        "row_step": base[1::3],
    }
    for name, a in views.items():
        assert not a.is_contiguous(), name
        want = K.sparsity_sums_reference(a.contiguous(), 0.3)
        assert_sums_close(K.sparsity_sums(a, 0.3, **SMALL_BLOCKS), want)


def test_topk_sum_handles_ties_and_padding():
    # k = ceil(0.1 * 20) = 2. Ties at the k-th value must take exactly the copies needed.
    a = torch.zeros(4, 20)
    a[0] = 1.0  # all tied: top-2 = 2 of 20
    a[1, :3] = torch.tensor([5.0, 5.0, 5.0])  # three tied at the top: top-2 = 10 of 15
    a[2, :3] = torch.tensor([-7.0, 2.0, 2.0])  # |.| ranks: 7 then a tie at 2: 9 of 11
    # a[3] all zero: its share counts as 1
    got = K.sparsity_sums(a, 0.0)
    want_share = (2 / 20 + 10 / 15 + 9 / 11 + 1.0)
    torch.testing.assert_close(got.top10_sum.double(), torch.tensor(want_share, dtype=torch.float64))
    assert_sums_close(got, K.sparsity_sums_reference(a, 0.0))


def test_sparsity_kernel_threshold_is_strict():
    a = torch.full((20, 5), 0.5)
    assert int(K.sparsity_sums(a, 0.5).active.sum()) == 0
    assert int(K.sparsity_sums(a, 0.49).active.sum()) == 100
    assert int(K.sparsity_sums(-a, 0.49).active.sum()) == 100  # |a|, not a


def test_sparsity_sums_stream_like_one_batch():
    a = make_acts(150, 45, torch.bfloat16)
    parts = [K.sparsity_sums(chunk, 0.2, **SMALL_BLOCKS) for chunk in a.split([40, 1, 77, 32])]
    total = K.SparsitySums.zeros(45)
    for part in parts:
        total = total + part
    assert_sums_close(total, K.sparsity_sums_reference(a, 0.2))


def test_reference_sums_agree_with_reference_stats():
    a = make_acts(64, 33, torch.float32)
    streamed = K.stats_from_sums(K.sparsity_sums_reference(a, 0.1))
    direct = K.sparsity_stats_reference(a, 0.1)
    assert streamed.keys() == direct.keys()
    for key, value in direct.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(streamed[key], value)
        else:
            assert streamed[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("transposed", [False, True])
def test_large_tiles_are_cut_into_int32_addressable_slices(monkeypatch, transposed):
    # Pretend int32 ends at 103 so that a [50, 13] tile needs slices of 7 rows (and a wide strided
    # view gets compacted first); results must not change.
    monkeypatch.setattr(K.sparsity_stats, "INT32_MAX", 12 + 13 * 7)
    a = make_acts(13, 50, torch.float32).T if transposed else make_acts(50, 13, torch.float32)
    assert [len(c) for c in K.int32_row_chunks(a)] == [7] * 7 + [1]
    assert_sums_close(K.sparsity_sums(a, 0.3), K.sparsity_sums_reference(a, 0.3))
    gram = torch.zeros(13, 13)
    K.coactivation_update_(gram, a, 0.3)
    assert torch.equal(gram, reference_counts(a, 0.3))


def test_top_count_is_exact_ceiling():
    assert [K.top_count(d) for d in (2, 10, 11, 30, 3072)] == [1, 1, 2, 3, 308]


# ------------------------------------------------------------------------------------------
# Co-activation Gram
# ------------------------------------------------------------------------------------------


def reference_counts(a, eps):
    gram = torch.zeros(a.shape[1], a.shape[1])
    K.coactivation_update_reference_(gram, a, eps)
    return gram


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_coactivation_kernel_matches_reference(n, d, dtype, eps):
    a = make_acts(n, d, dtype)
    want = reference_counts(a, eps)
    for tiles in (SMALL_TILES, {}):
        gram = torch.zeros(d, d)
        K.coactivation_update_(gram, a, eps, **tiles)
        assert torch.equal(gram, want), tiles  # exact integer counts


def test_coactivation_kernel_wide_units():
    a = make_acts(6, 3072, torch.bfloat16)
    gram = torch.zeros(3072, 3072)
    K.coactivation_update_(gram, a, 0.5, block=256, block_k=16)
    assert torch.equal(gram, reference_counts(a, 0.5))


def test_coactivation_kernel_strided_input_and_accumulates():
    a = make_acts(77, 60, torch.float16).T  # [60 tokens, 77 units], stride_d != 1
    b = make_acts(90, 154, torch.float16, seed=1)[:, ::2]  # [90, 77], stride_d = 2
    gram = torch.full((77, 77), 3.0)  # update_ adds to what is there
    K.coactivation_update_(gram, a, 0.1, **SMALL_TILES)
    K.coactivation_update_(gram, b, 0.1, **SMALL_TILES)
    want = 3.0 + reference_counts(a.contiguous(), 0.1) + reference_counts(b.contiguous(), 0.1)
    assert torch.equal(gram, want)


def test_coactivation_kernel_threshold_is_strict():
    a = torch.full((20, 18), 0.5)
    gram = torch.zeros(18, 18)
    K.coactivation_update_(gram, a, 0.5)
    assert not gram.any()
    K.coactivation_update_(gram, -a, 0.25)
    assert torch.equal(gram, torch.full((18, 18), 20.0))


def test_coactivation_reference_definition():
    a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, -3.0], [1.0, 0.0, 0.1]])
    want = torch.tensor([[2.0, 0.0, 2.0], [0.0, 0.0, 0.0], [2.0, 0.0, 3.0]]) / 3
    torch.testing.assert_close(K.coactivation_reference(a, 0.0), want)
