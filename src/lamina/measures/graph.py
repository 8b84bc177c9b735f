"""Graph measures on a similarity of units: spectral partition, Newman's Q, partition agreement.

A similarity [d, d] is read as a weighted undirected graph: float64 (on the CPU for MPS),
symmetrised, self-loops dropped; it must be finite and non-negative. Deterministic throughout.

- ``partition(similarity, k=None)``: spectral clustering of the units (Ng-Jordan-Weiss, k by the
  eigengap when not given); -1 for isolated units.
- ``partition_by_q(similarity, select=None)``: the same, with k chosen by Q on ``select`` (by
  default the graph itself); ``partition_by_heldout(similarity, heldout)``: k chosen on another graph.
- ``modularity_q(similarity, labels)``: Newman's weighted Q, self-loops and -1 units ignored. The
  one implementation of Q in lamina (``_newman_q``; every Q of a partition goes through it).
- ``partition_nmi(a, b)``: normalised mutual information, arithmetic-mean normaliser.
"""

from __future__ import annotations

import scipy.linalg
import torch

from lamina.measures.kmeans import first_appearance_order, kmeans, kmeans_many
from lamina.measures.numeric import compute_device


def _graph(similarity: torch.Tensor) -> torch.Tensor:
    """The weighted undirected graph of a similarity: float64, symmetric, zero diagonal."""
    s = torch.as_tensor(similarity)
    if s.dim() != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square [d, d] matrix, got {tuple(s.shape)}")
    w = s.detach().to(compute_device(s), torch.float64)
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


def _spectrum(w: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(live, eigvals, eigvecs) of a graph from ``_graph``: live = the units with an edge (CPU
    bool [d]); the eigenpairs of the normalised adjacency D^-1/2 W D^-1/2 over the live units,
    largest eigenvalue first (CPU float64 [m], [m, m]; empty when fewer than 2 units are live);
    with ``top``, only the ``top`` largest (CPU float64 [top], [m, top]). One decomposition
    serves every k up to ``top``.

    On the CPU a ``top`` smaller than m asks LAPACK's dsyevr for those eigenpairs alone (scipy's
    ``eigh`` by index): the reduction to tridiagonal form is the same, but only ``top`` vectors are
    found and back-transformed, about 4x faster than every pair at 512 units. The vectors agree with
    the full decomposition's to rounding, up to each one's sign, which neither the row-normalised
    embedding's distances nor k-means can see."""
    degree = w.sum(dim=1)
    live = degree > 0
    if int(live.sum()) <= 1:
        empty = torch.zeros(0, dtype=torch.float64)
        return live.cpu(), empty, empty.view(0, 0)
    inv_sqrt = degree[live].rsqrt()
    adjacency = inv_sqrt[:, None] * w[live][:, live] * inv_sqrt[None, :]
    m = adjacency.shape[0]
    if top is not None and top < m and adjacency.device.type == "cpu":
        values, vectors = scipy.linalg.eigh(adjacency.numpy(), subset_by_index=[m - top, m - 1], driver="evr")
        eigvals, eigvecs = torch.from_numpy(values), torch.from_numpy(vectors)  # ascending
    else:
        eigvals, eigvecs = torch.linalg.eigh(adjacency)  # ascending
        if top is not None:
            eigvals, eigvecs = eigvals[-top:], eigvecs[:, -top:]
    return live.cpu(), eigvals.flip(0).cpu(), eigvecs.flip(1).cpu()


def _embedding(eigvecs: torch.Tensor, k: int) -> torch.Tensor:
    """Ng-Jordan-Weiss embedding: the top-k eigenvectors, rows normalised to unit length."""
    embedding = eigvecs[:, :k]
    return embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)


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
    # The eigengap at max_k reads lambda_(max_k + 1); a given k reads its k vectors alone.
    live, eigvals, eigvecs = _spectrum(w, top=k if k is not None else max_k + 1)
    labels = torch.full((w.shape[0],), -1, dtype=torch.long)
    m = int(live.sum())
    if m <= 1:
        labels[live] = 0
        return labels.to(torch.as_tensor(similarity).device)

    if k is None:
        k = _eigengap_k(1.0 - eigvals, min_k, max_k)
    k = min(k, m)
    clusters = kmeans(_embedding(eigvecs, k), k, n_init, seed)
    labels[live] = first_appearance_order(clusters)
    return labels.to(torch.as_tensor(similarity).device)


