"""PSPC-Flex kernel: patches of any shape, cut from a sensitivity map, and their posterior composite.

Niedoba, Zwartsenberg, Murphy and Wood, "Towards a mechanistic explanation of diffusion model
generalization" (arXiv 2411.19339, ICML 2025). PSPC-Square (:mod:`.patches`) averages the
posterior means of square crops; PSPC-Flex gives every output pixel m its own patch ``P(m)``,
shaped like the region the target network's output pixel m is sensitive to.

**Patches.** A sensitivity map ``S[m, n] >= 0`` (output pixel m, input pixel n) at noise level
sigma is either the network's mean absolute Jacobian ``E_z |dD(z)[m] / dz[n]|`` over noisy
training images ``z = x0 + sigma eps`` (:func:`sensitivity_maps`; the paper's gradient
heatmaps), or, network-free, the fitted Gaussian's Wiener filter ``|W[m, n]|``. ``P(m)`` is the
smallest set of input pixels, taken in decreasing ``S[m, n]`` (ties by index), whose summed
sensitivity reaches a fraction ``lambda`` of row m's total (:func:`mass_masks`); ``lambda = 1``
takes every pixel of nonzero sensitivity (the empirical-optimal denoiser when none is zero).

**Composite.** Each patch gets the posterior mean of the training images' pixels at the same
place (patches are compared only with the same pixels of every training image), and each pixel
averages the patches covering it:

    w_i(m) = softmax_i(-||x_P(m) - x_i,P(m)||^2 / (2 sigma^2)),
    D(x)[n] = 1 / |{m : n in P(m)}| sum_{m : n in P(m)} sum_i w_i(m) x_i[n].

The published code (plai-group/pspc, ``pspc/denoisers.py``, ``PSPCFlexDenoiser`` and
``mask_from_heatmap``) builds the same composite from heatmaps computed beforehand, one per
pixel and step of EDM's 18-step schedule, with a lambda per step. Three differences, all at the
margins: (1) every patch here contains its own pixel (``include_self``), so every pixel is
covered, where the published code would divide 0 by 0 at a pixel in no patch (with the shipped
UNet's maps on Fashion-MNIST, 99.6-100% of the patches hold their pixel anyway at lambda = 0.3
and 0.7, sigma = 0.05 to 20; Wiener patches miss it for 0.3-3% of the pixels and, without it,
leave 2-24 pixels uncovered); (2) its rule
(keep the pixels whose ascending cumulative share is ``>= 1 - lambda``) differs from "the
smallest set reaching lambda" only at exact ties, and at ``lambda = 1`` it keeps pixels of zero
sensitivity too; (3) its heatmaps and masks are over the H x W locations, one mask for every
channel, where here a map and its patches are over the d = C H W values (the same for C = 1;
for colour images a per-location map can be expanded to d x d by repeating it per channel pair).

**Cost.** Patches that coincide are computed once (at ``lambda = 1`` all d are the whole image).
For U distinct patches the logits are one product ``(U, d) @ (d, N c)`` per chunk of c
training images, computed twice (pass 1: each patch's log-normaliser, streamed; pass 2: the
normalised weights), and pass 2 spreads them over the pixels with one ``(d, U)`` product: about
``6 U d N M`` flops in all, three times the dense PCA-locality kernel (Fashion-MNIST, M = 2,000,
U = 784: 0.25 s for 4 queries in float32 on 2 CPU cores). Exact: the result does not depend on
the chunk size (up to rounding), and autograd reaches ``x``.
"""

import torch

from ..core.batching import per_level
from ..core.validation import Interval, as_images, as_level, check_scalar, sigma_grid
from .jacobian import jacobian_rows
from .locality import prepare_transposed
from .softmax import StreamingSoftmax, floored_weights, log_weight_floor, resolve_chunk

MASS = Interval(float, 0, 1, closed="right")  # a patch's share of its row's sensitivity
MIN_CHUNK = 64  # training images per chunk at the least (default chunks)
CHUNK_ELEMENTS = 2**21  # default (pixel or patch, query, image) values in each block of a chunk


