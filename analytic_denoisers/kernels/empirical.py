"""The empirical-optimal posterior mean: a softmax over whole training images.

For the empirical distribution of the training images ``x_i``,

    D(x, sigma) = sum_i w_i x_i,   w = softmax_i(-||x - x_i||^2 / (2 sigma^2)),

which is what an ideal network trained to zero loss on that set would compute (e.g. Kadkhodaie
et al., arXiv 2310.02557; Kamb & Ganguli, arXiv 2412.20292). The logits of a chunk of training
images are one matrix product; the softmax is the streaming one of :mod:`.softmax`.
"""

from typing import NamedTuple

import torch

from ..core.batching import query_block
from ..core.distributed import mean_rows
from ..core.validation import Interval, as_images, as_sigma, check_scalar
from .softmax import StreamingSoftmax, resolve_chunk, softmax_average

BLOCK_ELEMENTS = 2**19  # default size of one (queries x chunk) logit block: cache-sized


class Prepared(NamedTuple):
    """Training images prepared for one-GEMM logits (see :func:`prepare`).

    augmented : Tensor of shape (M, d + 2), rows ``[x_i - c, 1, ||x_i - c||^2]``
    center : Tensor of shape (d,), ``c``, the mean training image
    """

    augmented: torch.Tensor
    center: torch.Tensor


def prepare(data):
    """Centre the training images on their mean and append ``1`` and the squared norm.

    Distances do not change under a common shift, and centred vectors have smaller norms, so
    the expanded form of the logits loses less to float32 rounding (measured on Fashion-MNIST,
    sigma 0.1 to 1: mean abs error against float64 about 1.5x smaller; the worst near-ties are
    unchanged). With queries augmented as ``[x_n - c, 0, -1/2] / sigma_n^2``, one matrix
    product gives the logits ``((x_n - c).(x_i - c) - ||x_i - c||^2 / 2) / sigma_n^2``, and the
    weighted sum over the first ``d + 1`` columns gives the numerator and (in the column of
    ones) the softmax denominator.

    Parameters
    ----------
    data : Tensor of shape (M, d) or (M, C, H, W)

    Returns
    -------
    Prepared
    """
    data = data.flatten(1)
    m, d = data.shape
    center = mean_rows(data)  # over every rank's rows in a sharded call
    aug = data.new_empty(m, d + 2)  # filled in place: no (M, d) temporaries
    centred = torch.sub(data, center, out=aug[:, :d])
    aug[:, d] = 1
    aug[:, d + 1] = torch.linalg.vector_norm(centred, dim=1).square()
    return Prepared(aug, center)


def checked_prepared(queries, data, prepared=None):
    """``prepare(data)``, or ``prepared``, checked against the queries (N, d): the same d, dtype and
    device, else a ValueError saying what was expected. Returns ``(augmented, center)``."""
    aug, center = prepare(data) if prepared is None else prepared
    d = queries.shape[1]
    if aug.shape[1] != d + 2 or aug.dtype != queries.dtype or aug.device != queries.device:
        raise ValueError(f"training data must have d = {d} features, dtype {queries.dtype} and device "
                         f"{queries.device} like x; got d = {aug.shape[1] - 2}, {aug.dtype}, {aug.device}")
    return aug, center


def augment_queries(queries, center, sigma):
    """``[x_n - c, 0, -1/2] / sigma_n^2`` per query: shape (N, k + 2), to pair with :func:`prepare`.

    queries : Tensor of shape (N, k); center : Tensor of shape (k,); sigma : Tensor of shape (N,)
    """
    n = queries.shape[0]
    aug_q = torch.cat([queries - center, queries.new_zeros(n, 1), queries.new_full((n, 1), -0.5)], 1)
    return aug_q * sigma.square().reciprocal()[:, None]


