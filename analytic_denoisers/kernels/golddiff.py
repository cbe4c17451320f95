"""GoldDiff: PCA-locality over a per-query "golden subset" of the training set (approximate).

Shang et al., "Fast and Scalable Analytical Diffusion" (arXiv 2602.16498). The PCA-locality
denoiser (:mod:`.locality`) reads every training image at every call; GoldDiff keeps, per query
and noise level, only a subset found in three stages, then runs the same masked per-pixel softmax
on it:

1. **pre-sample** ``m_t`` images at random (here: the first ``m_t`` of one seeded permutation of
   the training set, so that a query's subset does not depend on its batch),
2. **screen** them by the squared distance between 2-D average-pooled proxies of the query and
   the images, keeping the ``k_max`` nearest,
3. **select** the ``k_t`` nearest of those in full resolution,

with ``nu = sigma / sqrt(1 + sigma^2)`` (the VP noise level ``sqrt(1 - alpha_bar)``) and, as in
the published code, ``m_t = k_max + (N - k_max)(1 - nu)`` (everything at low noise) and
``k_t = k_max - (k_max - k_min)(1 - nu)`` (``k_min`` at low noise, ``k_max`` at high noise).
With ``k_min = k_max = N`` the subset is the whole training set and the result is exact
PCA-locality (up to the summation order).
"""

import math

import torch
import torch.nn.functional as F

from ..core.batching import per_level
from ..core.validation import Interval, as_images, check_scalar
from .locality import checked_mask
from .softmax import StreamingSoftmax, resolve_chunk


def proxy_factor(height, width, proxy_resolution):
    """The average-pooling factor of the proxy: the smallest f dividing both sides with
    ``max(H, W) / f <= proxy_resolution`` (28 x 28 at 16: f = 2, a 14 x 14 proxy, as GoldDiff's
    ``low_res_dim`` rule gives), else the coarsest common divisor."""
    proxy_resolution = check_scalar(proxy_resolution, "proxy_resolution", Interval(int, 1))
    common = [f for f in range(1, math.gcd(height, width) + 1) if height % f == 0 and width % f == 0]
    fits = [f for f in common if max(height, width) / f <= proxy_resolution]
    return fits[0] if fits else common[-1]


def subset_sizes(sigma, n, k_min, k_max):
    """``(m_t, k_t)``: pre-sample and subset sizes at noise level ``sigma`` for ``n`` images
    (``k_min`` and ``k_max`` clipped to ``n``, ``k_max`` to at least ``k_min``)."""
    k_min = min(check_scalar(k_min, "k_min", Interval(int, 1)), n)
    k_max = min(max(check_scalar(k_max, "k_max", Interval(int, 1)), k_min), n)
    locality = 1 - sigma / math.sqrt(1 + sigma**2)
    m_t = min(n, max(k_max, round(k_max + (n - k_max) * locality)))
    k_t = max(k_min, round(k_max - (k_max - k_min) * locality))
    return m_t, k_t


def golden_subsets(queries, sigma, data, proxies, order, k_min, k_max, factor):
    """The golden subset of each query at one noise level: Long tensor of shape (N, k_t).

    Parameters
    ----------
    queries : Tensor of shape (N, C, H, W)
    sigma : float
    data : Tensor of shape (M, d), the training images
    proxies : Tensor of shape (M, d_proxy), their average-pooled proxies (``pool(data, factor)``)
    order : Long tensor of shape (M,), a permutation: the pre-sample is its first ``m_t`` entries
    k_min, k_max : int, bounds of the subset size
    factor : int, the proxies' pooling factor
    """
    m_t, k_t = subset_sizes(sigma, data.shape[0], k_min, k_max)
    pre = order[:m_t]  # (m_t,)
    k_screen = min(max(k_t, k_max), m_t)
    q_proxy = pool(queries, factor)  # (N, d_proxy)
    coarse = _squared_distances(q_proxy, proxies[pre])  # (N, m_t)
    screened = pre[coarse.topk(k_screen, dim=1, largest=False).indices]  # (N, k_screen)
    flat = queries.reshape(len(queries), -1)
    fine = (data[screened] - flat[:, None]).square().sum(2)  # (N, k_screen)
    return screened.gather(1, fine.topk(k_t, dim=1, largest=False).indices)  # (N, k_t)


def pool(images, factor):
    """2-D average pooling by ``factor``, flattened: (N, C, H, W) -> (N, C H W / factor^2)."""
    return (F.avg_pool2d(images, factor) if factor > 1 else images).flatten(1)


def _squared_distances(a, b):
    """``||a_n - b_i||^2`` of shape (N, M) from one product (ranking only)."""
    return a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)


