"""Patch kernels: Kamb & Ganguli's local score machines and Niedoba et al.'s patch composites.

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

import torch
import torch.nn.functional as F

from ..core.batching import per_level
from ..core.validation import Interval, Options, as_images, check_data, check_scalar, value_at
from .patch_index import build_patch_index, logit_dtype, patches_of, pruned_patch_softmax
from .softmax import StreamingSoftmax, floored_weights, log_weight_floor, resolve_chunk

PADDINGS = ("zeros", "circular")
BOX_ELEMENTS = 2**20  # default (query, image, pixel) values per chunk of the window kernels


def _check_inputs(x, data, padding="zeros"):
    """Validated queries (N, C, H, W), training images like them, and a known padding."""
    x = as_images(x)
    check_data(data, x)
    check_scalar(padding, "padding", Options(*PADDINGS))
    return x


def size_at(patch_size, sigma, odd):
    """A patch size (a number or a schedule of sigma) at one noise level, validated (odd if asked)."""
    return check_scalar(value_at(patch_size, sigma), f"patch_size at sigma = {sigma:g}", Interval(int, 1, odd=odd))


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
    # zeros add nothing: clip each window to the image instead of padding (O(H W) for any size).
    # The window of output j spans prefix[clamp(j - pad)] to prefix[clamp(j - pad + size)]: with
    # the prefix sums extended by `pad` copies of their first and last entries both ends are
    # slices (a gather with index_select cost 25x a slice copy of the same data on this torch)
    for dim in (-2, -1):
        n = t.shape[dim]
        if size > n + 2 * pad:
            raise ValueError(f"window of size {size} is larger than the padded image ({n} + 2 * {pad})")
        m = n + 2 * pad - size + 1  # windows along dim
        shape = list(t.shape)
        shape[dim] = n + 2 * pad + 1
        extended = t.new_empty(shape)  # pad + 1 zeros, the n prefix sums, pad copies of the total
        extended.narrow(dim, 0, pad + 1).zero_()
        if torch.is_grad_enabled() and t.requires_grad:  # out= does not record a gradient
            extended.narrow(dim, pad + 1, n).copy_(t.cumsum(dim))
        else:
            torch.cumsum(t, dim, out=extended.narrow(dim, pad + 1, n))
        extended.narrow(dim, n + pad + 1, pad).copy_(extended.narrow(dim, n + pad, 1).expand(
            *shape[:len(shape) + dim], pad, *shape[len(shape) + dim + 1:]))
        t = extended.narrow(dim, size, m) - extended.narrow(dim, 0, m)
    return t


def pixel_weighted_sum(weights, images):
    """``sum_i weights[n, i, h, w] images[i, :, h, w]``: (N, c, H, W) and (c, C, H, W) -> (N, C, H, W).

    One elementwise product and sum per channel. (``einsum("nihw,ichw->nchw")`` becomes H W small
    batched products here, each with its own copies: 47,000 copies per LS call on 28 x 28 images.)
    """
    return torch.stack([(weights * images[:, k]).sum(1) for k in range(images.shape[1])], 1)


def _window_logits(x, images, size, pad, padding, sigma):
    """``-||x_w - x_i,w||^2 / (2 sigma^2)`` for every window w: float64, shape (N, c, H', W').

    x : (N, C, H, W); images : (c, C, H, W). Kept in float64 until the running maximum is
    subtracted (at sigma = 0.002 a logit of -1e5 has a float32 spacing of 0.008).
    """
    sq = (x[:, None] - images[None]).square().sum(2)  # (N, c, H, W)
    return window_sums(sq, size, pad, padding) * (-0.5 / sigma**2)


def local_score_posterior_mean(x, sigma, data, patch_size, *, padding="zeros", chunk_size=None):
    """Kamb & Ganguli's LS machine: per pixel, a softmax over the co-located training patches.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, C, H, W), dtype and device of ``x``
    patch_size : odd int P, or a function of sigma giving one; ``2 max(H, W) - 1`` or more
        compares whole images (the empirical-optimal denoiser, with zero padding)
    padding : "zeros" (the paper's LS) or "circular"
    chunk_size : int, optional, training images per chunk (does not change the result)

    Returns
    -------
    Tensor of the shape of ``x``: ``sum_i softmax_i(-||x_P(p) - x_i,P(p)||^2 / 2 sigma^2) x_i[:, p]``.
    """
    x = _check_inputs(x, data, padding)
    return per_level(x, sigma, lambda x, level: _local_score(
        x, level, data, size_at(patch_size, level, odd=True), padding, chunk_size))


def _local_score(x, sigma, data, patch_size, padding, chunk_size):
    """The LS machine at one noise level ``sigma`` (float)."""
    n, c, h, w = x.shape
    size, pad = patch_size, patch_size // 2
    chunk = resolve_chunk(chunk_size, n * h * w, BOX_ELEMENTS)
    # logits in float64, weights in the input's dtype, sums across chunks in float64
    acc = StreamingSoftmax((n, 1, h, w), torch.float64, x.device, layout="pair", weight_dtype=x.dtype)
    for start in range(0, len(data), chunk):
        images = data[start:start + chunk]
        logits = _window_logits(x, images, size, pad, padding, sigma)  # (N, c, H, W)
        acc.add(logits, 1, lambda w: (pixel_weighted_sum(w, images), w.sum(1, keepdim=True)))
    return acc.mean(x.dtype)


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


def equivariant_local_score_posterior_mean(x, sigma, data, patch_size, *, padding="circular",
                                           chunk_size=None, prune_tol=None, indexes=None, stats=None):
    """Kamb & Ganguli's ELS (circular padding) or bbELS (zero padding) machine.

    Exact (within ``2 prune_tol max|x_i|`` with ``prune_tol``). Every query patch is compared
    with every training patch of its position set (see :func:`equivariant_position_sets`)
    through one matrix product per chunk of training images (logits
    ``(q . k - ||k||^2 / 2) / sigma^2``), reduced by a streaming log-sum-exp per query patch.
    In this expanded form float32 rounding grows like
    ``|q| |k| / sigma^2``; where it could exceed 1e-4 in a logit (small sigma) the products are
    done in float64 (:func:`~.patch_index.logit_dtype`).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, C, H, W), dtype and device of ``x``
    patch_size : odd int P, or a function of sigma giving one; at most ``2 min(H, W) - 1`` with
        circular padding
    padding : "circular" (ELS) or "zeros" (bbELS)
    chunk_size : int, optional, training images per chunk (does not change the result)
    prune_tol : float, optional
        If set, skip clusters of training patches that provably hold less than ``prune_tol``
        of each softmax (:func:`pruned_patch_softmax`; error at most ``2 prune_tol max|x_i|``).
    indexes : list of PatchIndex, one per position set, or a function ``patch_size -> list``
        (to reuse indexes across calls), optional; built when needed
    stats : dict, optional; with ``prune_tol``, receives ``computed_fraction`` (of the last
        noise level, with several)

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    x = _check_inputs(x, data, padding)
    if prune_tol is not None:
        check_scalar(prune_tol, "prune_tol", Interval(float, 0, 1, closed="neither"))
    # work space per query once the data chunks are one image: the logits of its h w patch
    # positions against one image's h w patches, in float64 at worst (logit_dtype)
    h, w = x.shape[2:]
    return per_level(x, sigma, lambda x, level: _equivariant_local_score(
        x, level, data, size_at(patch_size, level, odd=True), padding, chunk_size, prune_tol, indexes, stats),
        per_query_bytes=(h * w) ** 2 * 8)


