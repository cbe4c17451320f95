"""Data-derived scale rules (scales.rules) on cases with known answers: the Wiener extent of a
Gaussian and the SNR / resolution rule."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import analytic_denoisers as ad
from analytic_denoisers.scales import rules
from references import randn, tiny_images


# -- Wiener extent -----------------------------------------------------------------------------

def _gaussian(cov, image_shape):
    """Any object with eigvals_, eigvecs_ and image_shape_ will do (the exact covariance here)."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return SimpleNamespace(eigvals_=eigvals.flip(0).clamp_min(0), eigvecs_=eigvecs.flip(1),
                           image_shape_=image_shape)


def _exponential_covariance(size=8, length=1.5):
    """Stationary Gaussian process on size x size images: ``Sigma[n, m] = exp(-|p_n - p_m| / length)``."""
    index = torch.arange(size * size)
    i, j = (index // size).double(), (index % size).double()
    dist = torch.sqrt((i[:, None] - i[None]) ** 2 + (j[:, None] - j[None]) ** 2)
    return torch.exp(-dist / length)


SIGMAS = [1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 1e2, 1e3]


def test_wiener_extent_grows_from_one_pixel_to_the_correlation_length():
    gp = _gaussian(_exponential_covariance(8, 1.5), (1, 8, 8))
    sizes = rules.wiener_extent_schedule(gp, SIGMAS, threshold=0.1).values
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] == 1  # W -> I as sigma -> 0
    # as sigma -> inf, W / diag W -> Sigma[n, m] / Sigma[n, n] = exp(-r / 1.5) >= 0.1 <=> r <= 3.45
    assert sizes[-1] == 2 * 3 + 1
    assert len(set(sizes)) > 2


def test_wiener_extent_is_one_pixel_for_independent_pixels():
    diag = _gaussian(torch.diag(torch.linspace(2.0, 0.1, 2 * 5 * 5, dtype=torch.float64)), (2, 5, 5))
    assert set(rules.wiener_extent_schedule(diag, SIGMAS).values) == {1}


def test_wiener_extent_from_a_fitted_gaussian_denoiser():
    X = tiny_images(60, (1, 5, 5), seed=3)
    den = ad.GaussianDenoiser().fit(X)
    t = rules.wiener_extent_schedule(den, ad.schedules.karras(6, 1e-4, 80), threshold=0.05)
    assert len(t.sigmas) == 6  # the final 0 is ignored
    assert all(v % 2 == 1 and 1 <= v <= 9 for v in t.values) and t(1e-4) == 1
    # threshold 0: every mask is the whole image, so each radius reaches the farthest pixel
    radii = rules.wiener_radii(80.0, den.eigvals_, den.eigvecs_, den.image_shape_, 0.0)
    far = rules.chebyshev_distances((1, 5, 5)).amax(0)
    assert torch.equal(radii, far) and far[0] == 4 and far[12] == 2  # corner, centre
    with pytest.raises(NotFittedError):
        rules.wiener_extent_schedule(ad.GaussianDenoiser(), [1.0])
    with pytest.raises(ValueError, match="eigvals_"):
        rules.wiener_extent_schedule(object(), [1.0])
    with pytest.raises(ValueError, match="threshold"):
        rules.wiener_extent_schedule(den, [1.0], threshold=2)


@pytest.mark.parametrize("sigmas", [[], [0.0], [-1.0, 1.0], [1.0, 1.0], [math.nan], [[1.0]]])
def test_data_schedules_reject_bad_sigma_grids(sigmas):
    with pytest.raises(ValueError, match="sigmas"):
        rules.snr_resolution_schedule(tiny_images(4, (1, 4, 4)), sigmas)


# -- SNR / resolution rule ---------------------------------------------------------------------

def test_radial_power_spectrum_is_in_per_pixel_variance_units():
    X = 0.5 * randn(400, 2, 8, 8, seed=1)  # white noise, variance 0.25
    frequencies, power = rules.radial_power_spectrum(X)
    np.testing.assert_allclose(frequencies, [0.125, 0.25, 0.375, 0.5])
    np.testing.assert_allclose(power, 0.25, rtol=0.1)


def test_snr_rule_on_white_noise_switches_at_the_noise_power():
    X = 0.5 * randn(400, 1, 8, 8, seed=2)  # flat spectrum at 0.25 = 0.5**2
    t = rules.snr_resolution_schedule(X, [0.05, 0.3, 0.4, 0.6, 0.8, 5.0])
    assert t.values == (3, 3, 3, 15, 15, 15)  # wavelength 2 (Nyquist) -> 3; nothing above noise -> whole image


def test_snr_rule_is_monotone_and_coarsens_on_smooth_data():
    cov = _exponential_covariance(8, 2.0)
    X = 0.4 * (randn(300, 64, seed=3) @ torch.linalg.cholesky(cov).T).reshape(300, 1, 8, 8)
    sizes = rules.snr_resolution_schedule(X, SIGMAS).values
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] == 3 and sizes[-1] == 15 and len(set(sizes)) > 2
    assert all(v % 2 == 1 for v in sizes)


def test_wavelength_patch_size_rounds_up_to_odd_and_clips():
    assert [rules.wavelength_patch_size(w, (1, 8, 8)) for w in (0.5, 2, 8 / 3, 3, 4, 8, 100)] == [1, 3, 3, 3, 5, 9, 15]


def test_snr_rule_rejects_bad_snr():
    with pytest.raises(ValueError, match="snr"):
        rules.snr_resolution_schedule(tiny_images(4, (1, 4, 4)), [1.0], snr=0)
