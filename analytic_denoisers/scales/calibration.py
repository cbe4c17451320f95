"""Calibration of a scale against a target denoiser (Kamb & Ganguli, arXiv 2412.20292, calibrate
their patch sizes so against a UNet): the candidate whose outputs best match at each sigma."""

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from ..core.batching import in_batches
from ..core.contract import as_denoise_fn
from ..core.noise import seeded_noise
from ..core.validation import Interval, Options, Sequence, as_images, check_scalar, sigma_grid
from ..metrics import METRICS
from .table import Table


@dataclass
class Calibration:
    """Result of :func:`calibrate`.

    Attributes
    ----------
    schedule : Table
        The chosen candidate at each sigma (``interpolation="nearest"``); pass it as the
        parameter, e.g. ``est.set_params(patch_size=result.schedule)``.
    param : str
    candidates : list, in the order they were given
    sigmas : ndarray of shape (S,), the levels in the order given
    scores : ndarray of shape (S, K), the metric of candidate k at ``sigmas[s]``
    metric : str, a name of :data:`analytic_denoisers.metrics.METRICS`
    best : ndarray of shape (S,), int, index of the chosen candidate at each sigma
    """

    schedule: Table
    param: str
    candidates: list
    sigmas: np.ndarray
    scores: np.ndarray
    metric: str
    best: np.ndarray

    @property
    def greater_is_better(self):
        return METRICS[self.metric].greater_is_better

    def to_dict(self):
        """JSON-ready summary (for a results file)."""
        return {"param": self.param, "metric": self.metric, "candidates": list(self.candidates),
                "sigmas": self.sigmas.tolist(), "scores": self.scores.tolist(),
                "chosen": [self.candidates[k] for k in self.best], "schedule": self.schedule.to_dict()}


def calibrate(estimator, param, candidates, target, X, sigmas, *, metric="mse", seed=0,
              fit_X=None, batch_size=None, progress=True):
    """At each sigma, the value of ``param`` whose outputs best match ``target``'s.

    For each level ``sigma``: ``x = X + sigma * eps`` with per-image seeded noise
    (image i uses seed ``seed + i``, the same ``eps`` at every sigma, see
    :func:`~analytic_denoisers.core.noise.seeded_noise`), and each candidate ``c`` is scored by
    ``metric(estimator with param = c).denoise(x, sigma), target(x, sigma))``, averaged over
    images; the best candidate is kept (ties: the first in ``candidates``). This is Kamb &
    Ganguli's calibration of the patch size against a trained network (arXiv 2412.20292), for
    any parameter and any target.

    Parameters
    ----------
    estimator : fitted estimator with ``get_params`` / ``set_params`` / ``denoise``
    param : str
        Hyper-parameter to sweep, e.g. "patch_size", "threshold".
    candidates : sequence of numbers, length K
    target : object with ``denoise(x, sigma)`` (e.g. a UNetDenoiser), or a callable ``(x, sigma)``
    X : Tensor or ndarray of shape (N, C, H, W)
        Held-out clean images (not the estimator's training images).
    sigmas : 1-D sequence or tensor of shape (S,); zeros (a schedule's end) are ignored
    metric : a name of :data:`analytic_denoisers.metrics.METRICS`, default "mse"
        "mse": mean squared difference (lower is better); "r2": mean over images of
        ``1 - sum (a - b)^2 / sum (b - mean b)^2`` with ``b`` the target (higher is better);
        "pearson", "explained_variance" (higher is better).
    seed : int
    fit_X : Tensor of shape (M, C, H, W), optional
        For a parameter read at fit time (e.g. ``GaussianDenoiser(rank=)``): a clone of the
        estimator is fitted on ``fit_X`` for each candidate, and ``estimator`` is left as it is.
        Without it the candidates are set on ``estimator`` itself, whose original value is
        restored afterwards.
    batch_size : int, optional, images per denoiser call (default: all at once)
    progress : bool, show a tqdm progress bar

    Returns
    -------
    :class:`Calibration` with the chosen ``schedule`` (a :class:`Table`), ``scores`` (S, K),
    ``metric``, ``candidates``, ``sigmas``.
    """
    check_scalar(metric, "metric", Options(*METRICS))
    score_fn, _, greater_is_better = METRICS[metric]
    params = estimator.get_params()
    if param not in params:
        raise ValueError(f"{param!r} is not a hyper-parameter of {type(estimator).__name__}; "
                         f"it has {sorted(params)}")
    candidates = list(candidates)
    check_scalar(candidates, "candidates", Sequence(Interval(float)))
    target_fn = as_denoise_fn(target, name="target")
    batch_size = check_scalar(batch_size, "batch_size", Interval(int, 1), None)
    X = as_images(X, name="X")
    levels = sigma_grid(sigmas)
    noise = seeded_noise(range(seed, seed + len(X)), X.shape[1:], dtype=X.dtype, device=X.device)

    if fit_X is None:
        def model(k):
            return estimator.set_params(**{param: candidates[k]})
    else:
        fitted = [clone(estimator).set_params(**{param: c}).fit(fit_X) for c in candidates]

        def model(k):
            return fitted[k]

    scores = np.empty((len(levels), len(candidates)))
    bar = tqdm(total=scores.size, desc=f"calibrate {param}", disable=not progress)
    try:
        for s, sigma in enumerate(levels):
            x = X + sigma * noise
            reference = in_batches(target_fn, x, sigma, batch_size).double()
            for k in range(len(candidates)):
                out = in_batches(model(k).denoise, x, sigma, batch_size).double()
                scores[s, k] = float(score_fn(out, reference).nanmean())
                bar.update()
    finally:
        bar.close()
        if fit_X is None:
            estimator.set_params(**{param: params[param]})

    if np.isnan(scores).all(axis=1).any():
        raise ValueError(f"the {metric} score is undefined at some sigma (e.g. r2 against a constant "
                         "target image); use metric='mse'")
    best = np.nanargmax(scores, 1) if greater_is_better else np.nanargmin(scores, 1)
    if fit_X is None and len(candidates) > 1 and (scores == scores[:, :1]).all():
        warnings.warn(f"every candidate of {param!r} scored the same at every sigma; if {param!r} "
                      "is read at fit time, pass fit_X to refit for each candidate", stacklevel=2)
    schedule = Table(levels, [candidates[k] for k in best])
    return Calibration(schedule=schedule, param=param, candidates=candidates,
                       sigmas=np.asarray(levels), scores=scores, metric=metric, best=best)