def empirical_posterior_mean(x, sigma, data, *, temperature=1.0, chunk_size=None, top_k=None, prepared=None):
    """Exact posterior mean of the empirical distribution of ``data``.

    ``D(x)_n = sum_i softmax_i(-||x_n - x_i||^2 / (2 T sigma_n^2)) x_i`` (temperature T = 1: the
    exact posterior mean; T is the published code's ``temperature``). The logits are
    ``(x_n . x_i - ||x_i||^2 / 2) / sigma_n^2`` after centring both on the data mean (the
    ``||x_n||^2`` term cancels in the softmax): one matrix product per chunk of training images,
    reduced with a streaming log-sum-exp (per-query running maximum); a second product
    accumulates numerator and denominator.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W) or (N, d)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, d) or (M, C, H, W), in the dtype and on the device of ``x``
    temperature : float > 0
        Divides the logits: the same as the exact posterior mean at ``sigma * sqrt(T)``.
    chunk_size : int, optional
        Training images per chunk; the default keeps the (N, chunk) logit block near 2**19
        elements (cache-sized). The result does not depend on it (up to float rounding).
    top_k : int, optional
        Approximate mode: the softmax is restricted to each query's ``top_k`` nearest training
        images. Exact when ``top_k >= M``; otherwise it drops the far images' weights, which is
        negligible only when they are many sigma farther away than the nearest ones.
    prepared : Prepared, optional
        ``prepare(data)``, precomputed to reuse across calls (then ``data`` is not read).

    Returns
    -------
    Tensor of the shape of ``x``. Differentiable with respect to ``x`` when autograd is on.
    """
    x = as_images(x, flat=True)
    n = x.shape[0]
    queries = x.reshape(n, -1)  # (N, d)
    d = queries.shape[1]
    aug, center = checked_prepared(queries, data, prepared)  # (M, d + 2), (d,)
    chunk = resolve_chunk(chunk_size, n, BLOCK_ELEMENTS, minimum=512)
    temperature = check_scalar(temperature, "temperature", Interval(float, 0, closed="neither"))
    aug_q = augment_queries(queries, center, as_sigma(sigma, x) * temperature**0.5)
    if top_k is not None:  # the k nearest images of each query are gathered: in blocks of queries
        block = query_block(check_scalar(top_k, "top_k", Interval(int, 1)) * (d + 1) * x.element_size())
        out = torch.cat([_top_k_posterior_mean(aug_q[i:i + block], aug, chunk, top_k) for i in range(0, n, block)])
        return (center + out).reshape(x.shape)
    return (center + softmax_average(aug_q, aug, aug[:, :d + 1], chunk)).reshape(x.shape)


def running_top_k(aug_q, aug, k, chunk):
    """The ``k`` largest scores ``aug_q @ aug.T`` per query, found chunk by chunk: (scores, indices),
    each of shape (N, min(k, M)), largest first. With ``augment_queries`` at any sigma the largest
    scores are the nearest training images."""
    n = aug_q.shape[0]
    best = aug_q.new_full((n, 0), -torch.inf)
    best_idx = torch.zeros((n, 0), dtype=torch.long, device=aug_q.device)
    for start in range(0, aug.shape[0], chunk):
        scores = aug_q @ aug[start:start + chunk].T  # (N, c)
        idx = torch.arange(start, start + scores.shape[1], device=aug_q.device).expand(n, -1)
        cand, cand_idx = torch.cat([best, scores], 1), torch.cat([best_idx, idx], 1)
        best, pos = cand.topk(min(k, cand.shape[1]), dim=1)
        best_idx = cand_idx.gather(1, pos)
    return best, best_idx


def _top_k_posterior_mean(aug_q, aug, chunk, k):
    """Softmax over each query's k largest logits, found chunk by chunk; centred output."""
    k, d = check_scalar(k, "top_k", Interval(int, 1)), aug.shape[1] - 2
    best, best_idx = running_top_k(aug_q, aug, k, chunk)
    acc = StreamingSoftmax((aug_q.shape[0], 1), aug_q.dtype, aug_q.device)
    values = aug[:, :d + 1][best_idx]  # (N, k, d + 1): pixels and a column of ones
    acc.add(best, 1, lambda w: torch.einsum("nk,nkd->nd", w, values))
    return acc.mean(aug_q.dtype)


