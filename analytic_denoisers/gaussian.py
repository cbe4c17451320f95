"""Gaussian (Wiener) denoiser and the closed-form solution of its probability-flow ODE.

If the data were Gaussian with the training set's mean ``mu`` and covariance
``Sigma = U diag(lam) U^T``, the posterior mean would be the Wiener filter

    D(x, sigma) = mu + U diag(lam / (lam + sigma^2)) U^T (x - mu),

and the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` would be solved by

    x(sigma) = mu + U diag(sqrt((sigma^2 + lam) / (sigma_T^2 + lam))) U^T (x_T - mu)

(Wang & Vastola, arXiv 2303.02490 and 2311.10892). Both are applied in the eigenbasis with two
matrix products, never through a d x d matrix per call.
"""

import torch
from sklearn.base import BaseEstimator

from .base import DenoiserMixin, as_images, as_sigma, data_summary
from .stats import Moments, merge_moments, moments


def gaussian_posterior_mean(x, sigma, mean, eigvals, eigvecs):
    """Wiener-filter posterior mean ``mu + U diag(lam / (lam + sigma^2)) U^T (x - mu)``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    mean : Tensor of shape (d,), d = C * H * W
    eigvals : Tensor of shape (r,), non-negative
    eigvecs : Tensor of shape (d, r), orthonormal columns

    Returns
    -------
    Tensor of shape (N, C, H, W). Directions outside the span of ``eigvecs`` are treated as
    having zero variance (they are set to the mean).
    """
    flat = x.reshape(x.shape[0], -1) - mean
    var = as_sigma(sigma, x).square()[:, None]  # (N, 1)
    coef = eigvals / (eigvals + var)  # (N, r) shrinkage per direction
    z = flat @ eigvecs  # (N, r) coordinates in the eigenbasis
    return (mean + (z * coef) @ eigvecs.T).reshape(x.shape)


def gaussian_trajectory(x_T, sigmas, mean, eigvals, eigvecs):
    """Exact probability-flow ODE solution of the Gaussian model from ``sigmas[0]`` down.

    ``x(sigma) = mu + U diag(sqrt((sigma^2 + lam) / (sigma_T^2 + lam))) U^T (x_T - mu)
    + (sigma / sigma_T) x_perp`` with ``x_perp`` the part of ``x_T - mu`` outside the span of U
    (Wang & Vastola, arXiv 2303.02490).

    Parameters
    ----------
    x_T : Tensor of shape (N, C, H, W)
        The state at ``sigma_T = sigmas[0]``.
    sigmas : 1-D tensor of shape (S,)
        Non-negative noise levels, ``sigmas[0] > 0``.
    mean, eigvals, eigvecs : as in :func:`gaussian_posterior_mean`.

    Returns
    -------
    Tensor of shape (S, N, C, H, W): ``x(sigmas[k])`` for each k (the first equals x_T).
    """
    sigmas = torch.as_tensor(sigmas, dtype=x_T.dtype, device=x_T.device)
    if sigmas.dim() != 1 or len(sigmas) == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()) or sigmas[0] <= 0:
        raise ValueError("sigmas must be finite and non-negative, with sigmas[0] > 0")
    flat = x_T.reshape(x_T.shape[0], -1) - mean
    z = flat @ eigvecs  # (N, r)
    perp = flat - z @ eigvecs.T  # (N, d), zero for a full-rank basis
    s2 = sigmas.square()[:, None]  # (S, 1)
    gain = torch.sqrt((s2 + eigvals) / (s2[0] + eigvals))  # (S, r)
    states = mean + torch.einsum("nr,sr,dr->snd", z, gain, eigvecs)  # (S, N, d)
    states = states + (sigmas / sigmas[0])[:, None, None] * perp
    return states.reshape((len(sigmas),) + tuple(x_T.shape))


