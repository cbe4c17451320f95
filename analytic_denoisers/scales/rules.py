"""Scale schedules derived from data alone.

* :func:`wiener_extent_schedule`: the spatial extent of the thresholded Wiener filter, as in
  Lukoianov et al., arXiv 2509.09672;
* :func:`snr_resolution_schedule`: the signal-to-noise / resolution rule after Hwang et al.,
  arXiv 2401.10247.

Patch sizes produced here are odd integers ``2 r + 1`` clipped to ``[1, 2 max(H, W) - 1]`` (a
patch of the largest size centred on any pixel covers the image).
"""

import math

import torch

from ..core.validation import Interval, as_images, check_scalar, sigma_grid
from ..kernels.locality import locality_masks, support
from .table import Table


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
    :func:`~analytic_denoisers.kernels.locality.locality_masks` (Lukoianov et al., arXiv 2509.09672):
    ``|W[n, m] / W[n, n]| >= threshold * max |W / diag W|`` with the Wiener filter
    ``W = U diag(lam / (lam + sigma^2)) U^T``. Its radius is the largest Chebyshev distance
    ``max(|i_n - i_m|, |j_n - j_m|)`` from m to an input pixel n in it (0 if it is m alone or
    empty). With threshold 0 the neighbourhood is every input with a non-zero weight.

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
    mask = support(locality_masks(float(sigma), eigvals, eigvecs, threshold)).cpu()  # (d, d) [n, m]
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
    check_scalar(quantile, "quantile", Interval(float, 0, 1))
    levels = sigma_grid(sigmas)
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
    check_scalar(snr, "snr", Interval(float, 0, closed="neither"))
    X = as_images(X, name="X")
    levels = sigma_grid(sigmas)
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
