"""The estimators built on the empirical distribution of the training set: the empirical-optimal
(memorising) denoiser, the nearest-neighbour baseline and the smoothed closed form (sigma-CFDM);
the math is in :mod:`analytic_denoisers.kernels.empirical`."""

import torch
from sklearn.base import BaseEstimator

from ..core.contract import TrainingSetMixin
from ..core.validation import Interval
from ..kernels.empirical import empirical_posterior_mean, nearest_training_index, prepare, smoothed_posterior_mean


class EmpiricalOptimalDenoiser(TrainingSetMixin, BaseEstimator):
    """Exact posterior mean of the training set's empirical distribution (memorises it).

    ``D(x, sigma) = sum_i softmax_i(-||x - x_i||^2 / (2 sigma^2)) x_i``; sampling with it only
    reproduces training images (e.g. Kadkhodaie et al., arXiv 2310.02557; Kamb & Ganguli,
    arXiv 2412.20292).

    Parameters
    ----------
    temperature : float > 0, default 1
        Divides the softmax logits (the published code's ``temperature``); 1 is the exact
        posterior mean, and T equals it at ``sigma * sqrt(T)``.
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

    _parameter_constraints = {"temperature": [Interval(float, 0, closed="neither")],
                              "chunk_size": [Interval(int, 1), None], "top_k": [Interval(int, 1), None]}
    _shardable = True  # in the exact mode (top_k=None): see shard()

    def __init__(self, chunk_size=None, top_k=None, temperature=1.0):
        self.chunk_size = chunk_size
        self.top_k = top_k
        self.temperature = temperature

    def _denoise(self, x, sigma, y):
        def posterior_mean(x, sigma, bounds, k):  # one prepared block per class, on its class mean
            prepared = self._derived(("prepared", k), x,  # by class: a shard's bounds of two classes may coincide
                                     lambda: prepare(self.data_[slice(*bounds)].to(x.device, x.dtype)))
            return empirical_posterior_mean(x, sigma, None, prepared=prepared, temperature=self.temperature,
                                            chunk_size=self.chunk_size, top_k=self.top_k)

        return self._by_class(x, sigma, y, posterior_mean, with_class=True)


class NearestNeighbourDenoiser(TrainingSetMixin, BaseEstimator):
    """The nearest training image, whatever sigma (the studio's ``nearest_dataset`` baseline).

    ``D(x, sigma) = x_j`` with ``j = argmin_i ||x - x_i||``: the sigma -> 0 limit of the
    empirical-optimal denoiser, and the crudest memorising baseline. Distances are taken in
    sigma units (``x = x0 + sigma eps``); the published baseline compares the VP state
    ``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` with unscaled training images, which picks
    other neighbours at large noise. The output is piecewise constant in ``x`` (zero gradient).

    Parameters
    ----------
    chunk_size : int, optional
        Training images per chunk of the search; does not change the result.

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : see :class:`EmpiricalOptimalDenoiser` (with
        labels, the nearest image of the query's class)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    _piecewise_constant = True  # the contract's autograd check expects a zero gradient
    _parameter_constraints = {"chunk_size": [Interval(int, 1), None]}

    def __init__(self, chunk_size=None):
        self.chunk_size = chunk_size

    def _denoise(self, x, sigma, y):
        def nearest(x, sigma, bounds):
            prepared = self._derived(("prepared", *bounds), x,
                                     lambda: prepare(self.data_[slice(*bounds)].to(x.device, x.dtype)))
            index = nearest_training_index(x, None, chunk_size=self.chunk_size, prepared=prepared)
            return self._fitted_on("data_", x)[slice(*bounds)][index]  # exact copies

        return self._by_class(x, sigma, y, nearest)


class SmoothedClosedFormDenoiser(TrainingSetMixin, BaseEstimator):
    """sigma-CFDM: the empirical-optimal denoiser smoothed over its input (Scarvelis, Saez de
    Ocariz Borde & Solomon, "Closed-form diffusion models", arXiv 2310.12395).

    ``D_s(x, sigma) = (1 / M) sum_m D_opt(x + s eps_m, sigma)`` with ``M = num_noise`` seeded
    draws ``eps_m`` fixed at fit (shared by every query and call, so the denoiser is a
    deterministic function of ``x``). It is a Monte Carlo estimate of the smoothed closed form
    ``E_eps D_opt(x + s eps)`` (which has no closed form beyond one training image): its error
    falls as ``1 / sqrt(M)``. The paper's nearest-neighbour acceleration of the score is not
    used: every call is exact given the draws (M times the cost of the empirical denoiser).

    Parameters
    ----------
    smoothing_std : float >= 0, default 0.1
        ``s``, in the units of the images ([-1, 1]); 0 is the empirical-optimal denoiser.
    num_noise : int, default 16
        ``M``, the draws averaged.
    random_state : int, default 0
        Seeds the draws.
    temperature : float > 0, default 1
        Of the empirical softmax (see :class:`EmpiricalOptimalDenoiser`).
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.

    Attributes
    ----------
    noise_ : Tensor of shape (num_noise, C, H, W), float64, the draws ``eps_m``
    data_, labels_, classes_, class_offsets_ : see :class:`EmpiricalOptimalDenoiser`
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    _fitted_state = TrainingSetMixin._fitted_state + ("noise_",)
    _parameter_constraints = {
        "smoothing_std": [Interval(float, 0)],
        "num_noise": [Interval(int, 1)],
        "random_state": [Interval(int, 0, 2**63 - 1)],
        "temperature": [Interval(float, 0, closed="neither")],
        "chunk_size": [Interval(int, 1), None],
    }

    def __init__(self, smoothing_std=0.1, num_noise=16, random_state=0, temperature=1.0, chunk_size=None):
        self.smoothing_std = smoothing_std
        self.num_noise = num_noise
        self.random_state = random_state
        self.temperature = temperature
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,), and draw
        the smoothing noise. Returns self."""
        super().fit(X, y)
        generator = torch.Generator().manual_seed(self.random_state)
        self.noise_ = torch.randn((self.num_noise, *self.image_shape_), generator=generator, dtype=torch.float64)
        return self

    def _denoise(self, x, sigma, y):
        if len(self.noise_) != self.num_noise:
            raise ValueError(f"SmoothedClosedFormDenoiser was fitted with num_noise={len(self.noise_)}, now "
                             f"num_noise={self.num_noise}: call fit again (its draws are made at fit)")

        def posterior_mean(x, sigma, bounds):
            prepared = self._derived(("prepared", *bounds), x,
                                     lambda: prepare(self.data_[slice(*bounds)].to(x.device, x.dtype)))
            return smoothed_posterior_mean(x, sigma, None, self._fitted_on("noise_", x), self.smoothing_std,
                                           temperature=self.temperature, chunk_size=self.chunk_size,
                                           prepared=prepared)

        return self._by_class(x, sigma, y, posterior_mean)
