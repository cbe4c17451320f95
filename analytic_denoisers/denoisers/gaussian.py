"""The Gaussian (Wiener) estimator and its closed-form flow (Wang & Vastola, arXiv 2303.02490);
the math is in :mod:`analytic_denoisers.kernels.wiener`."""

from sklearn.base import BaseEstimator

from ..core.contract import DenoiserMixin
from ..core.fingerprint import data_summary
from ..core.validation import Interval, as_images
from ..kernels.moments import Moments, dask_statistics, is_dask_array, merge_moments, moments
from ..kernels.wiener import eigenbasis, gaussian_posterior_mean, gaussian_trajectory


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
    _parameter_constraints = {"rank": [Interval(int, 1), None], "chunk_size": [Interval(int, 1)]}

    def __init__(self, rank=None, chunk_size=4096):
        self.rank = rank
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Fit mean and covariance of ``X`` (N, C, H, W); ``y`` is ignored. Returns self.

        ``X`` may be a ``dask.array`` (out of core, any chunking): its moments are computed block
        by block on Dask's scheduler (the default, or ``dask.config.set(scheduler=...)``, or an
        active ``dask.distributed.Client``) and merged exactly (:func:`~analytic_denoisers.kernels.moments.dask_statistics`).
        """
        self._check_params()
        return self._commit(*self._statistics_of(X), reset=True)

    def partial_fit(self, X, y=None):
        """Add the images ``X`` (N, C, H, W; a tensor, array or dask array) to the statistics and
        refresh the eigenbasis."""
        if not self.__sklearn_is_fitted__():
            return self.fit(X)
        self._check_params()
        shape = tuple(getattr(X, "shape", ()))
        if len(shape) == 4 and shape[1:] != self.image_shape_:  # before a pass over the data
            raise ValueError(f"X has image shape (C, H, W) = {shape[1:]}, but the denoiser was "
                             f"fitted on images of shape {self.image_shape_}")
        new, summary = self._statistics_of(X)
        return self._commit(merge_moments(self.moments(), new), summary)

    def _statistics_of(self, X):
        """Moments and data summary of training images ``X`` (in memory, or a dask array)."""
        if is_dask_array(X):
            return dask_statistics(X, self.chunk_size)
        X = as_images(X, name="X")
        return moments(X, self.chunk_size), data_summary(X)

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
        """The fitted sufficient statistics as :class:`~analytic_denoisers.kernels.moments.Moments`."""
        self._check_fitted()
        n = self.n_samples_seen_
        return Moments(n, self.mean_, self.covariance_ * n)

    def _commit(self, total, summary, reset=False):
        """Set the fitted state from new moments; computed first, so an error changes nothing."""
        basis = eigenbasis(total, self.rank)
        if reset:
            self._reset_data_summary()
        self._update_data_summary(summary)
        self.mean_, self.covariance_, self.eigvals_, self.eigvecs_ = basis
        return self

    def _statistics(self, like):
        return tuple(self._fitted_on(n, like) for n in ("mean_", "eigvals_", "eigvecs_"))

    def _denoise(self, x, sigma, y):
        return gaussian_posterior_mean(x, sigma, *self._statistics(x))

    def trajectory(self, x_T, sigmas):
        """Closed-form probability-flow ODE path from ``x_T`` at ``sigmas[0]``.

        Parameters
        ----------
        x_T : Tensor of shape (N, C, H, W)
        sigmas : 1-D tensor of shape (S,), e.g. a schedule from :mod:`analytic_denoisers.sampling.schedules`

        Returns
        -------
        Tensor of shape (S, N, C, H, W), see :func:`~analytic_denoisers.kernels.wiener.gaussian_trajectory`.
        """
        self._check_fitted()
        x_T = as_images(x_T, name="x_T", image_shape=self.image_shape_)
        return gaussian_trajectory(x_T, sigmas, *self._statistics(x_T))
