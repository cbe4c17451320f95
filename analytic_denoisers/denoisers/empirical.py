"""The empirical-optimal (memorising) estimator; the math is in
:mod:`analytic_denoisers.kernels.empirical`."""

import torch
from sklearn.base import BaseEstimator

from ..core.batching import groups
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
        kwargs = dict(chunk_size=self.chunk_size, top_k=self.top_k)
        if y is None:
            prepared = self._derived("prepared", x, lambda: prepare(self.data_.to(x.device, x.dtype)))
            return empirical_posterior_mean(x, sigma, None, prepared=prepared, **kwargs)
        # one prepared block per class (each centred on its own class mean)
        prepared = self._derived("prepared_by_class", x, lambda: [
            prepare(self.data_[slice(*self._class_range(k))].to(x.device, x.dtype))
            for k in range(len(self.classes_))])
        out = torch.empty_like(x)
        for rows, _, k in groups(y=y, classes=self.classes_):
            out[rows] = empirical_posterior_mean(x[rows], sigma[rows], None, prepared=prepared[k], **kwargs)
        return out
