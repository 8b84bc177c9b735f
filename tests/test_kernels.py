"""Triton kernels against their plain-PyTorch references (under TRITON_INTERPRET=1; on CUDA in gpu_check).

Shapes are awkward on purpose: tokens not a multiple of any block, n = 1, d = 2, odd d, d = 3072
(with few tokens, to keep the interpreter fast). Small block sizes and several token splits are forced
so that edge masks and the split logic run on small tensors.
"""

import pytest
import torch

from lamina import kernels as K
from tests.on_device import kernel_device, on_device

pytestmark = pytest.mark.skipif(not (K.HAS_TRITON and (K.interpreted() or kernel_device())),
                                reason="needs triton with TRITON_INTERPRET=1 set before import, or CUDA")
if kernel_device():  # bench/gpu_check.sh: the kernels compiled for the GPU, on CUDA copies of the inputs
    K = on_device(K, kernel_device(), ("sparsity_sums", "coactivation_update_"))

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


def reference_counts(a, eps, gate=None):
    gram = torch.zeros(a.shape[1], a.shape[1])
    K.coactivation_update_reference_(gram, a, eps, gate)
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
    # The largest output tile (fewest programs for the interpreter); 256 does not fit sm_90.
    K.coactivation_update_(gram, a, 0.5, block=K.coactivation.MAX_BLOCK, block_k=16)
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


# ------------------------------------------------------------------------------------------
# Active rules: per-unit eps, signed gate, per-token counts
# ------------------------------------------------------------------------------------------

RULE_SHAPES = SHAPES + [(1, 40)]  # n = 1; d = 40 spans two 32-unit blocks


def unit_eps(d):
    """Per-unit thresholds in [0, 1] with every fifth unit at +inf (never active)."""
    eps = torch.linspace(0.0, 1.0, d)
    eps[1::5] = float("inf")
    return eps


def make_gate(n, d, dtype, seed=5):
    """A signed gate: large negatives (|g| > eps but inactive), exact zeros, positives."""
    g = torch.Generator().manual_seed(seed)
    gate = 2 * torch.randn(n, d, generator=g)
    return torch.where(torch.rand(n, d, generator=g) < 0.2, torch.zeros(()), gate).to(dtype)


def rules(n, d, dtype):
    other = torch.float16 if dtype == torch.float32 else torch.float32  # the gate's own dtype
    gate = make_gate(n, d, other)
    return {"unit_eps": (unit_eps(d), None), "gate": (0.0, gate), "gate_unit_eps": (unit_eps(d), gate)}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", RULE_SHAPES)
def test_sparsity_kernel_rules_match_reference(n, d, dtype):
    a = make_acts(n, d, dtype)
    for name, (eps, gate) in rules(n, d, dtype).items():
        mask = K.active_mask(a, eps, gate)
        want_counts = torch.empty(n)
        want = K.sparsity_sums_reference(a, eps, gate, token_active=want_counts)
        assert torch.equal(want_counts, mask.sum(dim=1).float()), name
        assert torch.equal(want.active, mask.sum(dim=0)), name
        got_counts = torch.full((n,), -1.0)
        got = K.sparsity_sums(a, eps, gate=gate, token_active=got_counts, **SMALL_BLOCKS)
        assert_sums_close(got, want)
        assert torch.equal(got_counts, want_counts), name
        # the magnitudes ignore the rule: they equal those of the plain call
        plain = K.sparsity_sums_reference(a, 0.0)
        for key in ("abs_sum", "sq_sum", "hoyer_sum", "top10_sum"):
            assert torch.equal(getattr(want, key), getattr(plain, key)), (name, key)