class GaussianDenoiser(DenoiserMixin, BaseEstimator):
    """Posterior mean under a Gaussian fitted to the training images' mean and covariance.

    Parameters
    ----------
    rank : int, optional
        Keep only the ``rank`` largest eigenpairs of the covariance (default: all ``d``).
        Directions outside them are treated as having zero variance.
    chunk_size : int
        Images converted to float64 at a time while accumulating the moments.

    Attributes
    ----------
    mean_ : Tensor of shape (d,), float64
        Pixel mean of the training images (flattened, d = C * H * W).
    covariance_ : Tensor of shape (d, d), float64
        Their covariance with divisor N (the second moments of the empirical distribution,
        so the Wiener filter is the best affine denoiser for it; a one-image set gives 0).
    eigvals_ : Tensor of shape (r,), float64
        Eigenvalues in decreasing order, clipped at 0.
    eigvecs_ : Tensor of shape (d, r), float64
        Matching orthonormal eigenvectors (columns).
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.

    Examples
    --------
    >>> den = GaussianDenoiser().fit(X)             # X: (N, C, H, W) in [-1, 1]
    >>> x0 = den(x, 0.5)
    >>> path = den.trajectory(80 * noise, ad.schedules.karras(18, 0.002, 80))
    """

    classes_ = None
    _fitted_state = DenoiserMixin._fitted_state + ("mean_", "covariance_", "eigvals_", "eigvecs_")

    def __init__(self, rank=None, chunk_size=4096):
        self.rank = rank
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Fit mean and covariance of ``X`` (N, C, H, W); ``y`` is ignored. Returns self."""
        X = as_images(X, name="X")
        return self._commit(moments(X, self.chunk_size), data_summary(X), reset=True)

    def partial_fit(self, X, y=None):
        """Add the images ``X`` (N, C, H, W) to the statistics and refresh the eigenbasis."""
        if not self.__sklearn_is_fitted__():
            return self.fit(X)
        X = as_images(X, name="X", image_shape=self.image_shape_)
        total = merge_moments(self.moments(), moments(X, self.chunk_size))
        return self._commit(total, data_summary(X))

    def merge(self, other):
        """Merge another fitted GaussianDenoiser's statistics into this one (exact).

        ``a.fit(X1).merge(b.fit(X2))`` equals ``fit(cat(X1, X2))``. Returns self.
        """
        if not isinstance(other, GaussianDenoiser):
            raise ValueError(f"can only merge a GaussianDenoiser, got {type(other).__name__}")
        self._check_fitted()
        other._check_fitted()
        if other.image_shape_ != self.image_shape_:
            raise ValueError(f"cannot merge a fit on images of shape {other.image_shape_} into "
                             f"one on images of shape {self.image_shape_}")
        return self._commit(merge_moments(self.moments(), other.moments()), other)

    def moments(self):
        """The fitted sufficient statistics as :class:`~analytic_denoisers.stats.Moments`."""
        self._check_fitted()
        n = self.n_samples_seen_
        return Moments(n, self.mean_, self.covariance_ * n)

    def _commit(self, total, summary, reset=False):
        """Set the fitted state from new moments; computed first, so an error changes nothing."""
        covariance = total.covariance().cpu()
        d = covariance.shape[0]
        rank = d if self.rank is None else self.rank
        if isinstance(rank, bool) or int(rank) != rank or not 1 <= rank <= d:
            raise ValueError(f"rank must be an integer between 1 and d = {d}, got {self.rank!r}")
        eigvals, eigvecs = torch.linalg.eigh(covariance)  # ascending
        if reset:
            self._reset_data_summary()
        self._update_data_summary(summary)
        self.mean_, self.covariance_ = total.mean.cpu(), covariance
        self.eigvals_ = eigvals.flip(0)[:int(rank)].clamp_min(0).contiguous()
        self.eigvecs_ = eigvecs.flip(1)[:, :int(rank)].contiguous()
        return self

    def _denoise(self, x, sigma, y):
        return gaussian_posterior_mean(
            x, sigma, *(self._fitted_on(n, x) for n in ("mean_", "eigvals_", "eigvecs_"))
        )

    def trajectory(self, x_T, sigmas):
        """Closed-form probability-flow ODE path from ``x_T`` at ``sigmas[0]``.

        Parameters
        ----------
        x_T : Tensor of shape (N, C, H, W)
        sigmas : 1-D tensor of shape (S,), e.g. a schedule from :mod:`analytic_denoisers.schedules`

        Returns
        -------
        Tensor of shape (S, N, C, H, W), see :func:`gaussian_trajectory`.
        """
        self._check_fitted()
        x_T = as_images(x_T, name="x_T", image_shape=self.image_shape_)
        return gaussian_trajectory(
            x_T, sigmas, *(self._fitted_on(n, x_T) for n in ("mean_", "eigvals_", "eigvecs_"))
        )