def nearest_training_index(x, data, *, chunk_size=None, prepared=None):
    """The index of the training image nearest to each query in Euclidean distance (the sigma -> 0 limit of
    :func:`empirical_posterior_mean`; the studio's ``nearest_dataset`` baseline).

    ``argmin_i ||x_n - x_i||^2 = argmax_i (x_n . x_i - ||x_i||^2 / 2)`` after centring: one matrix
    product per chunk of training images with a running maximum; ties go to the lowest index.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W) or (N, d)
    data : Tensor of shape (M, d) or (M, C, H, W), in the dtype and on the device of ``x``
    chunk_size : int, optional, training images per chunk (does not change the result)
    prepared : Prepared, optional, ``prepare(data)`` precomputed (then ``data`` is not read)

    Returns
    -------
    Long tensor of shape (N,), on the device of ``x`` (piecewise constant in ``x``).
    """
    x = as_images(x, flat=True)
    n = x.shape[0]
    queries = x.reshape(n, -1)  # (N, d)
    aug, center = checked_prepared(queries, data, prepared)  # (M, d + 2), (d,)
    chunk = resolve_chunk(chunk_size, n, BLOCK_ELEMENTS, minimum=512)
    aug_q = augment_queries(queries.detach(), center, torch.ones(n, dtype=x.dtype, device=x.device))  # sigma = 1
    best = queries.new_full((n,), -torch.inf)
    index = torch.zeros(n, dtype=torch.long, device=x.device)
    for start in range(0, aug.shape[0], chunk):
        value, at = (aug_q @ aug[start:start + chunk].T).max(1)  # first maximum within the chunk
        better = value > best  # strictly: an earlier chunk keeps a tie
        best, index = torch.where(better, value, best), torch.where(better, at + start, index)
    return index


def smoothed_posterior_mean(x, sigma, data, noise, smoothing_std, *, temperature=1.0, chunk_size=None,
                            prepared=None):
    """The smoothed closed-form denoiser (sigma-CFDM, Scarvelis, Saez de Ocariz Borde & Solomon,
    arXiv 2310.12395): the empirical posterior mean averaged over perturbed inputs,

        D_s(x, sigma) = (1 / M) sum_m D(x + s eps_m, sigma),

    a Monte Carlo estimate of ``E_eps D(x + s eps, sigma)`` with the fixed draws ``eps_m`` (the
    same for every query, so a query's output does not depend on its batch). Smoothing the
    closed-form score ``(D(x) - x) / sigma^2`` over its input is smoothing ``D``: the average is
    a convex combination of training images (barycenters), which is how sigma-CFDMs generalise.
    There is no closed form for two or more training images (the expectation of a softmax under
    a Gaussian); ``s = 0`` is :func:`empirical_posterior_mean` and a one-image set is constant.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M_data, d), in the dtype and on the device of ``x``
    noise : Tensor of shape (M, C, H, W), the draws ``eps_m``
    smoothing_std : float >= 0, ``s``
    temperature, chunk_size, prepared : as in :func:`empirical_posterior_mean`

    Returns
    -------
    Tensor of the shape of ``x``. Differentiable with respect to ``x`` when autograd is on.
    """
    x = as_images(x)
    smoothing_std = check_scalar(smoothing_std, "smoothing_std", Interval(float, 0))
    n, m = x.shape[0], noise.shape[0]
    if noise.dim() != x.dim() or noise.shape[1:] != x.shape[1:] or m == 0:
        raise ValueError(f"noise must have shape (M >= 1, {', '.join(map(str, x.shape[1:]))}), got {tuple(noise.shape)}")
    sigma = as_sigma(sigma, x)
    # every query with every draw: (N M, C, H, W), in blocks of queries. Each perturbed query holds
    # about 48 d values at the peak (its copy, augmented row, float64 sums, logits, output; measured:
    # 310 MiB for 512 x 16 of them at d = 784 in float32), so a block stays within WORK_BUDGET
    block = query_block(m * 48 * x[0].numel() * x.element_size())
    shifts = smoothing_std * noise.to(x.device, x.dtype)  # (M, C, H, W)

    def smoothed(rows, levels):
        perturbed = (rows[:, None] + shifts[None]).flatten(0, 1)
        out = empirical_posterior_mean(perturbed, levels.repeat_interleave(m), data, temperature=temperature,
                                       chunk_size=chunk_size, prepared=prepared)
        return out.reshape(len(rows), m, *x.shape[1:]).mean(1)

    return torch.cat([smoothed(x[i:i + block], sigma[i:i + block]) for i in range(0, n, block)])
