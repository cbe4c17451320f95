"""Patches as rows, and a clustered index of training patches that lets ELS / bbELS skip the
clusters that provably carry almost none of a softmax (:func:`pruned_patch_softmax`)."""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..core.validation import Interval, check_scalar
from .softmax import StreamingSoftmax, resolve_chunk


def patches_of(images, patch_size, padding):
    """All P x P patches (channels first), one per pixel: (n, H * W, C * P * P)."""
    pad = patch_size // 2
    padded = F.pad(images, (pad,) * 4, mode="circular" if padding == "circular" else "constant")
    return F.unfold(padded, patch_size).transpose(1, 2)


def logit_dtype(queries, key_norm, sigma):
    """float64 where float32 rounding of the expanded logits ``q . k / sigma^2`` could exceed
    1e-4 (small sigma: at sigma = 0.002 a float32 run was 3e-3 off float64), else the input's.

    queries : (n, D); key_norm : float, ``sqrt(D) max|k_j|``, a bound on the norm of the keys.
    """
    if queries.dtype == torch.float64 or not len(queries):
        return queries.dtype
    rounding = torch.finfo(queries.dtype).eps * float(queries.norm(dim=1).max()) * key_norm / sigma**2
    return torch.float64 if rounding > 1e-4 else queries.dtype


class PatchIndex(NamedTuple):
    """The training patches of one position set, grouped into clusters (see :func:`build_patch_index`).

    keys : Tensor of shape (U, D + 1), rows ``[k, ||k||^2]`` of the distinct
        patches, sorted by cluster
    values : Tensor of shape (U, C + 1), their centre pixels and a column of ones
    log_counts : Tensor of shape (U,), log of how many training patches each stands for
    total : int, T, the number of training patches
    offsets : list of K + 1 ints; cluster j holds rows ``offsets[j]:offsets[j + 1]``
    centroids : Tensor of shape (K, D)
    radii : float64 Tensor of shape (K,), the largest distance of a member to its centroid
    """

    keys: torch.Tensor
    values: torch.Tensor
    log_counts: torch.Tensor
    total: int
    offsets: list
    centroids: torch.Tensor
    radii: torch.Tensor


def _kmeans(points, k, seed, iterations=10):
    """Lloyd's k-means on a seeded sample of ``points`` (T, D): returns (k, D) centroids."""
    g = torch.Generator().manual_seed(seed)
    sample = points[torch.randperm(len(points), generator=g)[:min(len(points), 64 * k)].to(points.device)]
    centroids = sample[:k].clone()
    for _ in range(iterations):
        assign = torch.cdist(sample, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, sample)
        counts = torch.bincount(assign, minlength=k)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return centroids


def merge_duplicates(rows):
    """Distinct rows of ``rows`` (T, D) and how many times each occurs: (rows (U, D), counts (U,)).

    Rows are grouped by a 64-bit hash of their bits (fast 1-D sort instead of a row sort), and
    every row is checked against its group's first row, so a hash collision never merges
    different rows (a colliding row is kept on its own).
    """
    bits = rows.view(torch.int64 if rows.dtype == torch.float64 else torch.int32).long()
    g = torch.Generator().manual_seed(12345)
    mult = torch.randint(1, 2**62, (rows.shape[1],), generator=g).to(rows.device) * 2 + 1
    _, group = torch.unique(bits.mul(mult).sum(1), return_inverse=True)
    first = torch.full((int(group.max()) + 1,), len(rows), device=rows.device)
    first = first.scatter_reduce(0, group, torch.arange(len(rows), device=rows.device), "amin")
    owner = first[group]
    owner = torch.where((rows == rows[owner]).all(1), owner, torch.arange(len(rows), device=rows.device))
    keep, counts = torch.unique(owner, return_counts=True)
    return rows[keep], counts


