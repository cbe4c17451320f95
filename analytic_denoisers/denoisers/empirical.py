"""The empirical-optimal (memorising) estimator; the math is in
:mod:`analytic_denoisers.kernels.empirical`."""

from sklearn.base import BaseEstimator

from ..core.contract import TrainingSetMixin
from ..core.validation import Interval
from ..kernels.empirical import empirical_posterior_mean, prepare


class EmpiricalOptimalDenoiser(TrainingSetMixin, BaseEstimator):
    """Exact posterior mean of the training set's empirical distribution (memorises it).

    ``D(x, sigma) = sum_i softmax_i(-||x - x_i||^2 / (2 sigma^2)) x_i``; sampling with it only
    reproduces training images (e.g. Kadkhodaie et al., arXiv 2310.02557; Kamb & Ganguli,
    arXiv 2412.20292).

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

    _parameter_constraints = {"chunk_size": [Interval(int, 1), None], "top_k": [Interval(int, 1), None]}

    def __init__(self, chunk_size=None, top_k=None):
        self.chunk_size = chunk_size
        self.top_k = top_k

    def _denoise(self, x, sigma, y):
        def posterior_mean(x, sigma, bounds):  # one prepared block per class, on its class mean
            prepared = self._derived(("prepared", *bounds), x,
                                     lambda: prepare(self.data_[slice(*bounds)].to(x.device, x.dtype)))
            return empirical_posterior_mean(x, sigma, None, prepared=prepared, chunk_size=self.chunk_size,
                                            top_k=self.top_k)

        return self._by_class(x, sigma, y, posterior_mean)
