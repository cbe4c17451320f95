"""The empirical-optimal (memorising) denoiser: the exact posterior mean over the training set.

For the empirical distribution of the training images ``x_i``,

    D(x, sigma) = sum_i w_i x_i,   w = softmax_i(-||x - x_i||^2 / (2 sigma^2)),

which is what an ideal network trained to zero loss on that set would compute; sampling with it
only reproduces training images (e.g. Kadkhodaie et al., arXiv 2310.02557; Kamb & Ganguli,
arXiv 2412.20292). The softmax is reduced over the data in chunks with a streaming log-sum-exp
(running per-query maximum), so the result is exact and independent of the chunk size at any
sigma, with no overflow or underflow from 1e-3 to 1e3.
"""

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .base import DenoiserMixin, as_images, as_labels, as_sigma, data_summary

_CHUNK_ELEMENTS = 2**25  # default bound on the (queries x chunk) logit block, in elements


def _default_chunk(n_queries):
    return max(1024, _CHUNK_ELEMENTS // max(n_queries, 1))


def empirical_posterior_mean(x, sigma, data, *, chunk_size=None, sq_norms=None, top_k=None):
    """Exact posterior mean of the empirical distribution of ``data``.

    ``D(x)_n = sum_i softmax_i(-||x_n - x_i||^2 / (2 sigma_n^2)) x_i``. The logits are computed
    as ``(x_n . x_i - ||x_i||^2 / 2) / sigma_n^2`` (the ``||x_n||^2`` term cancels in the
    softmax) with one matrix product per data chunk, and reduced with a streaming log-sum-exp.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W) or (N, d)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, d) or (M, C, H, W), in the dtype and on the device of ``x``
    chunk_size : int, optional
        Training images per chunk; the default keeps the (N, chunk) logit block near 2**25
        elements. The result does not depend on it (up to float rounding).
    sq_norms : Tensor of shape (M,), optional
        Precomputed ``||x_i||^2`` (computed if omitted).
    top_k : int, optional
        Approximate mode: the softmax is restricted to each query's ``top_k`` nearest training
        images. Exact when ``top_k >= M``; otherwise it drops the far images' weights, which is
        negligible only when they are many sigma farther away than the nearest ones.

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    n = x.shape[0]
    queries = x.reshape(n, -1)  # (N, d)
    data = data.reshape(data.shape[0], -1)  # (M, d)
    if sq_norms is None:
        sq_norms = data.square().sum(1)
    inv_var = as_sigma(sigma, x).square().reciprocal()[:, None]  # (N, 1)
    chunk = int(chunk_size or _default_chunk(n))
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if top_k is not None:
        out = _top_k_posterior_mean(queries, inv_var, data, sq_norms, chunk, int(top_k))
        return out.reshape(x.shape)

    run_max = torch.full((n, 1), -torch.inf, dtype=x.dtype, device=x.device)
    denom = torch.zeros((n, 1), dtype=x.dtype, device=x.device)
    acc = torch.zeros_like(queries)
    for start in range(0, data.shape[0], chunk):
        block, norms = data[start:start + chunk], sq_norms[start:start + chunk]
        logits = torch.addmm(norms, queries, block.T, beta=-0.5)  # (N, c): x.x_i - |x_i|^2/2
        logits.mul_(inv_var)
        new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
        weights = logits.sub_(new_max).exp_()  # in place: (N, c) unnormalised weights
        if start > 0:  # rescale what was accumulated under the old maximum
            rescale = torch.exp(run_max - new_max)
            denom.mul_(rescale)
            acc.mul_(rescale)
        denom.add_(weights.sum(1, keepdim=True))
        acc.addmm_(weights, block)  # (N, d)
        run_max = new_max
    return (acc / denom).reshape(x.shape)


def _top_k_posterior_mean(queries, inv_var, data, sq_norms, chunk, k):
    """Softmax over each query's k largest logits, found chunk by chunk."""
    if k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k}")
    n = queries.shape[0]
    best = torch.full((n, 0), -torch.inf, dtype=queries.dtype, device=queries.device)
    best_idx = torch.zeros((n, 0), dtype=torch.long, device=queries.device)
    for start in range(0, data.shape[0], chunk):
        logits = torch.addmm(sq_norms[start:start + chunk], queries,
                             data[start:start + chunk].T, beta=-0.5).mul_(inv_var)
        idx = torch.arange(start, start + logits.shape[1], device=queries.device).expand(n, -1)
        cand, cand_idx = torch.cat([best, logits], 1), torch.cat([best_idx, idx], 1)
        best, pos = cand.topk(min(k, cand.shape[1]), dim=1)
        best_idx = cand_idx.gather(1, pos)
    weights = torch.softmax(best, dim=1)  # (N, k)
    return torch.einsum("nk,nkd->nd", weights, data[best_idx])


class EmpiricalOptimalDenoiser(DenoiserMixin, BaseEstimator):
    """Exact posterior mean of the training set's empirical distribution (memorises it).

    Parameters
    ----------
    chunk_size : int, optional
        Training images per chunk of the streaming softmax (default: adapts to the batch so
        the logit block holds about 2**25 elements). Does not change the result.
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

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,)."""
        X = as_images(X, name="X")
        if X.dtype != torch.float64:
            X = X.float()
        self._reset_data_summary()
        self.labels_ = self.classes_ = self.class_offsets_ = None
        if y is not None:
            y = as_labels(y, X.shape[0], device=X.device)
            order = torch.argsort(y, stable=True)
            X, y = X[order], y[order]
            classes, counts = torch.unique_consecutive(y, return_counts=True)
            self.labels_ = y.cpu()
            self.classes_ = classes.cpu().numpy()
            self.class_offsets_ = np.concatenate([[0], np.cumsum(counts.cpu().numpy())])
        self.data_ = X.detach().cpu().contiguous()
        self._update_data_summary(data_summary(self.data_))
        return self

    def _denoise(self, x, sigma, y):
        data = self._fitted_on("data_", x)
        sq_norms = self._derived("sq_norms", x, lambda: data.reshape(len(data), -1).square().sum(1))
        kwargs = dict(chunk_size=self.chunk_size, top_k=self.top_k)
        if y is None:
            return empirical_posterior_mean(x, sigma, data, sq_norms=sq_norms, **kwargs)
        out = torch.empty_like(x)
        for k, label in enumerate(self.classes_.tolist()):
            rows = (y == label).nonzero().squeeze(1)
            if len(rows):
                lo, hi = self.class_offsets_[k], self.class_offsets_[k + 1]
                out[rows] = empirical_posterior_mean(
                    x[rows], sigma[rows], data[lo:hi], sq_norms=sq_norms[lo:hi], **kwargs
                )
        return out
