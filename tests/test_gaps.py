"""Density under the active rules, its gaps with intervals, and effective rank against its floor:
known answers by construction, and no structure in, no finding out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamina import measures
from lamina.instrument import Instrumentation
from lamina.instrument.layers import GramAccumulator, layer_scalars
from lamina.instrument.sparsity import density_gap, gap_scalars
from lamina.model import GPT, GPTConfig
from lamina.probes import ProbeSet

# ---- gaps and their standard errors ------------------------------------------------------------


def simulated_windows(rng: np.random.Generator, n_windows: int, tokens: int = 16, units: int = 24) -> torch.Tensor:
    """Activity of one distribution with structure between windows (each window its own firing
    probability, as documents differ), as [windows, tokens, units] 0/1 floats."""
    p = rng.beta(4.0, 6.0, size=(n_windows, 1, 1))
    return torch.from_numpy((rng.random((n_windows, tokens, units)) < p).astype(np.float32))


def gaps_of(id_acts: torch.Tensor, probe_acts: torch.Tensor, probe: str = "id_b") -> dict:
    stats = {}
    for name, acts in (("id", id_acts), (probe, probe_acts)):
        acc = measures.SparsityAccumulator(acts.shape[-1], 0.5, impl="reference")
        for batch in acts.split(7):
            acc.update(batch)
        s = acc.compute()
        s["window_frac_active"] = acc.window_frac_active().numpy()
        stats[name] = [s]
    return gap_scalars(stats)


def test_id_b_gap_z_exceeds_196_in_about_5_percent_of_pairs_from_one_distribution():
    rng = np.random.default_rng(0)
    z = np.array([gaps_of(simulated_windows(rng, 40), simulated_windows(rng, 40))["sparsity/gap/id_b/z"]
                  for _ in range(200)])
    share = float(np.mean(np.abs(z) > 1.96))
    assert 0.02 <= share <= 0.10, share
    assert np.all(np.abs(z) < 4.5)  # no structure in, no finding out


def test_a_planted_density_difference_clears_its_interval():
    rng = np.random.default_rng(1)
    id_acts, other = simulated_windows(rng, 60), simulated_windows(rng, 60)
    sparser = other * torch.from_numpy((rng.random(other.shape) < 0.8).astype(np.float32))  # 20% of firing removed
    tags = gaps_of(id_acts, sparser, "ood/x")
    assert tags["sparsity/gap/ood/x"] > 0 and tags["sparsity/gap/ood/x/z"] > 3
    assert tags["sparsity/gap/ood/x/layer0"] == pytest.approx(tags["sparsity/gap/ood/x"])


def test_two_sample_and_paired_standard_errors_by_hand():
    a = np.array([0.50, 0.55, 0.45, 0.60])
    b = np.array([0.40, 0.50, 0.30, 0.45])
    two = density_gap(a, b, paired=False)
    assert two.value == pytest.approx(a.mean() - b.mean())
    assert two.se == pytest.approx(np.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 4))
    paired = density_gap(a, b, paired=True)
    assert paired.se == pytest.approx((a - b).std(ddof=1) / 2)
    assert paired.z == pytest.approx(paired.value / paired.se)
    assert density_gap(a, a, paired=True).z == 0.0  # no spread, no gap: z 0, not NaN


def test_shuffled_gap_is_paired_window_by_window():
    rng = np.random.default_rng(2)
    id_acts = simulated_windows(rng, 30)
    # The same windows, reordered within each: densities equal window by window, so the paired
    # difference is exactly zero while a two-sample SE would be wide.
    reordered = id_acts[:, torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    tags = gaps_of(id_acts, reordered, "shuffled")
    assert tags["sparsity/gap/shuffled"] == pytest.approx(0.0, abs=1e-12)
    assert tags["sparsity/gap/shuffled/se"] == pytest.approx(0.0, abs=1e-12)


# ---- the active rules on a model ---------------------------------------------------------------


def small_gpt(activation: str = "gelu") -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, activation=activation,
                         bias=True))


def probe_set() -> ProbeSet:
    gen = torch.Generator().manual_seed(1)
    return ProbeSet(probes={name: torch.randint(0, 64, (12, 16), generator=gen) for name in ("id", "id_b")})


def measured(model: GPT, rule: str) -> dict:
    inst = Instrumentation(impl="reference", ablation={"enabled": False}, modularity={"enabled": False},
                           sparsity={"active": rule}, pictures=False, lastlayer={"enabled": False})
    inst.probes = probe_set()
    return inst.measure(model, step=0).scalars


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_sign_density_does_not_move_with_the_scale_of_the_input_weights(activation):
    densities = {}
    for scale in (0.5, 1.0, 2.0):
        model = small_gpt(activation)
        with torch.no_grad():  # layer 0's input weights (and bias) scaled by a power of two: exact
            model.transformer.h[0].mlp.c_fc.weight.mul_(scale)
            model.transformer.h[0].mlp.c_fc.bias.mul_(scale)
        densities[scale] = {rule: measured(model, rule)["sparsity/id/layer0"] for rule in ("sign", "eps")}
    assert densities[0.5]["sign"] == densities[1.0]["sign"] == densities[2.0]["sign"]
    assert 0.2 < densities[1.0]["sign"] < 0.8
    # The eps rule is what the sign rule replaces: it moves with weight scale, and on a gated MLP's
    # silu(gate) * up its cut is never reached at the init scale.
    if activation == "gelu":
        assert densities[0.5]["eps"] < densities[1.0]["eps"] < densities[2.0]["eps"]
    else:
        assert densities[1.0]["eps"] < 0.01


def test_sign_rule_of_a_gated_mlp_reads_the_gate():
    model = small_gpt("swiglu")
    record: dict = {}
    with torch.no_grad():
        model.forward(probe_set().probes["id"], record=record)
    gate = record["mlp_pre"][0]
    assert gate.shape == record["mlp"][0].shape
    want = float((gate > 0).float().mean())
    assert measured(model, "sign")["sparsity/id/layer0"] == pytest.approx(want)


def test_cett_threshold_meets_its_target_error_on_a_constructed_layer():
    gen = torch.Generator().manual_seed(3)
    acts = torch.nn.functional.gelu(torch.randn(4096, 96, generator=gen) * 1.5)
    weight = torch.randn(40, 96, generator=gen) * torch.linspace(0.2, 2.0, 96)  # unequal column norms
    for target in (0.05, 0.2, 0.5):
        tau = measures.cett_threshold(acts, weight, target)
        contribution = acts.abs() * weight.norm(dim=0)
        dropped = torch.where(contribution < tau, acts, torch.zeros_like(acts))
        error = ((dropped @ weight.T).norm(dim=1) / (acts @ weight.T).norm(dim=1)).mean()
        assert abs(float(error) - target) <= 0.01 * target, (target, float(error))
    with pytest.raises(ValueError, match="cett"):
        measures.cett_threshold(acts, weight, 1.5)


def test_cett_rule_calibrates_per_layer_and_its_density_sits_between_none_and_all():
    model = small_gpt()
    tags = measured(model, "cett")
    for layer in range(2):
        assert 0.0 < tags[f"sparsity/id/layer{layer}"] < 1.0
    # A larger allowed error drops more units: fewer are active.
    inst = Instrumentation(impl="reference", ablation={"enabled": False}, modularity={"enabled": False},
                           sparsity={"active": "cett", "cett": 0.5}, pictures=False, lastlayer={"enabled": False})
    inst.probes = probe_set()
    looser = inst.measure(model, step=0).scalars
    assert looser["sparsity/id/layer0"] < tags["sparsity/id/layer0"]


# ---- effective rank, centred, against its floor --------------------------------------------------


def test_effective_rank_is_of_the_centred_stream_and_an_offset_does_not_move_it():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(600, 10, generator=gen) @ torch.diag(torch.linspace(0.2, 2.0, 10))
    shifted = x + 50.0  # a large common offset: uncentred, it would be one dominant direction
    centred_rank = measures.effective_rank(x - x.mean(dim=0))
    for data in (x, shifted):
        gram = GramAccumulator()
        for chunk in data.split(128):
            gram.update(chunk)
        assert gram.effective_rank() == pytest.approx(centred_rank, rel=1e-6)
    uncentred = GramAccumulator()
    uncentred.update(shifted)
    assert uncentred.effective_rank(centred=False) < 0.5 * centred_rank


def test_effective_rank_floor_is_the_difference_of_two_samples():
    gen = torch.Generator().manual_seed(5)
    grams = {}
    for name in ("id", "id_b"):
        g = GramAccumulator()
        g.update(torch.randn(400, 8, generator=gen))
        grams[name] = [g]
    tags = layer_scalars(grams)
    assert tags["layers/layer0/effective_rank_floor"] == pytest.approx(
        abs(tags["layers/layer0/effective_rank"] - tags["layers/layer0/effective_rank_id_b"])
    )
    assert tags["layers/layer0/effective_rank_floor"] < 0.3  # one distribution: a small floor
    assert tags["layers/layer0/effective_rank_rows"] == 400
