"""The public API of every measure lamina reports (DESIGN.md, "Contracts" and "Measures").

Plain functions on torch tensors. Activation measures run a Triton kernel when the tensor is on
CUDA, or anywhere when the kernels were imported under ``TRITON_INTERPRET=1``, and the plain
PyTorch reference otherwise; ``impl="kernel"`` or ``impl="reference"`` forces one.

Activation measures, for acts ``a`` of shape ``[n, d]`` (leading dims are flattened into tokens)
and active = ``|a| > eps``, or ``gate > eps`` (signed) when a ``gate`` shaped like acts is given
(the ``sign`` rule: the MLP pre-activation with eps = 0); eps is a float or a per-unit tensor [d]
(the ``cett`` rule's thresholds, +inf for a unit that never counts):

- ``sparsity_stats(acts, eps, gate=None)``: dict of ``frac_active``, ``l1``, ``l2``, ``hoyer``,
  ``dead_frac``, ``top10_l1_share`` (Python floats), ``firing_rate`` (float32 tensor [d] on the
  acts' device) and ``tokens`` (int). Definitions in ``lamina.kernels.sparsity_stats``.
- ``coactivation(acts, eps, gate=None)``: float32 [d, d] = B^T B / n, B = active as 0/1.
- ``SparsityAccumulator`` and ``CoactivationAccumulator`` stream many batches through the same
  kernels with O(d) (resp. O(d^2)) state on the device; ``compute()`` equals the one-shot
  function on the concatenated batches. ``SparsityAccumulator`` also keeps each window's
  density (``window_frac_active()``) for the standard errors of density gaps.

Graph and representation measures (float64 internally, deterministic):

- ``partition(similarity, k=None)``: spectral clustering of the units; -1 for isolated units.
- ``modularity_q(similarity, labels)``: Newman's weighted Q, self-loops and -1 units ignored.
- ``partition_nmi(a, b)``: normalised mutual information, arithmetic-mean normaliser.
- Modularity nulls: ``activity_phi(active)`` (phi similarity of 0/1 activity),
  ``partition_by_heldout(similarity, heldout)`` (k chosen by held-out Q),
  ``permute_units(active, generator)`` and ``modularity_null(active, active_b)`` (the same
  procedure on activity permuted independently per unit), seeded, never the global RNG.
- ``effective_rank(x)``: exp of the entropy of the normalised singular values of x.

None of them returns NaN on dead units or all-zero activations.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager

import torch

from lamina.kernels import (
    EXACT_COUNT_LIMIT,
    SparsitySums,
    active_mask,
    coactivation_reference,
    coactivation_update_,
    coactivation_update_reference_,
    eps_arg,
    kernels_can_run,
    sparsity_stats_reference,
    sparsity_sums,
    sparsity_sums_reference,
    stats_from_sums,
    wide_dtype,
)

__all__ = [
    "CoactivationAccumulator",
    "SparsityAccumulator",
    "active_mask",
    "cett_threshold",
    "coactivation",
    "effective_rank",
    "effective_rank_from_singular_values",
    "gather_rows",
    "energy_share",
    "entropy_rank",
    "hoyer",
    "top_fraction_count",
    "modularity_q",
    "partition",
    "partition_nmi",
    "activity_phi",
    "modularity_null",
    "partition_by_heldout",
    "permute_units",
    "phi_similarity",
    "sparsity_stats",
]

_IMPLS = ("auto", "kernel", "reference")


# ------------------------------------------------------------------------------------------
# Dispatch and input checks
# ------------------------------------------------------------------------------------------


def _check_impl(impl: str) -> None:
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")


def _use_kernel(acts: torch.Tensor, impl: str) -> bool:
    """Whether to run the Triton kernel for ``acts`` under ``impl``."""
    _check_impl(impl)
    if impl == "reference":
        return False
    if impl == "kernel" and not kernels_can_run(acts):
        raise RuntimeError(
            "impl='kernel' needs triton and a CUDA tensor, or TRITON_INTERPRET=1 set before "
            "lamina.kernels is first imported")
    return kernels_can_run(acts)


def _as_tokens(acts: torch.Tensor, d: int | None = None) -> torch.Tensor:
    """``acts`` as [tokens, d]: leading dimensions are flattened (a view when possible)."""
    if not isinstance(acts, torch.Tensor) or acts.dim() < 2:
        raise ValueError("acts must be a tensor of shape [tokens, d] (or [..., d])")
    if acts.dim() > 2:
        acts = acts.reshape(-1, acts.shape[-1])
    if d is not None and acts.shape[1] != d:
        raise ValueError(f"expected {d} units, got acts of shape {tuple(acts.shape)}")
    if acts.shape[1] < 2:
        raise ValueError(f"activation measures need d >= 2 units, got {acts.shape[1]}")
    return acts.detach()


# ------------------------------------------------------------------------------------------
# Activation measures
# ------------------------------------------------------------------------------------------


def _acts_and_gate(acts: torch.Tensor, gate: torch.Tensor | None, d: int | None = None):
    """``acts`` and its gate as [tokens, d]; the gate must have acts' shape and is flattened alike."""
    flat = _as_tokens(acts, d)
    if gate is None:
        return flat, None
    if not isinstance(gate, torch.Tensor) or gate.shape != acts.shape:
        raise ValueError(f"gate must have the shape of acts {tuple(acts.shape)}, got "
                         f"{tuple(getattr(gate, 'shape', ()))}")
    return flat, _as_tokens(gate, d)


