"""The empirical-optimal (memorising) denoiser: the exact posterior mean over the training set.

For the empirical distribution of the training images ``x_i``,

    D(x, sigma) = sum_i w_i x_i,   w = softmax_i(-||x - x_i||^2 / (2 sigma^2)),

which is what an ideal network trained to zero loss on that set would compute; sampling with it
only reproduces training images (e.g. Kadkhodaie et al., arXiv 2310.02557; Kamb & Ganguli,
arXiv 2412.20292). The softmax is reduced over the data in chunks with a streaming log-sum-exp
(running per-query maximum), so the result is exact and independent of the chunk size at any
sigma, with no overflow or underflow from 1e-3 to 1e3 (weights are floored at a normal float,
a relative change far below rounding, see ``log_weight_floor``).
"""

import math
from typing import NamedTuple

import torch
from sklearn.base import BaseEstimator

from .base import TrainingSetMixin, as_sigma

_BLOCK_ELEMENTS = 2**19  # default size of one (queries x chunk) logit block: cache-sized


def resolve_chunk(chunk_size, n_queries):
    """Validated chunk size; by default about 2**19 / n_queries (a cache-sized logit block)."""
    if chunk_size is None:
        return max(512, _BLOCK_ELEMENTS // max(n_queries, 1))
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def log_weight_floor(dtype):
    """Log of the smallest weight kept: ``e^30`` times the smallest normal float of ``dtype``.

    Weights that would underflow below it are raised to it. That changes the result by a
    relative amount below ``M * e^31 * finfo.tiny`` (about 2e-20 in float32 for M = 60,000: far
    below rounding). It keeps ``exp`` off its slow underflow path (~10x slower on CPU), and
    keeps products of a weight with a pixel value above 1e-13 normal floats: arithmetic on
    subnormal floats is another 10-100x slower on x86 (measured: the LS machine took 13x longer
    at sigma = 0.1 than at sigma = 2 with the floor at ``e * tiny``).
    """
    return math.log(torch.finfo(dtype).tiny) + 30


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
    data = data.reshape(data.shape[0], -1)
    m, d = data.shape
    center = data.mean(0)
    aug = data.new_empty(m, d + 2)  # filled in place: no (M, d) temporaries
    centred = torch.sub(data, center, out=aug[:, :d])
    aug[:, d] = 1
    aug[:, d + 1] = torch.linalg.vector_norm(centred, dim=1).square()
    return Prepared(aug, center)


def empirical_posterior_mean(x, sigma, data, *, chunk_size=None, top_k=None, prepared=None):
    """Exact posterior mean of the empirical distribution of ``data``.

    ``D(x)_n = sum_i softmax_i(-||x_n - x_i||^2 / (2 sigma_n^2)) x_i``. The logits are
    ``(x_n . x_i - ||x_i||^2 / 2) / sigma_n^2`` after centring both on the data mean (the
    ``||x_n||^2`` term cancels in the softmax): one matrix product per chunk of training images,
    reduced with a streaming log-sum-exp (per-query running maximum); a second product
    accumulates numerator and denominator.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W) or (N, d)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, d) or (M, C, H, W), in the dtype and on the device of ``x``
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
    n = x.shape[0]
    queries = x.reshape(n, -1)  # (N, d)
    d = queries.shape[1]
    aug, center = prepare(data) if prepared is None else prepared  # (M, d + 2), (d,)
    if aug.shape[1] != d + 2 or aug.dtype != x.dtype or aug.device != x.device:
        raise ValueError(
            f"training data must have d = {d} features, dtype {x.dtype} and device {x.device} "
            f"like x; got d = {aug.shape[1] - 2}, {aug.dtype}, {aug.device}"
        )
    chunk = resolve_chunk(chunk_size, n)
    aug_q = augment_queries(queries, center, as_sigma(sigma, x))
    if top_k is not None:
        return (center + _top_k_posterior_mean(aug_q, aug, chunk, top_k)).reshape(x.shape)
    return (center + softmax_average(aug_q, aug, aug[:, :d + 1], chunk)).reshape(x.shape)


def augment_queries(queries, center, sigma):
    """``[x_n - c, 0, -1/2] / sigma_n^2`` per query: shape (N, k + 2), to pair with :func:`prepare`.

    queries : Tensor of shape (N, k); center : Tensor of shape (k,); sigma : Tensor of shape (N,)
    """
    n = queries.shape[0]
    aug_q = torch.cat([queries - center, queries.new_zeros(n, 1), queries.new_full((n, 1), -0.5)], 1)
    return aug_q * sigma.square().reciprocal()[:, None]


def softmax_average(aug_q, keys, values, chunk):
    """``sum_i softmax_i(aug_q . keys_i) values_i``, streamed over chunks of training images.

    A streaming log-sum-exp with a per-query running maximum (:class:`StreamingSoftmax`):
    exact, and independent of ``chunk`` up to rounding.

    Parameters
    ----------
    aug_q : Tensor of shape (N, k + 2), from :func:`augment_queries`
    keys : Tensor of shape (M, k + 2), the ``augmented`` rows of :func:`prepare`
    values : Tensor of shape (M, v + 1), the values to average with a last column of ones
    chunk : int, training images per chunk

    Returns
    -------
    Tensor of shape (N, v). Differentiable with respect to ``aug_q`` when autograd is on.
    """
    acc = StreamingSoftmax(aug_q.shape[0], values.shape[1], aug_q)
    for start in range(0, keys.shape[0], chunk):
        acc.add(aug_q @ keys[start:start + chunk].T, values[start:start + chunk])
    return acc.result()


class StreamingSoftmax:
    """Running ``sum_i softmax_i(logits_i) values_i`` over blocks of candidates, exact.

    Keeps one running maximum per query; what was accumulated under an older maximum is
    rescaled when it grows, so the result does not depend on how the candidates are split into
    blocks (up to rounding). Weights are floored at a normal float (see ``log_weight_floor``).

    Parameters
    ----------
    n : int, number of queries
    width : int, ``v + 1``: values per candidate, the last column being ones (the denominator)
    like : Tensor giving dtype and device; if it requires grad, nothing is updated in place
    """

    def __init__(self, n, width, like):
        # the (n, c) logit blocks are updated in place unless autograd needs the intermediates
        self.in_place = not (torch.is_grad_enabled() and like.requires_grad)
        self.floor = log_weight_floor(like.dtype)
        self.run_max = like.new_full((n, 1), -torch.inf)
        # [numerator (v), denominator (1)], summed across blocks in float64: with millions of
        # nearly equal weights (large sigma, patch denoisers) float32 running sums drift by 1e-3
        self.acc = like.new_zeros(n, width, dtype=torch.float64)
        self.dtype = like.dtype

    def add(self, logits, values, rows=None):
        """Fold in one block: ``logits`` (n, c) and ``values`` (c, v + 1).

        ``rows`` (long tensor of n query indices), if given, says which queries the block is
        for; otherwise it is for all N.
        """
        run_max = self.run_max if rows is None else self.run_max[rows]
        new_max = torch.maximum(run_max, logits.amax(1, keepdim=True)).detach()
        out = logits if self.in_place else None
        # unnormalised weights, floored at a normal float (see log_weight_floor)
        weights = torch.exp(torch.clamp(torch.sub(logits, new_max, out=out), min=self.floor, out=out), out=out)
        # what was accumulated under the old maximum, rescaled (zero before the first block)
        acc = self.acc if rows is None else self.acc[rows]
        acc = acc * torch.exp(torch.clamp(run_max - new_max, min=self.floor)) + (weights @ values).double()
        if rows is None:
            self.run_max, self.acc = new_max, acc
        else:
            self.run_max[rows], self.acc[rows] = new_max, acc

    def result(self):
        """The averages, shape (N, v)."""
        return (self.acc[:, :-1] / self.acc[:, -1:]).to(self.dtype)


def _top_k_posterior_mean(aug_q, aug, chunk, k):
    """Softmax over each query's k largest logits, found chunk by chunk; centred output."""
    if int(k) != k or k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k}")
    k, n, d = int(k), aug_q.shape[0], aug.shape[1] - 2
    best = aug_q.new_full((n, 0), -torch.inf)
    best_idx = torch.zeros((n, 0), dtype=torch.long, device=aug_q.device)
    for start in range(0, aug.shape[0], chunk):
        logits = aug_q @ aug[start:start + chunk].T  # (N, c)
        idx = torch.arange(start, start + logits.shape[1], device=aug_q.device).expand(n, -1)
        cand, cand_idx = torch.cat([best, logits], 1), torch.cat([best_idx, idx], 1)
        best, pos = cand.topk(min(k, cand.shape[1]), dim=1)
        best_idx = cand_idx.gather(1, pos)
    weights = torch.softmax(best, dim=1)  # (N, k)
    return torch.einsum("nk,nkd->nd", weights, aug[:, :d][best_idx])


