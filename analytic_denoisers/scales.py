"""Scale schedules: a patch size or threshold as a function of the noise level sigma.

The locality and patch denoisers take a scale hyper-parameter (``PCALocalityDenoiser(threshold=)``,
``LocalScoreDenoiser(patch_size=)``, ``PatchCompositeDenoiser(patch_size=)``) that is a number or
a *schedule*: any callable ``schedule(sigma) -> number``. This module owns

* :func:`value_at`, the one way to read a scale at a noise level;
* :class:`Table`, values on a grid of noise levels looked up in log-sigma, saved with the
  estimator that holds it (:meth:`Table.from_steps` pairs a published per-step list with the
  step sigmas);
* schedules derived from data alone: :func:`wiener_extent_schedule` (the spatial extent of the
  thresholded Wiener filter, as in Lukoianov et al., arXiv 2509.09672) and
  :func:`snr_resolution_schedule` (the signal-to-noise / resolution rule after Hwang et al.,
  arXiv 2401.10247);
* :func:`calibrate`, the candidate value whose outputs best match a target denoiser's at each
  sigma (Kamb & Ganguli, arXiv 2412.20292, calibrate their patch sizes so against a UNet).

A fixed scale is just a number. Patch sizes produced here are odd integers ``2 r + 1`` clipped
to ``[1, 2 max(H, W) - 1]`` (a patch of the largest size centred on any pixel covers the image).
"""

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import clone
from tqdm.auto import tqdm

from . import metrics
from .base import as_images
from .locality import locality_masks
from .sampling import seeded_noise

INTERPOLATIONS = ("nearest", "log-linear")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_level(sigma):
    """One positive, finite noise level as a Python float."""
    try:
        level = float(sigma)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"sigma must be one number, got {sigma!r}") from None
    if not (math.isfinite(level) and level > 0):
        raise ValueError(f"sigma must be positive and finite, got {level!r}")
    return level


def value_at(schedule, sigma):
    """The value of a scale (a number or a schedule) at one noise level.

    Parameters
    ----------
    schedule : number, or callable ``schedule(sigma) -> number`` (e.g. a :class:`Table`)
    sigma : float or 0-d tensor, positive

    Returns
    -------
    The number itself (unchanged, an ``int`` stays an ``int``), or ``schedule(float(sigma))``.

    Raises
    ------
    ValueError if ``schedule`` is neither a number nor callable, if it returns something that
    is not a number, or if ``sigma`` is not one positive finite number.
    """
    level = _as_level(sigma)
    if _is_number(schedule):
        return schedule
    if not callable(schedule):
        raise ValueError(f"a scale must be a number or a schedule (a callable of sigma, such as "
                         f"analytic_denoisers.scales.Table), got {type(schedule).__name__} {schedule!r}")
    value = schedule(level)
    if not _is_number(value):
        raise ValueError(f"schedule {schedule!r} returned {value!r} at sigma = {level:g}; "
                         "expected a number")
    return value