def test_active_rules_known_answer():
    # acts carry the magnitudes (|a| = 3 everywhere); the gate alone decides who is active.
    n, d = 7, 37  # d spans two 32-unit blocks with a ragged edge
    acts = torch.full((n, d), 3.0)
    acts[:, ::2] = -3.0
    gate = torch.full((n, d), -2.0)  # |gate| > eps everywhere, but negative: inactive
    gate[:, :5] = 0.5
    eps = torch.zeros(d)
    eps[3] = 0.5  # 0.5 > 0.5 is false: strict
    eps[4] = float("inf")  # never active
    eps[10] = -3.0  # signed: -2 > -3, active
    want_active = torch.zeros(d, dtype=torch.int64)
    want_active[[0, 1, 2, 10]] = n
    for run in (K.sparsity_sums_reference, lambda *a, **k: K.sparsity_sums(*a, **k, **SMALL_BLOCKS)):
        counts = torch.empty(n)
        sums = run(acts, eps, gate=gate, token_active=counts)
        assert torch.equal(sums.active, want_active)
        assert torch.equal(counts, torch.full((n,), 4.0))
        assert torch.equal(sums.abs_sum.double(), torch.full((d,), 3.0 * n, dtype=torch.float64))
        # hoyer of a constant-magnitude row is 0, whatever the gate says
        assert float(sums.hoyer_sum) == pytest.approx(0.0, abs=1e-5)
    stats = K.sparsity_stats_reference(acts, eps, gate)
    assert stats["frac_active"] == pytest.approx(4 / d) and stats["l1"] == pytest.approx(3.0)
    # without the gate the magnitude rule applies: |a| = 3 > eps at every unit but 4 (inf)
    no_gate = K.sparsity_sums(acts, eps, **SMALL_BLOCKS).active
    assert no_gate[4] == 0 and int((no_gate == n).sum()) == d - 1


def test_rules_with_strided_acts_and_gate():
    a = make_acts(41, 90, torch.bfloat16).T  # [90, 41], stride_d != 1
    gate = make_gate(90, 82, torch.float32)[:, ::2]  # [90, 41], stride_d = 2
    eps = unit_eps(41)
    want_counts = torch.empty(90)
    want = K.sparsity_sums_reference(a.contiguous(), eps, gate.contiguous(), want_counts)
    got_counts = torch.empty(90)
    got = K.sparsity_sums(a, eps, gate=gate, token_active=got_counts, **SMALL_BLOCKS)
    assert_sums_close(got, want)
    assert torch.equal(got_counts, want_counts)
    gram = torch.zeros(41, 41)
    K.coactivation_update_(gram, a, eps, gate=gate, **SMALL_TILES)
    assert torch.equal(gram, reference_counts(a.contiguous(), eps, gate.contiguous()))


def test_int32_slices_keep_gate_and_token_counts_aligned(monkeypatch):
    # With int32 ending at 103, acts [50, 13] take 7 rows a slice but the gate (every other row
    # of a [100, 13] tile: row stride 26) only 3: both must be cut at the same rows.
    monkeypatch.setattr(K.sparsity_stats, "INT32_MAX", 12 + 13 * 7)
    a = make_acts(50, 13, torch.float32)
    gate = make_gate(100, 13, torch.float32)[::2]
    assert [len(c) for c, g in K.sparsity_stats._row_chunks(a, gate)] == [3] * 16 + [2]
    want_counts, got_counts = torch.empty(50), torch.empty(50)
    want = K.sparsity_sums_reference(a, 0.1, gate, want_counts)
    assert_sums_close(K.sparsity_sums(a, 0.1, gate=gate, token_active=got_counts), want)
    assert torch.equal(got_counts, want_counts)
    gram = torch.zeros(13, 13)
    K.coactivation_update_(gram, a, 0.1, gate=gate)
    assert torch.equal(gram, reference_counts(a, 0.1, gate))


def test_scalar_eps_path_is_bit_identical_to_the_new_forms():
    # A float eps, the same value per unit, and a call that also counts tokens: same bits.
    a = make_acts(100, 13, torch.bfloat16)
    plain = K.sparsity_sums(a, 0.3, **SMALL_BLOCKS)
    per_unit = K.sparsity_sums(a, torch.full((13,), 0.3), **SMALL_BLOCKS)
    counted = K.sparsity_sums(a, 0.3, token_active=torch.empty(100), **SMALL_BLOCKS)
    for other in (per_unit, counted):
        for key in ("active", "abs_sum", "sq_sum", "hoyer_sum", "top10_sum"):
            assert torch.equal(getattr(plain, key), getattr(other, key)), key
    gram, gram_unit = torch.zeros(13, 13), torch.zeros(13, 13)
    K.coactivation_update_(gram, a, 0.3, **SMALL_TILES)
    K.coactivation_update_(gram_unit, a, torch.full((13,), 0.3), **SMALL_TILES)
    assert torch.equal(gram, gram_unit)


