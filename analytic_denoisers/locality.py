"""PCA-locality denoiser: locality masks derived from the data's covariance alone.

Lukoianov et al., "Locality in image diffusion models emerges from data statistics"
(arXiv 2509.09672). At noise level sigma the Wiener filter of the fitted Gaussian,
``W = U diag(lam / (lam + sigma^2)) U^T``, says which input pixels inform each output pixel.
Normalised by its diagonal, ``M[n, m] = W[n, m] / W[n, n]``, and binarised,
``mask[n, m] = |M[n, m]| >= threshold * max |M|``, it gives each output pixel m a neighbourhood,
and the denoiser is a per-pixel softmax over training images of the masked distance:

    d_i(m) = sum_n mask[n, m] (x[n] - x_i[n])^2,
    D(x)[m] = sum_i softmax_i(-d_i(m) / (2 sigma^2)) x_i[m].

The softmax here is exact over the whole training set (the published code normalises it per
data batch, so its output depends on the batch size). The masked distances come from matrix
products over chunks of training images with a streaming log-sum-exp per output pixel; the
cost is that of the dense formulation, about 2 N M d^2 flops per call (no sparsity is exploited
yet).
"""

import torch
from sklearn.base import BaseEstimator

from .base import DenoiserMixin, as_training_images, data_summary
from .empirical import log_weight_floor, resolve_chunk
from .gaussian import GaussianDenoiser


def wiener_matrix(sigma, eigvals, eigvecs):
    """``U diag(lam / (lam + sigma^2)) U^T``, shape (d, d), for one float ``sigma``."""
    return (eigvecs * (eigvals / (eigvals + sigma**2))) @ eigvecs.T


def locality_masks(sigma, eigvals, eigvecs, threshold):
    """Binary neighbourhoods ``mask[n, m]``: input pixel n informs output pixel m.

    ``M[n, m] = W[n, m] / W[n, n]`` and ``mask = |M| >= threshold * max |M|``. Pixels whose
    diagonal ``W[n, n]`` is zero (no variance left in the fitted basis) are in no neighbourhood.

    Parameters
    ----------
    sigma : float
    eigvals : Tensor of shape (r,); eigvecs : Tensor of shape (d, r)
    threshold : float in [0, 1]; 0 gives all-ones masks (the empirical-optimal denoiser)

    Returns
    -------
    Bool tensor of shape (d, d).
    """
    W = wiener_matrix(sigma, eigvals, eigvecs)
    diag = W.diagonal()
    live = diag > 0
    M = torch.where(live[:, None], W / torch.where(live, diag, 1)[:, None], 0).abs()
    return M >= threshold * M.max()


def pca_locality_posterior_mean(x, sigma, data, mask, *, chunk_size=None):
    """Per-pixel softmax over training images of masked squared distances (exact).

    For each query, the masked distances to a chunk of training images come from matrix
    products, ``d_i(m) = (q^2 @ mask)[m] - 2 (x_i @ (q * mask))[m] + (x_i^2 @ mask)[m]`` (all
    centred on the data mean), and a streaming log-sum-exp over the chunks keeps one running
    maximum per query and output pixel, so the softmax is exact over the whole training set.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float, one noise level for the whole batch
    data : Tensor of shape (M, d), in the dtype and on the device of ``x``
    mask : bool Tensor of shape (d, d), ``mask[n, m]`` as in :func:`locality_masks`
    chunk_size : int, optional, training images per chunk (does not change the result)

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    n = x.shape[0]
    queries = x.reshape(n, -1)  # (N, d)
    chunk = resolve_chunk(chunk_size, queries.shape[1])  # one (chunk, d) block per query
    maskf = mask.to(x.dtype)  # (d, d)
    center = data.mean(0)
    centred = data - center  # (M, d)
    data_norms = centred.square() @ maskf  # (M, d): sum_n mask[n, m] x_i[n]^2
    scale = -1 / (2 * float(sigma) ** 2)
    floor = log_weight_floor(x.dtype)
    out = []
    for q in queries - center:  # (d,)
        q_mask = q[:, None] * maskf  # (d, d)
        q_norm = q.square() @ maskf  # (d,)
        run_max = torch.full_like(q, -torch.inf)
        num, den = torch.zeros_like(q), torch.zeros_like(q)
        for start in range(0, len(data), chunk):
            block = slice(start, start + chunk)
            dist = data_norms[block] - 2 * (centred[block] @ q_mask) + q_norm  # (c, d)
            logits = dist * scale
            new_max = torch.maximum(run_max, logits.amax(0)).detach()
            weights = torch.exp(torch.clamp(logits - new_max, min=floor))  # (c, d)
            rescale = torch.exp(run_max - new_max)
            num = num * rescale + (weights * centred[block]).sum(0)
            den = den * rescale + weights.sum(0)
            run_max = new_max
        out.append(center + num / den)
    return torch.stack(out).reshape(x.shape)


class PCALocalityDenoiser(DenoiserMixin, BaseEstimator):
    """Per-pixel softmax over training images with masks from the Wiener filter (Lukoianov et al.).

    Parameters
    ----------
    threshold : float or callable, default 0.005
        Binarisation level of the normalised Wiener filter, relative to its maximum; or a
        function ``threshold(sigma) -> float``. The paper's configurations use 0.005 for MNIST
        and Fashion-MNIST and 0.05 for CIFAR-10.
    rank : int, optional
        Eigenpairs of the covariance used for the Wiener filter (default: all).
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.

    Attributes
    ----------
    data_ : Tensor of shape (M, C, H, W), the training images
    mean_, eigvals_, eigvecs_ : the fitted Gaussian (see :class:`GaussianDenoiser`)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    classes_ = None
    _fitted_state = DenoiserMixin._fitted_state + ("data_", "mean_", "eigvals_", "eigvecs_")

    def __init__(self, threshold=0.005, rank=None, chunk_size=None):
        self.threshold = threshold
        self.rank = rank
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and fit their Gaussian. Returns self."""
        X = as_training_images(X)
        gauss = GaussianDenoiser(rank=self.rank).fit(X)
        self._reset_data_summary()
        self._update_data_summary(data_summary(X))
        self.data_ = X.detach().cpu().contiguous()
        self.mean_, self.eigvals_, self.eigvecs_ = gauss.mean_, gauss.eigvals_, gauss.eigvecs_
        return self

    def masks(self, sigma):
        """The bool masks ``mask[n, m]`` of shape (d, d) at noise level ``sigma`` (float64, CPU)."""
        self._check_fitted()
        threshold = self.threshold(sigma) if callable(self.threshold) else self.threshold
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r} at sigma = {sigma:g}")
        return locality_masks(float(sigma), self.eigvals_, self.eigvecs_, threshold)

    def _denoise(self, x, sigma, y):
        data = self._derived("data", x, lambda: self.data_.to(x.device, x.dtype).reshape(len(self.data_), -1))
        out = torch.empty_like(x)
        for level in torch.unique(sigma).tolist():  # one mask set per distinct sigma
            rows = (sigma == level).nonzero().squeeze(1)
            mask = self.masks(level).to(x.device)
            out[rows] = pca_locality_posterior_mean(x[rows], level, data, mask, chunk_size=self.chunk_size)
        return out