class _Accumulator:
    """A stream of activation batches of d units, kept on ``device``. A unit is active when
    ``gate > eps`` if ``update`` is given a gate, else when ``|acts| > eps``; eps is a float or a
    per-unit tensor [d]."""

    def __init__(self, d: int, eps, device: torch.device | str | None = None, *,
                 impl: str = "auto"):
        if d < 2:
            raise ValueError(f"activation measures need d >= 2 units, got {d}")
        _check_impl(impl)
        self.device = torch.device(device) if device is not None else None
        scalar, per_unit = eps_arg(eps, d, self.device or "cpu")  # validated once, here
        self.d, self.eps, self.impl = d, scalar if per_unit is None else per_unit, impl
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def _eps_on(self, device: torch.device):
        """Per-unit thresholds move to the batches' device once, not at every update."""
        if isinstance(self.eps, torch.Tensor) and self.eps.device != device:
            self.eps = self.eps.to(device)
        return self.eps


class SparsityAccumulator(_Accumulator):
    """Streams activation batches into ``sparsity_stats`` with O(d) state, plus one density per
    window.

    Each ``update(acts, gate=None)`` reduces its batch at once to per-unit sums and sums over
    tokens of the per-token values (nothing of size tokens x d is kept); ``compute()`` returns the
    same dict as ``sparsity_stats`` on all batches seen. A batch of shape [B, T, d] (any dims
    before the last two index windows) also records each window's fraction of active entries
    among its T*d, which the standard error of a density gap needs; ``window_frac_active()``
    returns them in order. State lives on ``device`` (default: the first batch's device) in
    float64 (float32 on MPS); updates never synchronise the device.
    """

    def reset(self) -> None:
        self._sums: SparsitySums | None = None
        self._windows: list[torch.Tensor] = []

    @property
    def tokens(self) -> int:
        return 0 if self._sums is None else self._sums.tokens

    def update(self, acts: torch.Tensor, gate: torch.Tensor | None = None) -> None:
        flat, gate = _acts_and_gate(acts, gate, self.d)
        if self.device is None:
            self.device = flat.device
        if self._sums is None:
            self._sums = SparsitySums.zeros(self.d, self.device)
        if flat.shape[0] == 0:
            return
        # Per-token active counts come out of the kernel's first pass; only windows need them.
        counts = (torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
                  if acts.dim() > 2 else None)
        reduce = sparsity_sums if _use_kernel(flat, self.impl) else sparsity_sums_reference
        self._sums = self._sums + reduce(flat, self._eps_on(flat.device), gate=gate,
                                         token_active=counts)
        if counts is not None:
            window = acts.shape[-2]
            per_window = counts.view(-1, window).to(wide_dtype(self.device)).sum(dim=1)
            self._windows.append((per_window / (window * self.d)).to(self.device))

    def window_frac_active(self) -> torch.Tensor:
        """Fraction of active entries of every window seen, in order: [n_windows], float64."""
        if not self._windows:
            device = self.device or torch.device("cpu")
            return torch.zeros(0, dtype=wide_dtype(device), device=device)
        return torch.cat(self._windows)

    def compute(self) -> dict:
        if self.tokens == 0:
            raise ValueError("SparsityAccumulator.compute() before any token was seen")
        return stats_from_sums(self._sums)

    def all_reduce(self) -> None:
        """Sum the state over the ranks of torch.distributed's default group and gather every
        rank's windows in rank order (two collectives), so that ``compute()`` and
        ``window_frac_active()`` describe every rank's tokens. Every rank must call it, after at
        least one batch."""
        import torch.distributed as dist

        if self._sums is None:
            raise ValueError("SparsityAccumulator.all_reduce() before any batch was seen")
        s, mine = self._sums, self.window_frac_active()
        # One-hot by rank: the summed vector is every rank's window count, which the gather
        # needs (ranks may hold different numbers of windows), at no extra collective.
        windows = torch.zeros(dist.get_world_size())
        windows[dist.get_rank()] = mine.numel()
        parts = [s.active, s.abs_sum, s.sq_sum, s.hoyer_sum, s.top10_sum, torch.tensor(s.tokens),
                 windows]
        summed = sum_over_ranks(parts, s.abs_sum)
        tokens, *per_rank = (int(c) for c in torch.cat([summed[5].reshape(1), summed[6]]).tolist())
        self._sums = SparsitySums(summed[0].to(s.active.dtype), *summed[1:5], tokens=tokens)
        self._windows = [_gather_windows(mine, per_rank)]


def _gather_windows(mine: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every rank's windows in rank order: padded to the longest and all_gathered (one collective)."""
    import torch.distributed as dist

    longest = max(counts)
    if longest == 0:  # every rank knows the counts, so all skip the collective together
        return mine
    padded = torch.zeros(longest, dtype=mine.dtype, device=mine.device)
    padded[: mine.numel()] = mine
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts)])


