"""lamina.measures on inputs whose answer is known by construction.

Activation measures run through the Triton kernels (TRITON_INTERPRET=1) where triton is
installed and through the references otherwise; where it matters, both are checked.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import lamina.measures as M
from lamina import kernels as K
from lamina.measures import activation, phi
from tests.on_device import kernel_device, on_device

IMPLS = ["reference"] + (["kernel"] if K.HAS_TRITON and (K.interpreted() or kernel_device()) else [])
if kernel_device():  # bench/gpu_check.sh: impl="kernel" runs the compiled kernels on CUDA copies of the inputs
    M = on_device(M, kernel_device(), ("sparsity_stats", "coactivation", "SparsityAccumulator",
                                       "CoactivationAccumulator"), when=lambda args, kwargs: kwargs.get("impl") == "kernel")
SCALARS = ("frac_active", "l1", "l2", "hoyer", "dead_frac", "top10_l1_share")


def assert_no_nan(stats):
    for key in SCALARS:
        assert math.isfinite(stats[key]), key
    assert torch.isfinite(stats["firing_rate"]).all()


def assert_stats_close(got, want, rel=1e-5):
    assert got["tokens"] == want["tokens"]
    for key in SCALARS:
        assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-7), key
    torch.testing.assert_close(got["firing_rate"], want["firing_rate"])


# ------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------


def test_auto_picks_kernel_under_interpreter_and_agrees_with_reference():
    a = torch.randn(50, 24).relu()
    if K.HAS_TRITON and K.interpreted():
        assert M._use_kernel(a, "auto")
    assert_stats_close(M.sparsity_stats(a, 0.1), M.sparsity_stats(a, 0.1, impl="reference"))
    torch.testing.assert_close(M.coactivation(a, 0.1), M.coactivation(a, 0.1, impl="reference"))


def test_bad_impl_and_shapes_are_refused():
    with pytest.raises(ValueError):
        M.sparsity_stats(torch.ones(4, 3), 0.0, impl="fast")
    with pytest.raises(ValueError):
        M.sparsity_stats(torch.ones(4, 1), 0.0)  # d >= 2
    with pytest.raises(ValueError):
        M.coactivation(torch.ones(0, 3), 0.0)  # no token


def test_works_without_triton():
    # Where triton is missing (macOS), lamina.kernels still imports and every measure runs on
    # its reference; asking for the kernel is a clear error.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, lamina.measures as M, lamina.kernels as K\n"
        "assert not K.HAS_TRITON and not M._use_kernel(torch.ones(2, 2), 'auto')\n"
        "a = torch.randn(16, 8).relu()\n"
        "assert M.sparsity_stats(a, 0.0)['tokens'] == 16 and M.coactivation(a, 0.0).shape == (8, 8)\n"
        "try:\n"
        "    M.sparsity_stats(a, 0.0, impl='kernel')\n"
        "except RuntimeError:\n"
        "    print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_leading_dims_are_tokens():
    a = torch.randn(3, 7, 10)
    assert_stats_close(M.sparsity_stats(a, 0.2), M.sparsity_stats(a.reshape(21, 10), 0.2))


# ------------------------------------------------------------------------------------------
# Sparsity: known answers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_planted_dead_units_are_counted_exactly(impl):
    g = torch.Generator().manual_seed(0)
    d, dead = 40, [0, 7, 8, 39, 21]
    a = torch.randn(64, d, generator=g) + 3.0  # every live unit fires on every token
    a[:, dead] = 0.0
    stats = M.sparsity_stats(a, 0.0, impl=impl)
    assert stats["dead_frac"] == len(dead) / d
    assert stats["frac_active"] == (d - len(dead)) / d
    fired = torch.ones(d)
    fired[dead] = 0.0
    assert torch.equal(stats["firing_rate"].cpu(), fired)


@pytest.mark.parametrize("impl", IMPLS)
def test_hoyer_of_one_hot_and_constant_rows(impl):
    d = 16
    one_hot = torch.eye(d)[torch.arange(37) % d] * 2.5
    assert M.sparsity_stats(one_hot, 0.0, impl=impl)["hoyer"] == pytest.approx(1.0, abs=1e-6)
    constant = torch.full((37, d), -0.3)
    assert M.sparsity_stats(constant, 0.0, impl=impl)["hoyer"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_all_zero_input_gives_no_nan(impl):
    stats = M.sparsity_stats(torch.zeros(33, 12), 0.0, impl=impl)
    assert_no_nan(stats)
    assert stats["hoyer"] == 1.0 and stats["top10_l1_share"] == 1.0
    assert stats["dead_frac"] == 1.0 and stats["frac_active"] == 0.0
    assert stats["l1"] == 0.0 and stats["l2"] == 0.0
    assert not M.coactivation(torch.zeros(33, 12), 0.0, impl=impl).any()


@pytest.mark.parametrize("impl", IMPLS)
def test_top10_share_on_a_constructed_case(impl):
    # d = 30: the top ceil(3.0) = 3 units (not 4: 0.1 * 30 rounds above 3 in floating point).
    a = torch.zeros(2, 30)
    a[0, :3] = torch.tensor([4.0, -3.0, 3.0])
    a[0, 3:] = 0.5  # 27 * 0.5 = 13.5
    a[1, :] = 1.0  # uniform: 3 of 30
    want = ((10.0 / 23.5) + (3.0 / 30.0)) / 2
    stats = M.sparsity_stats(a, 0.0, impl=impl)
    assert stats["top10_l1_share"] == pytest.approx(want, rel=1e-6)
    # l1, l2, frac_active of the same case, from their definitions
    assert stats["l1"] == pytest.approx((23.5 + 30.0) / 60, rel=1e-6)
    assert stats["l2"] == pytest.approx(math.sqrt((16 + 9 + 9 + 27 * 0.25 + 30) / 60), rel=1e-6)
    assert stats["frac_active"] == 1.0


@pytest.mark.parametrize("impl", IMPLS)
def test_sparsity_accumulator_streams_like_one_batch(impl):
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 19, generator=g).relu().to(torch.bfloat16) for n in (31, 1, 50)]
    acc = M.SparsityAccumulator(19, 0.2, impl=impl)
    for batch in batches:
        acc.update(batch)
    assert acc.tokens == 82
    assert_stats_close(acc.compute(), M.sparsity_stats(torch.cat(batches), 0.2, impl="reference"))


# ------------------------------------------------------------------------------------------
# Co-activation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_coactivation_diagonal_is_firing_rate(impl):
    a = torch.randn(45, 21).relu()
    c = M.coactivation(a, 0.3, impl=impl)
    torch.testing.assert_close(torch.diagonal(c), M.sparsity_stats(a, 0.3)["firing_rate"])
    torch.testing.assert_close(c, c.T)


@pytest.mark.parametrize("impl", IMPLS)
def test_coactivation_accumulator_streams_and_folds_exactly(impl, monkeypatch):
    # A tiny exact-count limit forces the fp32 buffer to fold into float64 several times.
    monkeypatch.setattr(activation, "EXACT_COUNT_LIMIT", 16)  # the accumulator's module reads it
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(n, 18, generator=g) for n in (10, 40, 7)]
    acc = M.CoactivationAccumulator(18, 0.5, impl=impl)
    for batch in batches:
        acc.update(batch)
    assert acc.tokens == 57
    torch.testing.assert_close(acc.compute(), M.coactivation(torch.cat(batches), 0.5, impl="reference"))


# ------------------------------------------------------------------------------------------
# Active rules (per-unit eps, signed gate) and per-window density
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_gate_and_unit_eps_known_answer(impl):
    d = 20
    acts = torch.full((6, d), -2.0)  # the magnitudes: l1 = 2, hoyer 0, whatever is active
    gate = torch.full((6, d), -5.0)  # |gate| > eps, but negative: inactive
    gate[:, :8] = 1.0
    eps = torch.zeros(d)
    eps[6] = float("inf")  # never active
    eps[7] = 1.0  # 1 > 1 is false: strict
    stats = M.sparsity_stats(acts, eps, gate=gate, impl=impl)
    assert stats["frac_active"] == 6 / d and stats["dead_frac"] == 14 / d
    assert stats["l1"] == pytest.approx(2.0) and stats["hoyer"] == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(stats["firing_rate"].cpu(), (torch.arange(d) < 6).float())
    want = torch.zeros(d, d)
    want[:6, :6] = 1.0
    assert torch.equal(M.coactivation(acts, eps, gate=gate, impl=impl).cpu(), want)
    # leading dims flatten the gate alike
    nested = M.sparsity_stats(acts.view(2, 3, d), eps, gate=gate.view(2, 3, d), impl=impl)
    assert_stats_close(nested, stats)


def test_bad_eps_and_gate_are_refused():
    a = torch.ones(4, 6)
    with pytest.raises(ValueError):
        M.SparsityAccumulator(6, torch.zeros(5))
    with pytest.raises(ValueError):
        M.CoactivationAccumulator(6, torch.zeros(6, 1))
    with pytest.raises(ValueError):
        M.sparsity_stats(a, 0.0, gate=torch.ones(4, 5))
    with pytest.raises(ValueError):
        M.coactivation(a.view(2, 2, 6), 0.0, gate=a)  # same numel, other shape
    with pytest.raises(ValueError):
        M.SparsityAccumulator(6, 0.0).update(a, gate=torch.ones(6, 4))


@pytest.mark.parametrize("impl", IMPLS)
def test_window_density_of_planted_windows(impl):
    # Window w of 4 tokens x 10 units has exactly 3 w active entries (gate > 0), so its density
    # is 3 w / 40; a 2-D batch in between adds tokens but no window.
    d, T = 10, 4
    gate = -torch.ones(6, T * d)
    for w in range(6):
        gate[w, torch.randperm(T * d, generator=torch.Generator().manual_seed(w))[: 3 * w]] = 1.0
    gate = gate.view(6, T, d)
    acts = torch.rand(6, T, d)
    acc = M.SparsityAccumulator(d, 0.0, impl=impl)
    assert acc.window_frac_active().shape == (0,)
    acc.update(acts[:2], gate=gate[:2])
    acc.update(acts[2], gate=gate[2])  # [T, d]: no window recorded
    acc.update(acts[2:], gate=gate[2:])
    got = acc.window_frac_active()
    assert got.dtype == torch.float64
    assert torch.equal(got, torch.arange(6, dtype=torch.float64) * 3 / 40)
    # 3 * (0 + ... + 5) active entries in the windows, 3 * 2 more in the 2-D copy of window 2
    assert acc.compute()["frac_active"] == pytest.approx((15 + 2) * 3 / (7 * 40))


@pytest.mark.parametrize("impl", IMPLS)
def test_window_density_is_the_per_row_mean_of_the_active_mask(impl):
    g = torch.Generator().manual_seed(6)
    d, T = 19, 7
    batches = [torch.randn(b, T, d, generator=g).to(torch.bfloat16) for b in (3, 1, 4)]
    gates = [torch.randn(b.shape, generator=g, dtype=torch.float32) for b in batches]
    eps = torch.linspace(-0.5, 0.5, d)
    eps[2] = float("inf")
    acc = M.SparsityAccumulator(d, eps, impl=impl)
    for acts, gate in zip(batches, gates):
        acc.update(acts, gate=gate)
    masks = [K.active_mask(a.reshape(-1, d), eps, g.reshape(-1, d)).view(a.shape)
             for a, g in zip(batches, gates)]
    assert torch.equal(acc.window_frac_active(), torch.cat([m.double().mean(dim=(1, 2)) for m in masks]))
    flat = [b.reshape(-1, d) for b in batches], [g.reshape(-1, d) for g in gates]
    want = M.sparsity_stats(torch.cat(flat[0]), eps, gate=torch.cat(flat[1]), impl="reference")
    assert_stats_close(acc.compute(), want)
    acc.reset()
    assert acc.window_frac_active().numel() == 0 and acc.tokens == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_coactivation_accumulator_with_gate_and_unit_eps(impl, monkeypatch):
    # The gate is cut into the same exact-count chunks as the acts.
    monkeypatch.setattr(activation, "EXACT_COUNT_LIMIT", 16)  # the accumulator's module reads it
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(n, 18, generator=g) for n in (10, 40, 7)]
    gates = [torch.randn(b.shape, generator=g) for b in batches]
    eps = torch.linspace(0.0, 0.6, 18)
    eps[::4] = float("inf")
    acc = M.CoactivationAccumulator(18, eps, impl=impl)
    for acts, gate in zip(batches, gates):
        acc.update(acts, gate)
    want = M.coactivation(torch.cat(batches), eps, gate=torch.cat(gates), impl="reference")
    assert torch.equal(acc.compute(), want)
    assert not want[::4].any()


DDP_WORKER = r"""
import datetime, sys, torch, torch.distributed as dist
import lamina.measures as M
rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
d, T = 12, 5
eps = torch.linspace(0.0, 1.0, d)