def mass_masks(sensitivity, mass, *, include_self=True):
    """Patches ``mask[n, m]``: input pixel n is in the patch of output pixel m.

    The patch of m is the smallest set of input pixels, taken in decreasing ``S[m, n]`` (ties
    broken by the lower index), whose summed ``S`` reaches ``mass`` times row m's total. With
    ``mass = 1`` it is every pixel with ``S[m, n] > 0``; a row of zeros gives an empty patch.

    Parameters
    ----------
    sensitivity : Tensor of shape (d, d), ``S[m, n] >= 0``: how much output pixel m depends on
        input pixel n (a row per output pixel)
    mass : float in (0, 1], the fraction ``lambda`` of each row's sensitivity a patch holds
    include_self : bool, add pixel m to its own patch (so that every pixel is covered)

    Returns
    -------
    Bool tensor of shape (d, d), ``mask[n, m]`` (columns are patches, as in
    :func:`~.locality.locality_masks`), on the device of ``sensitivity``.
    """
    S = _checked_sensitivity(sensitivity)
    mass = check_scalar(mass, "mass", MASS)
    d = S.shape[0]
    if mass == 1:
        keep = S > 0  # (m, n)
    else:
        values, order = torch.sort(S, dim=1, descending=True, stable=True)  # (d, d), ties in index order
        reached = values.cumsum(1)  # (d, d), mass of the first j + 1 pixels
        before = torch.cat([torch.zeros_like(reached[:, :1]), reached[:, :-1]], 1)  # of the first j
        # pixel j joins while the pixels before it hold less than the target
        taken = before < mass * reached[:, -1:]
        keep = torch.zeros_like(taken).scatter_(1, order, taken)  # back to pixel order (m, n)
    if include_self:
        keep = keep | torch.eye(d, dtype=torch.bool, device=S.device)
    return keep.T.contiguous()


def _checked_sensitivity(sensitivity):
    if not (isinstance(sensitivity, torch.Tensor) and sensitivity.dim() == 2
            and sensitivity.shape[0] == sensitivity.shape[1] and sensitivity.is_floating_point()):
        got = (f"{sensitivity.dtype} of shape {tuple(sensitivity.shape)}" if isinstance(sensitivity, torch.Tensor)
               else type(sensitivity).__name__)
        raise ValueError(f"sensitivity must be a float tensor of shape (d, d), got {got}")
    if not bool(torch.isfinite(sensitivity).all()) or bool((sensitivity < 0).any()):
        raise ValueError("sensitivity must be finite and non-negative (e.g. absolute Jacobian entries)")
    return sensitivity


def sensitivity_maps(denoiser, x0, sigmas, seed=0, pixels=None):
    """Mean absolute Jacobian rows of a denoiser at noisy images: Niedoba et al.'s heatmaps.

    ``S[l, m, n] = mean_i |dD(z_i, sigma_l)[m] / dz_i[n]|`` with ``z_i = x0_i + sigma_l eps_i``,
    one seeded ``eps_i`` per image shared by every level. Each level costs one forward pass and
    one backward pass per pixel on the N images (:func:`~.jacobian.jacobian_rows`): for all d
    pixels of the shipped 28 x 28 UNet and 16 images, about 20 s on 2 CPU cores.

    Parameters
    ----------
    denoiser : object with ``denoise(x, sigma)``, or a callable ``f(x, sigma)``, that lets
        autograd reach ``x`` (e.g. a :class:`~analytic_denoisers.UNetDenoiser`)
    x0 : Tensor of shape (N, C, H, W), clean images (e.g. a few training images)
    sigmas : sequence of positive, distinct floats, the levels L
    seed : int, seeds ``eps``
    pixels : sequence of flat output indices (default: all d)

    Returns
    -------
    Float64 tensor of shape (L, len(pixels), d) (``(L, d, d)`` by default), on the device of ``x0``.
    """
    x0 = as_images(x0, name="x0")
    levels = sigma_grid(sigmas)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    eps = eps.to(device=x0.device, dtype=x0.dtype)
    maps = [jacobian_rows(denoiser, x0 + level * eps, level, pixels).detach().abs().double().mean(0)
            for level in levels]  # (P, d) each
    return torch.stack(maps)


