"""Patch denoisers: Kamb & Ganguli's local score machines and Niedoba et al.'s patch composites.

Both replace the whole-image softmax of the empirical-optimal denoiser with softmaxes over
small patches, which is what lets them make images that are not in the training set.

* **LS / ELS / bbELS** (Kamb & Ganguli, "An analytic theory of creativity in convolutional
  diffusion models", arXiv 2412.20292). For each pixel p the P x P patch of ``x`` centred on p
  (all channels) is compared with a set of training patches, and ``D(x)[:, p]`` is the
  softmax-weighted average of their centre pixels:

      D(x)[:, p] = sum_{(i, q) in S(p)} softmax(-||x_P(p) - x_i,P(q)||^2 / (2 sigma^2)) x_i[:, q].

  LS (``equivariant=False``): ``S(p) = {(i, p)}``, the co-located patches; the padding (zeros
  by default) is the same in both patches. ELS (``equivariant=True, padding="circular"``):
  every circularly padded patch of every training image at every location, so the machine is
  exactly equivariant to circular shifts. bbELS (``equivariant=True, padding="zeros"``): zero
  padding, and a pixel whose patch crosses the border is only compared with patches at the
  same border position (same distance to the same edges); interior pixels with all interior
  patches. (The published code takes ELS training patches without wrap-around, ``(H - P + 1)
  x (W - P + 1)`` per image; here they wrap like the query's, ``H x W`` per image.)

* **PSPC-Square** (Niedoba et al., "Towards a mechanistic explanation of diffusion model
  generalization", arXiv 2411.19339). Every s x s crop C lying inside the image gets its crop
  posterior mean over the training crops at the same place, and each pixel averages the crops
  covering it:

      D(x)[p] = 1 / |{C : p in C}| sum_{C containing p} sum_i softmax_i(-||x_C - x_i,C||^2 / (2 sigma^2)) x_i[p].

All softmaxes are exact (streaming log-sum-exp over chunks of training images; results do not
depend on the chunk size). LS and PSPC cost O(M d) per query: window distances come from prefix
sums of ``(x - x_i)^2`` (in float64, so no cancellation), and the PSPC crop weights are summed
over the crops covering each pixel by the same window sums. ELS and bbELS compare every query
patch with every training patch of its set in matrix products, about ``2 M (H W)^2 C P^2``
flops per query for ELS (feasible for small training sets; see the benchmarks).
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from .base import TrainingSetMixin
from .empirical import StreamingSoftmax, log_weight_floor, resolve_chunk
from .scales import value_at

PADDINGS = ("zeros", "circular")


def window_sums(t, size, pad=0, padding="zeros"):
    """Sums of ``t`` over every ``size`` x ``size`` window of ``t`` padded by ``pad`` per side.

    Parameters
    ----------
    t : Tensor of shape (..., H, W) (at least 3-D for circular padding)
    size : int, window side
    pad : int, padding on each side; ``(size - 1) // 2`` centres a window on every pixel
    padding : "zeros" or "circular"

    Returns
    -------
    Float64 tensor of shape (..., H + 2 pad - size + 1, W + 2 pad - size + 1). Computed from
    float64 prefix sums: the differences of prefix sums lose nothing to cancellation at the
    distances that matter for small sigma.
    """
    t = t.double()
    if padding == "circular" and pad:
        t = F.pad(t, (pad,) * 4, mode="circular")
        pad = 0
    # zeros add nothing: clip each window to the image instead of padding (O(H W) for any size)
    for dim in (-2, -1):
        n = t.shape[dim]
        if size > n + 2 * pad:
            raise ValueError(f"window of size {size} is larger than the padded image ({n} + 2 * {pad})")
        start = torch.arange(n + 2 * pad - size + 1, device=t.device) - pad
        lo, hi = start.clamp(0, n), (start + size).clamp(0, n)
        prefix = F.pad(t.cumsum(dim), (0, 0, 1, 0) if dim == -2 else (1, 0))
        t = prefix.index_select(dim, hi) - prefix.index_select(dim, lo)
    return t


def _window_logits(x, images, size, pad, padding, sigma):
    """``-||x_w - x_i,w||^2 / (2 sigma^2)`` for every window w: float64, shape (N, c, H', W').

    x : (N, C, H, W); images : (c, C, H, W). Kept in float64 until the running maximum is
    subtracted (at sigma = 0.002 a logit of -1e5 has a float32 spacing of 0.008).
    """
    sq = (x[:, None] - images[None]).square().sum(2)  # (N, c, H, W)
    return window_sums(sq, size, pad, padding) * (-0.5 / sigma**2)


def _weights(logits, reference, floor, dtype):
    """``exp(logits - reference)`` floored at ``exp(floor)``, subtracted in float64, in ``dtype``."""
    return torch.exp(torch.clamp(logits - reference, min=floor).to(dtype))


def _box_chunk(chunk_size, n, d):
    """Training images per chunk of the window engines: about 2**20 (query, image, pixel) values."""
    return resolve_chunk(chunk_size, 1) if chunk_size is not None else max(1, 2**20 // max(n * d, 1))


def local_score_posterior_mean(x, sigma, data, patch_size, *, padding="zeros", chunk_size=None):
    """Kamb & Ganguli's LS machine: per pixel, a softmax over the co-located training patches.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float, one noise level for the batch
    data : Tensor of shape (M, C, H, W), dtype and device of ``x``
    patch_size : odd int P; ``2 max(H, W) - 1`` or more compares whole images (the
        empirical-optimal denoiser, with zero padding)
    padding : "zeros" (the paper's LS) or "circular"
    chunk_size : int, optional, training images per chunk (does not change the result)

    Returns
    -------
    Tensor of the shape of ``x``: ``sum_i softmax_i(-||x_P(p) - x_i,P(p)||^2 / 2 sigma^2) x_i[:, p]``.
    """
    n, c, h, w = x.shape
    size, pad = patch_size, patch_size // 2
    chunk = _box_chunk(chunk_size, n, h * w)
    floor = log_weight_floor(x.dtype)
    run_max = x.new_full((n, 1, h, w), -torch.inf, dtype=torch.float64)
    # numerator and denominator summed across chunks in float64 (see StreamingSoftmax)
    num, den = x.new_zeros(x.shape, dtype=torch.float64), x.new_zeros(n, 1, h, w, dtype=torch.float64)
    for start in range(0, len(data), chunk):
        images = data[start:start + chunk]
        logits = _window_logits(x, images, size, pad, padding, sigma)  # (N, c, H, W)
        new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
        weights = _weights(logits, new_max, floor, x.dtype)
        rescale = torch.exp(torch.clamp(run_max - new_max, min=floor))
        num = num * rescale + torch.einsum("nihw,ichw->nchw", weights, images)
        den = den * rescale + weights.sum(1, keepdim=True)
        run_max = new_max
    return (num / den).to(x.dtype)


def _logit_dtype(queries, key_norm, sigma):
    """float64 where float32 rounding of the expanded logits ``q . k / sigma^2`` could exceed
    1e-4 (small sigma: at sigma = 0.002 a float32 run was 3e-3 off float64), else the input's.

    queries : (n, D); key_norm : float, ``sqrt(D) max|k_j|``, a bound on the norm of the keys.
    """
    if queries.dtype == torch.float64 or not len(queries):
        return queries.dtype
    rounding = torch.finfo(queries.dtype).eps * float(queries.norm(dim=1).max()) * key_norm / sigma**2
    return torch.float64 if rounding > 1e-4 else queries.dtype


def _border_classes(n, half):
    """Position class along one axis for bbELS: ``r`` near the start, ``r - n`` near the end, or
    ``n`` (a shared "interior" class) where a window of half-width ``half`` stays inside."""
    r = torch.arange(n)
    return torch.where(r < half, r, torch.where(r >= n - half, r - n, torch.full_like(r, n)))


def equivariant_position_sets(h, w, patch_size, padding):
    """Which training-patch locations each pixel is compared with in ELS / bbELS.

    Returns a list of 1-D long tensors of flat pixel indices: every pixel of a set is compared
    with the training patches at every location of the same set. Circular padding gives one
    set (all locations); zero padding gives bbELS's sets: the interior, and one set per border
    position (a border row, a border column, or a single corner location).
    """
    if padding == "circular":
        return [torch.arange(h * w)]
    half = patch_size // 2
    rows, cols = _border_classes(h, half), _border_classes(w, half)
    key = (rows[:, None] * (2 * w + 1) + cols[None, :]).reshape(-1)  # a unique id per class pair
    return [(key == k).nonzero().squeeze(1) for k in torch.unique(key)]


def _patches(images, patch_size, padding):
    """All P x P patches (channels first), one per pixel: (n, H * W, C * P * P)."""
    pad = patch_size // 2
    padded = F.pad(images, (pad,) * 4, mode="circular" if padding == "circular" else "constant")
    return F.unfold(padded, patch_size).transpose(1, 2)


def equivariant_local_score_posterior_mean(x, sigma, data, patch_size, *, padding="circular",
                                           chunk_size=None, prune_tol=None, indexes=None, stats=None):
    """Kamb & Ganguli's ELS (circular padding) or bbELS (zero padding) machine.

    Exact (within ``2 prune_tol max|x_i|`` with ``prune_tol``). Every query patch is compared
    with every training patch of its position set (see :func:`equivariant_position_sets`)
    through one matrix product per chunk of training images (logits
    ``(q . k - ||k||^2 / 2) / sigma^2``), reduced by a streaming log-sum-exp per query patch.
    In this expanded form float32 rounding grows like
    ``|q| |k| / sigma^2``; where it could exceed 1e-4 in a logit (small sigma) the products are
    done in float64 (:func:`_logit_dtype`).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float, one noise level for the batch
    data : Tensor of shape (M, C, H, W), dtype and device of ``x``
    patch_size : odd int P, at most ``2 min(H, W) - 1`` with circular padding
    padding : "circular" (ELS) or "zeros" (bbELS)
    chunk_size : int, optional, training images per chunk (does not change the result)
    prune_tol : float, optional
        If set, skip clusters of training patches that provably hold less than ``prune_tol``
        of each softmax (:func:`pruned_patch_softmax`; error at most ``2 prune_tol max|x_i|``).
    indexes : list of PatchIndex, optional, one per position set (built when needed)
    stats : dict, optional; with ``prune_tol``, receives ``computed_fraction``

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    n, c, h, w = x.shape
    sets = [s.to(x.device) for s in equivariant_position_sets(h, w, patch_size, padding)]
    queries = _patches(x, patch_size, padding)  # (N, HW, D)
    if prune_tol is not None:
        if indexes is None:
            indexes = [build_patch_index(data, patch_size, padding, pos) for pos in sets]
        out = torch.empty(n, h * w, c, dtype=x.dtype, device=x.device)
        computed = 0.0
        for pos, index in zip(sets, indexes, strict=True):
            part = {}
            q = queries[:, pos].reshape(-1, queries.shape[2])
            out[:, pos] = pruned_patch_softmax(q, sigma, index, prune_tol, part).reshape(n, len(pos), c)
            computed += part["computed_fraction"] * len(pos) ** 2
        if stats is not None:
            stats["computed_fraction"] = computed / sum(len(pos) ** 2 for pos in sets)
        return out.transpose(1, 2).reshape(x.shape)
    key_norm = float(data.abs().max()) * queries.shape[2] ** 0.5  # bounds every |k|
    work = _logit_dtype(queries.reshape(-1, queries.shape[2]), key_norm, sigma)
    inv_var = 1 / sigma**2
    accs, aug_qs = [], []
    for pos in sets:
        q = queries[:, pos].reshape(-1, queries.shape[2]).to(work)  # (N * |set|, D)
        ones = q.new_ones(len(q), 1)
        aug_qs.append(torch.cat([q * inv_var, -0.5 * inv_var * ones], 1))  # pairs with [k, |k|^2]
        accs.append(StreamingSoftmax(len(q), c + 1, q))
    per_image = max(len(pos) for pos in sets) * max(len(a) for a in aug_qs)
    chunk = resolve_chunk(chunk_size, 1) if chunk_size is not None else max(1, 2**22 // per_image)
    for start in range(0, len(data), chunk):
        images = data[start:start + chunk]
        keys = _patches(images, patch_size, padding).to(work)  # (c, HW, D)
        keys = torch.cat([keys, keys.square().sum(2, keepdim=True)], 2)  # (c, HW, D + 1)
        values = F.pad(images.flatten(2).transpose(1, 2), (0, 1), value=1).to(work)  # (c, HW, C + 1)
        for pos, aug_q, acc in zip(sets, aug_qs, accs):
            acc.add(aug_q @ keys[:, pos].reshape(-1, keys.shape[2]).T, values[:, pos].reshape(-1, c + 1))
    out = torch.empty(n, h * w, c, dtype=x.dtype, device=x.device)
    for pos, acc in zip(sets, accs):
        out[:, pos] = acc.result().reshape(n, len(pos), c).to(x.dtype)
    return out.transpose(1, 2).reshape(x.shape)


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
    keys = torch.cat([_patches(data[start:start + 256], patch_size, padding)[:, positions].reshape(-1, c * area)
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
    rounding would matter (:func:`_logit_dtype`), else in the dtype of ``queries``.

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
    if not 0 < tol < 1:
        raise ValueError(f"prune_tol must be in (0, 1), got {tol!r}")
    keys, values, offsets = index.keys, index.values, index.offsets
    n, total, dim = len(queries), index.total, queries.shape[1]
    work = _logit_dtype(queries, float(keys[:, :dim].abs().max()) * dim**0.5, sigma)
    if work != keys.dtype:  # the squared norms again, in the working precision
        keys = keys[:, :dim].to(work)
        keys, values = torch.cat([keys, keys.square().sum(1, keepdim=True)], 1), values.to(work)
    inv_var = 1 / sigma**2
    q_work = queries.to(work)
    aug_q = torch.cat([q_work * inv_var, q_work.new_full((n, 1), -0.5 * inv_var)], 1)
    acc = StreamingSoftmax(n, values.shape[1], q_work)
    computed = 0

    def add(rows, j):
        """Fold cluster j into the softmax of ``rows``; returns each row's heaviest patch."""
        nonlocal computed
        lo, hi = offsets[j], offsets[j + 1]
        step = max(1, 2**22 // len(rows))
        top = q_work.new_full((len(rows),), -torch.inf)
        arg = torch.zeros(len(rows), dtype=torch.long, device=queries.device)
        for start in range(lo, hi, step):
            block = slice(start, min(hi, start + step))
            logits = aug_q[rows] @ keys[block].T  # of one patch each
            value, where = logits.max(1)
            arg = torch.where(value > top, where + start, arg)
            top = torch.maximum(top, value)
            acc.add(logits + index.log_counts[block].to(work), values[block], rows)  # times its count
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
    return acc.result().to(queries.dtype)


def patch_composite_posterior_mean(x, sigma, data, patch_size, *, chunk_size=None):
    """Niedoba et al.'s PSPC-Square: coverage-normalised average of crop posterior means, exact.

    Two passes over the training images: the first gets each crop's log-normaliser (streaming
    log-sum-exp), the second sums each image's normalised crop weights over the crops covering
    each pixel (window sums of the weights, zero padded) and accumulates the weighted pixels.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float, one noise level for the batch
    data : Tensor of shape (M, C, H, W), dtype and device of ``x``
    patch_size : int s, 1 <= s <= min(H, W); ``s = H = W`` is the empirical-optimal denoiser
    chunk_size : int, optional, training images per chunk (does not change the result)

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    n, c, h, w = x.shape
    s = patch_size
    chunk = _box_chunk(chunk_size, n, h * w)
    floor = log_weight_floor(x.dtype)
    run_max = x.new_full((n, 1, h - s + 1, w - s + 1), -torch.inf, dtype=torch.float64)
    den = torch.zeros_like(run_max)  # sums across chunks in float64
    for start in range(0, len(data), chunk):  # pass 1: log-normaliser of every crop
        logits = _window_logits(x, data[start:start + chunk], s, 0, "zeros", sigma)
        new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
        rescale = torch.exp(torch.clamp(run_max - new_max, min=floor))
        den = den * rescale + _weights(logits, new_max, floor, x.dtype).sum(1, keepdim=True)
        run_max = new_max
    log_norm = run_max + den.log()  # (N, 1, H - s + 1, W - s + 1), float64
    num, cover = x.new_zeros(x.shape, dtype=torch.float64), x.new_zeros(n, 1, h, w, dtype=torch.float64)
    for start in range(0, len(data), chunk):  # pass 2: crop weights summed over covering crops
        images = data[start:start + chunk]
        logits = _window_logits(x, images, s, 0, "zeros", sigma)
        weights = _weights(logits, log_norm, floor, x.dtype)  # normalised per crop
        per_pixel = window_sums(weights, s, s - 1).to(x.dtype)  # (N, c, H, W)
        num = num + torch.einsum("nihw,ichw->nchw", per_pixel, images)
        cover = cover + per_pixel.sum(1, keepdim=True)
    return (num / cover).to(x.dtype)


def _check_size(size, sigma, odd, limit):
    """``patch_size`` at one sigma, validated (positive, odd if asked) and clipped to ``limit``."""
    if isinstance(size, bool) or int(size) != size or size < 1 or (odd and size % 2 == 0):
        kind = "a positive odd integer" if odd else "a positive integer"
        raise ValueError(f"patch_size must be {kind}, got {size!r} at sigma = {sigma:g}")
    return min(int(size), limit)


class LocalScoreDenoiser(TrainingSetMixin, BaseEstimator):
    """Kamb & Ganguli's local score machines: LS, ELS and boundary-broken ELS (arXiv 2412.20292).

    Parameters
    ----------
    patch_size : odd int or schedule, default 5
        Patch side P, or a function / :class:`~analytic_denoisers.scales.Table` of sigma giving
        it (the paper calibrates P per noise level). Sizes beyond the whole image are clipped:
        ``2 max(H, W) - 1`` for LS, ``2 min(H, W) - 1`` with circular padding.
    equivariant : bool, default False
        False: the LS machine (co-located patches). True: ELS / bbELS (patches from every
        location), which is exact but costs ``O(M (H W)^2 C P^2)`` per query.
    padding : "zeros" or "circular", default "zeros"
        With ``equivariant=True``: "circular" is the ELS machine, "zeros" the boundary-broken
        bbELS machine.
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.
    prune_tol : float in (0, 1), optional
        ELS / bbELS only. Cluster the training patches (k-means, built on first use per patch
        size and cached) and skip clusters that provably hold less than ``prune_tol`` of a
        pixel's softmax: each output pixel moves by at most ``2 prune_tol max|x_i|``
        (:func:`pruned_patch_softmax`). It saves most of the work at small sigma, little at
        large sigma. Default None: every patch pair is computed.

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : the training images, sorted by class when
        fitted with labels ``y`` (then ``denoise`` needs ``y`` and uses only that class)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    def __init__(self, patch_size=5, equivariant=False, padding="zeros", chunk_size=None, prune_tol=None):
        self.patch_size = patch_size
        self.equivariant = equivariant
        self.padding = padding
        self.chunk_size = chunk_size
        self.prune_tol = prune_tol

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,)."""
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.prune_tol is not None and not (self.equivariant and 0 < self.prune_tol < 1):
            raise ValueError(f"prune_tol must be in (0, 1) and needs equivariant=True, got "
                             f"prune_tol={self.prune_tol!r}, equivariant={self.equivariant!r}")
        return super().fit(X, y)

    def patch_size_at(self, sigma):
        """The patch side used at noise level ``sigma`` (after clipping to the image)."""
        self._check_fitted()
        _, h, w = self.image_shape_
        limit = 2 * (min(h, w) if self.padding == "circular" else max(h, w)) - 1
        return _check_size(value_at(self.patch_size, sigma), sigma, True, limit)

    def _denoise(self, x, sigma, y):
        data = self._fitted_on("data_", x)
        out = torch.empty_like(x)
        for rows, level, lo, hi in self._groups(sigma, y):
            size = self.patch_size_at(level)
            args = (x[rows], level, data[lo:hi], size)
            if not self.equivariant:
                out[rows] = local_score_posterior_mean(*args, padding=self.padding, chunk_size=self.chunk_size)
                continue
            indexes = None
            if self.prune_tol is not None:  # built once per patch size and class, then cached
                indexes = self._derived(("patch_index", size, self.padding, lo, hi), x, lambda: [
                    build_patch_index(data[lo:hi], size, self.padding, pos.to(x.device))
                    for pos in equivariant_position_sets(*x.shape[2:], size, self.padding)])
            out[rows] = equivariant_local_score_posterior_mean(
                *args, padding=self.padding, chunk_size=self.chunk_size, prune_tol=self.prune_tol, indexes=indexes)
        return out


class PatchCompositeDenoiser(TrainingSetMixin, BaseEstimator):
    """Niedoba et al.'s PSPC-Square patch composite (arXiv 2411.19339).

    Parameters
    ----------
    patch_size : int or schedule, default 8
        Crop side s (clipped to ``min(H, W)``), or a function / Table of sigma giving it.
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : as in :class:`LocalScoreDenoiser`
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    def __init__(self, patch_size=8, chunk_size=None):
        self.patch_size = patch_size
        self.chunk_size = chunk_size

    def patch_size_at(self, sigma):
        """The crop side used at noise level ``sigma`` (after clipping to the image)."""
        self._check_fitted()
        _, h, w = self.image_shape_
        return _check_size(value_at(self.patch_size, sigma), sigma, False, min(h, w))

    def _denoise(self, x, sigma, y):
        data = self._fitted_on("data_", x)
        out = torch.empty_like(x)
        for rows, level, lo, hi in self._groups(sigma, y):
            out[rows] = patch_composite_posterior_mean(
                x[rows], level, data[lo:hi], self.patch_size_at(level), chunk_size=self.chunk_size)
        return out