def batches(r, windows=True):  # rank 0: 4 windows and a 2-D batch; rank 1: 1 window
    g = torch.Generator().manual_seed(10 + r)
    shapes = [(3, T, d), (6, d), (1, T, d)] if r == 0 else [(1, T, d)]
    out = [torch.randn(s, generator=g) for s in shapes]
    return out if windows else [b.reshape(-1, d) for b in out]

def fill(parts):
    acc = M.SparsityAccumulator(d, eps, impl="reference")
    for a in parts:
        acc.update(a, gate=a - 0.2)
    return acc

cases = [  # (this rank's batches, one process's batches): unequal, zero on rank 1, none at all
    (batches(rank), batches(0) + batches(1)),
    (batches(rank, windows=rank == 0), batches(0) + batches(1, False)),
    (batches(rank, False), batches(0, False) + batches(1, False)),
]
for (mine, everything), n_windows in zip(cases, (5, 4, 0)):
    got, want = fill(mine), fill(everything)
    got.all_reduce()
    assert torch.equal(got.window_frac_active(), want.window_frac_active())
    assert got.window_frac_active().numel() == n_windows
    a, b = got.compute(), want.compute()
    assert a["tokens"] == b["tokens"] and a["frac_active"] == b["frac_active"]
    assert torch.equal(a["firing_rate"], b["firing_rate"])
