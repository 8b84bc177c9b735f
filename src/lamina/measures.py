"""The public API of every measure lamina reports (DESIGN.md, "Contracts" and "Measures").

Plain functions on torch tensors. Activation measures run a Triton kernel when the tensor is on
CUDA, or anywhere when the kernels were imported under ``TRITON_INTERPRET=1``, and the plain
PyTorch reference otherwise; ``impl="kernel"`` or ``impl="reference"`` forces one.

Activation measures, for acts ``a`` of shape ``[n, d]`` (leading dims are flattened into tokens)
and active = ``|a| > eps``:

- ``sparsity_stats(acts, eps)``: dict of ``frac_active``, ``l1``, ``l2``, ``hoyer``,
  ``dead_frac``, ``top10_l1_share`` (Python floats), ``firing_rate`` (float32 tensor [d] on the
  acts' device) and ``tokens`` (int). Definitions in ``lamina.kernels.sparsity_stats``.
- ``coactivation(acts, eps)``: float32 [d, d] = B^T B / n, B = active as 0/1.
- ``SparsityAccumulator`` and ``CoactivationAccumulator`` stream many batches through the same
  kernels with O(d) (resp. O(d^2)) state on the device; ``compute()`` equals the one-shot
  function on the concatenated batches.

Graph and representation measures (float64 internally, deterministic):

- ``partition(similarity, k=None)``: spectral clustering of the units; -1 for isolated units.
- ``modularity_q(similarity, labels)``: Newman's weighted Q, self-loops and -1 units ignored.
- ``partition_nmi(a, b)``: normalised mutual information, arithmetic-mean normaliser.
- ``effective_rank(x)``: exp of the entropy of the normalised singular values of x.

None of them returns NaN on dead units or all-zero activations.
"""

from __future__ import annotations

import math

import torch

