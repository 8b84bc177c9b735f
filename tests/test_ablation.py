"""lamina.instrument.ablation: mean-ablation, unclipped damage, chance losses, specificity and its null,
on planted damage and on tiny GPTs whose answers are known by construction."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lamina.data.tokenizer import byte_tokenizer
from lamina.instrument.ablation import (
    ablation_scalars,
    ablation_statistics,
    chance_losses,
    layer_ablation,
    learned_tasks,
    mlp_output_projections,
    random_relabellings,
    reaching_positions,
    specificity,
    task_losses,
    task_scalars,
    unit_means,
)
from lamina.model import GPT, GPTConfig
from lamina.probes import TaskProbe, string_task_probe

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)

# ---- specificity on constructed matrices ------------------------------------------------------------


def test_specificity_is_top_minus_mean_of_the_others_unclipped():
    assert specificity(torch.eye(4)) == pytest.approx(1.0)  # 1 - 0 for every module
    assert specificity(torch.ones(3, 5)) == pytest.approx(0.0)
    assert specificity(torch.zeros(3, 5)) == pytest.approx(0.0)
    # Negative damage is kept: top 0.5, others (-1 + 0) / 2.
    assert specificity(torch.tensor([[-1.0, 0.0, 0.5]])) == pytest.approx(1.0)
    assert specificity(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])) == pytest.approx((1.5 + 0.0) / 2)
    # Only learned tasks count: the unlearned task 2's damage is ignored.
    d = torch.tensor([[1.0, 0.0, 9.0], [0.0, 1.0, 9.0]])
    assert specificity(d, torch.tensor([True, True, False])) == pytest.approx(1.0)
    assert specificity(d, torch.tensor([True, False, False])) is None  # < 2 learned tasks
    assert specificity(torch.ones(4, 1)) is None


# ---- the null on planted damage --------------------------------------------------------------------

N_UNITS, SIZE, N_TASKS = 80, 10, 4  # 8 modules of 10; units 10t..10t+9 serve task t (t < 4), 40..79 nothing


def planted_damage(noise_seed: int, noise: float = 0.02):
    """Ablating a set costs task t the share of its 10 units in the set, plus N(0, noise) per entry."""
    gen = torch.Generator().manual_seed(noise_seed)

    def damage_of(sets: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(len(sets), N_TASKS, dtype=torch.float64)
        for i, units in enumerate(sets):
            for t in range(N_TASKS):
                out[i, t] = ((units >= SIZE * t) & (units < SIZE * (t + 1))).sum() / SIZE
        return out + noise * torch.randn(out.shape, generator=gen, dtype=torch.float64)

    return damage_of


PLANTED = torch.arange(N_UNITS) // SIZE
ALL_LEARNED = torch.ones(N_TASKS, dtype=torch.bool)


@pytest.mark.parametrize("seed", range(5))
def test_planted_task_specific_modules_stand_far_above_the_null(seed):
    r = ablation_statistics(planted_damage(seed), PLANTED, ALL_LEARNED, null_draws=8, seed=seed)
    assert r.damage.shape == (8, N_TASKS) and r.null_damage.shape == (8, 8, N_TASKS)
    assert r.specificity == pytest.approx(0.5, abs=0.05)  # 4 modules at 1 - 0, 4 at ~0
    assert r.null_mean < 0.35
    assert r.z > 5, (r.specificity, r.null_mean, r.null_std, r.z)


def test_a_random_partition_is_at_the_null():
    zs = []
    for seed in range(10):
        perm = torch.randperm(N_UNITS, generator=torch.Generator().manual_seed(100 + seed))
        r = ablation_statistics(planted_damage(seed), PLANTED[perm], ALL_LEARNED, null_draws=8, seed=seed)
        zs.append(r.z)
    assert all(abs(z) < 3 for z in zs), zs
    assert abs(float(np.mean(zs))) < 1.5, zs


def test_null_sets_keep_module_sizes_dead_units_and_are_seeded_not_global():
    labels = torch.tensor([0, 0, 0, 1, 1, -1, 2, -1, 2, 2, 2])
    draws = random_relabellings(labels, 8, seed=(3, 100, 1))
    again = random_relabellings(labels, 8, seed=(3, 100, 1))
    other = random_relabellings(labels, 8, seed=(3, 100, 2))
    for d, a in zip(draws, again):
        assert torch.equal(d, a)
        assert torch.equal(torch.bincount(d[d >= 0]), torch.bincount(labels[labels >= 0]))
        assert torch.equal(d < 0, labels < 0)
    assert any(not torch.equal(d, o) for d, o in zip(draws, other))
    assert len({tuple(d.tolist()) for d in draws}) > 1


def test_one_module_holding_every_live_unit_gives_z_zero_not_nan():
    labels, learned = torch.tensor([0, 0, 0, -1]), torch.ones(2, dtype=torch.bool)
    r = ablation_statistics(lambda sets: torch.tensor([[1.0, 0.0]] * len(sets)), labels, learned)
    assert r.null_std == 0.0 and r.z == 0.0 and r.specificity == pytest.approx(1.0)
    with pytest.raises(ValueError, match="null_draws"):
        ablation_statistics(lambda sets: torch.zeros(len(sets), 2), labels, learned, null_draws=1)


def test_scalars_keep_negative_damage_and_drop_specificity_with_fewer_than_two_learned_tasks():
    tasks = ("a", "b", "c")
    damage = torch.tensor([[-0.3, 0.2, 1.0], [0.1, -0.5, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])

    def damage_of(sets):
        return damage.repeat(len(sets) // 2, 1)

    both = ablation_statistics(damage_of, labels, torch.tensor([True, True, False]))
    s = ablation_scalars(2, both, tasks)
    assert s["modularity/layer2/ablation/m0/a"] == pytest.approx(-0.3)
    assert s["modularity/layer2/ablation/m1/b"] == pytest.approx(-0.5)
    assert s["modularity/layer2/specificity"] == pytest.approx(((0.2 + 0.3) + (0.1 + 0.5)) / 2)
    for tag in ("specificity_null_mean", "specificity_null_std", "specificity_z"):
        assert math.isfinite(s[f"modularity/layer2/{tag}"])
    one = ablation_statistics(damage_of, labels, torch.tensor([True, False, False]))
    s = ablation_scalars(2, one, tasks)
    assert one.specificity is None and one.z is None
    assert not [t for t in s if "specificity" in t] and len(s) == 6
    base, chance = torch.tensor([0.5, 3.0, 2.95]), torch.tensor([3.2, 3.2, 3.2])
    learned = learned_tasks(base, chance)
    assert learned.tolist() == [True, False, False]  # 3.0 and 2.95 are within 10% of 3.2
    t = task_scalars(tasks, base, chance, learned)
    assert t["modularity/unlearned_tasks"] == 2.0
    assert t["modularity/task_loss/a"] == pytest.approx(0.5) and t["modularity/task_chance/c"] == pytest.approx(3.2)


# ---- chance losses ---------------------------------------------------------------------------------


def test_chance_loss_of_uniform_random_letters_is_ln_26():
    gen = torch.Generator().manual_seed(0)
    n = 8000
    letters = torch.randint(97, 123, (40, n // 40), generator=gen)  # byte ids of a..z
    fixed = torch.full_like(letters, 97)
    targets = torch.cat([letters, fixed, torch.full_like(letters, -1)])
    task_ids = torch.cat([torch.zeros_like(letters), torch.ones_like(letters), torch.full_like(letters, -1)])
    probe = TaskProbe(torch.zeros_like(targets), targets, task_ids, ("random", "fixed", "empty"))
    chance = chance_losses(probe)
    # Plug-in entropy: bias about -(26 - 1) / (2 n) = -0.0016; its sampling sd is of the same order.
    assert chance[0].item() == pytest.approx(math.log(26), abs=0.01)
    assert chance[1].item() == 0.0 and chance[2].item() == 0.0  # one answer token; no scored token
    assert not learned_tasks(torch.zeros(3), chance)[1:].any()  # chance 0 can never be beaten


def test_world_string_answers_are_near_ln_26():
    tok = byte_tokenizer()
    probe = string_task_probe(tok, seed=1, eot_id=tok.token_to_id("<|endoftext|>"), block_size=64, examples_per_task=40)
    chance = chance_losses(probe)
    assert chance.shape == (len(probe.tasks),)
    # ~250 letters per task: plug-in bias about -25/500 = -0.05
    assert ((chance > math.log(26) - 0.15) & (chance <= math.log(26) + 1e-9)).all(), chance


# ---- mean-ablation on a real GPT -------------------------------------------------------------------


def random_probe(vocab: int, rows: int, width: int, n_tasks: int, seed: int) -> TaskProbe:
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, vocab, (rows, width), generator=gen)
    answers = torch.randint(0, vocab, (rows, width), generator=gen)
    targets = torch.where(torch.rand(rows, width, generator=gen) < 0.5, answers, -1)
    targets[:, -3:] = -1  # unreached tail: not part of the means
    task_ids = torch.where(targets >= 0, torch.randint(0, n_tasks, (rows, width), generator=gen), -1)
    return TaskProbe(inputs, targets, task_ids, tuple("abcd"[:n_tasks]))


def gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = dict(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16, bias=True, activation="gelu")
    model = GPT(GPTConfig(**(config | overrides)))
    return model.eval()


def test_unit_means_are_over_the_positions_that_reach_a_scored_loss():
    model, probe = gpt(), random_probe(40, 7, 12, 3, seed=1)
    means = unit_means(model, probe, 3, CPU)
    reach = reaching_positions(probe.targets)
    assert not reach[:, -3:].any() and reach[:, 0].all()
    record: dict = {}
    with torch.no_grad():
        model.forward(probe.inputs, record=record)
    for layer, acts in enumerate(record["mlp"]):
        torch.testing.assert_close(means[layer], acts[reach].double().mean(dim=0), rtol=1e-6, atol=1e-7)


def test_mean_ablation_keeps_a_constant_unit_and_feeds_c_proj_the_means():
    model, probe = gpt(), random_probe(40, 7, 12, 3, seed=1)
    const = torch.arange(8)  # layer 1 units 0..7: pre-activation = bias 0.7 at every position
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[const] = 0.0
        model.transformer.h[1].mlp.c_fc.bias[const] = 0.7
    means = unit_means(model, probe, 3, CPU)
    torch.testing.assert_close(means[1][const], torch.full((8,), F.gelu(torch.tensor(0.7)).item(), dtype=torch.float64))
    base = task_losses(model, probe, 3, CPU)
    varying = torch.arange(8, 24)
    seen: list[torch.Tensor] = []
    spy = mlp_output_projections(model)[1].register_forward_hook(lambda _m, args, _out: seen.append(args[0].clone()))
    try:
        mean_loss = task_losses(model, probe, 4, CPU, layer=1, modules=[const, varying], fill=means[1])
    finally:
        spy.remove()
    zero_loss = task_losses(model, probe, 4, CPU, layer=1, modules=[const, varying])
    np.testing.assert_allclose(mean_loss[0].numpy(), base.numpy(), atol=1e-6)  # constant unit: no change
    assert (zero_loss[0] - base).abs().max() > 1e-3  # zeroing it does change the losses
    assert (mean_loss[1] - base).abs().max() > 1e-4  # replacing varying units by their mean does too
    got = torch.cat(seen)  # rows in flattened (set, row) order: set 0 for the first 7 rows
    assert got.shape[0] == 2 * probe.inputs.shape[0]
    torch.testing.assert_close(got[:, :, varying][7:], means[1][varying].float().expand(7, 12, -1), rtol=0, atol=0)
    record: dict = {}
    with torch.no_grad():
        model.forward(probe.inputs, record=record)
    acts = record["mlp"][1]  # units outside the ablated set are untouched
    torch.testing.assert_close(got[:7, :, 8:], acts[:, :, 8:])
    torch.testing.assert_close(got[7:, :, 24:], acts[:, :, 24:])
    assert all(not c._forward_pre_hooks for c in mlp_output_projections(model))


def test_damage_on_a_real_gpt_can_be_negative_and_is_not_clipped():
    model, probe = gpt(seed=2), random_probe(40, 8, 12, 3, seed=3)
    labels = torch.arange(64) // 8  # 8 modules of 8 units
    base = task_losses(model, probe, 8, CPU)
    means = unit_means(model, probe, 8, CPU)
    for mode in ("mean", "zero"):
        r = layer_ablation(model, probe, 64, CPU, 0, labels, means, base, torch.ones(3, dtype=torch.bool), mode=mode)
        assert (r.damage < -1e-4).any() and (r.damage > 1e-4).any(), (mode, r.damage)
        want = task_losses(model, probe, 64, CPU, 0, [labels.eq(m).nonzero().flatten() for m in range(8)],
                           means[0] if mode == "mean" else None) - base
        torch.testing.assert_close(r.damage, want)


def test_ablation_with_null_draws_leaves_the_global_rngs_alone_and_reproduces():
    model, probe = gpt(), random_probe(40, 5, 12, 2, seed=4)
    labels = torch.arange(64) % 4
    base, means = task_losses(model, probe, 8, CPU), unit_means(model, probe, 8, CPU)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(6)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    learned = torch.ones(2, dtype=torch.bool)
    a = layer_ablation(model, probe, 8, CPU, 1, labels, means, base, learned, null_draws=8, seed=(7, 100, 1))
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    b = layer_ablation(model, probe, 8, CPU, 1, labels, means, base, learned, null_draws=8, seed=(7, 100, 1))
    assert torch.equal(a.null_damage, b.null_damage) and a.z == b.z


# ---- end to end on tiny GPTs -------------------------------------------------------------------------


def test_untrained_gpt_on_world_string_probe_gives_finite_tags_and_counts_unlearned_tasks():
    tok = byte_tokenizer()
    probe = string_task_probe(tok, seed=2, eot_id=tok.token_to_id("<|endoftext|>"), block_size=48, examples_per_task=2)
    model = gpt(vocab_size=tok.get_vocab_size(), block_size=48, n_embd=32, n_layer=2)
    base, chance = task_losses(model, probe, 16, CPU), chance_losses(probe)
    learned = learned_tasks(base, chance)
    assert not learned.any()  # ~ln 259 per answer token: nothing learned
    tags = task_scalars(probe.tasks, base, chance, learned)
    assert tags["modularity/unlearned_tasks"] == float(len(probe.tasks))
    means = unit_means(model, probe, 16, CPU)
    labels = torch.arange(128) % 3
    r = layer_ablation(model, probe, 64, CPU, 1, labels, means, base, learned, seed=0)
    tags |= ablation_scalars(1, r, probe.tasks)
    assert "modularity/layer1/specificity" not in tags and r.specificity is None
    forced = layer_ablation(model, probe, 64, CPU, 1, labels, means, base, torch.ones_like(learned), seed=0)
    tags |= ablation_scalars(1, forced, probe.tasks)
    assert len([t for t in tags if "/ablation/m" in t]) == 3 * len(probe.tasks)
    for tag in ("specificity", "specificity_null_mean", "specificity_null_std", "specificity_z"):
        assert f"modularity/layer1/{tag}" in tags
    assert all(math.isfinite(v) for v in tags.values()), tags


def trained_pair_model() -> tuple[GPT, TaskProbe]:
    """Three tasks on rows x, f(x), x', f(x'), ...: `up` (x in 0..12 -> x + 13), `down` (x in 26..38 ->
    89 - x), both learnable bigrams, and `noise` (x in 39..51 -> a uniform random token in 13..25),
    at chance by construction. A 1-layer GPT trained a few hundred steps on fresh samples."""

    def sample(gen: torch.Generator, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        task = torch.arange(rows) % 3
        x = torch.randint(0, 13, (rows, 8), generator=gen) + torch.tensor([0, 26, 39])[task][:, None]
        f = torch.stack([x + 13, 89 - x, torch.randint(13, 26, x.shape, generator=gen)])[task, torch.arange(rows)]
        seq = torch.stack([x, f], dim=2).flatten(1)  # [rows, 16]
        targets = torch.full_like(seq, -1)
        targets[:, 0:-1:2] = seq[:, 1::2]  # position 2j predicts f(x_j)
        return seq, targets, torch.where(targets >= 0, task[:, None], -1)

    gen = torch.Generator().manual_seed(0)
    model = gpt(seed=0, vocab_size=64, block_size=16, n_layer=1, n_embd=32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        seq, targets, _ = sample(gen, 48)
        _, loss = model(seq, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seq, targets, task_ids = sample(torch.Generator().manual_seed(1), 150)
    return model.eval(), TaskProbe(seq, targets, task_ids, ("up", "down", "noise"))


def test_trained_gpt_learns_two_tasks_leaves_noise_at_chance_and_logs_finite_tags():
    model, probe = trained_pair_model()
    base, chance = task_losses(model, probe, 32, CPU), chance_losses(probe)
    assert chance[0] == pytest.approx(math.log(13), abs=0.06) and chance[2] == pytest.approx(math.log(13), abs=0.06)
    learned = learned_tasks(base, chance)
    assert learned.tolist() == [True, True, False], (base, chance)
    means = unit_means(model, probe, 32, CPU)
    labels = torch.arange(128) // 32  # 4 modules of 32 units
    r = layer_ablation(model, probe, 64, CPU, 0, labels, means, base, learned, null_draws=8, seed=(0, 0, 0))
    tags = task_scalars(probe.tasks, base, chance, learned) | ablation_scalars(0, r, probe.tasks)
    assert tags["modularity/unlearned_tasks"] == 1.0
    assert {"modularity/layer0/specificity", "modularity/layer0/specificity_z"} <= set(tags)
    assert r.specificity == pytest.approx(specificity(r.damage[:, :2]))  # noise left out
    assert all(math.isfinite(v) for v in tags.values()), tags
