"""Training-free analytical diffusion denoisers with one sigma-native interface.

Vocabulary (used the same way everywhere in this package):

``x``
    Noisy images, a tensor of shape ``(N, C, H, W)`` in data units, ``x = x0 + sigma * eps``.
``x0`` / ``denoised``
    Clean images in ``[-1, 1]``, or a denoiser's estimate ``D(x, sigma) ~ E[x0 | x]``.
``eps``
    Standard normal noise, or a denoiser's estimate ``(x - D) / sigma``.
``sigma``
    Noise standard deviation of the variance-exploding (EDM) process: a float or a tensor of
    shape ``(N,)`` (one level per image). Always the argument after ``x``.
``sigmas``
    A sampling schedule: a decreasing 1-D float64 tensor that ends in 0.
``alpha_bar``
    Cumulative signal fraction of a variance-preserving (DDPM) process,
    ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``; only used at the edges
    (:mod:`analytic_denoisers.sampling.schedules`), where ``sigma**2 = (1 - alpha_bar) / alpha_bar``.
``mean_``, ``eigvals_``, ``eigvecs_``
    Fitted pixel mean and covariance eigenpairs (fitted state ends in ``_``).

Quick start::

    import analytic_denoisers as ad
    X = ad.datasets.load("default")                 # (10000, 1, 28, 28) in [-1, 1]
    den = ad.GaussianDenoiser().fit(X)
    x0 = den(x, 0.5); s = den.score(x, 0.5)
    samples = ad.sample(den, torch.randn(16, 1, 28, 28), ad.schedules.karras(18, 0.002, 80))
"""

from .core.compat import repair_torchvision_import

repair_torchvision_import()  # before anyone imports torchvision, diffusers or k-diffusion (core/compat.py)

from . import analysis, bench, datasets, metrics, registry, scales, testing
from .core.artifact import FileFormatError
from .core.contract import DenoiserMixin
from .core.version import __version__
from .denoisers.anchored import AnchoredCompositeDenoiser
from .denoisers.empirical import EmpiricalOptimalDenoiser, NearestNeighbourDenoiser, SmoothedClosedFormDenoiser
from .denoisers.flex import PatchFlexDenoiser
from .denoisers.gaussian import GaussianDenoiser
from .denoisers.knn import KNNScoreDenoiser
from .denoisers.locality import GoldDiffDenoiser, PCALocalityDenoiser
from .denoisers.mixture import GaussianMixtureDenoiser
from .denoisers.network import NetworkDenoiser
from .denoisers.patches import LocalScoreDenoiser, PatchCompositeDenoiser
from .kernels import moments as stats
from .kernels.anchored import anchored_composite_posterior_mean
from .kernels.empirical import empirical_posterior_mean, nearest_training_index, smoothed_posterior_mean
from .kernels.flex import patch_flex_posterior_mean
from .kernels.golddiff import golddiff_posterior_mean
from .kernels.knn import knn_posterior_mean
from .kernels.locality import locality_masks, pca_locality_posterior_mean
from .kernels.mixture import gaussian_mixture_posterior_mean
from .kernels.patches import (equivariant_local_score_posterior_mean, local_score_posterior_mean,
                              patch_composite_posterior_mean)
from .kernels.wiener import gaussian_posterior_mean, gaussian_trajectory
from .registry import load
from .sampling import schedules
from .sampling.samplers import sample, sample_ddim, sample_ddim_vp, sample_euler, sample_heun
from .unet.estimator import UNetDenoiser

__all__ = [
    "AnchoredCompositeDenoiser",
    "DenoiserMixin",
    "EmpiricalOptimalDenoiser",
    "FileFormatError",
    "GaussianDenoiser",
    "GaussianMixtureDenoiser",
    "GoldDiffDenoiser",
    "KNNScoreDenoiser",
    "LocalScoreDenoiser",
    "NearestNeighbourDenoiser",
    "NetworkDenoiser",
    "PCALocalityDenoiser",
    "PatchCompositeDenoiser",
    "PatchFlexDenoiser",
    "SmoothedClosedFormDenoiser",
    "UNetDenoiser",
    "__version__",
    "analysis",
    "anchored_composite_posterior_mean",
    "bench",
    "datasets",
    "empirical_posterior_mean",
    "equivariant_local_score_posterior_mean",
    "gaussian_mixture_posterior_mean",
    "golddiff_posterior_mean",
    "gaussian_posterior_mean",
    "gaussian_trajectory",
    "knn_posterior_mean",
    "load",
    "local_score_posterior_mean",
    "locality_masks",
    "metrics",
    "nearest_training_index",
    "patch_composite_posterior_mean",
    "patch_flex_posterior_mean",
    "pca_locality_posterior_mean",
    "registry",
    "sample",
    "sample_ddim",
    "sample_ddim_vp",
    "sample_euler",
    "sample_heun",
    "scales",
    "schedules",
    "smoothed_posterior_mean",
    "stats",
    "testing",
]