def golddiff_posterior_mean(x, sigma, data, mask, *, k_min, k_max, order, proxy_factor=1, proxies=None,
                            temperature=1.0, chunk_size=None):
    """PCA-locality over each query's golden subset (GoldDiff, arXiv 2602.16498); approximate.

    ``D(x)[m] = sum_{i in G(x)} softmax_i(-d_i(m) / (2 T sigma^2)) x_i[m]`` with the masked
    distances ``d_i(m) = sum_n mask[n, m] (x[n] - x_i[n])^2`` of
    :func:`~.locality.pca_locality_posterior_mean` and ``G(x)`` from :func:`golden_subsets`.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, C, H, W), in the dtype and on the device of ``x``
    mask : bool or float Tensor of shape (d, d), or a function of sigma giving it
    k_min, k_max : int, bounds of the subset size (clipped to M)
    order : Long tensor of shape (M,), the pre-sampling permutation
    proxy_factor : int, average-pooling factor of the screening proxies
    proxies : Tensor of shape (M, d_proxy), optional, ``pool(data, proxy_factor)`` precomputed
    temperature : float > 0, divides the logits
    chunk_size : int, optional, subset images per block of the softmax (does not change the result)

    Returns
    -------
    Tensor of the shape of ``x``. The subset selection is piecewise constant in ``x``; the
    softmax over it is differentiable when autograd is on.
    """
    x = as_images(x)
    if data.dim() != 4 or data.shape[1:] != x.shape[1:] or data.dtype != x.dtype or data.device != x.device:
        raise ValueError(f"training data must be images of shape (M, {', '.join(map(str, x.shape[1:]))}) with dtype "
                         f"{x.dtype} on {x.device} like x; got {tuple(data.shape)}, {data.dtype}, {data.device}")
    if not isinstance(order, torch.Tensor) or order.shape != (data.shape[0],) or order.is_floating_point():
        got = tuple(order.shape) if isinstance(order, torch.Tensor) else type(order).__name__
        raise ValueError(f"order must be a permutation of shape ({data.shape[0]},), got {got}")
    order = order.to(x.device)
    temperature = check_scalar(temperature, "temperature", Interval(float, 0, closed="neither"))
    d = x[0].numel()
    flat = data.reshape(data.shape[0], -1)
    proxies = pool(data, proxy_factor) if proxies is None else proxies
    if proxies.shape[0] != data.shape[0] or proxies.dtype != x.dtype or proxies.device != x.device:
        raise ValueError(f"proxies must have one row per training image, dtype {x.dtype} and device {x.device}; "
                         f"got {tuple(proxies.shape)}, {proxies.dtype}, {proxies.device}")
    k_max = min(max(check_scalar(k_max, "k_max", Interval(int, 1)), check_scalar(k_min, "k_min", Interval(int, 1))),
                data.shape[0])

    def level(x, sigma):
        with torch.no_grad():  # the selection is piecewise constant in x
            subsets = golden_subsets(x, sigma, flat, proxies, order, k_min, k_max, proxy_factor)
        weights = checked_mask(mask(sigma) if callable(mask) else mask, d, sigma).to(x.device, x.dtype)
        return _subset_softmax(x, sigma * temperature**0.5, flat, center, subsets, weights, chunk_size)

    center = flat.mean(0)  # once per call: values centred on it lose less to rounding

    # work space per query: the screened images, gathered, their logits, and the coarse distances
    return per_level(x, sigma, level, per_query_bytes=(4 * k_max * d + 2 * data.shape[0]) * x.element_size())


def _subset_softmax(x, sigma, flat, center, subsets, weights, chunk_size):
    """The masked per-pixel softmax of one noise level over each query's own subset (N, k)."""
    n, k = subsets.shape
    queries = (x.reshape(n, -1) - center)[:, None]  # (N, 1, d)
    chunk = min(resolve_chunk(chunk_size, n * flat.shape[1], 2**22), k)
    scale = -1 / (2 * sigma**2)
    acc = StreamingSoftmax((n, 1, flat.shape[1]), x.dtype, x.device, layout="pair", sum_dtype=x.dtype)
    for start in range(0, k, chunk):
        values = flat[subsets[:, start:start + chunk]] - center  # (N, c, d), centred
        # (x_i[n] - q[n])^2 less the query's own q[n]^2, which cancels in the softmax
        terms = values * (values - 2 * queries)  # (N, c, d_in)
        logits = (terms @ weights) * scale  # (N, c, d_out)
        acc.add(logits, 1, lambda w: ((w * values).sum(1, keepdim=True), w.sum(1, keepdim=True)))
    return (center + acc.mean().squeeze(1)).reshape(x.shape)
