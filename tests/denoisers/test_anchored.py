"""AnchoredCompositeDenoiser (denoisers.anchored): the estimator is its kernel on its own fitted
mixture, its end points are the two estimators it combines, its closed forms (sigma -> infinity,
sigma -> 0 at a training image) and its refusals."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.anchored import anchored_composite_posterior_mean
from references import near_data, tiny_images

SHAPE = (1, 5, 6)
DATA = tiny_images(12, SHAPE, seed=51)


def test_estimator_is_its_kernel_on_the_fitted_mixture():
    x = near_data(DATA, 3, 0.5, seed=52)
    sigma = torch.tensor([0.3, 2.0, 0.3, 9.0], dtype=torch.float64)
    size = lambda s: 2 if s < 1 else 4  # noqa: E731
    den = ad.AnchoredCompositeDenoiser(patch_size=size, weight=0.3, n_components=3, chunk_size=5).fit(DATA)
    mixture = ad.GaussianMixtureDenoiser(n_components=3).fit(DATA)
    for name in ("weights_", "means_", "eigvals_", "eigvecs_"):
        assert torch.equal(getattr(den, name), getattr(mixture, name))
    stats = (mixture.weights_.log(), mixture.means_, mixture.eigvals_, mixture.eigvecs_)
    expect = anchored_composite_posterior_mean(x, sigma, DATA, size, stats, 0.3, chunk_size=5)
    torch.testing.assert_close(den(x, sigma), expect, rtol=0, atol=1e-12)


@pytest.mark.parametrize("weight, other", [(0.0, "patch-composite"), (1.0, "gaussian-mixture")])
def test_end_points_are_the_patch_composite_and_the_mixture(weight, other):
    x = near_data(DATA, 3, 0.5, seed=53)
    den = ad.AnchoredCompositeDenoiser(patch_size=3, weight=weight, n_components=3).fit(DATA)
    params = {"patch_size": 3} if other == "patch-composite" else {"n_components": 3}
    part = ad.registry.make(other, **params).fit(DATA)
    for sigma in (0.05, 0.7, 30.0):
        torch.testing.assert_close(den(x, sigma), part(x, sigma), rtol=0, atol=1e-12)


def test_closed_forms():
    """sigma -> infinity and sigma -> 0 at a training image (a one-image set returning that image
    is checked for every method in test_closed_forms.py)."""
    x = tiny_images(3, SHAPE, seed=54)
    den = ad.AnchoredCompositeDenoiser(patch_size=3, n_components=3).fit(DATA)
    # sigma -> infinity: both parts tend to the data mean (PSPC: every crop's mean; GMM: sum_k pi_k mu_k)
    torch.testing.assert_close(den(x, 1e6), DATA.mean(0).expand_as(x), rtol=0, atol=1e-8)
    # sigma -> 0 at a training image: the composite's crops and the image's own component return it
    torch.testing.assert_close(den(DATA[:4], 1e-5), DATA[:4], rtol=0, atol=1e-7)


def test_refusals_at_fit():
    with pytest.raises(ValueError, match="unconditional"):
        ad.AnchoredCompositeDenoiser(n_components=2).fit(DATA, torch.arange(12) % 2)
    with pytest.raises(ValueError, match="weight"):
        ad.AnchoredCompositeDenoiser(weight=1.5).fit(DATA)
    with pytest.raises(ValueError, match="at least as many"):
        ad.AnchoredCompositeDenoiser(n_components=13).fit(DATA)
    with pytest.raises(ValueError, match="cannot be sharded"):
        ad.AnchoredCompositeDenoiser(n_components=2).fit(DATA).shard((0, 2))
