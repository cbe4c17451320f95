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

import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from .base import DenoiserMixin
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
    Tensor of shape (..., H + 2 pad - size + 1, W + 2 pad - size + 1), in the dtype of ``t``.
    Computed from float64 prefix sums: the differences of prefix sums lose nothing to
    cancellation at the distances that matter for small sigma.
    """
    t = t.double()
    if pad:
        t = F.pad(t, (pad,) * 4, mode="circular" if padding == "circular" else "constant")
    rows = F.pad(t.cumsum(-2), (0, 0, 1, 0))
    rows = rows[..., size:, :] - rows[..., :-size, :]
    cols = F.pad(rows.cumsum(-1), (1, 0))
    return cols[..., size:] - cols[..., :-size]


def _window_logits(x, images, size, pad, padding, sigma):
    """``-||x_w - x_i,w||^2 / (2 sigma^2)`` for every window w: shape (N, c, H', W').

    x : (N, C, H, W); images : (c, C, H, W).
    """
    sq = (x[:, None] - images[None]).square().sum(2)  # (N, c, H, W)
    return (window_sums(sq, size, pad, padding) * (-0.5 / sigma**2)).to(x.dtype)


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
    run_max = x.new_full((n, 1, h, w), -torch.inf)
    num, den = torch.zeros_like(x), x.new_zeros(n, 1, h, w)
    for start in range(0, len(data), chunk):
        images = data[start:start + chunk]
        logits = _window_logits(x, images, size, pad, padding, sigma)  # (N, c, H, W)
        new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
        weights = torch.exp(torch.clamp(logits - new_max, min=floor))
        rescale = torch.exp(run_max - new_max)
        num = num * rescale + torch.einsum("nihw,ichw->nchw", weights, images)
        den = den * rescale + weights.sum(1, keepdim=True)
        run_max = new_max
    return num / den


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
                                           chunk_size=None):
    """Kamb & Ganguli's ELS (circular padding) or bbELS (zero padding) machine, exact.

    Every query patch is compared with every training patch of its position set (see
    :func:`equivariant_position_sets`) through one matrix product per chunk of training images
    (logits ``(q . k - ||k||^2 / 2) / sigma^2`` after centring on the mean patch), reduced by a
    streaming log-sum-exp per query patch.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float, one noise level for the batch
    data : Tensor of shape (M, C, H, W), dtype and device of ``x``
    patch_size : odd int P, at most ``2 min(H, W) - 1`` with circular padding
    padding : "circular" (ELS) or "zeros" (bbELS)
    chunk_size : int, optional, training images per chunk (does not change the result)

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    n, c, h, w = x.shape
    sets = [s.to(x.device) for s in equivariant_position_sets(h, w, patch_size, padding)]
    queries = _patches(x, patch_size, padding)  # (N, HW, D)
    center = _patches(data.mean(0, keepdim=True), patch_size, padding)[0].mean(0)  # (D,)
    inv_var = 1 / sigma**2
    accs, aug_qs = [], []
    for pos in sets:
        q = queries[:, pos].reshape(-1, queries.shape[2]) - center  # (N * |set|, D)
        ones = q.new_ones(len(q), 1)
        aug_qs.append(torch.cat([q * inv_var, -0.5 * inv_var * ones], 1))  # pairs with [k, |k|^2]
        accs.append(StreamingSoftmax(len(q), c + 1, q))
    per_image = max(len(pos) for pos in sets) * max(len(a) for a in aug_qs)
    chunk = resolve_chunk(chunk_size, 1) if chunk_size is not None else max(1, 2**22 // per_image)
    for start in range(0, len(data), chunk):
        images = data[start:start + chunk]
        keys = _patches(images, patch_size, padding) - center  # (c, HW, D)
        keys = torch.cat([keys, keys.square().sum(2, keepdim=True)], 2)  # (c, HW, D + 1)
        values = F.pad(images.flatten(2).transpose(1, 2), (0, 1), value=1)  # (c, HW, C + 1)
        for pos, aug_q, acc in zip(sets, aug_qs, accs):
            acc.add(aug_q @ keys[:, pos].reshape(-1, keys.shape[2]).T, values[:, pos].reshape(-1, c + 1))
    out = torch.empty(n, h * w, c, dtype=x.dtype, device=x.device)
    for pos, acc in zip(sets, accs):
        out[:, pos] = acc.result().reshape(n, len(pos), c)
    return out.transpose(1, 2).reshape(x.shape)


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
    run_max = x.new_full((n, 1, h - s + 1, w - s + 1), -torch.inf)
    den = torch.zeros_like(run_max)
    for start in range(0, len(data), chunk):  # pass 1: log-normaliser of every crop
        logits = _window_logits(x, data[start:start + chunk], s, 0, "zeros", sigma)
        new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
        den = den * torch.exp(run_max - new_max) + torch.exp(torch.clamp(logits - new_max, min=floor)).sum(1, keepdim=True)
        run_max = new_max
    log_norm = run_max + den.log()  # (N, 1, H - s + 1, W - s + 1)
    num, cover = torch.zeros_like(x), x.new_zeros(n, 1, h, w)
    for start in range(0, len(data), chunk):  # pass 2: crop weights summed over covering crops
        images = data[start:start + chunk]
        logits = _window_logits(x, images, s, 0, "zeros", sigma)
        weights = torch.exp(torch.clamp(logits - log_norm, min=floor))  # normalised per crop
        per_pixel = window_sums(weights, s, s - 1).to(x.dtype)  # (N, c, H, W)
        num = num + torch.einsum("nihw,ichw->nchw", per_pixel, images)
        cover = cover + per_pixel.sum(1, keepdim=True)
    return num / cover


def _check_size(size, sigma, odd, limit, name):
    if isinstance(size, bool) or int(size) != size or size < 1 or (odd and size % 2 == 0):
        kind = "a positive odd integer" if odd else "a positive integer"
        raise ValueError(f"{name} must be {kind}, got {size!r} at sigma = {sigma:g}")
    return min(int(size), limit)


class LocalScoreDenoiser(DenoiserMixin, BaseEstimator):
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

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : the training images, sorted by class when
        fitted with labels ``y`` (then ``denoise`` needs ``y`` and uses only that class)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    _fitted_state = DenoiserMixin._fitted_state + ("data_", "labels_", "classes_", "class_offsets_")

    def __init__(self, patch_size=5, equivariant=False, padding="zeros", chunk_size=None):
        self.patch_size = patch_size
        self.equivariant = equivariant
        self.padding = padding
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,)."""
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        self._store_training_set(X, y)
        return self

    def patch_size_at(self, sigma):
        """The patch side used at noise level ``sigma`` (after clipping to the image)."""
        self._check_fitted()
        _, h, w = self.image_shape_
        limit = 2 * (min(h, w) if self.padding == "circular" else max(h, w)) - 1
        return _check_size(value_at(self.patch_size, sigma), sigma, True, limit, "patch_size")

    def _denoise(self, x, sigma, y):
        data = self._fitted_on("data_", x)
        out = torch.empty_like(x)
        for rows, level, lo, hi in self._groups(sigma, y):
            args = (x[rows], level, data[lo:hi], self.patch_size_at(level))
            if self.equivariant:
                out[rows] = equivariant_local_score_posterior_mean(
                    *args, padding=self.padding, chunk_size=self.chunk_size)
            else:
                out[rows] = local_score_posterior_mean(*args, padding=self.padding, chunk_size=self.chunk_size)
        return out


class PatchCompositeDenoiser(DenoiserMixin, BaseEstimator):
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

    _fitted_state = DenoiserMixin._fitted_state + ("data_", "labels_", "classes_", "class_offsets_")

    def __init__(self, patch_size=8, chunk_size=None):
        self.patch_size = patch_size
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,)."""
        self._store_training_set(X, y)
        return self

    def patch_size_at(self, sigma):
        """The crop side used at noise level ``sigma`` (after clipping to the image)."""
        self._check_fitted()
        _, h, w = self.image_shape_
        return _check_size(value_at(self.patch_size, sigma), sigma, False, min(h, w), "patch_size")

    def _denoise(self, x, sigma, y):
        data = self._fitted_on("data_", x)
        out = torch.empty_like(x)
        for rows, level, lo, hi in self._groups(sigma, y):
            out[rows] = patch_composite_posterior_mean(
                x[rows], level, data[lo:hi], self.patch_size_at(level), chunk_size=self.chunk_size)
        return out
