"""k-means for spectral clustering: batched, seeded, deterministic, on the CPU in float64.

- ``kmeans_many(xs, ks, n_init, seed)``: the best-inertia k-means of several problems (the same
  points, k clusters each) over ``n_init`` k-means++ restarts, all iterated together on one CPU
  thread; each problem seeded alone, so its result does not depend on the problems beside it.
- ``kmeans(x, k, n_init, seed)``: one problem.
- ``first_appearance_order(labels)``: clusters renumbered 0, 1, ... in order of their first unit.

Never the global RNG: every draw comes from a ``torch.Generator`` seeded ``seed``.
"""

from __future__ import annotations

import math

import torch

from lamina.measures.numeric import one_cpu_thread


def _kmeans_pp_init(x: torch.Tensor, k: int, n_init: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding of ``n_init`` restarts at once: [n_init, k, D] centres, each next centre
    drawn with probability proportional to D^2 (uniformly when every point sits on a centre)."""
    m = x.shape[0]
    chosen = torch.randint(m, (n_init,), generator=gen)
    centres = [x[chosen]]
    dist2 = ((x[None] - centres[0][:, None]) ** 2).sum(dim=2)  # [n_init, m]
    for _ in range(1, k):
        weights = torch.where(dist2.sum(dim=1, keepdim=True) > 0, dist2, torch.ones_like(dist2))
        nxt = torch.multinomial(weights, 1, generator=gen).squeeze(1)
        centres.append(x[nxt])
        dist2 = torch.minimum(dist2, ((x[None] - x[nxt][:, None]) ** 2).sum(dim=2))
    return torch.stack(centres, dim=1)


def _sq_distances(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor,
                  penalty: torch.Tensor) -> torch.Tensor:
    """Squared distances [B, m, K] of points x [B, m, D] (x_sq [B, m]: their squared norms) to
    centres [B, K, D], plus ``penalty`` [B, K] (+inf for centre slots a problem leaves unused)."""
    offset = x_sq[:, :, None] + ((centres ** 2).sum(dim=2) + penalty)[:, None, :]
    return torch.baddbmm(offset, x, centres.transpose(1, 2), alpha=-2.0)


def kmeans_many(xs: list[torch.Tensor], ks: list[int], n_init: int, seed: int,
                max_iter: int = 300) -> list[torch.Tensor]:
    """``_batched_kmeans`` on one CPU thread (``one_cpu_thread``)."""
    with one_cpu_thread():
        return _batched_kmeans(xs, ks, n_init, seed, max_iter)


def _batched_kmeans(xs: list[torch.Tensor], ks: list[int], n_init: int, seed: int,
                    max_iter: int = 300) -> list[torch.Tensor]:
    """Best-inertia k-means of each problem (xs[p]: [m, D_p] on the CPU, the same m points in
    every problem; ks[p] clusters) over ``n_init`` k-means++ restarts, in float64, all restarts
    of all problems iterated together. Each problem draws its seeding from its own CPU generator
    seeded ``seed``, so its result does not depend on the problems beside it. Lloyd iterations
    run until a restart's labels stop changing (its centres are then a fixed point); an empty
    cluster restarts at the point worst served by its centre; of equal inertias the first
    restart wins. Returns labels [m] per problem."""
    m = xs[0].shape[0]
    dim, kmax = max(x.shape[1] for x in xs), max(ks)
    n_prob = len(xs)
    total = n_prob * n_init
    x = torch.zeros(total, m, dim, dtype=torch.float64)
    centres = torch.zeros(total, kmax, dim, dtype=torch.float64)
    for p, (xp, k) in enumerate(zip(xs, ks)):
        rows = slice(p * n_init, (p + 1) * n_init)
        xp = xp.to(torch.float64)
        x[rows, :, : xp.shape[1]] = xp
        gen = torch.Generator().manual_seed(seed)
        centres[rows, :k, : xp.shape[1]] = _kmeans_pp_init(xp, k, n_init, gen)
    x_sq = (x ** 2).sum(dim=2)
    slots = torch.arange(kmax)
    unused = slots[None, :] >= torch.tensor(ks).repeat_interleave(n_init)[:, None]
    penalty = torch.zeros(total, kmax, dtype=torch.float64).masked_fill_(unused, math.inf)
    # The restarts still moving, with their own copies of what they need; ma: their labels.
    moving, xa, xa_sq, pa, ca = torch.arange(total), x, x_sq, penalty, centres.clone()
    ma, ua = torch.zeros(total, m, kmax, dtype=torch.bool), unused
    for _ in range(max_iter):
        d2 = _sq_distances(xa, xa_sq, ca, pa)
        nearest = d2 == d2.amin(dim=2, keepdim=True)
        if (nearest.sum(dim=2) > 1).any():  # equidistant centres: the first one
            nearest &= nearest.cumsum(dim=2) == 1
        changed = (nearest != ma).flatten(1).any(dim=1)
        if not changed.all():  # converged: its centres are the means of its labels already
            done = ~changed
            centres[moving[done]] = ca[done]
            moving, xa, xa_sq, pa, ua = moving[changed], xa[changed], xa_sq[changed], pa[changed], ua[changed]
            d2, nearest = d2[changed], nearest[changed]
            if moving.numel() == 0:
                break
        ma = nearest
        weights = nearest.to(torch.float64)
        sums = weights.transpose(1, 2) @ xa
        counts = weights.sum(dim=1)
        empty = (counts == 0) & ~ua
        if empty.any():
            served = (d2 * weights).sum(dim=2)
            for b, c in torch.nonzero(empty).tolist():
                worst = int(served[b].argmax())
                sums[b, c], counts[b, c] = xa[b, worst], 1.0
                served[b, worst] = 0.0
        ca = sums / counts.clamp_min(1.0)[:, :, None]
    else:  # max_iter reached: stop where the restarts are
        centres[moving] = ca
    d2 = _sq_distances(x, x_sq, centres, penalty)
    labels = d2.argmin(dim=2)  # the first of equidistant centres
    inertia = d2.gather(2, labels[:, :, None]).clamp_min(0.0).sum(dim=(1, 2))
    best = inertia.view(n_prob, n_init).argmin(dim=1)  # the first of equal inertias
    return [labels[p * n_init + int(best[p])] for p in range(n_prob)]


def kmeans(x: torch.Tensor, k: int, n_init: int, seed: int) -> torch.Tensor:
    """Best-inertia k-means over ``n_init`` k-means++ restarts from a seeded CPU generator."""
    return kmeans_many([x], [k], n_init, seed)[0]


def first_appearance_order(labels: torch.Tensor) -> torch.Tensor:
    """Renumber clusters 0, 1, ... in order of their first unit, so labels are canonical."""
    _, inverse = torch.unique(labels, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), labels.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(labels.numel()), reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(first.numel())
    return rank[inverse]


__all__ = ["first_appearance_order", "kmeans", "kmeans_many"]