dist.destroy_process_group()
print("ok")
"""


def test_sparsity_all_reduce_gathers_unequal_window_counts(tmp_path):
    # Two gloo ranks with 4 + 1 windows (and 4 + 0, 0 + 0): after all_reduce both hold every
    # window in rank order and the sums of both, as one process fed all batches would.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", DDP_WORKER, str(rank), str(tmp_path / "store")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for rank in range(2)]
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "ok", err[-3000:]


def test_planted_coactivation_modules_are_recovered():
    # Each token activates one module (plus sparse noise); units 60..63 never fire.
    g = torch.Generator().manual_seed(3)
    sizes = [24, 16, 12, 8]
    truth = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)] + [torch.full((4,), -1)])
    module_of_token = torch.randint(len(sizes), (400,), generator=g)
    on = (truth[None, :] == module_of_token[:, None]) & (torch.rand(400, 64, generator=g) < 0.8)
    on |= torch.rand(400, 64, generator=g) < 0.03
    on[:, truth == -1] = False
    acts = torch.where(on, torch.rand(400, 64, generator=g) + 0.5, torch.zeros(()))
    labels = M.partition(M.coactivation(acts, 0.1), k=None)
    assert torch.equal(labels[truth == -1], torch.full((4,), -1))
    assert M.partition_nmi(labels, truth) >= 0.95


# ------------------------------------------------------------------------------------------
# Partition, modularity, NMI, effective rank
# ------------------------------------------------------------------------------------------


def planted_similarity(sizes, noise, seed):
    """Block-diagonal similarity (weights in [0.5, 1]) on uniform noise in [0, noise], shuffled."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    d = truth.numel()
    same = truth[:, None] == truth[None, :]
    w = torch.where(same, 0.5 + 0.5 * torch.rand(d, d, generator=g), noise * torch.rand(d, d, generator=g))
    w = (w + w.T) / 2
    perm = torch.randperm(d, generator=g)
    return w[perm][:, perm], truth[perm]


