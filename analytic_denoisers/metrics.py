"""Per-image agreement metrics between a method's images ``a`` and reference images ``b``.

Each function takes two tensors of the same shape (N, ...) and returns a float64 tensor of
shape (N,), one value per image (the benchmark protocol of DESIGN.md then takes the mean of
R², MSE and explained variance and the median of Pearson r over images). An image whose
reference is constant has no R² or r: those entries are NaN, never a silent 0 or 1.
"""

import math
import statistics
from typing import Callable, NamedTuple

import numpy as np
import torch

from .core.noise import seeded_noise


def _flat(a, b):
    if a.shape != b.shape:
        raise ValueError(f"compared images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.detach().flatten(1).double(), b.detach().flatten(1).to(a.device).double()


def mse(a, b):
    """Mean squared error per image, ``mean_p (a - b)^2``."""
    a, b = _flat(a, b)
    return (a - b).square().mean(1)


def r2(a, b):
    """Coefficient of determination of ``a`` against the reference ``b``, per image:
    ``1 - sum (a - b)^2 / sum (b - mean b)^2``."""
    a, b = _flat(a, b)
    total = (b - b.mean(1, keepdim=True)).square().sum(1)
    return 1 - (a - b).square().sum(1) / torch.where(total > 0, total, torch.nan)


def r2_unbiased(a, b):
    """R² as Lukoianov et al. and GoldDiff compute it, per image:
    ``1 - mean (a - b)^2 / var(b)`` with the unbiased variance of the D pixels of ``b`` (D - 1 in
    its denominator), so ``1 - (1 - r2) (D - 1) / D``."""
    a, b = _flat(a, b)
    variance = b.var(1, correction=1)
    return 1 - (a - b).square().mean(1) / torch.where(variance > 0, variance, torch.nan)


def pearson(a, b):
    """Pearson correlation of the pixels of ``a`` and ``b``, per image."""
    a, b = _flat(a, b)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    return (a * b).sum(1) / torch.where(norm > 0, norm, torch.nan)


def explained_variance(a, b):
    """``1 - ||a - b||^2 / ||b||^2`` per image (b is the reference)."""
    a, b = _flat(a, b)
    total = b.square().sum(1)
    return 1 - (a - b).square().sum(1) / torch.where(total > 0, total, torch.nan)


class Metric(NamedTuple):
    """A per-image metric, how the protocol summarises it over images, and its direction."""

    fn: Callable
    summary: str  # "mean" or "median"
    greater_is_better: bool


# the one table of metrics, for the benchmark protocol and for calibration
METRICS = {
    "r2": Metric(r2, "mean", True),
    "r2_unbiased": Metric(r2_unbiased, "mean", True),
    "pearson": Metric(pearson, "median", True),
    "mse": Metric(mse, "mean", False),
    "explained_variance": Metric(explained_variance, "mean", True),
}


def summarise(a, b):
    """Every metric of ``METRICS`` for images ``a`` against reference ``b``, summarised over
    images (NaN entries are left out of the mean or median; the median of an even count is the
    mean of the two middle values), with its spread over the images: dict ``name -> float``
    and ``name_q25``, ``name_q75`` -> the lower and upper quartiles (see :func:`quartiles`)."""
    out = {}
    for name, (fn, how, _) in METRICS.items():
        values = fn(a, b)
        spread = quartiles(values, dim=0)
        values = values.cpu().numpy()
        out[name] = float(np.nanmean(values) if how == "mean" else np.nanmedian(values))
        out[f"{name}_q25"], out[f"{name}_q75"] = spread["q25"], spread["q75"]
    return out


def denoising_scorer(sigma, seed=0):
    """A scikit-learn scorer for model selection of denoisers (``GridSearchCV(...,
    scoring=denoising_scorer([0.1, 0.5, 2.0]))``): minus the mean denoising MSE on the held-out
    images, ``-mean_i mse(D(x0_i + sigma eps_i, sigma), x0_i)`` averaged over the sigmas, with
    per-image seeded noise (seeds ``seed + i``) so that every candidate sees the same noise.
    Higher is better. Labels ``y``, when the search passes them, condition the denoiser.

    Parameters
    ----------
    sigma : float or list of floats, the noise levels
    seed : int, the noise seed of the first image
    """
    sigmas = [float(s) for s in (sigma if isinstance(sigma, (list, tuple)) else [sigma])]
    if not sigmas or not all(math.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"sigma must be a positive number or a list of them, got {sigma!r}")

    def scorer(estimator, X, y=None):
        x0 = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
        eps = seeded_noise(range(seed, seed + len(x0)), x0.shape[1:], dtype=x0.dtype, device=x0.device)
        return -statistics.mean(float(mse(estimator.denoise(x0 + s * eps, s, y), x0).mean()) for s in sigmas)

    return scorer


def quartiles(values, dim=-1):
    """Lower quartile, median and upper quartile of the non-NaN entries along ``dim`` (NaN where
    there are none): dict with ``q25``, ``median``, ``q75``, each a float or a list."""
    levels = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64, device=values.device)
    q = torch.nanquantile(values.double(), levels, dim=dim)
    return {"q25": q[0].tolist(), "median": q[1].tolist(), "q75": q[2].tolist()}
