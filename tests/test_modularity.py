"""Modularity Q against its permutation null, on activity whose answer is known by construction.

Independent units (no shared latent) must read as null (|q_z| small, low stability floor);
planted modules (units of a group co-fire with the group's latent) must stand far above it,
with the planted k found by held-out Q and the same partition on both samples.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import scipy.stats
import torch

from lamina import measures as M
from lamina.instrument.modularity import find_modules, modularity_scalars

N_TOKENS, N_UNITS = 2000, 60


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


def independent_activity(seed: int, n: int = N_TOKENS, d: int = N_UNITS):
    """Two samples of d units firing independently at rates spread over [0.03, 0.6]."""
    g = torch.Generator().manual_seed(seed)
    rate = 0.03 + 0.57 * torch.rand(d, generator=g)
    return (torch.rand(n, d, generator=g) < rate), (torch.rand(n, d, generator=g) < rate)


def planted_activity(k: int, seed: int, n: int = N_TOKENS, d: int = N_UNITS):
    """Two samples of d units in k shuffled groups: each token switches each group's latent on
    with probability 0.3; a unit fires with probability 0.7 when its group is on, 0.05 when off,
    independently (the noise). Returns (sample, sample_b, group of each unit)."""
    g = torch.Generator().manual_seed(seed)
    group = torch.arange(d) % k
    group = group[torch.randperm(d, generator=g)]

    def sample():
        latent = torch.rand(n, k, generator=g) < 0.3
        p = torch.where(latent[:, group], 0.7, 0.05)
        return torch.rand(n, d, generator=g) < p

    return sample(), sample(), group


def test_independent_units_read_as_null_over_seeds():
    zs, floors, ks = [], [], []
    for seed in range(10):
        a, b = independent_activity(seed)
        mods = find_modules(a, b, seed=seed)
        zs.append(mods.q_z)
        floors.append(mods.stability_floor)
        ks.append(mods.k)
        assert mods.q > 0 and mods.q_null_std > 0 and len(mods.q_null) == 8
        assert mods.q_heldout < mods.q  # a partition of noise does not carry over to id_b
    report = f"q_z {[round(z, 2) for z in zs]}, floors {[round(f, 2) for f in floors]}, k {ks}"
    assert sum(abs(z) < 3 for z in zs) >= 9, report
    assert sum(floors) / len(floors) < 0.3, report


@pytest.mark.parametrize("k", [3, 5])
def test_planted_modules_stand_far_above_the_null(k):
    a, b, group = planted_activity(k, seed=k)
    mods = find_modules(a, b, seed=1)
    report = f"k={mods.k} q={mods.q:.3f} q_heldout={mods.q_heldout:.3f} q_z={mods.q_z:.1f}"
    assert mods.k == k, report
    assert mods.q_z > 10, report
    assert mods.q_heldout == pytest.approx(mods.q, abs=0.05), report
    assert M.partition_nmi(mods.labels, group) > 0.95, report
    assert mods.stability_floor > 0.95, report
    assert all(q < mods.q / 2 for q in mods.q_null), report


def test_stability_against_the_previous_partition():
    a, b, _ = planted_activity(4, seed=7)
    first = find_modules(a, b, seed=2)
    assert first.stability is None
    again = find_modules(b, a, previous=first.labels, seed=2)
    assert again.stability == pytest.approx(1.0)
    shuffled = first.labels[torch.randperm(N_UNITS, generator=torch.Generator().manual_seed(0))]
    assert find_modules(a, b, previous=shuffled, seed=2).stability < 0.5


def test_fixed_number_of_modules_is_kept_in_the_null_too():
    a, b = independent_activity(3)
    mods = find_modules(a, b, n_modules=4, seed=0)
    assert mods.k == 4 and mods.k_null == [4] * 8
    assert int(mods.labels.max()) == 3


def test_null_draws_are_reproducible_and_leave_the_global_rng_alone():
    a, b = independent_activity(11)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = find_modules(a, b, null_draws=8, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    second = find_modules(a, b, null_draws=8, seed=5)
    assert first.q_null == second.q_null and first.k_null == second.k_null
    assert torch.equal(first.labels, second.labels) and first.q_z == second.q_z
    assert find_modules(a, b, null_draws=8, seed=6).q_null != first.q_null
    assert torch.equal(torch.get_rng_state(), state)

    gen = torch.Generator().manual_seed(3)
    one = M.permute_units(a, gen)
    assert not torch.equal(M.permute_units(a, gen), one)  # the generator moves on
    assert torch.equal(M.permute_units(a, torch.Generator().manual_seed(3)), one)
    assert torch.equal(torch.get_rng_state(), state)


def test_more_draws_extend_the_same_stream():
    a, b = independent_activity(12)
    q8, k8 = M.modularity_null(a, b, draws=8, seed=9)
    q10, k10 = M.modularity_null(a, b, draws=10, seed=9)
    assert q10[:8] == q8 and k10[:8] == k8


def test_permute_units_keeps_counts_and_destroys_coactivation():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(3000, 1, generator=g) < 0.4
    a = torch.cat([base.repeat(1, 6), torch.zeros(3000, 1, dtype=torch.bool),
                   torch.ones(3000, 1, dtype=torch.bool), torch.rand(3000, 4, generator=g) < 0.002], dim=1)
    null = M.permute_units(a, torch.Generator().manual_seed(1))
    assert null.dtype == torch.bool and null.shape == a.shape
    assert torch.equal(null.sum(dim=0), a.sum(dim=0))
    phi = M.activity_phi(null)
    assert M.activity_phi(a)[:6, :6].sum() == pytest.approx(30.0)  # identical units: phi = 1
    assert float(phi[:6, :6].max()) < 0.1  # permuted apart


def test_permuted_columns_are_uniform_arrangements():
    # 6 tokens, 2 ones: each of the 15 arrangements equally likely, and two columns independent.
    col = torch.zeros(6, 300, dtype=torch.bool)
    col[:2] = True
    gen = torch.Generator().manual_seed(0)
    single, pairs = Counter(), Counter()
    for _ in range(100):
        null = M.permute_units(col, gen)
        keys = [tuple(null[:, j].nonzero().flatten().tolist()) for j in range(300)]
        single.update(keys)
        pairs.update(zip(keys[0::2], keys[1::2]))
    assert len(single) == 15
    assert scipy.stats.chisquare(list(single.values())).pvalue > 1e-3
    cells = list(pairs.values()) + [0] * (15 * 15 - len(pairs))
    assert scipy.stats.chisquare(cells).pvalue > 1e-3


def test_dead_and_always_on_units_are_excluded_without_nan():
    a, b, _ = planted_activity(3, seed=4)
    for x in (a, b):
        x[:, :5] = False  # dead
        x[:, 5] = True  # always on
    mods = find_modules(a, b, seed=0)
    assert (mods.labels[:6] == -1).all() and (mods.labels[6:] >= 0).all()
    assert torch.isfinite(mods.similarity).all()
    values = [mods.q, mods.q_heldout, mods.q_null_mean, mods.q_null_std, mods.q_z, mods.stability_floor, *mods.q_null]
    assert all(math.isfinite(v) for v in values)
    assert mods.k == 3 and mods.q_z > 10
    scalars = modularity_scalars([mods])
    assert scalars["modularity/layer0/excluded_frac"] == pytest.approx(6 / N_UNITS)
    assert all(math.isfinite(v) for v in scalars.values())


def test_all_units_dead_gives_zeros_not_nan():
    a = torch.zeros(100, 10, dtype=torch.bool)
    mods = find_modules(a, a.clone(), seed=0)
    assert (mods.labels == -1).all() and mods.k == 0
    assert mods.q == 0.0 and mods.q_null == [0.0] * 8 and mods.q_z == 0.0
    assert mods.module_units() == []


def test_scalar_tags():
    a, b = independent_activity(2, n=500, d=20)
    first = find_modules(a, b, seed=0)
    second = find_modules(a, b, previous=first.labels, seed=0)
    names = ["q", "q_heldout", "q_null_mean", "q_null_std", "q_null_lo", "q_null_hi", "q_z", "modules", "excluded_frac",
             "stability_floor"]
    scalars = modularity_scalars([first, second])
    assert set(scalars) == {f"modularity/layer0/{n}" for n in names} | {f"modularity/layer1/{n}" for n in names} | {
        "modularity/layer1/stability"
    }
    assert scalars["modularity/layer0/q_z"] == first.q_z
    band = (first.q_null_mean - 2 * first.q_null_std, first.q_null_mean + 2 * first.q_null_std)
    assert (scalars["modularity/layer0/q_null_lo"], scalars["modularity/layer0/q_null_hi"]) == band
    assert scalars["modularity/layer1/modules"] == float(second.k)


def test_partition_by_heldout_matches_partition_at_the_chosen_k():
    a, b, group = planted_activity(5, seed=3)
    s, s_b = M.activity_phi(a), M.activity_phi(b)
    labels, k, q_heldout = M.partition_by_heldout(s, s_b, 2, 8, seed=4)
    assert k == 5
    assert torch.equal(labels, M.partition(s, k, seed=4))
    assert q_heldout == pytest.approx(M.modularity_q(s_b, labels))
    # The phi similarity is the one of the co-activation measure.
    torch.testing.assert_close(s, M.phi_similarity(M.coactivation(a.float(), 0.5, impl="reference")))