class CoactivationAccumulator(_Accumulator):
    """Streams activation batches into ``coactivation`` with one [d, d] count buffer.

    Counts B^T B accumulate in an fp32 buffer on ``device`` (default: the first batch's device;
    batches elsewhere are moved there). fp32 counts are exact below 2**24; before the buffer
    could pass that, it is folded into a float64 total, so counts stay exact for any stream.
    ``compute()`` returns float32 [d, d] counts / tokens.
    """

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None  # fp32, exact while _since_fold < 2**24
        self._folded: torch.Tensor | None = None  # wide total of earlier counts
        self._since_fold = 0
        self.tokens = 0

    def _fold(self) -> None:
        folded = self._counts.to(wide_dtype(self.device))
        self._folded = folded if self._folded is None else self._folded + folded
        self._counts.zero_()
        self._since_fold = 0

    def update(self, acts: torch.Tensor, gate: torch.Tensor | None = None) -> None:
        acts, gate = _acts_and_gate(acts, gate, self.d)
        if self.device is None:
            self.device = acts.device
        acts = acts.to(self.device)
        gate = None if gate is None else gate.to(self.device)
        if self._counts is None:
            self._counts = torch.zeros(self.d, self.d, dtype=torch.float32, device=self.device)
        add = coactivation_update_ if _use_kernel(acts, self.impl) else coactivation_update_reference_
        eps = self._eps_on(self.device)
        for start in range(0, acts.shape[0], EXACT_COUNT_LIMIT):
            rows = slice(start, start + EXACT_COUNT_LIMIT)
            chunk = acts[rows]
            if self._since_fold + chunk.shape[0] > EXACT_COUNT_LIMIT:
                self._fold()
            add(self._counts, chunk, eps, gate=None if gate is None else gate[rows])
            self._since_fold += chunk.shape[0]
            self.tokens += chunk.shape[0]

    def all_reduce(self) -> None:
        """Sum the counts over the ranks of torch.distributed's default group (one collective; see
        ``SparsityAccumulator.all_reduce``)."""
        if self._counts is None:
            raise ValueError("CoactivationAccumulator.all_reduce() before any batch was seen")
        total = self._counts.to(wide_dtype(self.device))
        if self._folded is not None:
            total = total + self._folded
        counts, tokens = sum_over_ranks([total, torch.tensor(self.tokens)], total)
        self._folded, self.tokens = counts, int(tokens.item())
        self._counts.zero_()
        self._since_fold = 0

    def compute(self) -> torch.Tensor:
        if self.tokens == 0:
            raise ValueError("CoactivationAccumulator.compute() before any token was seen")
        counts = self._counts.to(wide_dtype(self.device))
        if self._folded is not None:
            counts = counts + self._folded
        return (counts / self.tokens).float()


def sum_over_ranks(parts: list[torch.Tensor], like: torch.Tensor) -> list[torch.Tensor]:
    """Sum tensors over torch.distributed's default group in one collective: flattened into one
    buffer of ``like``'s dtype (float64: exact for counts below 2**53) on its device."""
    import torch.distributed as dist

    flat = torch.cat([p.to(like.device, like.dtype).reshape(-1) for p in parts])
    dist.all_reduce(flat)
    out, start = [], 0
    for p in parts:
        out.append(flat[start : start + p.numel()].reshape(p.shape))
        start += p.numel()
    return out


def sparsity_stats(acts: torch.Tensor, eps, *, gate: torch.Tensor | None = None,
                   impl: str = "auto") -> dict:
    """Sparsity statistics of ``acts`` [tokens, d]; active = gate > eps if a gate (shaped like
    acts) is given, else |a| > eps; eps a float or a per-unit tensor [d].

    Returns ``frac_active``, ``l1``, ``l2``, ``hoyer``, ``dead_frac``, ``top10_l1_share`` as
    Python floats (magnitudes always from acts), ``firing_rate`` as a float32 tensor [d] on the
    acts' device, and ``tokens``.
    """
    acts, gate = _acts_and_gate(acts, gate)
    if acts.shape[0] == 0:
        raise ValueError("sparsity_stats needs at least one token")
    if not _use_kernel(acts, impl):
        return sparsity_stats_reference(acts, eps, gate)
    acc = SparsityAccumulator(acts.shape[1], eps, acts.device, impl="kernel")
    acc.update(acts, gate)
    return acc.compute()


def coactivation(acts: torch.Tensor, eps, *, gate: torch.Tensor | None = None,
                 impl: str = "auto") -> torch.Tensor:
    """Co-activation C = B^T B / tokens, B = active as 0/1 (rule as in ``sparsity_stats``):
    float32 [d, d], diag = firing rate."""
    acts, gate = _acts_and_gate(acts, gate)
    if acts.shape[0] == 0:
        raise ValueError("coactivation needs at least one token")
    if not _use_kernel(acts, impl):
        return coactivation_reference(acts, eps, gate)
    acc = CoactivationAccumulator(acts.shape[1], eps, acts.device, impl="kernel")
    acc.update(acts, gate)
    return acc.compute()


