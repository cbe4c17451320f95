"""The Gaussian mixture model of the data: the exact posterior mean of a mixture of Gaussians.

If the data were ``p(x0) = sum_k pi_k N(mu_k, Sigma_k)`` with ``Sigma_k = U_k diag(lam_k) U_k^T``,
the posterior mean at noise level sigma would be (Wang & Vastola, arXiv 2303.02490 and
2311.10892)

    D(x, sigma) = sum_k w_k(x) D_k(x),
    D_k(x) = mu_k + U_k diag(lam_k / (lam_k + sigma^2)) U_k^T (x - mu_k)   (component k's Wiener filter),
    w_k(x) = softmax_k(log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I))       (its posterior weight).

The log-densities are computed in each component's eigenbasis, never through a d x d matrix:
with ``z = x - mu_k``, ``c = U_k^T z`` (r coordinates) and ``z_perp = z - U_k c``,

    z^T (Sigma_k + sigma^2 I)^-1 z = sum_j c_j^2 / (lam_j + sigma^2) + ||z_perp||^2 / sigma^2,
    log det(Sigma_k + sigma^2 I)   = sum_j log(lam_j + sigma^2) + (d - r) log sigma^2.

The first line equals ``||z||^2 / sigma^2 - sum_j c_j^2 lam_j / (sigma^2 (lam_j + sigma^2))``
but subtracts nothing large (in float32 at sigma = 0.01, where ``||z||^2 / sigma^2`` is ~1e5 for
3 x 3 images, measured logit errors were 3e-6 against 7e-3 for the difference form). ``z_perp``
is formed explicitly (one more matrix product), which also keeps a component padded to the
common rank with zero eigenvalues and zero eigenvector columns exact. The softmax over
components is the streaming one of :mod:`.softmax`, one component at a time, so the work space
is that of one component's filter.
"""

import torch

from ..core.validation import as_images, as_sigma
from .softmax import StreamingSoftmax
from .wiener import wiener_gains


def _check_mixture(x, log_weights, means, eigvals, eigvecs):
    """The mixture's statistics must fit the images ``x`` (N, ...): log_weights (K,), means (K, d),
    eigvals (K, r), eigvecs (K, d, r) with r <= d, all with the dtype and device of ``x``."""
    d = x[0].numel()
    stats = dict(log_weights=log_weights, means=means, eigvals=eigvals, eigvecs=eigvecs)
    for name, value in stats.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(value).__name__}")
    k = log_weights.shape[0] if log_weights.dim() == 1 else None
    if (k is None or k == 0 or means.shape != (k, d) or eigvecs.dim() != 3 or eigvecs.shape[:2] != (k, d)
            or eigvals.shape != (k, eigvecs.shape[2]) or eigvecs.shape[2] > d):
        raise ValueError(f"expected log_weights (K,), means (K, {d}), eigvals (K, r) and eigvecs (K, {d}, r) with "
                         f"K >= 1 and r <= {d} for images of {d} pixels, got {tuple(log_weights.shape)}, "
                         f"{tuple(means.shape)}, {tuple(eigvals.shape)} and {tuple(eigvecs.shape)}")
    for name, value in stats.items():
        if value.dtype != x.dtype or value.device != x.device:
            raise ValueError(f"{name} must have dtype {x.dtype} on {x.device} like x, got {value.dtype} "
                             f"on {value.device}")
    if not bool(torch.isfinite(log_weights).all()):
        raise ValueError("log_weights must be finite (leave out components of weight 0)")
    if not bool((eigvals >= 0).all()):
        raise ValueError(f"eigvals must be non-negative, got min(eigvals) = {eigvals.min().item():g}")


def gaussian_mixture_posterior_mean(x, sigma, log_weights, means, eigvals, eigvecs):
    """Exact posterior mean of a Gaussian mixture, ``sum_k w_k(x) D_k(x)`` (arXiv 2303.02490).

    ``w_k = softmax_k(log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I))`` and ``D_k`` is component
    k's Wiener filter ``mu_k + U_k diag(lam_k / (lam_k + sigma^2)) U_k^T (x - mu_k)``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), or flattened (N, d)
    sigma : float or Tensor of shape (N,)
    log_weights : Tensor of shape (K,)
        ``log pi_k``, finite; only differences matter (they need not be normalised).
    means : Tensor of shape (K, d), d = C * H * W
    eigvals : Tensor of shape (K, r), non-negative
    eigvecs : Tensor of shape (K, d, r), orthonormal columns per component, r <= d
        A common r for all components: pad a component of lower rank with zero eigenvalues
        (and zero or orthonormal columns). Directions outside the span of ``eigvecs[k]`` have
        zero variance in component k.

    All statistics must have the dtype and device of ``x``.

    Returns
    -------
    Tensor of the shape, dtype and device of ``x``. Differentiable with respect to ``x`` when
    autograd is on.
    """
    x = as_images(x, flat=True)
    _check_mixture(x, log_weights, means, eigvals, eigvecs)
    flat = x.reshape(x.shape[0], -1)
    d = flat.shape[1]
    sigma = as_sigma(sigma, x)[:, None]  # (N, 1)
    s2 = sigma.square()
    acc = StreamingSoftmax((x.shape[0], 1), x.dtype, x.device, layout="pair")
    for log_weight, mean, lam, U in zip(log_weights, means, eigvals, eigvecs):
        z = flat - mean  # (N, d)
        c = z @ U  # (N, r) coordinates in the component's eigenbasis
        denoised = mean + (c * wiener_gains(lam, sigma)) @ U.T  # (N, d) the component's Wiener filter
        perp = z - c @ U.T  # (N, d) the part outside the span of U
        variance = lam + s2  # (N, r) variance of x along each eigenvector
        mahalanobis = (c.square() / variance).sum(1, keepdim=True) + perp.square().sum(1, keepdim=True) / s2
        log_det = variance.log().sum(1, keepdim=True) + (d - U.shape[1]) * s2.log()
        logits = log_weight - 0.5 * (mahalanobis + log_det)  # (N, 1), up to the common -d/2 log(2 pi)
        acc.add(logits, 1, lambda w: (w * denoised, w))
    return acc.mean(x.dtype).reshape(x.shape)
