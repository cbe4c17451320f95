"""What every public ``*_posterior_mean`` kernel promises: sigma as a float or one level per
image, and a clear error on bad input (the estimators rely on it, so do users who call kernels)."""

import pytest
import torch

from analytic_denoisers.kernels.anchored import anchored_composite_posterior_mean
from analytic_denoisers.kernels.empirical import empirical_posterior_mean, smoothed_posterior_mean
from analytic_denoisers.kernels.flex import mass_masks, patch_flex_posterior_mean
from analytic_denoisers.kernels.golddiff import golddiff_posterior_mean
from analytic_denoisers.kernels.locality import locality_masks, pca_locality_posterior_mean
from analytic_denoisers.kernels.mixture import gaussian_mixture_posterior_mean
from analytic_denoisers.kernels.moments import moments
from analytic_denoisers.kernels.patch_index import build_patch_index
from analytic_denoisers.kernels.patches import (equivariant_local_score_posterior_mean, local_score_posterior_mean,
                                                patch_composite_posterior_mean)
from analytic_denoisers.kernels.wiener import eigenbasis, gaussian_posterior_mean, wiener_matrix
from references import randn, tiny_images

DATA = tiny_images(9, seed=1)
BASIS = eigenbasis(moments(DATA))
HALVES = [eigenbasis(moments(half)) for half in (DATA[:5], DATA[5:])]  # a two-component mixture
MIXTURE = (torch.tensor([5 / 9, 4 / 9], dtype=torch.float64).log(), torch.stack([b.mean for b in HALVES]),
           torch.stack([b.eigvals for b in HALVES]), torch.stack([b.eigvecs for b in HALVES]))
NOISE = randn(3, 1, 6, 6, seed=7)


def masks(sigma):
    return locality_masks(sigma, BASIS.eigvals, BASIS.eigvecs, 0.05)


KERNELS = {  # name -> f(x, sigma, data)
    "empirical": lambda x, s, data: empirical_posterior_mean(x, s, data),
    "gaussian": lambda x, s, data: gaussian_posterior_mean(x, s, BASIS.mean, BASIS.eigvals, BASIS.eigvecs),
    "pca-locality": lambda x, s, data: pca_locality_posterior_mean(x, s, data.flatten(1), masks),
    "ls": lambda x, s, data: local_score_posterior_mean(x, s, data, lambda sigma: 3 if sigma < 1 else 5),
    "els": lambda x, s, data: equivariant_local_score_posterior_mean(x, s, data, 3, padding="circular"),
    "bbels": lambda x, s, data: equivariant_local_score_posterior_mean(x, s, data, 3, padding="zeros"),
    "pspc": lambda x, s, data: patch_composite_posterior_mean(x, s, data, lambda sigma: 2 if sigma < 1 else 4),
    "gaussian-mixture": lambda x, s, data: gaussian_mixture_posterior_mean(x, s, *MIXTURE),
    "golddiff": lambda x, s, data: golddiff_posterior_mean(x, s, data, masks, k_min=2, k_max=4, order=torch.arange(9),
                                                           proxy_factor=2),
    "patch-flex": lambda x, s, data: patch_flex_posterior_mean(
        x, s, data.flatten(1), lambda sigma: mass_masks(wiener_matrix(sigma, BASIS.eigvals, BASIS.eigvecs).abs(), 0.5)),
    "sigma-cfdm": lambda x, s, data: smoothed_posterior_mean(x, s, data.flatten(1), NOISE, 0.2),
    "anchored-composite": lambda x, s, data: anchored_composite_posterior_mean(
        x, s, data, lambda sigma: 2 if sigma < 1 else 4, MIXTURE, 0.5),
}
STATISTICS_ONLY = ("gaussian", "gaussian-mixture")  # kernels that read no training images


@pytest.mark.parametrize("name", KERNELS)
def test_per_image_sigma_equals_one_call_per_level(name):
    kernel, x = KERNELS[name], tiny_images(4, seed=2)
    sigma = torch.tensor([0.3, 2.0, 0.3, 5.0], dtype=torch.float64)
    expect = torch.cat([kernel(x[i:i + 1], float(sigma[i]), DATA) for i in range(4)])
    torch.testing.assert_close(kernel(x, sigma, DATA), expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel(x, 0.3, DATA), kernel(x, torch.full((4,), 0.3, dtype=torch.float64), DATA))


@pytest.mark.parametrize("name", KERNELS)
def test_bad_input_raises(name):
    kernel, x = KERNELS[name], tiny_images(2, seed=3)
    for bad_sigma, match in ((0.0, "positive"), (float("nan"), "NaN"), (torch.ones(3), r"shape \(2,\)")):
        with pytest.raises(ValueError, match=match):
            kernel(x, bad_sigma, DATA)
    nan_x = x.clone()
    nan_x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        kernel(nan_x, 1.0, DATA)
    if name not in STATISTICS_ONLY:  # the others read the training images themselves
        with pytest.raises(ValueError, match="dtype torch.float64"):
            kernel(x, 1.0, DATA.float())


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_autograd_reaches_x(name):
    """Jacobians of the denoisers (locality maps) need it; PCA-locality, whose fast path works
    in place, takes its out-of-place path when x requires grad."""
    x = tiny_images(2, seed=5).requires_grad_(True)
    sigma = torch.tensor([0.4, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: KERNELS[name](x, sigma, DATA), (x,))


def test_statistics_that_do_not_fit_are_refused():
    x = tiny_images(2, seed=6)
    with pytest.raises(ValueError, match=r"mask must be a bool or float tensor of shape \(36, 36\)"):
        pca_locality_posterior_mean(x, 1.0, DATA.flatten(1), torch.ones(9, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"eigvecs \(36, r\)"):
        gaussian_posterior_mean(x, 1.0, BASIS.mean, BASIS.eigvals[:3], BASIS.eigvecs)
    indexes = [build_patch_index(DATA, 3, "circular", torch.arange(36))]
    with pytest.raises(ValueError, match="indexes were built for other patches"):
        equivariant_local_score_posterior_mean(x, 1.0, DATA, 5, padding="circular", prune_tol=1e-3, indexes=indexes)


def test_patch_kernels_validate_their_knobs():
    x = tiny_images(2, seed=4)
    with pytest.raises(ValueError, match="patch_size at sigma = 1 must be a positive odd integer"):
        local_score_posterior_mean(x, 1.0, DATA, 4)
    with pytest.raises(ValueError, match="padding must be one of 'zeros', 'circular'"):
        local_score_posterior_mean(x, 1.0, DATA, 3, padding="reflect")
    with pytest.raises(ValueError, match="prune_tol must be a number in"):
        equivariant_local_score_posterior_mean(x, 1.0, DATA, 3, prune_tol=2.0)
    with pytest.raises(ValueError, match="patch_size at sigma = 1 must be a positive integer"):
        patch_composite_posterior_mean(x, 1.0, DATA, 0)
