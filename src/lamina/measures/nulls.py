"""The nulls of modularity (DESIGN.md "Measures", modularity).

The units of a layer are partitioned by the phi similarity of their 0/1 activity on one sample
(`id`), with k chosen by Q on that graph (`partition_by_q`); the partition is then scored held
out on a second, disjoint sample (`id_b`), which neither the partition nor its k has seen. Two
nulls:

- the permutation null: that procedure run on activity whose tokens are permuted independently
  per unit: firing rates kept, co-activation destroyed. It erases what every network inherits
  from structured input too, so a Q above it is descriptive, not a finding;
- the shuffled-weights null (Filan et al., arXiv 2103.03386; run by
  `lamina.instrument.modularity.shuffled_weights_null`): the same network with the entries of
  its weight matrices permuted within each matrix (``shuffle_within``), on the same inputs:
  the same weight statistics, no learned arrangement.

Everything runs on the activity's device with plain torch (the k-means of the embedding on the
CPU); the draws come from torch.Generator objects made and seeded here, never from the global
RNG, so measuring never changes training and a resumed run redraws them bit for bit.

- ``permute_units(active, generator)``: null activity, each unit's column permuted over tokens.
- ``modularity_null(active)``: Q and k of the procedure on ``draws`` permutation nulls.
- ``shuffle_within(weight, generator)``: a weight matrix with its entries permuted within it.
"""

from __future__ import annotations

import sys

import torch

from lamina.kernels import EXACT_COUNT_LIMIT
from lamina.measures.graph import partition_by_q
from lamina.measures.numeric import wide_dtype
from lamina.measures.phi import as_active, phi_of

# Multiplies the seed into the stream of the null's permutation generator, so that it differs
# from the k-means generator, which is seeded with the seed itself.
_NULL_STREAM = 0x9E3779B97F4A7C15


def _column_counts(x: torch.Tensor) -> torch.Tensor:
    """Ones per column of 0/1 float32 x [n, d], exactly (fp32 sums are exact below 2**24)."""
    wide = torch.float32 if x.shape[0] <= EXACT_COUNT_LIMIT else wide_dtype(x.device)
    return x.sum(dim=0, dtype=wide).long()