def modularity_q(similarity: torch.Tensor, labels) -> float:
    """Newman's weighted modularity Q of a partition of a weighted undirected graph.

    Q = (1/2m) sum_ij (A_ij - k_i k_j / 2m) [c_i = c_j] with A the similarity symmetrised and
    its diagonal (self-loops) ignored, k_i = sum_j A_ij, 2m = sum_ij A_ij. Units labelled -1
    (any negative label) are removed from the graph first. A graph with no edge has Q = 0.
    """
    w = _graph(similarity)
    lab = _labels(labels, w.shape[0], w.device)
    keep = lab >= 0
    compact = torch.full_like(lab, -1)  # any integers: clusters 0.. (the same when already so)
    compact[keep] = torch.unique(lab[keep], return_inverse=True)[1]
    return _newman_q(w, compact)


def _newman_q(w: torch.Tensor, labels: torch.Tensor) -> float:
    """``modularity_q`` on a graph already through ``_graph``, labels 0..k-1 and -1 (left out).

    Within-cluster weight sum_c 1_c^T W 1_c and cluster degrees 1_c^T W 1 from one [d, k]
    membership matrix: one product W M, no [d, d] copy unless some unit is left out."""
    lab = labels.to(w.device)
    keep = lab >= 0
    if not keep.any():
        return 0.0
    if not keep.all():
        w = w * keep[:, None] * keep[None, :]
    member = torch.nn.functional.one_hot(lab.clamp_min(0), int(lab.max()) + 1).to(w.dtype)
    member = member * keep[:, None]
    two_m = w.sum()
    if two_m <= 0:
        return 0.0
    within = (member * (w @ member)).sum()
    cluster_degree = member.T @ w.sum(dim=1)
    return float(within / two_m - (cluster_degree ** 2).sum() / two_m ** 2)


def partition_by_q(similarity: torch.Tensor, min_k: int = 2, max_k: int = 8, *,
                   select: torch.Tensor | None = None, k: int | None = None, n_init: int = 8,
                   seed: int = 0) -> tuple[torch.Tensor, int, float]:
    """Spectral clustering of ``similarity`` [d, d] with k chosen by Newman Q.

    For each k in ``min_k``..``max_k`` (only ``k`` when given) the units are partitioned as
    ``partition(similarity, k, n_init=n_init, seed=seed)`` does, from one eigendecomposition,
    and each partition is scored by Newman Q on ``select``: the same units' similarity on
    another sample, or (None, the default) ``similarity`` itself, Newman's rule of the k of
    highest Q. The k of the highest Q wins (the smaller k on ties); k is capped at the number of
    live units. A Q scored on the graph k was chosen on is biased up by the choice: score a
    partition held out on a graph that neither it nor its k has seen. Returns (labels on the
    similarity's device, -1 for units with no edge in ``similarity``; k; its Q on ``select``).
    """
    if not 1 <= min_k <= max_k:
        raise ValueError(f"need 1 <= min_k <= max_k, got min_k={min_k}, max_k={max_k}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    w = _graph(similarity)
    h = w if select is None else _graph(select)
    if h.shape != w.shape:
        raise ValueError(f"select {tuple(h.shape)} must match similarity {tuple(w.shape)}")
    live, _, eigvecs = _spectrum(w, top=k if k is not None else max_k)
    m = int(live.sum())
    labels = torch.full((w.shape[0],), -1, dtype=torch.long)
    if m <= 1:
        labels[live] = 0
        return labels.to(torch.as_tensor(similarity).device), m, _newman_q(h, labels)
    ks = [min(k, m)] if k is not None else list(range(min(min_k, m), min(max_k, m) + 1))
    clusterings = kmeans_many([_embedding(eigvecs, c) for c in ks], ks, n_init, seed)
    best = None
    for c, clusters in zip(ks, clusterings):
        candidate = labels.clone()
        candidate[live] = first_appearance_order(clusters)
        q = _newman_q(h, candidate)
        if best is None or q > best[2]:
            best = (candidate, c, q)
    return best[0].to(torch.as_tensor(similarity).device), best[1], best[2]


def partition_by_heldout(similarity: torch.Tensor, heldout: torch.Tensor, min_k: int = 2,
                         max_k: int = 8, *, k: int | None = None, n_init: int = 8,
                         seed: int = 0) -> tuple[torch.Tensor, int, float]:
    """``partition_by_q`` with k chosen by Q on ``heldout`` (the same units' similarity on a
    disjoint sample). The Q returned is the one k was chosen on: not a held-out score of the
    result (for that, a third sample)."""
    return partition_by_q(similarity, min_k, max_k, select=heldout, k=k, n_init=n_init, seed=seed)


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


__all__ = ["modularity_q", "partition", "partition_by_heldout", "partition_by_q", "partition_nmi"]
