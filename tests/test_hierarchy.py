"""Hierarchy probes: ridge classifiers per block, the gain of each reading over its baseline (lexical:
chance; the rest: the embedding, by conditional probing), depths and their bootstrap intervals, each
on features whose answer is known by construction, and the nulls: no structure, no finding."""

from __future__ import annotations

import math

import pytest
import torch

from lamina.instrument.hierarchy import (
    READ_Z,
    RidgeClassifier,
    bootstrap,
    centre_of_gravity,
    embedding_output,
    fit_and_score,
    hierarchy_figure,
    hierarchy_scalars,
    measure_hierarchy,
    probe_hierarchy,
    probe_label,
    split_items,
)
from lamina.instrument.pictures import figure_to_array
from lamina.model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def token_features(n: int = 1600, d: int = 24, vocab: int = 40, rows: int = 100, seed: int = 0):
    """Tokens, the probe row of each, and an embedding that holds the token (a random vector per type)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (n,), generator=gen)
    groups = torch.arange(n) * rows // n
    embedding = torch.randn(vocab, d, generator=gen)[tokens]
    return gen, tokens, groups, embedding


def planted(blocks: int = 4, at: tuple[int, ...] = (2,), n: int = 1600, d: int = 24, classes: int = 5, seed: int = 0):
    """Blocks that carry the embedding plus noise; at the blocks of `at` a context label (drawn
    independently of the token) is added as a class mean, so it is linearly readable beyond the
    embedding there and nowhere else."""
    gen, tokens, groups, embedding = token_features(n, d, seed=seed)
    labels = torch.randint(classes, (n,), generator=gen)
    means = 1.5 * torch.randn(classes, d, generator=gen)
    residuals = [embedding + 0.5 * torch.randn(n, d, generator=gen) + (means[labels] if b in at else 0.0)
                 for b in range(blocks)]
    return residuals, embedding, labels, tokens, groups


def test_a_context_label_is_read_beyond_the_embedding_at_its_block_only():
    residuals, embedding, labels, tokens, groups = planted(at=(2,))
    results = probe_hierarchy(residuals, {"entity": labels}, tokens, 0, embedding=embedding, groups=groups)
    entity = results["entity"]
    assert entity.layers[2].gain > 0.6 and entity.layers[2].gain / entity.layers[2].gain_se > 10
    for i in (0, 1, 3):  # the embedding holds nothing of it, nor do the other blocks
        assert abs(entity.layers[i].gain) < 3 * entity.layers[i].gain_se + 0.01
    assert abs(entity.embed_acc - entity.chance) < 0.06
    assert entity.readable and entity.depth == pytest.approx(2 / 3, abs=0.02) and entity.peak_layer == 2


def test_a_label_that_is_a_function_of_the_token_gains_nothing_beyond_the_embedding():
    # Every block holds the token; the label is a function of it: the embedding reads it as well as
    # any block does. As a lexical label it is read (accuracy above chance) at every block, and flat.
    gen, tokens, groups, embedding = token_features(d=48)  # more dimensions than types: any function of the type
    of_token = torch.randint(4, (40,), generator=gen)[tokens]
    residuals = [embedding + 0.3 * torch.randn(embedding.shape, generator=gen) for _ in range(3)]
    results = probe_hierarchy(residuals, {"carry": of_token, "digit": of_token}, tokens, 0, embedding=embedding,
                              groups=groups)
    carry, digit = results["carry"], results["digit"]
    assert carry.embed_acc > 0.9 and not carry.readable
    assert all(abs(r.gain) < 3 * r.gain_se + 0.01 for r in carry.layers)
    assert digit.readable and all(r.gain > 0.5 for r in digit.layers)  # acc − chance: the token is there
    assert digit.depth == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_labels_with_no_structure_are_read_nowhere(seed):
    # The shuffled-labels null of both readings: random features, random labels.
    gen = torch.Generator().manual_seed(seed)
    n, d = 1200, 16
    residuals = [torch.randn(n, d, generator=gen) for _ in range(3)]
    embedding = torch.randn(n, d, generator=gen)
    tokens = torch.randint(40, (n,), generator=gen)
    labels = {"digit": torch.randint(4, (n,), generator=gen), "entity": torch.randint(4, (n,), generator=gen)}
    results = probe_hierarchy(residuals, labels, tokens, seed, embedding=embedding, groups=torch.arange(n) // 12,
                              seed=seed)
    for name in ("digit", "entity"):
        assert not results[name].readable
        assert all(r.gain / r.gain_se < READ_Z for r in results[name].layers)


def test_a_block_that_is_the_embedding_gains_exactly_nothing():
    # Zero-init projections make every block the identity at step 0: [embedding; block] is then
    # the baseline's own [embedding; embedding], and the gain is 0 exactly, not by luck of a ridge.
    _, embedding, labels, tokens, groups = planted(at=())
    results = probe_hierarchy([embedding.clone() for _ in range(3)], {"entity": labels, "answer": tokens % 3},
                              tokens, 0, embedding=embedding, groups=groups)
    for name in ("entity", "answer"):
        assert all(r.gain == 0.0 for r in results[name].layers) and not results[name].readable


def test_centre_of_gravity_of_known_profiles():
    profiles = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.3], [0.2, 0.0, -0.5, 0.0], [0.0, 0.0, 0.2, 0.2]])
    assert centre_of_gravity(profiles).tolist() == pytest.approx([0.5, 1.0, 0.0, (2 / 3 + 1) / 2])
    assert math.isnan(float(centre_of_gravity(torch.tensor([-0.1, 0.0, -0.2]))))  # nothing positive
    assert math.isnan(float(centre_of_gravity(torch.tensor([0.4]))))  # one block: no depth


def test_bootstrap_resamples_rows_whole():
    # Independent items: the bootstrap se of a mean is the binomial one. The same items each
    # repeated 4 times within a row: 4 copies carry one item's information, and the se is twice
    # the naive one over all copies.
    gen, tokens, _, embedding = token_features(n=2000, rows=2000)
    labels = torch.randint(2, (2000,), generator=gen)
    train = split_items(2000, 0)
    probe = probe_label("digit", embedding, [torch.randn(2000, 24, generator=gen)], labels, train, torch.arange(2000))
    bootstrap({"digit": probe}, torch.arange(2000)[~train], draws=400, seed=1)
    diff = probe.layers[0].correct.double() - probe.base_correct.double()
    naive = float(diff.std()) / math.sqrt(len(diff))
    assert probe.layers[0].gain_se == pytest.approx(naive, rel=0.15)
    copies = torch.arange(len(diff)).repeat_interleave(4)
    probe.layers[0].correct, probe.base_correct = probe.layers[0].correct[copies], probe.base_correct[copies]
    probe.groups = torch.arange(len(diff), dtype=torch.long).repeat_interleave(4)
    bootstrap({"digit": probe}, probe.groups, draws=400, seed=1)
    assert probe.layers[0].gain_se == pytest.approx(naive, rel=0.15)  # a row holds one item's information
    naive_over_copies = float(diff[copies].std()) / math.sqrt(len(copies))
    assert probe.layers[0].gain_se == pytest.approx(2 * naive_over_copies, rel=0.15)


def test_xor_is_not_linearly_readable():
    gen = torch.Generator().manual_seed(5)
    n = 1600
    bits = torch.randint(2, (n, 2), generator=gen)
    features = torch.cat([2.0 * bits.double() - 1, 0.1 * torch.randn(n, 6, generator=gen, dtype=torch.float64)], 1)
    train = split_items(n, 0)
    xor = bits[:, 0] ^ bits[:, 1]
    hits, _ = fit_and_score(features[train], features[~train], xor[train], xor[~train], 2)
    assert hits.double().mean() < 0.6
    first, _ = fit_and_score(features[train], features[~train], bits[train, 0], bits[~train, 0], 2)
    assert first.double().mean() > 0.99  # a linear one is read


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


def test_scalars_tiers_and_the_contrast():
    # A conceptual label planted in the last of three blocks, the token flat in all: the higher
    # tier sits at depth 1, the lexical at 0.5, and their contrast is +0.5 within its bootstrap se.
    residuals, embedding, labels, tokens, groups = planted(blocks=3, at=(2,), n=1200)
    results = probe_hierarchy(residuals, {"entity": labels}, tokens, 0, embedding=embedding, groups=groups)
    assert set(results) == {"entity", "token"}
    tags = hierarchy_scalars(results)
    for i in range(3):
        for stat in ("acc", "gain", "gain_se"):
            assert math.isfinite(tags[f"layers/layer{i}/probe/entity/{stat}"])
    assert tags["layers/probe/entity/peak_layer"] == 2.0 and "layers/probe/token/embed_acc" not in tags
    assert tags["layers/probe/entity/n_train"] + tags["layers/probe/entity/n_test"] == 1200
    assert tags["layers/tier/conceptual/depth"] == pytest.approx(1.0, abs=0.02) == tags["layers/tier/higher/depth"]
    assert tags["layers/tier/lexical/depth"] == pytest.approx(0.5, abs=0.02)
    assert tags["layers/tier/contrast"] == pytest.approx(0.5, abs=0.03) and 0 < tags["layers/tier/contrast_se"] < 0.05
    assert tags["layers/tier/higher/labels_read"] == 1.0 and "layers/tier/functional/gain" not in tags
    assert figure_to_array(hierarchy_figure(results, step=10)).ndim == 3


def test_too_few_items_leave_a_label_out():
    residuals, embedding, labels, tokens, groups = planted(n=400)
    sparse = torch.full_like(labels, -1)
    sparse[:20] = labels[:20]
    assert "rare" not in probe_hierarchy(residuals, {"rare": sparse}, tokens, 0, embedding=embedding, groups=groups)


def test_on_a_gpt_token_identity_is_read_and_random_labels_are_not():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    gen = torch.Generator().manual_seed(8)
    tokens = torch.randint(16, (48, 32), generator=gen)
    noise = torch.randint(3, (48, 32), generator=gen)  # per-position labels with no structure
    with torch.no_grad():  # block 0 reads the token and position embeddings summed
        want = model.transformer.wte(tokens) + model.transformer.wpe(torch.arange(32))
        assert torch.equal(embedding_output(model, tokens), want)
    results = measure_hierarchy(model, tokens, {"noise": noise, "digit": tokens % 2}, batch_size=16,
                                device="cpu", max_items=1200, seed=0)
    assert all(r.acc > 0.9 for r in results["token"].layers)  # a random-init GPT keeps its input token
    assert results["digit"].readable and results["token"].readable
    assert not results["noise"].readable  # no structure in the label: nothing beyond the embedding
    assert results["token"].n_train + results["token"].n_test == 1200