def _as_vector(value, name):
    """A 1-D numpy array from a sequence, array or tensor (on any device)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


class Table:
    """A schedule given by values on a grid of noise levels, looked up in log-sigma.

    Parameters
    ----------
    sigmas : sequence, array or tensor of shape (K,)
        Positive, finite, distinct noise levels, in any order.
    values : sequence, array or tensor of shape (K,)
        ``values[k]`` is the scale at ``sigmas[k]``: finite real numbers. Integers stay Python
        ``int`` (patch sizes), anything else becomes ``float``.
    interpolation : {"nearest", "log-linear"}
        ``"nearest"``: the value at the grid level nearest to sigma in ``log(sigma)`` (a tie goes
        to the larger level); integer values stay integers. ``"log-linear"``: linear in
        ``log(sigma)`` between the neighbouring levels, for real-valued scales such as
        thresholds; returns a float. Outside the grid both hold the end values.

    Attributes
    ----------
    sigmas : tuple of float, increasing
    values : tuple of numbers, aligned with ``sigmas``
    interpolation : str

    A Table is saved with the estimator holding it (``to_dict`` / ``from_dict``; see
    :func:`json_default`), compares equal to a table with the same entries, and is hashable.

    Examples
    --------
    >>> t = Table([0.1, 1.0, 10.0], [3, 7, 15])
    >>> t(0.2), t(5.0), t(100.0)
    (3, 15, 15)
    >>> round(Table([0.1, 10.0], [0.0, 0.2], interpolation="log-linear")(1.0), 12)
    0.1
    """

    def __init__(self, sigmas, values, interpolation="nearest"):
        sigmas, values = _as_vector(sigmas, "sigmas"), _as_vector(values, "values")
        if len(sigmas) == 0:
            raise ValueError("a Table needs at least one (sigma, value) pair, got none")
        if len(sigmas) != len(values):
            raise ValueError(f"sigmas and values must have the same length, got {len(sigmas)} "
                             f"sigmas and {len(values)} values")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if sigmas.dtype.kind not in "iuf":
            raise ValueError(f"sigmas must be real numbers, got dtype {sigmas.dtype}")
        sigmas = sigmas.astype(np.float64)
        if not (np.isfinite(sigmas).all() and (sigmas > 0).all()):
            raise ValueError(f"sigmas must be positive and finite, got {sigmas.tolist()}")
        if values.dtype.kind not in "iuf":
            raise ValueError(f"values must be real numbers (ints or floats), got dtype {values.dtype}")
        if not np.isfinite(values).all():
            raise ValueError(f"values must be finite, got {values.tolist()}")
        order = np.argsort(sigmas, kind="stable")
        sigmas, values = sigmas[order], values[order]
        if (np.diff(sigmas) == 0).any():
            raise ValueError(f"sigmas must be distinct, got {sigmas.tolist()} (sorted)")
        self.sigmas = tuple(float(s) for s in sigmas)
        cast = int if values.dtype.kind in "iu" else float
        self.values = tuple(cast(v) for v in values.tolist())
        self.interpolation = interpolation
        self._log_sigmas = np.log(sigmas)

    @classmethod
    def from_steps(cls, values, sigmas, interpolation="nearest"):
        """A table from one value per sampling step, as published per-step scale lists are.

        Step ``i`` denoises at ``sigmas[i]``, so ``values[i]`` is paired with ``sigmas[i]``.

        Parameters
        ----------
        values : sequence of shape (n,), one value per step
        sigmas : 1-D tensor of shape (n + 1,) or (n,)
            A sampling schedule (strictly decreasing, as from :mod:`analytic_denoisers.schedules`),
            with or without its final 0.
        interpolation : see :class:`Table`

        Examples
        --------
        >>> sigmas = ad.schedules.karras(4, 0.002, 80)     # 4 steps, 5 levels ending in 0
        >>> Table.from_steps([27, 15, 7, 3], sigmas)
        """
        from .schedules import check_sigmas

        values = _as_vector(values, "values")
        levels = _as_vector(sigmas, "sigmas")
        if len(levels) and levels[-1] > 0:  # given without the final 0
            levels = np.append(levels, 0.0)
        levels = check_sigmas(levels)[:-1]
        if len(values) != len(levels):
            raise ValueError(f"got {len(values)} values for a schedule of {len(levels)} steps "
                             f"(sigmas {levels.tolist()}); give one value per step")
        return cls(levels, values, interpolation=interpolation)

    def __call__(self, sigma):
        """The value at noise level ``sigma`` (a positive float)."""
        x = math.log(_as_level(sigma))
        logs = self._log_sigmas
        if self.interpolation == "log-linear":
            return float(np.interp(x, logs, np.asarray(self.values, dtype=np.float64)))
        k = int(np.searchsorted(logs, x))  # logs[k - 1] < x <= logs[k]
        if k == len(logs) or (k > 0 and x - logs[k - 1] < logs[k] - x):
            k -= 1
        return self.values[k]

    def to_dict(self):
        """JSON-ready dict: ``{"__schedule__": "Table", "sigmas", "values", "interpolation"}``."""
        return {"__schedule__": "Table", "sigmas": list(self.sigmas), "values": list(self.values),
                "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(data["sigmas"], data["values"], interpolation=data["interpolation"])
        except KeyError as err:
            raise ValueError(f"a Table dict needs sigmas, values and interpolation; {err} is missing") from None

    def __eq__(self, other):
        if not isinstance(other, Table):
            return NotImplemented
        return (self.sigmas, self.values, self.interpolation) == (other.sigmas, other.values,
                                                                 other.interpolation)

    def __hash__(self):
        return hash((self.sigmas, self.values, self.interpolation))

    def __repr__(self):
        def short(seq):
            items = [repr(v) for v in seq]
            return "[" + ", ".join(items if len(items) <= 8 else items[:3] + ["..."] + items[-2:]) + "]"

        return (f"Table(sigmas={short(self.sigmas)}, values={short(self.values)}, "
                f"interpolation={self.interpolation!r})")


# -- serialisation (used by analytic_denoisers.io for estimator params) -----------------------

SCHEDULE_TYPES = {"Table": Table}


def json_default(obj):
    """``json.dumps(..., default=json_default)``: encode schedule objects with their ``to_dict``.

    Raises ``TypeError`` for anything else (as ``json`` itself does), so that a plain lambda
    or other non-serialisable parameter still fails clearly.
    """
    if type(obj) in SCHEDULE_TYPES.values():
        return obj.to_dict()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable "
                    "(schedules must be a number or an analytic_denoisers.scales.Table to be saved)")


def json_object_hook(data):
    """``json.loads(..., object_hook=json_object_hook)``: rebuild dicts written by :func:`json_default`."""
    if "__schedule__" not in data:
        return data
    cls = SCHEDULE_TYPES.get(data["__schedule__"])
    if cls is None:
        raise ValueError(f"unknown schedule type {data['__schedule__']!r}; known: {sorted(SCHEDULE_TYPES)}")
    return cls.from_dict(data)


# -- helpers shared by the data-derived schedules ----------------------------------------------

def _sigma_grid(sigmas):
    """Noise levels as a list of floats in the given order; zeros (a schedule's end) dropped."""
    levels = _as_vector(sigmas, "sigmas")
    if levels.dtype.kind not in "iuf":
        raise ValueError(f"sigmas must be real numbers, got dtype {levels.dtype}")
    levels = levels.astype(np.float64)
    if not np.isfinite(levels).all() or (levels < 0).any():
        raise ValueError(f"sigmas must be finite and non-negative, got {levels.tolist()}")
    levels = levels[levels > 0]
    if len(levels) == 0:
        raise ValueError("sigmas must contain at least one positive noise level")
    if len(np.unique(levels)) != len(levels):
        raise ValueError(f"sigmas must be distinct, got {levels.tolist()}")
    return levels.tolist()


def max_patch_size(image_shape):
    """``2 max(H, W) - 1``: a patch this size centred on any pixel covers the whole image."""
    return 2 * max(image_shape[-2:]) - 1


def _clip_patch(size, image_shape):
    return int(min(max(size, 1), max_patch_size(image_shape)))


def _check_image_shape(image_shape):
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
    return shape


# -- the spatial extent of the Wiener filter --------------------------------------------------

def chebyshev_distances(image_shape):
    """``max(|i_n - i_m|, |j_n - j_m|)`` between the pixels of flattened (C, H, W) images.

    Returns
    -------
    Tensor of shape (d, d), int64, d = C * H * W (channels ignored: spatial distance only).
    """
    C, H, W = _check_image_shape(image_shape)
    index = torch.arange(C * H * W)
    i, j = (index // W) % H, index % W  # (d,) row and column of each flattened pixel
    return torch.maximum((i[:, None] - i[None]).abs(), (j[:, None] - j[None]).abs())


def wiener_radii(sigma, eigvals, eigvecs, image_shape, threshold):
    """Chebyshev radius of each output pixel's Wiener neighbourhood at one noise level.

    The neighbourhood of output pixel m is column m of the PCA-locality mask of
    :func:`~analytic_denoisers.locality.locality_masks` (Lukoianov et al., arXiv 2509.09672):
    ``|W[n, m] / W[n, n]| >= threshold * max |W / diag W|`` with the Wiener filter
    ``W = U diag(lam / (lam + sigma^2)) U^T``. Its radius is the largest Chebyshev distance
    ``max(|i_n - i_m|, |j_n - j_m|)`` from m to an input pixel n in it (0 if it is m alone or
    empty).

    Parameters
    ----------
    sigma : float
    eigvals : Tensor of shape (r,); eigvecs : Tensor of shape (d, r), d = C * H * W
    image_shape : tuple (C, H, W)
    threshold : float in [0, 1]

    Returns
    -------
    Tensor of shape (d,), int64, on the CPU.
    """
    shape = _check_image_shape(image_shape)
    d = math.prod(shape)
    if eigvecs.dim() != 2 or eigvecs.shape[0] != d or eigvals.shape != eigvecs.shape[1:]:
        raise ValueError(f"expected eigvals of shape (r,) and eigvecs of shape ({d}, r) for images of "
                         f"shape {shape}, got {tuple(eigvals.shape)} and {tuple(eigvecs.shape)}")
    if not (_is_number(threshold) and 0 <= threshold <= 1):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    mask = locality_masks(float(sigma), eigvals, eigvecs, threshold).cpu()  # (d, d) [n, m]
    dist = chebyshev_distances(shape)  # (d, d)
    return torch.where(mask, dist, 0).amax(0)  # (d,) one radius per output pixel m


def wiener_extent_schedule(gaussian, sigmas, threshold=0.005, *, quantile=0.5):
    """Patch sizes from the spatial extent of the thresholded Wiener filter at each sigma.

    At each sigma, ``r`` is the ``quantile`` (default: the median, taking the higher of two
    middle values) over output pixels of :func:`wiener_radii`, the Chebyshev radius of the
    pixel's PCA-locality neighbourhood (the masks a ``PCALocalityDenoiser(threshold=threshold)``
    uses, Lukoianov et al., arXiv 2509.09672), and the patch size is ``2 r + 1``, clipped to
    ``[1, 2 max(H, W) - 1]``. A diagonal Wiener filter (independent pixels) gives 1; with a
    smooth, stationary covariance the size grows with sigma up to the extent of the correlation
    ``Sigma[n, m] / Sigma[n, n] >= threshold``.

    Parameters
    ----------
    gaussian : fitted GaussianDenoiser or PCALocalityDenoiser, or any object with ``eigvals_``
        (r,), ``eigvecs_`` (d, r) and ``image_shape_`` (C, H, W)
    sigmas : 1-D sequence or tensor of shape (S,)
        Noise levels; zeros (the end of a sampling schedule) are ignored.
    threshold : float in [0, 1]
        Binarisation level of the normalised Wiener filter, as in ``PCALocalityDenoiser``.
    quantile : float in [0, 1]
        Summary of the per-pixel radii.

    Returns
    -------
    :class:`Table` of odd integer patch sizes on ``sigmas``, ``interpolation="nearest"``.
    """
    if hasattr(gaussian, "_check_fitted"):
        gaussian._check_fitted()
    missing = [a for a in ("eigvals_", "eigvecs_", "image_shape_") if not hasattr(gaussian, a)]
    if missing:
        raise ValueError(f"wiener_extent_schedule needs a fitted GaussianDenoiser (or any object with "
                         f"eigvals_, eigvecs_ and image_shape_); {type(gaussian).__name__} lacks {missing}")
    if not (_is_number(quantile) and 0 <= quantile <= 1):
        raise ValueError(f"quantile must be a number in [0, 1], got {quantile!r}")
    levels = _sigma_grid(sigmas)
    shape = tuple(gaussian.image_shape_)
    sizes = []
    for sigma in levels:
        radii = wiener_radii(sigma, gaussian.eigvals_, gaussian.eigvecs_, shape, threshold)
        r = torch.quantile(radii.double(), quantile, interpolation="higher")
        sizes.append(_clip_patch(2 * int(r) + 1, shape))
    return Table(levels, sizes)


# -- the signal-to-noise / resolution rule (after Hwang et al.) ------------------------------

def radial_power_spectrum(X, *, chunk_size=1024):
    """Radially averaged power spectrum of mean-subtracted images, in per-pixel variance units.

    ``P_k`` is the mean, over images, channels and the 2-D frequencies of ring k, of
    ``|F(x - mean)(f)|^2``, with ``F`` the orthonormal 2-D DFT and ``mean`` the dataset's mean
    image; white noise of per-pixel variance ``s^2`` has ``P_k = s^2`` for every k. Ring k holds
    the frequencies with ``round(|f| L) = k``, ``|f| = sqrt(f_y^2 + f_x^2)`` in cycles per pixel
    and ``L = max(H, W)``, for ``k = 1 .. L // 2``: the constant term (k = 0) and the corners
    beyond the Nyquist frequency 1/2 are left out.

    Parameters
    ----------
    X : Tensor or ndarray of shape (N, C, H, W)
    chunk_size : int, images transformed at a time (float64)

    Returns
    -------
    frequencies : ndarray of shape (L // 2,), ``k / L`` in cycles per pixel, increasing
    power : ndarray of shape (L // 2,), float64
    """
    X = as_images(X, name="X")
    N, C, H, W = X.shape
    L = max(H, W)
    if L < 2:
        raise ValueError(f"images must be at least 2 pixels wide or high, got shape {tuple(X.shape[1:])}")
    mean = torch.zeros((C, H, W), dtype=torch.float64)
    for start in range(0, N, chunk_size):
        mean += X[start:start + chunk_size].detach().cpu().double().sum(0)
    mean /= N
    power2d = torch.zeros((H, W), dtype=torch.float64)
    for start in range(0, N, chunk_size):
        centred = X[start:start + chunk_size].detach().cpu().double() - mean  # (n, C, H, W)
        power2d += torch.fft.fft2(centred, norm="ortho").abs().square().sum((0, 1))
    power2d /= N * C
    fy, fx = torch.fft.fftfreq(H, dtype=torch.float64), torch.fft.fftfreq(W, dtype=torch.float64)
    ring = torch.round(torch.sqrt(fy[:, None] ** 2 + fx[None] ** 2) * L).long()  # (H, W)
    rings = torch.arange(1, L // 2 + 1)
    power = torch.stack([power2d[ring == k].mean() for k in rings])
    return (rings.double() / L).numpy(), power.numpy()


def wavelength_patch_size(wavelength, image_shape):
    """The smallest odd patch size ``>= wavelength`` (pixels), clipped to ``[1, 2 max(H, W) - 1]``."""
    return _clip_patch(2 * math.ceil((wavelength - 1) / 2 - 1e-9) + 1, image_shape)


def snr_resolution_schedule(X, sigmas, *, snr=1.0, chunk_size=1024):
    """Patch sizes from the finest resolution whose signal-to-noise ratio still reaches ``snr``.

    After Hwang et al., "Resolution chromatography of diffusion models" (arXiv 2401.10247), who
    explain the coarse-to-fine order of generation by the signal-to-noise ratio of each
    resolution under the noise schedule: at noise level sigma, the resolutions whose signal is
    still above the noise are those being resolved. What is computed here, exactly:

    1. ``P_k``, the radially averaged power spectrum of the training images
       (:func:`radial_power_spectrum`; orthonormal DFT, so white noise of variance ``sigma^2``
       has power ``sigma^2`` at every frequency), and ``SNR_k(sigma) = P_k / sigma^2``;
    2. the cutoff ``f_c(sigma)``, the highest ring frequency with ``SNR_k >= snr``;
    3. the patch size: the smallest odd integer ``>=`` the wavelength ``1 / f_c`` (pixels), so
       a patch spans one period of the finest resolved frequency, clipped to
       ``[1, 2 max(H, W) - 1]``; when no ring has ``SNR_k >= snr``, the whole image
       ``2 max(H, W) - 1``.

    The set of rings above the noise only shrinks as sigma grows, so the size is non-decreasing
    in sigma for any data. Departures from the paper: the paper works with the SNR of each
    resolution level and the *rate* at which each gains signal along the
    schedule, and gives no patch sizes; this rule keeps only the SNR-crosses-``snr`` criterion,
    uses the training data's own empirical spectrum, and the conversion from wavelength
    to patch size is ours. We could not check the paper's formulas in detail.

    Parameters
    ----------
    X : Tensor or ndarray of shape (N, C, H, W), training images in [-1, 1]
    sigmas : 1-D sequence or tensor of shape (S,); zeros are ignored
    snr : float > 0, the signal-to-noise ratio a resolution needs
    chunk_size : int, images transformed at a time

    Returns
    -------
    :class:`Table` of odd integer patch sizes on ``sigmas``, ``interpolation="nearest"``.
    """
    if not (_is_number(snr) and snr > 0 and math.isfinite(snr)):
        raise ValueError(f"snr must be a positive number, got {snr!r}")
    X = as_images(X, name="X")
    levels = _sigma_grid(sigmas)
    frequencies, power = radial_power_spectrum(X, chunk_size=chunk_size)
    shape = tuple(X.shape[1:])
    sizes = []
    for sigma in levels:
        above = power >= snr * sigma**2  # rings whose SNR reaches the level
        if above.any():
            sizes.append(wavelength_patch_size(1 / frequencies[above].max(), shape))
        else:
            sizes.append(max_patch_size(shape))
    return Table(levels, sizes)


# -- calibration against a target denoiser ---------------------------------------------------

# name -> (per-image score of (output, target), greater is better)
METRICS = {"mse": (metrics.mse, False), "r2": (metrics.r2, True)}


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
    metric : str, "mse" (lower is better) or "r2" (higher is better)
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
        return METRICS[self.metric][1]

    def to_dict(self):
        """JSON-ready summary (for a results file)."""
        return {"param": self.param, "metric": self.metric, "candidates": list(self.candidates),
                "sigmas": self.sigmas.tolist(), "scores": self.scores.tolist(),
                "chosen": [self.candidates[k] for k in self.best], "schedule": self.schedule.to_dict()}


def _denoise_fn(target):
    if hasattr(target, "denoise"):
        return target.denoise
    if callable(target):
        return target
    raise ValueError(f"target must have a denoise(x, sigma) method or be a callable (x, sigma), "
                     f"got {type(target).__name__}")


def _in_batches(fn, x, sigma, batch_size):
    step = len(x) if batch_size is None else int(batch_size)
    out = [torch.as_tensor(fn(x[i:i + step], sigma)) for i in range(0, len(x), step)]
    out = torch.cat(out)
    if out.shape != x.shape:
        raise ValueError(f"a denoiser returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
    return out.to(x.device)


def calibrate(estimator, param, candidates, target, X, sigmas, *, metric="mse", seed=0,
              fit_X=None, batch_size=None, progress=True):
    """At each sigma, the value of ``param`` whose outputs best match ``target``'s.

    For each level ``sigma``: ``x = X + sigma * eps`` with per-image seeded noise
    (image i uses seed ``seed + i``, the same ``eps`` at every sigma, see
    :func:`~analytic_denoisers.sampling.seeded_noise`), and each candidate ``c`` is scored by
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
    metric : {"mse", "r2"}
        "mse": mean squared difference (lower is better); "r2": mean over images of
        ``1 - sum (a - b)^2 / sum (b - mean b)^2`` with ``b`` the target (higher is better).
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
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    score_fn, greater_is_better = METRICS[metric]
    params = estimator.get_params()
    if param not in params:
        raise ValueError(f"{param!r} is not a hyper-parameter of {type(estimator).__name__}; "
                         f"it has {sorted(params)}")
    candidates = list(candidates)
    if not candidates or not all(_is_number(c) for c in candidates):
        raise ValueError(f"candidates must be a non-empty sequence of numbers, got {candidates!r}")
    target_fn = _denoise_fn(target)
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    X = as_images(X, name="X")
    levels = _sigma_grid(sigmas)
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
            reference = _in_batches(target_fn, x, sigma, batch_size).double()
            for k in range(len(candidates)):
                out = _in_batches(model(k).denoise, x, sigma, batch_size).double()
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
