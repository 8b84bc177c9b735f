"""Hierarchy probes: ridge classifiers per layer, the control task, selectivity and its interval,
each on features whose answer is known by construction, and the null: no structure, no finding."""

from __future__ import annotations

import math

import pytest
import torch

from lamina.instrument.hierarchy import (
    RidgeClassifier,
    control_labels,
    hierarchy_figure,
    hierarchy_scalars,
    measure_hierarchy,
    peak_layer,
    probe_hierarchy,
    probe_layers,
    split_items,
)
from lamina.instrument.pictures import figure_to_array
from lamina.model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(n: int = 1600, d: int = 24, layers: int = 4, at: int = 2, classes: int = 5, vocab: int = 60,
            seed: int = 0):
    """Random features per layer; at layer `at` the label's class mean (a random direction per
    class) is added, so the label is linearly readable there and nowhere else. Tokens are drawn
    independently of the label and leave no trace in the features."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (n,), generator=gen)
    labels = torch.randint(classes, (n,), generator=gen)
    residuals = [torch.randn(n, d, generator=gen) for _ in range(layers)]
    residuals[at] = residuals[at] + 1.5 * torch.randn(classes, d, generator=gen)[labels]
    return residuals, labels, tokens


def test_planted_label_is_read_at_its_layer_and_the_control_stays_at_chance():
    residuals, labels, tokens = planted()
    results = probe_layers(residuals, labels, tokens, split=0)
    at = results[2]
    assert at.acc > 0.95
    assert abs(at.control_acc - at.chance) < 0.06  # the control has nothing to memorise
    assert at.selectivity / at.selectivity_se > 10
    best, gap_z = peak_layer(results)
    assert best == 2 and gap_z > 5
    for i in (0, 1, 3):  # no structure at the other layers: no finding
        assert abs(results[i].selectivity / results[i].selectivity_se) < 3
        assert abs(results[i].acc - results[i].chance) < 0.06


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_structure_gives_no_selectivity(seed):
    gen = torch.Generator().manual_seed(seed)
    n, d = 1200, 16
    residuals = [torch.randn(n, d, generator=gen) for _ in range(3)]
    labels = torch.randint(4, (n,), generator=gen)
    tokens = torch.randint(40, (n,), generator=gen)
    for r in probe_layers(residuals, labels, tokens, split=seed):
        assert abs(r.selectivity / r.selectivity_se) < 3


def test_label_that_is_a_function_of_the_token_is_matched_by_its_control():
    # Features hold the token type; the label is a random function of it: exactly what the
    # control task measures, so the probe reads it well and the selectivity is nil.
    gen = torch.Generator().manual_seed(4)
    n, d, vocab = 1600, 24, 50
    tokens = torch.randint(vocab, (n,), generator=gen)
    features = torch.randn(vocab, d, generator=gen)[tokens] + 0.3 * torch.randn(n, d, generator=gen)
    label_of_token = torch.randint(4, (vocab,), generator=gen)
    (r,) = probe_layers([features], label_of_token[tokens], tokens, split=0)
    assert r.acc > 0.7 and r.control_acc > 0.7
    assert abs(r.selectivity / r.selectivity_se) < 3


def test_xor_is_not_linearly_readable():
    gen = torch.Generator().manual_seed(5)
    n = 1600
    bits = torch.randint(2, (n, 2), generator=gen)
    features = torch.cat([2.0 * bits.double() - 1, 0.1 * torch.randn(n, 6, generator=gen, dtype=torch.float64)], 1)
    xor = bits[:, 0] ^ bits[:, 1]
    (r,) = probe_layers([features], xor, torch.arange(n), split=0)
    assert r.acc < 0.6
    (r_and,) = probe_layers([features], bits[:, 0], torch.arange(n), split=0)  # a linear one is read
    assert r_and.acc > 0.99


def test_control_labels_keep_the_marginals_and_depend_on_the_token_only():
    gen = torch.Generator().manual_seed(6)
    tokens = torch.randint(80, (3000,), generator=gen)
    labels = torch.randint(5, (3000,), generator=gen)
    labels[:100] = -1
    control = control_labels(labels, tokens, seed=1)
    assert torch.equal(control[:100], labels[:100])  # unlabelled stay unlabelled
    kept = labels >= 0
    for t in tokens[kept].unique():
        assert control[kept & (tokens == t)].unique().numel() == 1
    biggest_type = torch.bincount(tokens[kept]).max()
    shares = torch.bincount(labels[kept], minlength=5) - torch.bincount(control[kept], minlength=5)
    assert shares.abs().max() <= biggest_type
    assert torch.equal(control, control_labels(labels, tokens, seed=1))
    assert not torch.equal(control, control_labels(labels, tokens, seed=2))


def test_leave_one_out_accuracy_is_exact():
    gen = torch.Generator().manual_seed(7)
    n, d, c, ridge = 40, 5, 3, 0.05
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(c, (n,), generator=gen)
    x[:, 0] += y.double()  # something to read
    probe = RidgeClassifier(x)
    xs = (x - probe.mean) / probe.sd  # the standardisation is the full fit split's, fixed
    onehot = torch.nn.functional.one_hot(y, c).double()
    hits = 0
    for i in range(n):
        rest = torch.arange(n) != i
        mx, my = xs[rest].mean(0), onehot[rest].mean(0)
        a = xs[rest] - mx
        w = torch.linalg.solve(a.T @ a + ridge * n * torch.eye(d, dtype=torch.float64), a.T @ (onehot[rest] - my))
        hits += int(((xs[i] - mx) @ w + my).argmax() == y[i])
    assert probe.loo_accuracy(probe.targets(y, c), ridge) == pytest.approx(hits / n, abs=1e-12)


def test_split_by_groups_keeps_groups_whole():
    groups = torch.arange(200).repeat_interleave(7)
    train = split_items(len(groups), seed=3, groups=groups)
    for g in range(200):
        assert train[groups == g].unique().numel() == 1
    assert 0.35 < train.double().mean() < 0.65


def test_scalars_tags_and_peak():
    residuals, labels, tokens = planted(n=800, layers=3, at=1)
    results = probe_hierarchy(residuals, {"entity": labels}, tokens, split=0)
    assert set(results) == {"entity", "token"}
    tags = hierarchy_scalars(results)
    for i in range(3):
        for stat in ("acc", "control_acc", "selectivity", "selectivity_se", "chance"):
            assert math.isfinite(tags[f"layers/layer{i}/probe/entity/{stat}"])
    assert tags["layers/probe/entity/peak_layer"] == 1.0
    assert tags["layers/probe/entity/n_train"] + tags["layers/probe/entity/n_test"] == 800
    assert figure_to_array(hierarchy_figure(results, step=10)).ndim == 3


def test_too_few_items_leave_a_label_out():
    residuals, labels, tokens = planted(n=400)
    sparse = torch.full_like(labels, -1)
    sparse[:20] = labels[:20]
    assert probe_layers(residuals, sparse, tokens, split=0) is None
    assert "rare" not in probe_hierarchy(residuals, {"rare": sparse}, tokens, split=0)


def test_on_a_gpt_token_identity_is_read_and_random_labels_are_not():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    gen = torch.Generator().manual_seed(8)
    tokens = torch.randint(16, (48, 32), generator=gen)
    noise = torch.randint(3, (48, 32), generator=gen)  # per-position labels with no structure
    parity = tokens % 2
    results = measure_hierarchy(model, tokens, {"noise": noise, "parity": parity}, batch_size=16,
                                device="cpu", max_items=1200, seed=0)
    for r in results["token"]:
        assert r.acc > 0.9  # a random-init GPT keeps its input token in the residual stream
    for r in results["noise"]:
        # No structure in the label: the probe stays at chance. Its control, a function of the
        # token the residual holds, is memorised: the selectivity is negative, never a finding.
        assert abs(r.acc - r.chance) < 3 * math.sqrt(r.chance * (1 - r.chance) / r.n_test)
        assert r.selectivity / r.selectivity_se < 3
    assert results["token"][0].n_train + results["token"][0].n_test == 1200