def _equivariant_local_score(x, sigma, data, patch_size, padding, chunk_size, prune_tol, indexes, stats):
    """The ELS / bbELS machine at one noise level ``sigma`` (float)."""
    n, c, h, w = x.shape
    sets = [s.to(x.device) for s in equivariant_position_sets(h, w, patch_size, padding)]
    queries = patches_of(x, patch_size, padding)  # (N, HW, D)
    if prune_tol is not None:
        if indexes is None:
            indexes = [build_patch_index(data, patch_size, padding, pos) for pos in sets]
        elif callable(indexes):
            indexes = indexes(patch_size)
        if len(indexes) != len(sets) or any(index.centroids.shape[1] != queries.shape[2] for index in indexes):
            raise ValueError(f"indexes were built for other patches: need {len(sets)} indexes of "
                             f"{queries.shape[2]}-value patches (patch size {patch_size}, padding {padding!r})")
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
    work = logit_dtype(queries.reshape(-1, queries.shape[2]), key_norm, sigma)
    inv_var = 1 / sigma**2
    accs, aug_qs = [], []
    for pos in sets:
        q = queries[:, pos].reshape(-1, queries.shape[2]).to(work)  # (N * |set|, D)
        ones = q.new_ones(len(q), 1)
        aug_qs.append(torch.cat([q * inv_var, -0.5 * inv_var * ones], 1))  # pairs with [k, |k|^2]
        accs.append(StreamingSoftmax((len(q), 1), work, x.device))
    per_image = max(len(pos) for pos in sets) * max(len(a) for a in aug_qs)
    chunk = resolve_chunk(chunk_size, per_image, 2**22)
    for start in range(0, len(data), chunk):
        images = data[start:start + chunk]
        keys = patches_of(images, patch_size, padding).to(work)  # (c, HW, D)
        keys = torch.cat([keys, keys.square().sum(2, keepdim=True)], 2)  # (c, HW, D + 1)
        values = F.pad(images.flatten(2).transpose(1, 2), (0, 1), value=1).to(work)  # (c, HW, C + 1)
        for pos, aug_q, acc in zip(sets, aug_qs, accs):
            block = values[:, pos].reshape(-1, c + 1)
            acc.add(aug_q @ keys[:, pos].reshape(-1, keys.shape[2]).T, 1, lambda w: w @ block)
    out = torch.empty(n, h * w, c, dtype=x.dtype, device=x.device)
    for pos, acc in zip(sets, accs):
        out[:, pos] = acc.mean(x.dtype).reshape(n, len(pos), c)
    return out.transpose(1, 2).reshape(x.shape)