from lamina.kernels import (
    EXACT_COUNT_LIMIT,
    SparsitySums,
    coactivation_reference,
    coactivation_update_,
    coactivation_update_reference_,
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
    "coactivation",
    "effective_rank",
    "modularity_q",
    "partition",
    "partition_nmi",
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


class _Accumulator:
    """A stream of activation batches of d units, thresholded at eps, kept on ``device``."""

    def __init__(self, d: int, eps: float, device: torch.device | str | None = None, *,
                 impl: str = "auto"):
        if d < 2:
            raise ValueError(f"activation measures need d >= 2 units, got {d}")
        _check_impl(impl)
        self.d, self.eps, self.impl = d, float(eps), impl
        self.device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError


class SparsityAccumulator(_Accumulator):
    """Streams activation batches into ``sparsity_stats`` with O(d) state.

    Each ``update(acts)`` reduces its batch at once to per-unit sums and sums over tokens of the
    per-token values (nothing of size tokens x d is kept); ``compute()`` returns the same dict
    as ``sparsity_stats`` on all batches seen. State lives on ``device`` (default: the first
    batch's device) in float64 (float32 on MPS); updates never synchronise the device.
    """

    def reset(self) -> None:
        self._sums: SparsitySums | None = None

    @property
    def tokens(self) -> int:
        return 0 if self._sums is None else self._sums.tokens

    def update(self, acts: torch.Tensor) -> None:
        acts = _as_tokens(acts, self.d)
        if self.device is None:
            self.device = acts.device
        if self._sums is None:
            self._sums = SparsitySums.zeros(self.d, self.device)
        if acts.shape[0] == 0:
            return
        reduce = sparsity_sums if _use_kernel(acts, self.impl) else sparsity_sums_reference
        self._sums = self._sums + reduce(acts, self.eps)

    def compute(self) -> dict:
        if self.tokens == 0:
            raise ValueError("SparsityAccumulator.compute() before any token was seen")
        return stats_from_sums(self._sums)

    def all_reduce(self) -> None:
        """Sum the state over the ranks of torch.distributed's default group (one collective), so
        that ``compute()`` describes every rank's tokens. Every rank must call it, after at least
        one batch."""
        if self._sums is None:
            raise ValueError("SparsityAccumulator.all_reduce() before any batch was seen")
        s = self._sums
        parts = [s.active, s.abs_sum, s.sq_sum, s.hoyer_sum, s.top10_sum, torch.tensor(s.tokens)]
        summed = sum_over_ranks(parts, s.abs_sum)
        self._sums = SparsitySums(
            summed[0].to(s.active.dtype), *summed[1:5], tokens=int(summed[5].item())
        )


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

    def update(self, acts: torch.Tensor) -> None:
        acts = _as_tokens(acts, self.d)
        if self.device is None:
            self.device = acts.device
        acts = acts.to(self.device)
        if self._counts is None:
            self._counts = torch.zeros(self.d, self.d, dtype=torch.float32, device=self.device)
        add = coactivation_update_ if _use_kernel(acts, self.impl) else coactivation_update_reference_
        for chunk in acts.split(EXACT_COUNT_LIMIT):
            if self._since_fold + chunk.shape[0] > EXACT_COUNT_LIMIT:
                self._fold()
            add(self._counts, chunk, self.eps)
            self._since_fold += chunk.shape[0]
            self.tokens += chunk.shape[0]

    def all_reduce(self) -> None:
        """Sum the counts over the ranks of torch.distributed's default group (see
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


def sparsity_stats(acts: torch.Tensor, eps: float, *, impl: str = "auto") -> dict:
    """Sparsity statistics of ``acts`` [tokens, d] with active = |a| > eps.

    Returns ``frac_active``, ``l1``, ``l2``, ``hoyer``, ``dead_frac``, ``top10_l1_share`` as
    Python floats, ``firing_rate`` as a float32 tensor [d] on the acts' device, and ``tokens``.
    """
    acts = _as_tokens(acts)
    if acts.shape[0] == 0:
        raise ValueError("sparsity_stats needs at least one token")
    if not _use_kernel(acts, impl):
        return sparsity_stats_reference(acts, eps)
    acc = SparsityAccumulator(acts.shape[1], eps, acts.device, impl="kernel")
    acc.update(acts)
    return acc.compute()


def coactivation(acts: torch.Tensor, eps: float, *, impl: str = "auto") -> torch.Tensor:
    """Co-activation C = B^T B / tokens, B = (|a| > eps) as 0/1: float32 [d, d], diag = firing rate."""
    acts = _as_tokens(acts)
    if acts.shape[0] == 0:
        raise ValueError("coactivation needs at least one token")
    if not _use_kernel(acts, impl):
        return coactivation_reference(acts, eps)
    acc = CoactivationAccumulator(acts.shape[1], eps, acts.device, impl="kernel")
    acc.update(acts)
    return acc.compute()


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


def _kmeans_pp_init(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to D^2."""
    m = x.shape[0]
    chosen = [int(torch.randint(m, (1,), generator=gen))]
    dist2 = ((x - x[chosen[0]]) ** 2).sum(dim=1)
    for _ in range(1, k):
        total = dist2.sum()
        if total > 0:
            nxt = int(torch.multinomial(dist2 / total, 1, generator=gen))
        else:  # every point sits on a centre already: any point will do
            nxt = int(torch.randint(m, (1,), generator=gen))
        chosen.append(nxt)
        dist2 = torch.minimum(dist2, ((x - x[nxt]) ** 2).sum(dim=1))
    return x[chosen].clone()


def _lloyd(x: torch.Tensor, centres: torch.Tensor, max_iter: int):
    """Lloyd iterations until the centres stop moving; returns (labels, inertia)."""
    k = centres.shape[0]
    for _ in range(max_iter):
        dist2 = torch.cdist(x, centres) ** 2
        labels = dist2.argmin(dim=1)
        counts = torch.bincount(labels, minlength=k)
        new = torch.zeros_like(centres).index_add_(0, labels, x)
        for c in torch.nonzero(counts == 0).flatten().tolist():
            # An empty cluster restarts at the point worst served by its centre.
            worst = int(dist2.gather(1, labels[:, None]).argmax())
            new[c], counts[c] = x[worst], 1
            dist2[worst] = 0.0
        new /= counts[:, None].to(new.dtype)
        if torch.allclose(new, centres, rtol=0.0, atol=1e-10):
            centres = new
            break
        centres = new
    dist2 = torch.cdist(x, centres) ** 2
    labels = dist2.argmin(dim=1)
    return labels, float(dist2.gather(1, labels[:, None]).sum())


def _kmeans(x: torch.Tensor, k: int, n_init: int, seed: int) -> torch.Tensor:
    """Best-inertia k-means over ``n_init`` k-means++ restarts from one seeded CPU generator."""
    gen = torch.Generator().manual_seed(seed)
    best_labels, best_inertia = None, math.inf
    for _ in range(n_init):
        labels, inertia = _lloyd(x, _kmeans_pp_init(x, k, gen), max_iter=300)
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


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
    degree = w.sum(dim=1)
    live = degree > 0
    labels = torch.full((w.shape[0],), -1, dtype=torch.long)
    m = int(live.sum())
    if m <= 1:
        labels[live.cpu()] = 0
        return labels.to(torch.as_tensor(similarity).device)

    inv_sqrt = degree[live].rsqrt()
    adjacency = inv_sqrt[:, None] * w[live][:, live] * inv_sqrt[None, :]
    eigvals, eigvecs = torch.linalg.eigh(adjacency)  # ascending
    eigvals, eigvecs = eigvals.flip(0).cpu(), eigvecs.flip(1).cpu()  # largest first
    if k is None:
        k = _eigengap_k(1.0 - eigvals, min_k, max_k)
    k = min(k, m)
    embedding = eigvecs[:, :k]
    embedding = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
    clusters = _kmeans(embedding, k, n_init, seed)
    labels[live.cpu()] = _first_appearance_order(clusters)
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
    s = torch.linalg.svdvals(x.detach().to(_compute_device(x), torch.float64))
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