class EmpiricalOptimalDenoiser(TrainingSetMixin, BaseEstimator):
    """Exact posterior mean of the training set's empirical distribution (memorises it).

    Parameters
    ----------
    chunk_size : int, optional
        Training images per chunk of the streaming softmax (default: adapts to the batch so
        the logit block holds about 2**19 elements). Does not change the result.
    top_k : int, optional
        If set, an **approximate** mode that keeps only each query's ``top_k`` nearest
        training images in the softmax (see :func:`empirical_posterior_mean`).

    Attributes
    ----------
    data_ : Tensor of shape (M, C, H, W)
        The training images (float; float64 input is kept as float64, others become float32),
        sorted by class when fitted with labels.
    labels_ : Tensor of shape (M,) or None
        Their labels (sorted), when fitted with ``y``.
    classes_ : ndarray of shape (n_classes,) or None
        The distinct labels; when set, ``denoise`` needs ``y`` and uses only that class's images.
    class_offsets_ : ndarray of shape (n_classes + 1,) or None
        ``data_[class_offsets_[k]:class_offsets_[k + 1]]`` are the images of ``classes_[k]``.
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    def __init__(self, chunk_size=None, top_k=None):
        self.chunk_size = chunk_size
        self.top_k = top_k

    def _denoise(self, x, sigma, y):
        kwargs = dict(chunk_size=self.chunk_size, top_k=self.top_k)
        if y is None:
            prepared = self._derived("prepared", x, lambda: prepare(self.data_.to(x.device, x.dtype)))
            return empirical_posterior_mean(x, sigma, None, prepared=prepared, **kwargs)
        # one prepared block per class (each centred on its own class mean)
        prepared = self._derived("prepared_by_class", x, lambda: [
            prepare(self.data_[lo:hi].to(x.device, x.dtype))
            for lo, hi in zip(self.class_offsets_[:-1], self.class_offsets_[1:])
        ])
        out = torch.empty_like(x)
        for label, prep in zip(self.classes_.tolist(), prepared):
            rows = (y == label).nonzero().squeeze(1)
            if len(rows):
                out[rows] = empirical_posterior_mean(x[rows], sigma[rows], None, prepared=prep, **kwargs)
        return out