# ------------------------------------------------------------------------------------------
# The cett rule's threshold, and rows gathered across ranks
# ------------------------------------------------------------------------------------------


def cett_threshold(acts: torch.Tensor, weight: torch.Tensor, target: float, *, max_iter: int = 60) -> float:
    """The CETT threshold of one MLP layer (Sparsing Law, arXiv 2411.02335).

    Unit j's contribution to token t's MLP output is c_tj = |a_tj| * ||W[:, j]|| (``weight`` is
    W_down, [out, d]). Dropping every contribution below tau changes the output y_t = W a_t by
    E(tau) = mean over tokens of ||W (a_t * [c_t < tau])|| / ||y_t|| (tokens with y_t = 0 left out);
    this returns the tau with E(tau) = ``target`` (0 < target < 1), found by bisection to within
    0.1% of the target (or ``max_iter`` halvings). E(0) = 0 and E(max c) = 1 bound the search."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"cett target must be in (0, 1), got {target}")
    a = _as_tokens(acts).float()
    w = weight.detach().to(a.device, torch.float32)
    if w.dim() != 2 or w.shape[1] != a.shape[1]:
        raise ValueError(f"weight must be [out, {a.shape[1]}], got {tuple(w.shape)}")
    contribution = a.abs() * w.norm(dim=0)
    out_norm = (a @ w.T).norm(dim=1)
    keep = out_norm > 0
    a, contribution, out_norm = a[keep], contribution[keep], out_norm[keep]
    if a.shape[0] == 0:
        return 0.0

    def error(tau: float) -> float:
        dropped = torch.where(contribution < tau, a, torch.zeros_like(a))
        return float(((dropped @ w.T).norm(dim=1) / out_norm).mean())

    low, high = 0.0, float(contribution.max()) * (1 + 1e-6)
    for _ in range(max_iter):
        tau = (low + high) / 2
        e = error(tau)
        if abs(e - target) <= 1e-3 * target:
            return tau
        low, high = (tau, high) if e < target else (low, tau)
    return (low + high) / 2


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``rows`` [n_r, ...] in rank order (n_r may differ between ranks;
    two collectives: the counts, then the rows padded to the largest). Bool rows travel as uint8."""
    import torch.distributed as dist

    world = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    wire = rows.to(torch.uint8) if rows.dtype == torch.bool else rows
    padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=wire.dtype, device=rows.device)
    padded[: rows.shape[0]] = wire
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.cat([part[:n] for part, n in zip(parts, counts)])
    return out.bool() if rows.dtype == torch.bool else out


# ------------------------------------------------------------------------------------------
# Graph measures
# ------------------------------------------------------------------------------------------


def _compute_device(t: torch.Tensor) -> torch.device:
    """Where float64 linear algebra runs: the tensor's device, except MPS (no float64)."""
    return torch.device("cpu") if t.device.type == "mps" else t.device


def _graph(similarity: torch.Tensor) -> torch.Tensor:
    """The weighted undirected graph of a similarity: float64, symmetric, zero diagonal."""
    s = torch.as_tensor(similarity)
    if s.dim() != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square [d, d] matrix, got {tuple(s.shape)}")
    w = s.detach().to(_compute_device(s), torch.float64)
    if not torch.isfinite(w).all():
        raise ValueError("similarity has NaN or infinite entries")
    if (w < 0).any():
        raise ValueError("similarity must be non-negative")
    w = (w + w.T) / 2  # absorbs rounding asymmetry, e.g. from a streamed Gram
    w.fill_diagonal_(0.0)  # self-loops carry no information about modules
    return w


def _labels(labels, d: int, device: torch.device) -> torch.Tensor:
    lab = torch.as_tensor(labels).to(device)
    if lab.dim() != 1 or lab.numel() != d:
        raise ValueError(f"labels must be a vector of {d} entries, got shape {tuple(lab.shape)}")
    if lab.is_floating_point() and not torch.equal(lab, lab.round()):
        raise ValueError("labels must be integers")
    return lab.long()


def _eigengap_k(laplacian_eigs: torch.Tensor, min_k: int, max_k: int) -> int:
    """k maximising lambda_{k+1} - lambda_k over k = min_k..max_k (eigenvalues ascending)."""
    top = min(max_k, laplacian_eigs.numel() - 1)  # lambda_{k+1} must exist
    low = min(min_k, top)
    gaps = laplacian_eigs[low:top + 1] - laplacian_eigs[low - 1:top]
    return low + int(torch.argmax(gaps))  # the first of equal gaps: the smaller k


