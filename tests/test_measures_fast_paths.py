"""The spectral partition's faster path against its reference (issue "Watch it live"): the top
eigenpairs alone (LAPACK by index) against torch's whole decomposition, the partitions and the
permutation null's draws they give; and the batched k-means beneath them against a plain
one-restart-at-a-time Lloyd, on awkward shapes."""

from __future__ import annotations

import math

import pytest
import torch

import lamina.measures as M
from lamina.measures import graph
from lamina.measures import kmeans as km


# ---- k-means against a plain Lloyd ----------------------------------------------------------------------


def plain_kmeans(x: torch.Tensor, k: int, n_init: int, seed: int, max_iter: int = 300) -> torch.Tensor:
    """One restart at a time, straight from the definition: the same k-means++ seeding, nearest
    centre (the first of equal ones), centres as the mean of their points, an empty cluster moved
    to the point worst served by its centre, the restart of least inertia (the first of equal)."""
    x = x.to(torch.float64)
    inits = km._kmeans_pp_init(x, k, n_init, torch.Generator().manual_seed(seed))
    x_sq = (x**2).sum(dim=1)

    def distances(c):
        return (x_sq[:, None] + (c**2).sum(dim=1)[None, :]) - 2.0 * (x @ c.T)

    best, best_inertia = None, math.inf
    for r in range(n_init):
        c, labels = inits[r].clone(), None
        for _ in range(max_iter):
            d2 = distances(c)
            nearest = d2.argmin(dim=1)
            if labels is not None and torch.equal(nearest, labels):
                break
            labels = nearest
            served = d2.gather(1, labels[:, None]).squeeze(1)
            sums = torch.zeros_like(c).index_add_(0, labels, x)  # the points added in their order
            counts = torch.bincount(labels, minlength=k).to(torch.float64)
            for j in range(k):
                if counts[j] == 0:
                    worst = int(served.argmax())
                    sums[j], counts[j] = x[worst], 1.0
                    served[worst] = 0.0
            c = sums / counts[:, None]
        d2 = distances(c)
        labels = d2.argmin(dim=1)
        inertia = float(d2.gather(1, labels[:, None]).clamp_min(0.0).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def blobs(m: int, dim: int, centres: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(centres, dim, generator=gen, dtype=torch.float64)
    return means[torch.randint(0, centres, (m,), generator=gen)] + torch.randn(m, dim, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize(("m", "dim", "ks"), [(37, 3, [1, 2, 5]), (8, 2, [8]), (101, 8, [2, 3, 4, 5, 6, 7, 8]), (5, 1, [3])])
def test_kmeans_many_equals_a_plain_lloyd(m, dim, ks, one_thread):
    x = blobs(m, dim, 4, seed=m)
    # Every problem its own k and its own leading dimensions (padded to the widest), as the partition asks.
    xs = [x[:, : max(1, min(dim, k))] for k in ks]
    got = km.kmeans_many(xs, ks, n_init=3, seed=11)
    for xp, k, labels in zip(xs, ks, got):
        assert torch.equal(labels, plain_kmeans(xp, k, 3, 11)), (m, dim, k)


def test_kmeans_moves_an_empty_cluster_to_the_worst_served_point(monkeypatch, one_thread):
    # Two restarts seeded with two equal centres: the second gets no point (the first of equal
    # centres wins), so it must restart at the point worst served (10, at 2.25 from 11.5); left where
    # it was, its mean of no points would sit at 0 and stay empty.
    x = torch.tensor([[10.0], [11.0], [12.0], [13.0], [100.0], [101.0]], dtype=torch.float64)
    seeded = torch.tensor([[[11.5], [11.5], [100.0]], [[11.5], [100.0], [100.0]]], dtype=torch.float64)
    monkeypatch.setattr(km, "_kmeans_pp_init", lambda x, k, n_init, gen: seeded.clone())
    got = km.kmeans_many([x], [3], n_init=2, seed=0)[0]
    assert torch.equal(got, plain_kmeans(x, 3, 2, 0))
    assert len(set(got.tolist())) == 3 and got[0] != got[2] and got[4] == got[5]


def test_kmeans_of_duplicate_points_keeps_every_label_valid(one_thread):
    x = torch.tensor([[1.0, 1.0]] * 4 + [[2.0, 2.0]] * 3, dtype=torch.float64)  # 2 distinct points, k = 4
    labels = km.kmeans_many([x], [4], n_init=3, seed=0)[0]
    assert labels.shape == (7,) and int(labels.min()) >= 0 and int(labels.max()) < 4
    assert len(set(labels[:4].tolist())) == 1 and len(set(labels[4:].tolist())) == 1 and labels[0] != labels[4]


# ---- the spectrum: the top eigenpairs alone against all of them ------------------------------------------


SPECTRUM = graph._spectrum


def full_spectrum(w, top=None):
    """The reference spectrum: torch's whole decomposition (graph._spectrum without `top`), cut to `top`."""
    live, vals, vecs = SPECTRUM(w)
    return (live, vals, vecs) if top is None else (live, vals[:top], vecs[:, :top])


def planted_similarity(d: int, sizes: list[int], dead: int, seed: int, noise: float = 0.05) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    labels = torch.cat([labels, torch.full((d - len(labels),), -2)])
    s = (labels[:, None] == labels[None, :]).double() * 0.6 + noise * torch.rand(d, d, generator=gen, dtype=torch.float64)
    s = (s + s.T) / 2
    s[labels == -2] = 0.0
    s[:, labels == -2] = 0.0
    live_dead = torch.randperm(d, generator=gen)[:dead]
    s[live_dead] = 0.0
    s[:, live_dead] = 0.0
    return s


@pytest.mark.parametrize(("d", "sizes", "dead"), [(5, [2, 2], 1), (37, [10, 9, 8], 3), (203, [50, 40, 30, 20, 20, 20], 7)])
def test_top_eigenpairs_match_the_whole_decomposition(d, sizes, dead):
    w = graph._graph(planted_similarity(d, sizes, dead, seed=d))
    live, all_vals, all_vecs = full_spectrum(w)
    for top in (3, 9):
        got_live, vals, vecs = graph._spectrum(w, top=top)
        assert torch.equal(got_live, live)
        n = min(top, len(all_vals))
        assert vals.shape == (n,) and vecs.shape == (int(live.sum()), n)
        torch.testing.assert_close(vals, all_vals[:n], rtol=0, atol=1e-10)
        # The same vectors up to sign wherever an eigenvalue stands apart from its neighbours
        # (within a repeated eigenvalue any basis of its space is as good).
        gaps = (all_vals[:-1] - all_vals[1:]).abs()
        for i in range(n):
            apart = (i == 0 or gaps[i - 1] > 1e-6) and (i + 1 >= len(all_vals) or gaps[i] > 1e-6)
            if apart:
                assert float((vecs[:, i] @ all_vecs[:, i]).abs()) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize(("d", "sizes", "dead", "k"), [
    (5, [2, 2], 1, None), (37, [10, 9, 8], 3, None), (37, [10, 9, 8], 3, 3), (203, [50, 40, 30, 20, 20, 20], 7, None),
    (120, [30, 30, 30, 30], 0, 2),
])
def test_partitions_from_the_top_eigenpairs_equal_those_of_the_whole_decomposition(d, sizes, dead, k, monkeypatch,
                                                                                     one_thread):
    s = planted_similarity(d, sizes, dead, seed=d + 1, noise=0.2)
    got = M.partition_by_q(s, 2, 8, k=k, n_init=4, seed=3)
    got_eigengap = M.partition(s, k=k, min_k=2, max_k=8, n_init=4, seed=3)
    monkeypatch.setattr(graph, "_spectrum", full_spectrum)
    want = M.partition_by_q(s, 2, 8, k=k, n_init=4, seed=3)
    want_eigengap = M.partition(s, k=k, min_k=2, max_k=8, n_init=4, seed=3)
    assert torch.equal(got[0], want[0]) and got[1] == want[1] and got[2] == pytest.approx(want[2], abs=1e-12)
    assert torch.equal(got_eigengap, want_eigengap)


def test_permutation_null_draws_are_unchanged_in_distribution_by_the_fast_paths(one_thread, monkeypatch):
    # The null's Q draws from the fast paths against those of the whole decomposition: the same
    # draws (same generator stream), so the same Q to rounding.
    gen = torch.Generator().manual_seed(0)
    active = torch.rand(300, 40, generator=gen) < torch.linspace(0.1, 0.6, 40)
    fast, _ = M.modularity_null(active, 2, 6, draws=8, n_init=4, seed=5)
    monkeypatch.setattr(graph, "_spectrum", full_spectrum)
    slow, _ = M.modularity_null(active, 2, 6, draws=8, n_init=4, seed=5)
    assert fast == pytest.approx(slow, abs=1e-12)
