"""The PCA-locality estimator (Lukoianov et al., arXiv 2509.09672); the math is in
:mod:`analytic_denoisers.kernels.locality`."""

from sklearn.base import BaseEstimator

from ..core.contract import DenoiserMixin
from ..core.validation import Interval, Schedule, as_training_images
from ..kernels.locality import locality_masks, pca_locality_posterior_mean, prepare_transposed
from ..kernels.moments import moments
from ..kernels.wiener import eigenbasis


class PCALocalityDenoiser(DenoiserMixin, BaseEstimator):
    """Per-pixel softmax over training images with masks from the Wiener filter (Lukoianov et al.).

    Parameters
    ----------
    threshold : float in [0, 1] or callable, default 0.005
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
    _parameter_constraints = {
        "threshold": [Interval(float, 0, 1), Schedule()],
        "rank": [Interval(int, 1), None],
        "chunk_size": [Interval(int, 1), None],
    }

    def __init__(self, threshold=0.005, rank=None, chunk_size=None):
        self.threshold = threshold
        self.rank = rank
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and fit their Gaussian. Returns self."""
        self._check_params()
        X = as_training_images(X)
        basis = eigenbasis(moments(X), self.rank)
        self._set_data_summary(X)
        self.data_ = X.detach().cpu().contiguous()
        self.mean_, self.eigvals_, self.eigvecs_ = basis.mean, basis.eigvals, basis.eigvecs
        return self

    def masks(self, sigma):
        """The bool masks ``mask[n, m]`` of shape (d, d) at noise level ``sigma`` (float64, CPU)."""
        self._check_fitted()
        return locality_masks(float(sigma), self.eigvals_, self.eigvecs_, self.threshold)

    def _denoise(self, x, sigma, y):
        prepared = self._derived("prepared", x, lambda: prepare_transposed(self.data_.to(x.device, x.dtype)))
        # one mask set per distinct sigma
        return pca_locality_posterior_mean(x, sigma, None, self.masks, chunk_size=self.chunk_size, prepared=prepared)