@pytest.mark.parametrize("seed", [0, 1])
def test_partition_recovers_unequal_planted_modules(seed):
    w, truth = planted_similarity([40, 25, 15, 8], noise=0.15, seed=seed)
    given = M.partition(w, k=4)
    assert given.dtype == torch.long and int(given.max()) == 3
    assert M.partition_nmi(given, truth) >= 0.95
    by_eigengap = M.partition(w)
    assert M.partition_nmi(by_eigengap, truth) >= 0.95
    assert torch.equal(by_eigengap, M.partition(w))  # deterministic


def test_partition_marks_dead_units_and_ignores_them():
    w, truth = planted_similarity([20, 12, 9], noise=0.1, seed=4)
    dead = torch.tensor([3, 17, 40])
    w[dead, :] = 0.0
    w[:, dead] = 0.0
    w[dead, dead] = 0.7  # a self-loop alone does not make a unit live
    labels = M.partition(w, k=3)
    assert torch.equal(labels[dead], torch.full((3,), -1))
    live = torch.ones(41, dtype=torch.bool)
    live[dead] = False
    assert M.partition_nmi(labels[live], truth[live]) >= 0.95
    assert torch.equal(M.partition(torch.zeros(5, 5)), torch.full((5,), -1))


def newman_q_by_pairs(w: np.ndarray, labels: np.ndarray) -> float:
    """Newman's Q straight from (1/2m) sum_ij (A_ij - k_i k_j / 2m) [c_i = c_j]."""
    keep = [i for i in range(len(labels)) if labels[i] >= 0]
    a = {(i, j): (w[i, j] if i != j else 0.0) for i in keep for j in keep}
    k = {i: sum(a[i, j] for j in keep) for i in keep}
    two_m = sum(k.values())
    total = 0.0
    for i in keep:
        for j in keep:
            if labels[i] == labels[j]:
                total += a[i, j] - k[i] * k[j] / two_m
    return total / two_m


