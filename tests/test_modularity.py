"""Modularity Q against its nulls, on activity and networks whose answer is known by construction.

Independent units (no shared latent) must read as null against the permutation null (|q_z|
small, low stability floor); planted modules (units of a group co-fire with the group's latent)
must stand far above it, with the planted k found and the same partition on both samples. k is
chosen on `id` alone and the held-out Q scored on `id_b`. Against the shuffled-weights null
(Filan et al.): an untrained GPT on byte windows is one more draw of it (|z| small), while the
permutation null calls it modular; a GPT with planted modules stands far above it.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import scipy.stats
import torch

from lamina import measures as M
from lamina.errors import ConfigError
from lamina.instrument import Instrumentation
from lamina.instrument.config import ModularityConfig, ProbesConfig
from lamina.instrument.modularity import (
    find_modules,
    modularity_scalars,
    shuffled_copy,
    shuffled_modules,
    shuffled_weights_null,
    with_shuffled_null,
)
from lamina.model import GPT, GPTConfig
from lamina.probes import ProbeSet

OFF = {"enabled": False}  # an instrument section switched off

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
    a, _ = independent_activity(12)
    q8, k8 = M.modularity_null(a, draws=8, seed=9)
    q10, k10 = M.modularity_null(a, draws=10, seed=9)
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


# ---- k chosen on id, Q held out on id_b -----------------------------------------------------------


def test_k_is_chosen_on_id_and_the_heldout_q_on_id_b_is_not_the_one_it_was_chosen_on():
    a, b, group = planted_activity(4, seed=5)
    noise_b, _ = independent_activity(6)
    planted = find_modules(a, b, seed=3)
    against_noise = find_modules(a, noise_b, seed=3)
    # The partition and its k are a function of id alone: id_b changes the held-out Q only.
    assert planted.k == against_noise.k == 4
    assert torch.equal(planted.labels, against_noise.labels) and planted.q == against_noise.q
    s, s_b, s_noise = M.activity_phi(a), M.activity_phi(b), M.activity_phi(noise_b)
    labels, k, q = M.partition_by_q(s, 2, 8, n_init=4, seed=3)
    assert (k, q) == (planted.k, planted.q) and torch.equal(labels, planted.labels)
    assert planted.q_heldout == M.modularity_q(s_b, labels)
    # Modules that are in id_b too hold up there; against id_b made of noise they read as none.
    assert planted.q_heldout == pytest.approx(planted.q, abs=0.05)
    assert abs(against_noise.q_heldout) < 0.05
    # The old rule chose k by Q on id_b itself: against noise it picks whatever k fits the noise
    # best, and reports that maximum as "held out".
    _, k_old, q_old = M.partition_by_heldout(s, s_noise, 2, 8, n_init=4, seed=3)
    assert k_old != 4 and q_old > against_noise.q_heldout
    assert M.partition_nmi(planted.labels, group) > 0.95


def test_heldout_q_of_independent_units_is_unbiased():
    # A partition of noise carries over to another sample of noise as nothing: the held-out Q
    # is about 0 (slightly below: Q of a fixed partition on an unrelated graph), never the
    # positive maximum over k that choosing k on id_b used to report.
    new, old = [], []
    for seed in range(6):
        a, b = independent_activity(seed)
        new.append(find_modules(a, b, seed=seed).q_heldout)
        s, s_b = M.activity_phi(a), M.activity_phi(b)
        old.append(M.partition_by_heldout(s, s_b, 2, 8, n_init=4, seed=seed)[2])
    report = f"held out {[round(q, 3) for q in new]}, chosen on id_b {[round(q, 3) for q in old]}"
    assert all(q < 0.01 for q in new), report
    assert all(q_old >= q for q, q_old in zip(new, old)), report


# ---- the shuffled-weights null (Filan et al., arXiv 2103.03386) --------------------------------------

BLOCK, WINDOWS = 64, 16  # 1024 tokens a sample


@pytest.fixture(scope="module")
def byte_windows():
    """`id` and `id_b`: disjoint byte windows of the world corpus (the text tiny trains on)."""
    from lamina.data import world

    text = torch.tensor(list(world.sample_text(0, 2 * BLOCK * WINDOWS + 64).encode()), dtype=torch.long)
    n = BLOCK * WINDOWS
    return text[:n].view(WINDOWS, BLOCK), text[n : 2 * n].view(WINDOWS, BLOCK)


def tiny_gpt(seed: int, n_layer: int = 3, n_embd: int = 64) -> GPT:
    """A freshly initialised GPT on bytes (the global RNG seeded here: a test's own model)."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=259, block_size=BLOCK, n_layer=n_layer, n_head=4, n_embd=n_embd)
    return GPT(config).eval()


def measured(model: GPT, windows, draws: int, seed: int = 0):
    """Each layer's LayerModules with its permutation and shuffled-weights nulls, as the
    instrument measures them (sign rule, every token of both samples)."""
    id_windows, id_b_windows = windows
    inst = Instrumentation(modularity=ModularityConfig(null_draws=8, shuffled_draws=draws, tokens=None),
                           probes=ProbesConfig(seed=seed), ablation=OFF, pictures=False, layers=OFF,
                           lastlayer=OFF, hierarchy=OFF, context=OFF)
    inst.probes = ProbeSet(probes={"id": id_windows, "id_b": id_b_windows})
    return inst.measure(model, step=0).modules


def test_shuffle_within_keeps_each_matrix_values_and_changes_their_arrangement():
    w = torch.randn(48, 16, generator=torch.Generator().manual_seed(0))
    before = w.clone()
    state = torch.get_rng_state()
    shuffled = M.shuffle_within(w, torch.Generator().manual_seed(1))
    assert torch.equal(w, before)  # a new tensor; the weight is not touched
    assert shuffled.shape == w.shape and shuffled.dtype == w.dtype
    assert torch.equal(shuffled.flatten().sort().values, w.flatten().sort().values)  # the same multiset
    assert (shuffled != w).float().mean() > 0.9  # a new arrangement
    assert not torch.equal(shuffled.sort(dim=1).values, w.sort(dim=1).values)  # rows mixed, not just permuted
    assert torch.equal(M.shuffle_within(w, torch.Generator().manual_seed(1)), shuffled)  # seeded
    assert torch.equal(torch.get_rng_state(), state)

    model = tiny_gpt(0, n_layer=2)
    copied, pairs = shuffled_copy(model)
    assert len(pairs) == 2 * 4  # per block: attention c_attn, c_proj; MLP c_fc, c_proj
    assert [id(w) for w, _ in pairs] == [id(m.weight) for m in shuffled_modules(model)]
    assert all(c is not w and not c.requires_grad for w, c in pairs)
    kept = ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight", "lm_head.weight")
    params = dict(copied.named_parameters(remove_duplicate=False))
    originals = dict(model.named_parameters(remove_duplicate=False))
    assert all(params[name] is originals[name] for name in kept)  # embeddings and norms are shared, not copied


def test_shuffled_weights_null_leaves_the_model_and_the_global_rng_alone(byte_windows):
    model = tiny_gpt(1, n_layer=2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first = shuffled_weights_null(model, *byte_windows, draws=3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert len(first.q) == 2 and all(len(q) == 3 for q in first.q) and first.seconds > 0
    again = shuffled_weights_null(model, *byte_windows, draws=4, seed=5)
    assert [q[:3] for q in again.q] == first.q  # draw j is the same whatever the number of draws
    assert shuffled_weights_null(model, *byte_windows, draws=3, seed=6).q != first.q


def test_untrained_network_is_no_finding_against_shuffled_weights_but_is_against_permutation(byte_windows):
    # A freshly initialised GPT's block matrices are i.i.d. entries: the network is itself a draw
    # of its shuffled-weights null, so its z is a t-like statistic around 0. Across 5 seeds x 3
    # layers |z| > 3 may come up at the null's own rate (about 1% of layers with 16 draws) and no
    # more; the permutation null meanwhile reads every layer as modular (units that read the same
    # tokens co-fire), which is why it cannot decide.
    zs, zs_heldout, perm_zs = [], [], []
    for seed in range(5):
        for mods in measured(tiny_gpt(seed), byte_windows, draws=16, seed=seed):
            zs.append(mods.q_shuffled_z)
            zs_heldout.append(mods.q_heldout_shuffled_z)
            perm_zs.append(mods.q_z)
    report = (f"q_shuffled_z {[round(z, 2) for z in zs]}, q_heldout_shuffled_z {[round(z, 2) for z in zs_heldout]}, "
              f"permutation q_z {[round(z) for z in perm_zs]}")
    for values in (zs, zs_heldout):
        assert sum(abs(z) >= 3 for z in values) <= 1, report
        assert all(abs(z) < 5 for z in values), report
        assert abs(sum(values) / len(values)) < 1, report
        for seed in range(5):  # no network-level finding: the mean over a network's layers
            assert abs(sum(values[3 * seed : 3 * seed + 3]) / 3) < 3, report
    assert min(perm_zs) > 10, report


def planted_gpt(seed: int, groups: int = 4, n_layer: int = 2, n_embd: int = 64) -> tuple[GPT, list[torch.Tensor]]:
    """A GPT at its initialisation plus planted modules: in each block the MLP units fall into
    `groups` groups, and every unit of group g reads, on top of its random init weights, the
    group's own direction r_g, supported on a block of n_embd / groups input dimensions that no
    other group reads (disjoint directions). A group's units fire together when r_g . LN(x) > 0,
    and groups read independent coordinates of the random token embeddings. Returns (model,
    group of each unit per layer)."""
    model = tiny_gpt(seed, n_layer=n_layer, n_embd=n_embd)
    g = torch.Generator().manual_seed(seed)
    width = n_embd // groups
    planted = []
    with torch.no_grad():
        for block in model.transformer.h:
            weight = block.mlp.c_fc.weight  # [d_ff, n_embd]
            group = torch.randperm(weight.shape[0], generator=g) % groups
            reads = torch.zeros(groups, n_embd)
            for grp in range(groups):
                reads[grp, grp * width : (grp + 1) * width] = torch.randn(width, generator=g) / math.sqrt(width)
            weight += reads[group]
            planted.append(group)
    return model, planted


def test_planted_modules_stand_far_above_the_shuffled_weights_null(byte_windows):
    report = []
    for seed in range(2):
        model, groups = planted_gpt(seed)
        for layer, (mods, group) in enumerate(zip(measured(model, byte_windows, draws=8, seed=seed), groups)):
            report.append(f"seed {seed} layer {layer}: k={mods.k} q={mods.q:.3f} shuffled "
                          f"{mods.q_shuffled_mean:.3f}+-{mods.q_shuffled_std:.3f} z={mods.q_shuffled_z:.1f} "
                          f"held-out z={mods.q_heldout_shuffled_z:.1f}")
            assert mods.k == 4, report[-1]
            assert M.partition_nmi(mods.labels, group) > 0.8, report[-1]
            assert mods.q_shuffled_z > 3 and mods.q_heldout_shuffled_z > 3, report[-1]
    print("\n".join(report))


def test_shuffled_tags_and_the_draws_key():
    a, b = independent_activity(2, n=500, d=20)
    mods = with_shuffled_null(find_modules(a, b, seed=0), [0.1, 0.2, 0.3], [0.0, 0.1, 0.2])
    scalars = modularity_scalars([mods])
    assert scalars["modularity/layer0/q_shuffled_mean"] == pytest.approx(0.2)
    assert scalars["modularity/layer0/q_shuffled_std"] == pytest.approx(0.1)
    assert scalars["modularity/layer0/q_shuffled_z"] == pytest.approx((mods.q - 0.2) / 0.1)
    assert scalars["modularity/layer0/q_heldout_shuffled_z"] == pytest.approx((mods.q_heldout - 0.1) / 0.1)
    assert "modularity/layer0/q_null_mean" in scalars  # the permutation null stays, descriptive
    with pytest.raises(ConfigError, match=r"instrument\.modularity\.shuffled_draws: expected 0 \(off\) .* got 1"):
        Instrumentation(modularity=ModularityConfig(shuffled_draws=1))
    assert Instrumentation(modularity={"shuffled_draws": 0}).modularity.shuffled_draws == 0


def test_the_instrument_logs_the_shuffled_null_and_its_time(byte_windows):
    model = tiny_gpt(3, n_layer=2)
    model.train()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    inst = Instrumentation(modularity=ModularityConfig(shuffled_draws=2, tokens=512), ablation=OFF, pictures=False,
                           lastlayer=OFF, hierarchy=OFF, context=OFF)
    inst.probes = ProbeSet(probes={"id": byte_windows[0], "id_b": byte_windows[1]})
    state = torch.get_rng_state()
    m = inst.measure(model, step=0)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    for i in range(2):
        for name in ("q_shuffled_mean", "q_shuffled_std", "q_shuffled_z", "q_heldout_shuffled_z"):
            assert math.isfinite(m.scalars[f"modularity/layer{i}/{name}"]), name
    assert m.scalars["perf/modularity_shuffled_seconds"] > 0
    off = Instrumentation(modularity=ModularityConfig(shuffled_draws=0, tokens=512), ablation=OFF, pictures=False,
                          lastlayer=OFF, hierarchy=OFF, context=OFF)
    off.probes = inst.probes
    tags = off.measure(model, step=0).scalars
    assert "modularity/layer0/q" in tags and not [t for t in tags if "shuffled" in t]