def _spectrum(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(live, eigvals, eigvecs) of a graph from ``_graph``: live = the units with an edge (CPU
    bool [d]); the eigenpairs of the normalised adjacency D^-1/2 W D^-1/2 over the live units,
    largest eigenvalue first (CPU float64 [m], [m, m]; empty when fewer than 2 units are live).
    One decomposition serves every k."""
    degree = w.sum(dim=1)
    live = degree > 0
    if int(live.sum()) <= 1:
        empty = torch.zeros(0, dtype=torch.float64)
        return live.cpu(), empty, empty.view(0, 0)
    inv_sqrt = degree[live].rsqrt()
    adjacency = inv_sqrt[:, None] * w[live][:, live] * inv_sqrt[None, :]
    eigvals, eigvecs = torch.linalg.eigh(adjacency)  # ascending
    return live.cpu(), eigvals.flip(0).cpu(), eigvecs.flip(1).cpu()


def _embedding(eigvecs: torch.Tensor, k: int) -> torch.Tensor:
    """Ng-Jordan-Weiss embedding: the top-k eigenvectors, rows normalised to unit length."""
    embedding = eigvecs[:, :k]
    return embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)


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


@contextmanager
def one_cpu_thread():
    """Run torch's CPU ops on one thread inside the block (restored after). The clustering is
    hundreds of tiny ops: on a loaded machine, threads that wait for each other in every one of
    them make it tens of times slower than one thread alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _kmeans_many(xs: list[torch.Tensor], ks: list[int], n_init: int, seed: int,
                 max_iter: int = 300) -> list[torch.Tensor]:
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


def _kmeans(x: torch.Tensor, k: int, n_init: int, seed: int) -> torch.Tensor:
    """Best-inertia k-means over ``n_init`` k-means++ restarts from a seeded CPU generator."""
    return _kmeans_many([x], [k], n_init, seed)[0]


def _first_appearance_order(labels: torch.Tensor) -> torch.Tensor:
    """Renumber clusters 0, 1, ... in order of their first unit, so labels are canonical."""
    _, inverse = torch.unique(labels, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), labels.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(labels.numel()), reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(first.numel())
    return rank[inverse]


def partition(similarity: torch.Tensor, k: int | None = None, *, min_k: int = 1,
              max_k: int = 32, n_init: int = 8, seed: int = 0) -> torch.Tensor:
    """Spectral clustering of units by a symmetric non-negative similarity [d, d].

    Ng-Jordan-Weiss: the top-k eigenvectors of the normalised adjacency D^-1/2 W D^-1/2 (the
    bottom of the normalised Laplacian), rows normalised to unit length, then k-means with
    k-means++ seeding from a torch.Generator seeded ``seed`` and ``n_init`` restarts, keeping
    the lowest inertia. W is the similarity symmetrised with its diagonal zeroed. ``k=None``
    picks k by the largest eigengap lambda_{k+1} - lambda_k of the normalised Laplacian among
    k = ``min_k``..``max_k`` (the smaller k on ties). With the default ``min_k=1`` a graph whose
    modules sit on a strong uniform background can come out as one cluster (its gap at k = 1
    is the largest): subtract the background from the similarity, or pass ``min_k=2``.

    Returns a LongTensor [d] on the similarity's device: clusters numbered 0.. in order of
    their first unit, and -1 for units with no edge (dead units, whose row is zero). k larger
    than the number of live units is reduced to it.
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 1 <= min_k <= max_k:
        raise ValueError(f"need 1 <= min_k <= max_k, got min_k={min_k}, max_k={max_k}")
    w = _graph(similarity)
    live, eigvals, eigvecs = _spectrum(w)
    labels = torch.full((w.shape[0],), -1, dtype=torch.long)
    m = int(live.sum())
    if m <= 1:
        labels[live] = 0
        return labels.to(torch.as_tensor(similarity).device)

    if k is None:
        k = _eigengap_k(1.0 - eigvals, min_k, max_k)
    k = min(k, m)
    clusters = _kmeans(_embedding(eigvecs, k), k, n_init, seed)
    labels[live] = _first_appearance_order(clusters)
    return labels.to(torch.as_tensor(similarity).device)


def modularity_q(similarity: torch.Tensor, labels) -> float:
    """Newman's weighted modularity Q of a partition of a weighted undirected graph.

    Q = (1/2m) sum_ij (A_ij - k_i k_j / 2m) [c_i = c_j] with A the similarity symmetrised and
    its diagonal (self-loops) ignored, k_i = sum_j A_ij, 2m = sum_ij A_ij. Units labelled -1
    are removed from the graph first. A graph with no edge has Q = 0.
    """
    w = _graph(similarity)
    lab = _labels(labels, w.shape[0], w.device)
    keep = lab >= 0
    w, lab = w[keep][:, keep], lab[keep]
    two_m = w.sum()
    if lab.numel() == 0 or two_m <= 0:
        return 0.0
    _, cluster = torch.unique(lab, return_inverse=True)
    member = torch.nn.functional.one_hot(cluster).to(w.dtype)  # [units, clusters]
    within = torch.diagonal(member.T @ w @ member).sum()  # sum_ij A_ij [c_i = c_j]
    cluster_degree = member.T @ w.sum(dim=1)
    q = within / two_m - (cluster_degree ** 2).sum() / two_m ** 2
    return float(q)


def partition_nmi(a, b) -> float:
    """Normalised mutual information of two labelings, arithmetic-mean normaliser.

    NMI = I(a; b) / ((H(a) + H(b)) / 2), natural logs, as scikit-learn's default. Units
    labelled -1 (excluded) in either labeling are left out. Degenerate cases as scikit-learn:
    both labelings a single cluster (or no unit left) give 1.0; otherwise zero mutual
    information gives 0.0 (so one single-cluster labeling against a split one gives 0.0).
    """
    la, lb = torch.as_tensor(a).cpu().long(), torch.as_tensor(b).cpu().long()
    if la.dim() != 1 or la.shape != lb.shape:
        raise ValueError(f"labelings must be vectors of equal length, got {tuple(la.shape)} "
                         f"and {tuple(lb.shape)}")
    keep = (la >= 0) & (lb >= 0)
    _, ia = torch.unique(la[keep], return_inverse=True)
    _, ib = torch.unique(lb[keep], return_inverse=True)
    n = ia.numel()
    ka, kb = (int(ia.max()) + 1, int(ib.max()) + 1) if n else (0, 0)
    if ka == kb and ka <= 1:
        return 1.0
    joint = torch.zeros(ka, kb, dtype=torch.float64)
    joint.index_put_((ia, ib), torch.ones(n, dtype=torch.float64), accumulate=True)
    joint /= n
    pa, pb = joint.sum(dim=1), joint.sum(dim=0)
    nz = joint > 0
    mi = (joint[nz] * (joint[nz] / (pa[:, None] * pb[None, :])[nz]).log()).sum()
    h_a = -(pa * pa.log()).sum()  # every marginal is > 0: clusters are non-empty
    h_b = -(pb * pb.log()).sum()
    if mi <= 0:
        return 0.0
    return float((mi / ((h_a + h_b) / 2)).clamp(0.0, 1.0))


# ------------------------------------------------------------------------------------------
# Modularity nulls
# ------------------------------------------------------------------------------------------
#
# DESIGN.md "Measures", modularity. The units of a layer are partitioned by the phi similarity
# of their 0/1 activity on one sample (`id`), with k chosen as the k whose partition has the
# highest Q scored on a second, disjoint sample (`id_b`): held-out Q, so a partition is never
# chosen and scored on the same graph. The null is that whole procedure run on activity whose
# tokens are permuted independently per unit: firing rates kept, co-activation destroyed.
# Everything runs on the activity's device with plain torch (the k-means of the embedding on
# the CPU); the draws come from torch.Generator objects made and seeded here, never from the
# global RNG, so measuring never changes training and a resumed run redraws them bit for bit.

# Multiplies the seed into the stream of the null's permutation generator, so that it differs
# from the k-means generator, which is seeded with the seed itself.
_NULL_STREAM = 0x9E3779B97F4A7C15


def phi_similarity(coactivation: torch.Tensor) -> torch.Tensor:
    """Phi coefficient of every pair of units from their co-activation C = B^T B / n (diag C =
    firing rate p), clipped at 0, zero diagonal: S_ij = max(0, (C_ij - p_i p_j) /
    sqrt(p_i (1 - p_i) p_j (1 - p_j))); 0 for units that never or always fire. float64 on the
    matrix's device (float32 on MPS)."""
    dtype = wide_dtype(coactivation.device)
    c = coactivation.to(dtype)
    c = (c + c.T) / 2
    p = torch.diagonal(c).clamp(0.0, 1.0)
    spread = torch.sqrt(p * (1 - p))
    denom = spread[:, None] * spread[None, :]
    phi = torch.where(denom > 0, (c - p[:, None] * p[None, :]) / denom.clamp_min(1e-300), torch.zeros_like(c))
    phi = phi.clamp(0.0, 1.0)
    phi.fill_diagonal_(0.0)
    return phi


def _as_active(active: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(active)
    if a.dim() != 2 or a.shape[0] == 0:
        raise ValueError(f"activity must be [tokens, units] with at least one token, got {tuple(a.shape)}")
    return a if a.dtype == torch.bool else a != 0


def _pair_counts(x: torch.Tensor) -> torch.Tensor:
    """X^T X for 0/1 float32 x [n, d]: exact joint-activity counts, float64 [d, d] (float32 on
    MPS). fp32 sums of 0/1 products are exact below 2**24 tokens, so tokens go in chunks of
    that many; on the CPU only the upper block triangle is multiplied (X^T X is symmetric)."""
    n, d = x.shape
    wide = wide_dtype(x.device)
    out = torch.zeros(d, d, dtype=wide, device=x.device)
    step = d if x.device.type != "cpu" else max(1, -(-d // 4))
    for t in range(0, n, EXACT_COUNT_LIMIT):
        chunk = x[t : t + EXACT_COUNT_LIMIT]
        for i in range(0, d, step):
            out[i : i + step, i:] += (chunk[:, i : i + step].T @ chunk[:, i:]).to(wide)
    if step < d:
        out = out.triu() + out.triu(1).T
    return out


def _phi_of(x: torch.Tensor) -> torch.Tensor:
    return phi_similarity(_pair_counts(x) / x.shape[0])


def activity_phi(active: torch.Tensor) -> torch.Tensor:
    """``phi_similarity`` of 0/1 activity [n, d] (bool, or nonzero = active): the co-activation
    is ``coactivation(active.float(), 0.5)`` with exact counts, in float64."""
    return _phi_of(_as_active(active).to(torch.float32))


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
    a = _as_active(active)
    buffers = _Activity(a.shape[0], a.shape[1], a.device)
    counts = _column_counts(buffers.load(a))
    return buffers.null(counts, generator).bool()


def _newman_q(w: torch.Tensor, labels: torch.Tensor) -> float:
    """``modularity_q`` of integer labels (-1 left out) on a graph already through ``_graph``."""
    keep = labels >= 0
    if not keep.any():
        return 0.0
    lab = labels.to(w.device)
    keep = keep.to(w.device)
    member = torch.nn.functional.one_hot(lab.clamp_min(0), int(lab.max()) + 1).to(w.dtype)
    member = member * keep[:, None]
    w = w * keep[:, None] * keep[None, :]
    two_m = w.sum()
    if two_m <= 0:
        return 0.0
    within = (member * (w @ member)).sum()
    cluster_degree = member.T @ w.sum(dim=1)
    return float(within / two_m - (cluster_degree ** 2).sum() / two_m ** 2)


def partition_by_heldout(similarity: torch.Tensor, heldout: torch.Tensor, min_k: int = 2,
                         max_k: int = 8, *, k: int | None = None, n_init: int = 8,
                         seed: int = 0) -> tuple[torch.Tensor, int, float]:
    """Spectral clustering of ``similarity`` [d, d] with k chosen on a held-out graph.

    For each k in ``min_k``..``max_k`` (only ``k`` when given) the units are partitioned as
    ``partition(similarity, k, n_init=n_init, seed=seed)`` does, from one eigendecomposition,
    and each partition is scored by Newman Q on ``heldout`` (the same units' similarity on a
    disjoint sample); the k of the highest held-out Q wins (the smaller k on ties). k is capped
    at the number of live units. Returns (labels on the similarity's device, -1 for units with
    no edge in ``similarity``; k; its held-out Q).
    """
    if not 1 <= min_k <= max_k:
        raise ValueError(f"need 1 <= min_k <= max_k, got min_k={min_k}, max_k={max_k}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    w, h = _graph(similarity), _graph(heldout)
    if h.shape != w.shape:
        raise ValueError(f"heldout {tuple(h.shape)} must match similarity {tuple(w.shape)}")
    live, _, eigvecs = _spectrum(w)
    m = int(live.sum())
    labels = torch.full((w.shape[0],), -1, dtype=torch.long)
    if m <= 1:
        labels[live] = 0
        return labels.to(torch.as_tensor(similarity).device), m, _newman_q(h, labels)
    ks = [min(k, m)] if k is not None else list(range(min(min_k, m), min(max_k, m) + 1))
    clusterings = _kmeans_many([_embedding(eigvecs, c) for c in ks], ks, n_init, seed)
    best = None
    for c, clusters in zip(ks, clusterings):
        candidate = labels.clone()
        candidate[live] = _first_appearance_order(clusters)
        q = _newman_q(h, candidate)
        if best is None or q > best[2]:
            best = (candidate, c, q)
    return best[0].to(torch.as_tensor(similarity).device), best[1], best[2]


def modularity_null(active: torch.Tensor, active_b: torch.Tensor, min_k: int = 2, max_k: int = 8,
                    *, k: int | None = None, draws: int = 8, n_init: int = 8,
                    seed: int = 0) -> tuple[list[float], list[int]]:
    """The permutation null of held-out-chosen modularity Q.

    Each draw permutes the tokens of every unit independently (``permute_units``) in both
    samples, active [n, d] and active_b [n_b, d] (0/1 activity of the same units), and runs the
    same procedure as the measured Q: ``partition_by_heldout`` of the first sample's phi
    similarity with k scored on the second's (same min_k, max_k, k, n_init and seed), then Q
    of that partition on the first sample's similarity. The draws are a function of ``seed``
    alone (a generator on the activity's device made here). Returns (Q per draw, k per draw).
    """
    a, b = _as_active(active), _as_active(active_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples must have the same units, got {a.shape[1]} and {b.shape[1]}")
    b = b.to(a.device)
    generator = torch.Generator(device=a.device).manual_seed((seed * _NULL_STREAM + 1) % 2**64)
    sample, sample_b = _Activity(*a.shape, a.device), _Activity(*b.shape, a.device)
    counts, counts_b = _column_counts(sample.load(a)), _column_counts(sample_b.load(b))
    qs, ks = [], []
    for _ in range(draws):
        s = _phi_of(sample.null(counts, generator))
        s_b = _phi_of(sample_b.null(counts_b, generator))
        labels, k_draw, _ = partition_by_heldout(s, s_b, min_k, max_k, k=k, n_init=n_init, seed=seed)
        qs.append(_newman_q(_graph(s), labels))
        ks.append(k_draw)
    return qs, ks


# ------------------------------------------------------------------------------------------
# Representation measures
# ------------------------------------------------------------------------------------------


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy of s / sum(s)) for the singular values s of x as given (no centring).

    x is [rows, features] (leading dims are flattened into rows). An all-zero x has rank 0.0.
    """
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(f"effective_rank needs a matrix, got shape {tuple(x.shape)}")
    if x.dim() > 2:
        x = x.reshape(-1, x.shape[-1])
    return effective_rank_from_singular_values(torch.linalg.svdvals(x.detach().to(_compute_device(x), torch.float64)))


def effective_rank_from_singular_values(s: torch.Tensor) -> float:
    """exp(entropy of s / sum(s)) for singular values s (any order); all zero gives 0.0."""
    s = torch.as_tensor(s).detach().to(torch.float64).clamp_min(0.0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


# ------------------------------------------------------------------------------------------
# Last-layer measures
# ------------------------------------------------------------------------------------------
#
# Per-vector measures of a batch of hidden states h [..., d] (the last dim is the vector), as
# Jin et al. (arXiv 2603.03415, github.com/MingyuJ666/sparsityLLM) apply them to the final
# hidden state, beside lamina's Hoyer. Each returns float64 [...] (one value per vector, so
# that standard errors over problems can be taken), computed in float64 on h's device (the CPU
# for MPS, which has no float64). A zero vector (sum of squares 0 in float64) counts as
# maximally sparse, the one-hot limit, as `sparsity_stats` counts an all-zero token as 1:
# energy_share 1, entropy_rank 1/d, hoyer 1. Non-finite entries propagate (no check, no sync).

_ROUNDINGS = ("ceil", "floor")


def top_fraction_count(d: int, frac: float, *, rounding: str = "ceil") -> int:
    """How many of d entries make the top ``frac`` of them, at least 1.

    ``rounding="ceil"``: ceil(frac d) in exact rational arithmetic on frac as written in decimal
    (0.07 is 7/100: 100 entries give 7, where ``math.ceil(0.07 * 100)`` is 8), as
    ``lamina.kernels.top_count`` does for 10%. ``rounding="floor"``: max(1, floor(frac d)), the
    count of Jin et al.'s code (``max(1, int(d * frac))``; the same for frac 0.01, 0.05, 0.1).
    """
    from fractions import Fraction

    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    q = Fraction(repr(float(frac)))
    if not 0 < q <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac!r}")
    k = math.ceil(q * d) if rounding == "ceil" else math.floor(q * d)
    return max(1, k)


def _vectors(h: torch.Tensor) -> torch.Tensor:
    """h as float64 on its compute device; the last dim is the vector, of d >= 2 entries."""
    h = torch.as_tensor(h)
    if h.dim() < 1 or h.shape[-1] < 2:
        raise ValueError(f"last-layer measures need vectors of d >= 2 entries, got shape {tuple(h.shape)}")
    return h.detach().to(_compute_device(h), torch.float64)


def _safe_ratio(num: torch.Tensor, den: torch.Tensor, zero: torch.Tensor, fill: float) -> torch.Tensor:
    """num / den where not ``zero``, ``fill`` where ``zero`` (no NaN on either branch)."""
    ratio = num / torch.where(zero, torch.ones_like(den), den)
    return torch.where(zero, torch.full_like(ratio, fill), ratio)


def energy_share(h: torch.Tensor, frac: float, *, rounding: str = "ceil") -> torch.Tensor:
    """Share of sum_j h_j^2 held by the k largest h_j^2 of each vector, k =
    ``top_fraction_count(d, frac, rounding=rounding)`` (ceil(frac d) by default). In [k/d, 1]:
    a constant vector gives k/d, a one-hot (or zero) vector 1. float64 [...] for h [..., d]."""
    x = _vectors(h)
    k = top_fraction_count(x.shape[-1], frac, rounding=rounding)
    sq = x * x
    total = sq.sum(dim=-1)
    top = sq.topk(k, dim=-1).values.sum(dim=-1)
    return _safe_ratio(top, total, total == 0, 1.0).clamp(0.0, 1.0)


def entropy_rank(h: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) / d with p = h^2 / ||h||^2 and H the natural-log entropy (0 log 0 = 0), for
    each vector. In [1/d, 1]: a constant vector gives 1, a one-hot (or zero) vector 1/d.
    float64 [...] for h [..., d]. (Jin et al.'s code adds 1e-10 inside the log; a difference of
    order d * 1e-9 in H.)"""
    x = _vectors(h)
    d = x.shape[-1]
    sq = x * x
    total = sq.sum(dim=-1)
    zero = total == 0
    p = sq / torch.where(zero, torch.ones_like(total), total)[..., None]
    rank = torch.exp(-torch.xlogy(p, p).sum(dim=-1)) / d
    return torch.where(zero, torch.full_like(rank, 1.0 / d), rank).clamp(1.0 / d, 1.0)


def hoyer(h: torch.Tensor) -> torch.Tensor:
    """Hoyer sparsity (sqrt(d) - ||h||_1 / ||h||_2) / (sqrt(d) - 1) of each vector, in [0, 1]:
    a one-hot (or zero) vector gives 1, a constant one 0. float64 [...] for h [..., d]; its
    mean over tokens is ``sparsity_stats(...)["hoyer"]``."""
    x = _vectors(h)
    root_d = math.sqrt(x.shape[-1])
    l1 = x.abs().sum(dim=-1)
    sq = (x * x).sum(dim=-1)
    ratio = _safe_ratio(l1, sq.sqrt(), sq == 0, 1.0)
    value = (root_d - ratio) / (root_d - 1.0)
    return torch.where(sq == 0, torch.ones_like(value), value).clamp(0.0, 1.0)