def test_modularity_q_matches_pairwise_formula():
    rng = np.random.default_rng(5)
    w = rng.random((30, 30)) * (rng.random((30, 30)) < 0.4)
    w = (w + w.T) / 2
    np.fill_diagonal(w, rng.random(30))  # self-loops must be ignored
    labels = rng.integers(0, 4, 30)
    labels[[2, 11]] = -1  # excluded units
    got = M.modularity_q(torch.from_numpy(w), torch.from_numpy(labels))
    assert got == pytest.approx(newman_q_by_pairs(w, labels), rel=1e-10, abs=1e-12)
    assert M.modularity_q(torch.zeros(4, 4), torch.zeros(4, dtype=torch.long)) == 0.0


def test_modularity_q_of_planted_partition_beats_random():
    w, truth = planted_similarity([40, 25, 15, 8], noise=0.15, seed=6)
    shuffled = truth[torch.randperm(truth.numel(), generator=torch.Generator().manual_seed(0))]
    assert M.modularity_q(w, truth) > 0.3 > abs(M.modularity_q(w, shuffled))


def test_partition_nmi_known_cases():
    a = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    assert M.partition_nmi(a, a) == pytest.approx(1.0)
    assert M.partition_nmi(a, torch.tensor([5, 5, 9, 9, 0, 0, 0])) == pytest.approx(1.0)
    assert M.partition_nmi([0, 0, 0], [1, 1, 1]) == 1.0  # both a single cluster
    assert M.partition_nmi([0, 0, 0, 0], [0, 0, 1, 1]) == 0.0  # one single cluster
    assert M.partition_nmi([0, 0, 1, -1], [0, 0, 1, 1]) == pytest.approx(1.0)  # -1 left out
    # A hand-computed case: a = [0,0,1,1], b = [0,0,0,1]
    ha, hb = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) \
        + 0.25 * math.log(0.25 / (0.5 * 0.25))
    assert M.partition_nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi / ((ha + hb) / 2))


def test_partition_nmi_of_independent_partitions_is_near_zero():
    g = torch.Generator().manual_seed(7)
    a, b = torch.randint(4, (5000,), generator=g), torch.randint(4, (5000,), generator=g)
    assert M.partition_nmi(a, b) < 0.01


def test_effective_rank_of_equal_singular_values():
    g = torch.Generator().manual_seed(8)
    q_left, _ = torch.linalg.qr(torch.randn(50, 50, generator=g, dtype=torch.float64))
    q_right, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    for r in (1, 3, 17, 40):
        x = 2.5 * q_left[:, :r] @ q_right[:, :r].T
        assert M.effective_rank(x) == pytest.approx(r, rel=1e-9)
    assert M.effective_rank(torch.eye(12, dtype=torch.float32)) == pytest.approx(12, rel=1e-6)
    assert M.effective_rank(torch.zeros(6, 4)) == 0.0


