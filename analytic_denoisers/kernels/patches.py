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

All softmaxes are exact (streaming log-sum-exp over blocks of candidates; results do not depend
on the chunk size beyond rounding). LS and PSPC cost O(M H W log P) per query: the window
distances are window sums of ``(x - x_i)^2`` in the candidates-last layout of
:mod:`~.windows` (float32, recomputed in float64 for the few pairs where a bound on the logits'
rounding asks for it), and the PSPC crop weights are summed over the crops covering each pixel by
the same window sums. ELS and
bbELS have two exact paths (``method``): ``"shifts"`` is LS over every shift of every training
image (the window of ``x_i`` at ``p + s`` is the window at ``p`` of ``x_i`` shifted by ``s``):
``(H W)^2`` window distances per query and image for ELS, whatever ``P``; ``"products"`` compares
the patches in matrix products, about ``2 M (H W)^2 C P^2`` flops per query, cheaper for small
``P`` (and for bbELS, whose border sets are small). ``"auto"`` takes the cheaper by a cost
model measured on this machine (see the benchmarks).
"""


import torch
import torch.nn.functional as F

from ..core import distributed
from ..core.batching import per_level
from ..core.validation import Interval, Options, as_images, check_data, check_scalar, value_at
from .patch_index import build_patch_index, logit_dtype, patches_of, pruned_patch_softmax
from .softmax import StreamingSoftmax, floored_weights, log_weight_floor, resolve_chunk
from .windows import (WHOLE_BLOCK, Precision, WindowDistances, Workspace, box_sums, candidates_last, candidates_per_block,
                      clipped_window_sums, wide, zero_pad,
                      query_blocks, window_softmax)

PADDINGS = ("zeros", "circular")
ELS_METHODS = ("auto", "shifts", "products")


def _check_inputs(x, data, padding="zeros"):
    """Validated queries (N, C, H, W), training images like them (none at all only for a rank's
    shard in a sharded call), and a known padding."""
    x = as_images(x)
    check_data(data, x, allow_empty=distributed.active() is not None)
    check_scalar(padding, "padding", Options(*PADDINGS))
    return x


def size_at(patch_size, sigma, odd):
    """A patch size (a number or a schedule of sigma) at one noise level, validated (odd if asked)."""
    return check_scalar(value_at(patch_size, sigma), f"patch_size at sigma = {sigma:g}", Interval(int, 1, odd=odd))


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


def _image_blocks(data, per_query, chunk_size):
    """The training images as candidate blocks for :func:`~.windows.window_softmax`."""
    def blocks(queries, workspace):
        step = candidates_per_block(queries, per_query, chunk_size)
        for start in range(0, len(data), step):
            yield candidates_last(data[start:start + step], workspace)

    return blocks


def _local_score(x, sigma, data, patch_size, padding, chunk_size):
    """The LS machine at one noise level ``sigma`` (float)."""
    h, w = x.shape[2:]
    blocks = _image_blocks(data, (h + patch_size - 1) * (w + patch_size - 1), chunk_size)
    return window_softmax(x, sigma, blocks, patch_size, padding)


def _border_classes(n, half):
    """Position class along one axis for bbELS: ``r`` near the start, ``r - n`` near the end, or
    ``n`` (a shared "interior" class) where a window of half-width ``half`` stays inside."""
    r = torch.arange(n)
    return torch.where(r < half, r, torch.where(r >= n - half, r - n, torch.full_like(r, n)))


def _shift_reach(h, w, patch_size):
    """bbELS: the largest shift along each axis that keeps a pixel in its position set (the
    interior's extent minus one; 0 when the interior is empty)."""
    return tuple(max(n - 2 * (patch_size // 2), 1) - 1 for n in (h, w))


def shift_count(h, w, patch_size, padding):
    """Shifts the ``"shifts"`` path of ELS (all ``H W``) or bbELS (those within the interior's extent) computes."""
    if padding == "circular":
        return h * w
    reach = _shift_reach(h, w, patch_size)
    return (2 * reach[0] + 1) * (2 * reach[1] + 1)


# The cost model of method="auto", measured on this machine (2 cores; benchmarks/bench_patches.py):
# nanoseconds per window distance (query pixel, candidate pair) of each path, plus the matrix
# products' flops per value of a patch and their overhead per position set and chunk of images
SHIFT_PAIR_NS, PRODUCT_PAIR_NS, PRODUCT_VALUE_NS, PRODUCT_SET_NS = 4.0, 1.3, 0.011, 1e4


def els_method(n, m, shape, patch_size, padding, chunk_size=None):
    """The ELS / bbELS path ``method="auto"`` takes: ``"shifts"`` or ``"products"``, whichever the
    cost model (:data:`SHIFT_PAIR_NS` and the others) says is faster for ``n`` queries of
    ``shape`` (C, H, W) against ``m`` training images.

    Per query and training image, ``"shifts"`` computes ``H W`` window distances per shift (all
    ``H W`` circular shifts for ELS; for bbELS the shifts within the interior's extent, which
    fall as ``P`` grows); ``"products"`` one product of ``C P^2 + C + 2`` values per pair of
    patches in the same position set.
    """
    c, h, w = shape
    sets = equivariant_position_sets(h, w, patch_size, padding)
    shifts = shift_count(h, w, patch_size, padding)
    chunks = -(-m // resolve_chunk(chunk_size, max(len(s) for s in sets) * n * max(len(s) for s in sets), 2**22))
    by_shifts = n * m * h * w * shifts * SHIFT_PAIR_NS
    by_products = (n * m * sum(len(s) ** 2 for s in sets) * (PRODUCT_PAIR_NS + PRODUCT_VALUE_NS * (c * patch_size**2 + c + 2))
                   + chunks * len(sets) * PRODUCT_SET_NS)
    return "shifts" if by_shifts < by_products else "products"


def _shift_blocks(data, h, w, patch_size, padding, chunk_size):
    """Every training image at every shift as candidate blocks for :func:`~.windows.window_softmax`.

    The window of ``x_i`` at ``p + s`` is the window at ``p`` of ``x_i`` shifted by ``s``, so ELS
    is LS over the shifted images: circular shifts with circular padding (all ``H W`` shifts),
    and for bbELS zero-filled shifts with a mask of the pairs ``(p, p + s)`` in the same position
    set (:func:`equivariant_position_sets`): shifts within the interior's extent only, so their
    number falls as ``P`` grows. A block holds whole rows of shifts ``(a, b)`` of a chunk of
    images; the rows start at ``a = 0``, so every pixel has the shift 0 in the first block.
    """
    if padding == "circular":
        rows, cols, reach, valid = list(range(h)), w, (0, 0), None
        segments = [(0, h)]  # runs of consecutive shifts a, as positions in `rows`
    else:
        classes = [_border_classes(n, patch_size // 2) for n in (h, w)]
        reach = _shift_reach(h, w, patch_size)

        def same_class(k, n, a):  # (n,) bool: p + a is inside and in p's class
            p = torch.arange(n)
            return (p + a >= 0) & (p + a < n) & (k == k[(p + a).clamp(0, n - 1)])

        rows, cols = list(range(reach[0] + 1)) + list(range(-reach[0], 0)), 2 * reach[1] + 1
        segments = [(0, reach[0] + 1), (reach[0] + 1, len(rows))]
        by_row = torch.stack([same_class(classes[0], h, a) for a in rows], 1)  # (H, rows)
        by_col = torch.stack([same_class(classes[1], w, b) for b in range(-reach[1], reach[1] + 1)], 1)  # (W, cols)
        valid = by_row[:, None, :, None] & by_col[None, :, None, :]  # (H, W, rows, cols)

    def blocks(queries, workspace):
        per_block = candidates_per_block(queries, (h + patch_size - 1) * (w + patch_size - 1))
        images = chunk_size or max(1, min(len(data), per_block // (len(rows) * cols)))
        group = max(1, per_block // (images * cols))  # rows of shifts per block
        runs = [(j, min(group, end - j)) for begin, end in segments for j in range(begin, end, group)]
        for start in range(0, len(data), images):
            chunk = candidates_last(data[start:start + images])  # (C, H, W, k)
            k = chunk.shape[-1]
            if padding == "circular":
                source = torch.cat([chunk, chunk], 1)
                source = torch.cat([source, source], 2)
            else:
                source = F.pad(chunk, (0, 0, reach[1], reach[1], reach[0], reach[0]))
            stride = source.stride()
            for j, n_rows in runs:
                # (C, H, W, rows, cols, k) view: entry [.., p_r, p_c, a, b, i] = source[.., p_r + a, p_c + b, i]
                view = source[:, rows[j] + reach[0]:, :].as_strided(
                    (source.shape[0], h, w, n_rows, cols, k),
                    (stride[0], stride[1], stride[2], stride[1], stride[2], stride[3]))
                shape = (source.shape[0], h, w, n_rows * cols * k)
                block = view.reshape(shape) if workspace is None else \
                    workspace("shifted", shape, chunk).view(view.shape).copy_(view).view(shape)
                if valid is None:
                    yield block
                else:
                    yield block, valid[:, :, j:j + n_rows, :, None].expand(h, w, n_rows, cols, k).reshape(h, w, -1)

    return blocks


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
                                           chunk_size=None, prune_tol=None, indexes=None, stats=None,
                                           method="auto"):
    """Kamb & Ganguli's ELS (circular padding) or bbELS (zero padding) machine.

    Exact (within ``2 prune_tol max|x_i|`` with ``prune_tol``): every query patch is compared
    with every training patch of its position set (see :func:`equivariant_position_sets`), in
    one of two ways (``method``):

    * ``"shifts"``: LS over every shift of every training image (:mod:`~.windows`): window
      sums of ``(x - shifted x_i)^2``, ``H W`` per shift, at a cost that does not depend on
      ``P`` beyond ``log P`` additions; float32, with the pairs where a bound on the logits'
      rounding asks for it recomputed in float64.
    * ``"products"``: one matrix product per chunk of training images (logits
      ``(q . k - ||k||^2 / 2) / sigma^2``), about ``2 C P^2`` flops per pair of patches. In
      this expanded form float32 rounding grows like ``|q| |k| / sigma^2``; where it could
      exceed 1e-4 in a logit (small sigma) the products are done in float64
      (:func:`~.patch_index.logit_dtype`).
    * ``"auto"`` (default): the cheaper by :func:`els_method`'s cost model. On this machine the
      products win for ELS up to ``P`` of about 17 (matrix products run at 100 Gflop/s) and for
      bbELS up to about 21; the shifts above (bbELS at ``P = 27`` on 28 x 28: 20x faster).

    Both are reduced by a streaming log-sum-exp per query pixel.

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
    method : "auto", "shifts" or "products" (without ``prune_tol``; same result up to rounding)

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    x = _check_inputs(x, data, padding)
    if prune_tol is not None:
        check_scalar(prune_tol, "prune_tol", Interval(float, 0, 1, closed="neither"))
    check_scalar(method, "method", Options(*ELS_METHODS))
    # work space per query once the data chunks are one image: the logits of its h w patch
    # positions against one image's h w patches, in float64 at worst (logit_dtype)
    h, w = x.shape[2:]
    return per_level(x, sigma, lambda x, level: _equivariant_local_score(
        x, level, data, size_at(patch_size, level, odd=True), padding, chunk_size, prune_tol, indexes, stats,
        method),
        per_query_bytes=(h * w) ** 2 * 8)


def _equivariant_local_score(x, sigma, data, patch_size, padding, chunk_size, prune_tol, indexes, stats, method):
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
    if method == "auto":  # the whole training set's size: every rank of a sharded call takes the same path
        method = els_method(n, distributed.total_rows(len(data)), x.shape[1:], patch_size, padding, chunk_size)
    if method == "shifts":
        return window_softmax(x, sigma, _shift_blocks(data, h, w, patch_size, padding, chunk_size), patch_size,
                              padding)
    key_norm = float(data.abs().max()) * queries.shape[2] ** 0.5 if len(data) else 0.0  # bounds every |k|
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
    s, scale = patch_size, -0.5 / sigma**2
    grad = torch.is_grad_enabled() and x.requires_grad
    step = query_blocks(n, h * w)
    parts = [WindowDistances(x[start:start + step], s, 0, "zeros") for start in range(0, n, step)]
    blocks = _image_blocks(data, h * w, chunk_size)
    # float32 queries: float32 distances, with exact logits where their rounding could matter
    # (windows' docstring); float64 and autograd: float64
    precisions = [Precision(x) for _ in parts]
    # pass 1: the log-normaliser of every crop
    accs = [StreamingSoftmax((len(part.x), h - s + 1, w - s + 1, 1), torch.float64, x.device, layout="weights",
                             weight_dtype=x.dtype) for part in parts]
    for cand in blocks(step, None if grad else Workspace()):
        for part, acc, precision in zip(parts, accs, precisions):
            distances, block_max, new_max, refined = precision.block(
                part, acc, cand, lambda dtype, part=part: part(cand, dtype), scale)

            def sums(weights):
                if refined is None:
                    return weights.sum(-1, keepdim=True)
                return refined.put_sums(refined.weights(new_max, acc.floor, x.dtype), weights.sum(-1, keepdim=True))

            acc.add(distances, 3, sums, scale=scale, block_max=block_max)
    log_norms = [acc.log_normaliser() for acc in accs]  # merges the shards' maxima too
    floor = log_weight_floor(x.dtype)
    num = [x.new_zeros(len(part.x), h, w, c, dtype=torch.float64) for part in parts]
    cover = [x.new_zeros(len(part.x), h, w, 1, dtype=torch.float64) for part in parts]
    pass_two = [Precision(x) for _ in parts]
    for cand in blocks(step, None if grad else Workspace()):  # pass 2: crop weights per pixel
        values = cand.to(x.dtype)
        for i, part in enumerate(parts):
            distances = part(cand, pass_two[i].dtype)
            refined = pass_two[i].refine(part, cand, distances, accs[i].run_max, scale)
            if refined is WHOLE_BLOCK:
                distances = distances if distances.dtype == torch.float64 else part(cand, torch.float64)
                refined = None
            weights = floored_weights(distances, log_norms[i], floor, x.dtype, not grad, scale)  # per crop
            if refined is not None:
                weights = refined.put_weights(weights, refined.weights(log_norms[i], floor, x.dtype))
            per_pixel = (clipped_window_sums(weights, s, s - 1, (1, 2)) if wide(h - s + 1, w - s + 1, s - 1)
                         else box_sums(zero_pad(weights, s - 1), s, (1, 2))).to(x.dtype)  # summed over covering crops
            num[i] = num[i] + torch.stack([torch.linalg.vecdot(per_pixel, values[j]) for j in range(c)], -1)
            cover[i] = cover[i] + per_pixel.sum(-1, keepdim=True)
    num, cover = distributed.sum_over_shards(torch.cat(num), torch.cat(cover))  # every rank's images
    return (num / cover).to(x.dtype).permute(0, 3, 1, 2)