def patch_composite_posterior_mean(x, sigma, data, patch_size, *, chunk_size=None):
    """Niedoba et al.'s PSPC-Square: coverage-normalised average of crop posterior means, exact.

    Two passes over the training images: the first gets each crop's log-normaliser (streaming
    log-sum-exp), the second sums each image's normalised crop weights over the crops covering
    each pixel (window sums of the weights, zero padded) and accumulates the weighted pixels.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, C, H, W), dtype and device of ``x``
    patch_size : int s, 1 <= s <= min(H, W), or a function of sigma giving one; ``s = H = W`` is
        the empirical-optimal denoiser
    chunk_size : int, optional, training images per chunk (does not change the result)

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    x = _check_inputs(x, data)
    return per_level(x, sigma, lambda x, level: _patch_composite(
        x, level, data, size_at(patch_size, level, odd=False), chunk_size))


def _patch_composite(x, sigma, data, patch_size, chunk_size):
    """PSPC-Square at one noise level ``sigma`` (float)."""
    n, c, h, w = x.shape
    s = patch_size
    chunk = resolve_chunk(chunk_size, n * h * w, BOX_ELEMENTS)
    # pass 1: the log-normaliser of every crop (logits in float64, sums across chunks in float64)
    acc = StreamingSoftmax((n, 1, h - s + 1, w - s + 1), torch.float64, x.device, layout="weights",
                           weight_dtype=x.dtype)
    for start in range(0, len(data), chunk):
        acc.add(_window_logits(x, data[start:start + chunk], s, 0, "zeros", sigma), 1,
                lambda weights: weights.sum(1, keepdim=True))
    log_norm = acc.log_normaliser()  # (N, 1, H - s + 1, W - s + 1), float64
    floor = log_weight_floor(x.dtype)
    num, cover = x.new_zeros(x.shape, dtype=torch.float64), x.new_zeros(n, 1, h, w, dtype=torch.float64)
    for start in range(0, len(data), chunk):  # pass 2: crop weights summed over covering crops
        images = data[start:start + chunk]
        logits = _window_logits(x, images, s, 0, "zeros", sigma)
        weights = floored_weights(logits, log_norm, floor, x.dtype)  # normalised per crop
        per_pixel = window_sums(weights, s, s - 1).to(x.dtype)  # (N, c, H, W)
        num = num + pixel_weighted_sum(per_pixel, images)
        cover = cover + per_pixel.sum(1, keepdim=True)
    return (num / cover).to(x.dtype)