def test_bad_eps_gate_and_counts_are_refused():
    a = torch.ones(4, 6)
    for kwargs in (dict(eps=torch.zeros(5)), dict(eps=torch.zeros(6, dtype=torch.int64)),
                   dict(eps=0.0, gate=torch.ones(4, 5)), dict(eps=0.0, token_active=torch.empty(3)),
                   dict(eps=0.0, token_active=torch.empty(4, dtype=torch.float64))):
        eps = kwargs.pop("eps")
        with pytest.raises(ValueError):
            K.sparsity_sums(a, eps, **kwargs)
        with pytest.raises(ValueError):
            K.sparsity_sums_reference(a, eps, **kwargs)


def bad_blocks():
    """(wrapper, block kwargs, the argument the one-line refusal must start with): sizes the GPU cannot
    build, which the interpreter would run (block_k = 8 counts right there: tl.dot needs K >= 16)."""
    C, S = K.coactivation, K.sparsity_stats
    widest_k = C.MAX_TILE // C.MAX_BLOCK
    return [
        ("coactivation_update_", dict(block_k=C.MIN_DOT // 2), "block_k"),
        ("coactivation_update_", dict(block=C.MIN_DOT // 2), "block"),
        ("coactivation_update_", dict(block=3 * C.MIN_DOT), "block"),  # not a power of two
        ("coactivation_update_", dict(block=2 * C.MAX_BLOCK, block_k=C.MIN_DOT), "block"),
        ("coactivation_update_", dict(block=C.MAX_BLOCK, block_k=2 * widest_k), "block * block_k"),
        ("coactivation_update_", dict(block_k=32.0), "block_k"),
        ("sparsity_sums", dict(block_t=0), "block_t"),
        ("sparsity_sums", dict(block_d=24), "block_d"),
        ("sparsity_sums", dict(block_t=S.MAX_SUMS_TILE, block_d=2), "block_t * block_d"),
    ]


@pytest.mark.parametrize("wrapper,blocks,named", bad_blocks())
def test_bad_block_sizes_are_refused_in_one_line(wrapper, blocks, named):
    a = make_acts(20, 18, torch.bfloat16)
    args = (torch.zeros(18, 18), a, 0.5) if wrapper == "coactivation_update_" else (a, 0.5)
    with pytest.raises(ValueError) as refused:
        getattr(K, wrapper)(*args, **blocks)
    message = str(refused.value)
    assert message.startswith(f"{named} must be ") and "\n" not in message, message


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", RULE_SHAPES)
def test_coactivation_kernel_rules_match_reference(n, d, dtype):
    a = make_acts(n, d, dtype)
    for name, (eps, gate) in rules(n, d, dtype).items():
        want = reference_counts(a, eps, gate)
        mask = K.active_mask(a, eps, gate).float()
        assert torch.equal(want, mask.T @ mask), name
        gram = torch.zeros(d, d)
        K.coactivation_update_(gram, a, eps, gate=gate, **SMALL_TILES)
        assert torch.equal(gram, want), name


def test_coactivation_gate_known_answer():
    # Units 0..8 gated on for the first 5 tokens, 9..17 for the last 3; the rest negative.
    acts = torch.full((8, 18), 1.0)
    gate = torch.full((8, 18), -4.0)
    gate[:5, :9] = 1.0
    gate[5:, 9:] = 1.0
    eps = torch.zeros(18)
    eps[17] = float("inf")
    want = torch.zeros(18, 18)
    want[:9, :9] = 5.0
    want[9:17, 9:17] = 3.0
    gram = torch.zeros(18, 18)
    K.coactivation_update_(gram, acts, eps, gate=gate)
    assert torch.equal(gram, want)
    torch.testing.assert_close(K.coactivation_reference(acts, eps, gate), want / 8)