# ------------------------------------------------------------------------------------------
# Newman's Q on graphs whose Q is known by construction
# ------------------------------------------------------------------------------------------


def cliques(sizes, weight=1.0):
    """Disjoint cliques of the given sizes, every edge ``weight``: labels 0.. by clique."""
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    w = weight * (labels[:, None] == labels[None, :]).to(torch.float64)
    return w, labels


def test_modularity_q_of_disjoint_cliques_is_known():
    # Every edge inside its clique: Q = 1 - sum_c (e_c / m)^2, e_c = n_c (n_c - 1) / 2 edges;
    # c equal cliques give 1 - 1/c. Q ignores the scale of the weights and the self-loops.
    w, labels = cliques([5, 5, 5, 5], weight=0.3)
    assert M.modularity_q(w, labels) == pytest.approx(0.75, abs=1e-12)
    sizes = [6, 4, 3]
    w, labels = cliques(sizes)
    edges = [n * (n - 1) / 2 for n in sizes]
    want = 1 - sum((e / sum(edges)) ** 2 for e in edges)
    assert M.modularity_q(w, labels) == pytest.approx(want, abs=1e-12)
    # Any integer labels name the clusters; units labelled -1 leave the graph with their edges.
    w, labels = cliques([5, 5, 5, 5])
    wired = torch.ones(23, 23, dtype=torch.float64)  # three extra units joined to everything
    wired[:20, :20] = w
    named = torch.cat([torch.tensor([42, 7, 100, 3]).repeat_interleave(5), torch.full((3,), -1)])
    assert M.modularity_q(wired, named) == pytest.approx(0.75, abs=1e-12)
    # One cluster: Q = 0. Every unit alone on a k-regular graph: Q = -sum_i (k / 2m)^2 = -1/n.
    assert M.modularity_q(w, torch.zeros(20, dtype=torch.long)) == pytest.approx(0.0, abs=1e-12)
    assert M.modularity_q(w, torch.arange(20)) == pytest.approx(-1 / 20, abs=1e-12)


def test_every_q_of_a_partition_is_the_one_newman_q():
    # The held-out Q that picks k and the Q of the null's draws are modularity_q itself.
    w, truth = cliques([6, 6, 6, 6])
    labels, k, q_heldout = M.partition_by_heldout(w, w, 2, 6, seed=0)
    assert k == 4 and M.partition_nmi(labels, truth) == pytest.approx(1.0)
    assert q_heldout == M.modularity_q(w, labels) == pytest.approx(0.75, abs=1e-12)
    g = torch.Generator().manual_seed(3)
    s, s_b = torch.rand(30, 30, generator=g), torch.rand(30, 30, generator=g)
    labels, _, q_heldout = M.partition_by_heldout(s, s_b, 2, 5, seed=1)
    assert q_heldout == M.modularity_q(s_b, labels)


# ------------------------------------------------------------------------------------------
# Statistics in fp32 under an outer autocast
# ------------------------------------------------------------------------------------------


def test_counts_and_cett_products_ignore_an_outer_bf16_autocast():
    # Under CPU bf16 autocast an fp32 matmul returns bf16: counts near 900 in steps of 4, and the
    # CETT calibration's W a with 8 significant bits. Each must equal its value without autocast.
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(3000, 64, generator=g)
    active = (acts > 0.5).float()
    weight = torch.randn(32, 64, generator=g)
    plain = (phi.pair_counts(active), M.activity_phi(active), M.cett_threshold(acts.relu(), weight, 0.2),
             M.coactivation(acts, 0.5, impl="reference"))
    acc = M.CoactivationAccumulator(64, 0.5, impl="reference")
    acc.update(acts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = (phi.pair_counts(active), M.activity_phi(active), M.cett_threshold(acts.relu(), weight, 0.2),
                 M.coactivation(acts, 0.5, impl="reference"))
        acc_under = M.CoactivationAccumulator(64, 0.5, impl="reference")
        acc_under.update(acts)
        assert torch.is_autocast_enabled("cpu")  # restored after each
    assert torch.equal(plain[0], under[0]) and torch.equal(plain[1], under[1])
    assert plain[2] == under[2]
    assert torch.equal(plain[3], under[3]) and torch.equal(acc.compute(), acc_under.compute())