def build_patch_index(data, patch_size, padding, positions, *, n_clusters=None, seed=0):
    """All training patches at ``positions`` (flat pixel indices), merged and clustered for pruning.

    Identical patches are merged into one with its count (41% of the 3 x 3 patches of 2,000
    Fashion-MNIST images are duplicates, mostly background), then the distinct patches are
    grouped by k-means.

    Parameters
    ----------
    data : Tensor of shape (M, C, H, W)
    patch_size : odd int; padding : "zeros" or "circular"
    positions : long Tensor of pixel indices (one set of :func:`equivariant_position_sets`)
    n_clusters : int, optional; default ``U // 1024`` clipped to [1, 1024] for U distinct
        patches (measured on 3,000 images: 1,024 clusters skip 94% of the pairs at sigma = 0.002
        and build in 9 s; 4,096 skip 98% but take 67 s)
    seed : int, seed of the k-means sample

    Returns
    -------
    PatchIndex. Holds the distinct patches, ``(D + C + 3) * 4`` bytes each in float32 (at
    most 2.5 GB for the 47 million 3 x 3 patches of the 60,000 Fashion-MNIST images; building
    it takes several times that at its peak).
    """
    c, area = data.shape[1], patch_size**2
    keys = torch.cat([patches_of(data[start:start + 256], patch_size, padding)[:, positions].reshape(-1, c * area)
                      for start in range(0, len(data), 256)])
    total = len(keys)
    keys, counts = merge_duplicates(keys)
    values = keys[:, area // 2::area]  # the centre pixel of each channel (channels first)
    k = min(len(keys), n_clusters or int(min(1024, max(1, len(keys) // 1024))))
    centroids = _kmeans(keys, k, seed)
    assign = torch.cat([torch.cdist(keys[i:i + 2**16], centroids).argmin(1) for i in range(0, len(keys), 2**16)])
    order = torch.argsort(assign, stable=True)
    keys, values, assign, log_counts = keys[order], values[order], assign[order], counts[order].to(keys.dtype).log()
    counts = torch.bincount(assign, minlength=k)
    dist = (keys.double() - centroids.double()[assign]).norm(dim=1)  # float64: a safe bound
    radii = torch.zeros(k, dtype=torch.float64, device=keys.device).scatter_reduce_(0, assign, dist, "amax")
    live = counts > 0
    offsets = [0] + torch.cumsum(counts[live], 0).tolist()
    return PatchIndex(torch.cat([keys, keys.square().sum(1, keepdim=True)], 1), F.pad(values, (0, 1), value=1),
                      log_counts, total, offsets, centroids[live], radii[live])


def pruned_patch_softmax(queries, sigma, index, tol, stats=None):
    """``sum_j softmax_j(-||q - k_j||^2 / 2 sigma^2) v_j`` over an index, skipping clusters whose
    patches provably hold less than ``tol`` of a query's softmax in total.

    Each query first takes its nearest cluster (by centroid) exactly; the patch of largest
    weight found there gives an upper bound ``b`` on the query's best distance. A cluster ``j``
    is skipped when ``(max(0, ||q - c_j|| - r_j))^2 > b + 2 sigma^2 log(T / tol)`` (triangle
    inequality): each of its patches then weighs less than ``tol / T`` times the best patch, so
    all skipped patches together (T counts merged duplicates) hold less than ``tol`` of the
    softmax mass, and each output moves by at most ``2 tol max|v|``. The bounds are computed in
    float64 (``b`` from the direct distance, the centroid distances without the matrix-product
    shortcut), so float32 rounding cannot loosen them; the logits are in float64 where float32
    rounding would matter (:func:`logit_dtype`), else in the dtype of ``queries``.

    Parameters
    ----------
    queries : Tensor of shape (n, D)
    sigma : float; index : PatchIndex; tol : float in (0, 1)
    stats : dict, optional; receives ``computed_fraction``, the share of (query, distinct patch)
        pairs computed, relative to all (query, training patch) pairs

    Returns
    -------
    Tensor of shape (n, C).
    """
    check_scalar(tol, "prune_tol", Interval(float, 0, 1, closed="neither"))
    keys, values, offsets = index.keys, index.values, index.offsets
    n, total, dim = len(queries), index.total, queries.shape[1]
    work = logit_dtype(queries, float(keys[:, :dim].abs().max()) * dim**0.5, sigma)
    if work != keys.dtype:  # the squared norms again, in the working precision
        keys = keys[:, :dim].to(work)
        keys, values = torch.cat([keys, keys.square().sum(1, keepdim=True)], 1), values.to(work)
    inv_var = 1 / sigma**2
    q_work = queries.to(work)
    aug_q = torch.cat([q_work * inv_var, q_work.new_full((n, 1), -0.5 * inv_var)], 1)
    acc = StreamingSoftmax((n, 1), work, queries.device)
    computed = 0

    def add(rows, j):
        """Fold cluster j into the softmax of ``rows``; returns each row's heaviest patch."""
        nonlocal computed
        lo, hi = offsets[j], offsets[j + 1]
        step = resolve_chunk(None, len(rows), 2**22)
        top = q_work.new_full((len(rows),), -torch.inf)
        arg = torch.zeros(len(rows), dtype=torch.long, device=queries.device)
        for start in range(lo, hi, step):
            block = slice(start, min(hi, start + step))
            logits = aug_q[rows] @ keys[block].T  # of one patch each
            value, where = logits.max(1)
            arg = torch.where(value > top, where + start, arg)
            top = torch.maximum(top, value)
            # each distinct patch weighs as many times as it occurs
            acc.add(logits + index.log_counts[block].to(work), 1, lambda w: w @ values[block], rows)
        computed += len(rows) * (hi - lo)
        return arg

    q64 = queries.double()
    to_centroids = torch.cdist(q64, index.centroids.double(), compute_mode="donot_use_mm_for_euclid_dist")
    nearest = to_centroids.argmin(1)  # (n,)
    best = q64.new_empty(n)
    for j in torch.unique(nearest).tolist():
        rows = (nearest == j).nonzero().squeeze(1)
        heaviest = keys[add(rows, j), :dim].double()
        best[rows] = (q64[rows] - heaviest).square().sum(1)  # >= the best distance: safe
    margin = 2 * sigma**2 * math.log(total / tol)
    keep = (to_centroids - index.radii).clamp(min=0).square() <= best[:, None] + margin
    keep[torch.arange(n, device=keep.device), nearest] = False  # done above
    for j in keep.any(0).nonzero().squeeze(1).tolist():
        add(keep[:, j].nonzero().squeeze(1), j)
    if stats is not None:
        stats["computed_fraction"] = computed / (n * total)
    return acc.mean(queries.dtype)