def patch_flex_posterior_mean(x, sigma, data, mask, *, chunk_size=None, prepared=None):
    """Niedoba et al.'s PSPC-Flex: coverage-normalised average of flexible-patch posterior means.

    ``D(x)[n] = mean over the patches P(m) containing n of sum_i softmax_i(-||x_P(m) -
    x_i,P(m)||^2 / (2 sigma^2)) x_i[n]`` (see the module docstring), exact.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, d) or (M, C, H, W), in the dtype and on the device of ``x``
    mask : bool Tensor of shape (d, d), ``mask[n, m]`` = n is in the patch of m (as from
        :func:`mass_masks`), or a function of sigma giving it; every pixel must be in some patch
    chunk_size : int, optional, training images per chunk (does not change the result)
    prepared : tuple, optional, :func:`~.locality.prepare_transposed` of ``data`` (then ``data``
        is unused)

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    x = as_images(x)
    d = x[0].numel()
    if prepared is None:
        if not (isinstance(data, torch.Tensor) and data.dim() >= 2 and len(data) > 0):
            raise ValueError(f"data must be a non-empty tensor of shape (M, {d}) or (M, C, H, W), "
                             f"got {type(data).__name__ if not isinstance(data, torch.Tensor) else tuple(data.shape)}")
        prepared = prepare_transposed(data)
    data_t = prepared[0]  # (d, M)
    if data_t.shape[0] != d or data_t.dtype != x.dtype or data_t.device != x.device:
        raise ValueError(f"training data must have d = {d} features, dtype {x.dtype} and device {x.device} like x; "
                         f"got d = {data_t.shape[0]}, {data_t.dtype}, {data_t.device}")
    # work space per query once the data chunks are at their smallest: about 17 (d, chunk) blocks at
    # the peak (the terms, logits and weights of up to d patches and their spread over the pixels;
    # measured: 286 MiB for 83 queries at d = 784 and chunks of 64), 24 with margin
    return per_level(x, sigma, lambda x, level: _patch_flex(
        x, level, prepared, _checked_patches(mask(level) if callable(mask) else mask, d, level), chunk_size),
        per_query_bytes=24 * d * MIN_CHUNK * x.element_size())


def _checked_patches(mask, d, sigma):
    if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and tuple(mask.shape) == (d, d)):
        got = f"{mask.dtype} of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor of shape ({d}, {d}), got {got} at sigma = {sigma:g}")
    if not bool(mask.any(1).all()):
        raise ValueError(f"every pixel must lie in some patch (mask.any(1)); {int((~mask.any(1)).sum())} pixels "
                         f"lie in none at sigma = {sigma:g}")
    return mask


def _patch_flex(x, sigma, prepared, mask, chunk_size):
    """PSPC-Flex at one noise level ``sigma`` (float) with its patches ``mask`` (d, d)."""
    n = x.shape[0]
    data_t, center = prepared  # (d, M), (d,)
    d, total = data_t.shape
    patches, counts = torch.unique(mask.to(x.device).T, dim=0, return_counts=True)  # (U, d), (U,)
    u = len(patches)
    select = patches.to(x.dtype)  # (U, d): sums over each distinct patch
    spread = (patches.T * counts).to(x.dtype)  # (d, U): how many patches of each kind cover pixel n
    chunk = min(resolve_chunk(chunk_size, n * max(d, u), CHUNK_ELEMENTS, minimum=MIN_CHUNK), total)
    scale = -1 / (2 * as_level(sigma) ** 2)
    twice_q = 2 * (x.reshape(n, -1) - center).T[:, :, None]  # (d, N, 1), centred queries

    def logits_of(values):  # (d, c) -> (U, N, c)
        # (x_i[n] - q[n])^2 less q[n]^2, which is the same for every image and cancels in each
        # patch's softmax (both passes drop it): smaller numbers, less float32 rounding
        terms = (values[:, None, :] * (values[:, None, :] - twice_q)).reshape(d, -1)  # (d, N c)
        return (select @ terms).mul(scale).reshape(u, n, -1)

    # pass 1: the log-normaliser of every distinct patch
    acc = StreamingSoftmax((u, n, 1), x.dtype, x.device, layout="weights")
    for start in range(0, total, chunk):
        acc.add(logits_of(data_t[:, start:start + chunk]), 2, lambda w: w.sum(2, keepdim=True))
    # in the logits' dtype (float64 temporaries of (U, N, c) would double the peak; measured: the
    # same float32 error against float64, 2e-5 at sigma = 0.002 to 5e-7 at sigma = 20)
    log_norm = acc.log_normaliser().to(x.dtype)  # (U, N, 1)
    # pass 2: normalised patch weights, summed over the patches covering each pixel
    floor = log_weight_floor(x.dtype)
    in_place = not (torch.is_grad_enabled() and x.requires_grad)
    num = cover = 0
    for start in range(0, total, chunk):
        values = data_t[:, start:start + chunk]  # (d, c)
        weights = floored_weights(logits_of(values), log_norm, floor, x.dtype, in_place)  # (U, N, c)
        per_pixel = (spread @ weights.reshape(u, -1)).reshape(d, n, -1)  # (d, N, c)
        num = num + torch.bmm(per_pixel, values[:, :, None]).double()  # (d, N, 1)
        cover = cover + per_pixel.sum(2, keepdim=True).double()
    return (center + (num / cover).squeeze(2).T.to(x.dtype)).reshape(x.shape)