def _fix_counts_(x: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> None:
    """Flip entries of the 0/1 float32 columns of x [n, d] until column j holds counts[j] ones:
    a column with too many ones loses a uniformly random subset of them, one with too few gains
    a uniformly random subset of its zeros (sequential sampling without replacement: uniform
    positions are drawn and those of the other kind, or drawn before, are rejected). So a column
    whose entries were exchangeable ends up a uniformly random arrangement of counts[j] ones."""
    n, d = x.shape
    dev = x.device
    have = _column_counts(x)
    need = have - counts  # > 0: ones to drop; < 0: zeros to fill
    while True:
        units = torch.nonzero(need).flatten()
        if units.numel() == 0:
            return
        drop = need[units] > 0
        want = need[units].abs()
        pool = torch.where(drop, have[units], n - have[units])  # entries of the kind to flip: >= want
        tries = (want * n * 5 // (4 * pool) + 16).clamp(max=4 * n)  # ~1.25x the expected draws
        owner = torch.repeat_interleave(units, tries)
        kind = torch.repeat_interleave(drop, tries)
        pos = torch.randint(n, (owner.numel(),), generator=generator, device=dev)
        hit = x[pos, owner] == kind.to(x.dtype)
        key = owner * n + pos  # a position drawn again is rejected: keep each first draw only
        order = torch.sort(key, stable=True).indices
        key = key[order]
        first = torch.ones_like(hit)
        first[order[1:]] = key[1:] != key[:-1]
        hit &= first
        hits = hit.long()
        before = torch.cumsum(hits, 0) - hits  # hits earlier in the flat draw order
        start = torch.cumsum(tries, 0) - tries
        rank = before - torch.repeat_interleave(before[start], tries)  # within the unit's draws
        take = hit & (rank < torch.repeat_interleave(want, tries))
        x[pos[take], owner[take]] = torch.where(kind[take], 0.0, 1.0).to(x.dtype)
        taken = torch.zeros(d, dtype=torch.long, device=dev).index_add_(0, owner[take], torch.ones_like(owner[take]))
        sign = torch.sign(need)
        need -= sign * taken
        have -= sign * taken


class _Activity:
    """Reusable buffers for the 0/1 activity of n tokens x d units as float32 (exact counts),
    on one device: ``load`` copies given activity in, ``null`` draws null activity in place.
    Reusing them matters on the CPU, where a fresh [n, d] buffer costs as much as filling it."""

    def __init__(self, n: int, d: int, device) -> None:
        words = -(-d // 7)  # 7 random bytes per 56-bit word
        self.n, self.d = n, d
        self.words = torch.empty(n, words, dtype=torch.int64, device=device)
        self.hits = torch.empty(n, words, 7, dtype=torch.bool, device=device)
        self.values = torch.empty(n, words * 7, dtype=torch.float32, device=device)
        self.x = self.values[:, :d]  # [n, d], rows strided

    def load(self, active: torch.Tensor) -> torch.Tensor:
        self.x.copy_(active)
        return self.x

    def null(self, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Column j a uniformly random arrangement of counts[j] ones over the n tokens,
        independently per column: i.i.d. Bernoulli(~counts[j] / n) from random bytes (so the
        column's entries are exchangeable), then ``_fix_counts_`` makes the count exact."""
        n, d = self.n, self.d
        self.words.random_(0, 2**56, generator=generator)  # 7 uniform bytes each
        low = slice(0, 7) if sys.byteorder == "little" else slice(1, 8)
        random_bytes = self.words.view(torch.uint8).view(n, -1, 8)[:, :, low]
        level = torch.zeros(self.values.shape[1], dtype=torch.long, device=counts.device)
        level[:d] = (counts * 256 + n // 2) // n
        torch.lt(random_bytes, level.clamp(0, 255).to(torch.uint8).view(-1, 7), out=self.hits)
        self.values.copy_(self.hits.view(n, -1))
        always = counts >= n
        if always.any():
            self.x[:, always] = 1.0
        _fix_counts_(self.x, counts, generator)
        return self.x


def permute_units(active: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Null activity for 0/1 activity [n, d]: each unit's column permuted over the tokens by
    its own uniformly random permutation, drawn from ``generator`` (on the activity's device):
    firing counts kept exactly, co-activation destroyed. A permuted column is a uniformly random
    arrangement of its ones, and that is what is drawn, in O(n d) random bytes rather than a
    sort of n keys per unit. Returns bool [n, d] on the activity's device."""
    a = as_active(active)
    buffers = _Activity(a.shape[0], a.shape[1], a.device)
    counts = _column_counts(buffers.load(a))
    return buffers.null(counts, generator).bool()


def modularity_null(active: torch.Tensor, min_k: int = 2, max_k: int = 8, *, k: int | None = None,
                    draws: int = 8, n_init: int = 8, seed: int = 0) -> tuple[list[float], list[int]]:
    """The permutation null of the co-activation partition's Q.

    Each draw permutes the tokens of every unit of ``active`` [n, d] (0/1 activity) independently
    (``permute_units``) and runs the same procedure as the measured Q: ``partition_by_q`` of the
    permuted activity's phi similarity, k chosen by Q on that graph (same min_k, max_k, k, n_init
    and seed), and that partition's Q on it. The draws are a function of ``seed`` alone (a
    generator on the activity's device made here). Returns (Q per draw, k per draw).
    """
    a = as_active(active)
    generator = torch.Generator(device=a.device).manual_seed((seed * _NULL_STREAM + 1) % 2**64)
    sample = _Activity(*a.shape, a.device)
    counts = _column_counts(sample.load(a))
    qs, ks = [], []
    for _ in range(draws):
        s = phi_of(sample.null(counts, generator))
        labels, k_draw, q = partition_by_q(s, min_k, max_k, k=k, n_init=n_init, seed=seed)
        qs.append(q)
        ks.append(k_draw)
    return qs, ks


def shuffle_within(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The entries of ``weight`` (any shape) permuted within it by one uniformly random
    permutation drawn from ``generator`` (on the weight's device): the same multiset of values,
    shape, dtype and device, a new arrangement. The shuffle of Filan et al., "Clusterability in
    Neural Networks" (arXiv 2103.03386): a network with each weight matrix shuffled this way has
    the trained network's weight statistics, matrix by matrix, and none of its learned
    arrangement. Returns a new tensor; ``weight`` is not touched."""
    flat = weight.detach().reshape(-1)
    order = torch.randperm(flat.numel(), generator=generator, device=flat.device)
    return flat[order].view_as(weight).clone()


__all__ = ["modularity_null", "permute_units", "shuffle_within"]
