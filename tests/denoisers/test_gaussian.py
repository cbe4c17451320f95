"""GaussianDenoiser (denoisers.gaussian): fitting gives the Wiener filter of the data's moments, exact
partial fits and merges, rank truncation, refusals, and the closed forms end to end."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.wiener import gaussian_trajectory
from references import randn, gaussian_problem, tiny_images, wiener_reference


@pytest.mark.parametrize("sigma", [1e-2, 0.3, 1.0, 10.0, 1e2])
def test_equals_posterior_mean_from_fitted_moments(sigma):
    X, _, _ = gaussian_problem(n=500)
    den = ad.GaussianDenoiser(chunk_size=64).fit(X)
    flat = X.reshape(len(X), -1)
    mean, cov = flat.mean(0), torch.cov(flat.T, correction=0)  # independent moments
    x = torch.randn(6, *X.shape[1:], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(den(x, sigma), wiener_reference(x, sigma, mean, cov), rtol=1e-9, atol=1e-9)


def test_approaches_true_posterior_mean_as_n_grows():
    x = torch.randn(50, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    errors = []
    for n in (30, 300, 30000):
        X, mean, cov = gaussian_problem(n=n, seed=3)
        true = wiener_reference(x, 0.5, mean, cov)
        errors.append(float((ad.GaussianDenoiser().fit(X)(x, 0.5) - true).square().mean().sqrt()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02


def test_score_is_gradient_of_gaussian_log_density():
    X, _, _ = gaussian_problem(n=400, seed=4)
    den = ad.GaussianDenoiser().fit(X)
    mean, cov = den.mean_, den.covariance_
    x = torch.randn(5, 1, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    eye = torch.eye(9, dtype=torch.float64)
    log_p = sum(
        torch.distributions.MultivariateNormal(mean, cov + s**2 * eye).log_prob(xn.reshape(-1))
        for xn, s in zip(xr, sigma)
    )
    (grad,) = torch.autograd.grad(log_p, xr)
    torch.testing.assert_close(den.score(x, sigma), grad, rtol=1e-8, atol=1e-8)


def test_limits_in_sigma():
    X, _, _ = gaussian_problem(n=300, seed=6)
    den = ad.GaussianDenoiser().fit(X)
    x = randn(4, 1, 3, 3, seed=101)
    torch.testing.assert_close(den(x, 1e-6), x, rtol=0, atol=1e-6)  # full-rank covariance
    torch.testing.assert_close(den(x, 1e6), den.mean_.reshape(1, 1, 3, 3).expand_as(x), rtol=0, atol=1e-9)


def test_rank_truncation_keeps_top_directions():
    X, _, _ = gaussian_problem(n=300, seed=9)
    full, low = ad.GaussianDenoiser().fit(X), ad.GaussianDenoiser(rank=3).fit(X)
    assert low.eigvecs_.shape == (9, 3)
    torch.testing.assert_close(low.eigvals_, full.eigvals_[:3])
    x = randn(4, 1, 3, 3, seed=102)
    U = full.eigvecs_[:, :3]
    lam = full.eigvals_[:3]
    flat = x.reshape(4, -1) - full.mean_
    expect = full.mean_ + (flat @ U) * (lam / (lam + 0.25)) @ U.T
    torch.testing.assert_close(low(x, 0.5).reshape(4, -1), expect)
    for bad in (0, 10, 2.5):
        with pytest.raises(ValueError, match="rank"):
            ad.GaussianDenoiser(rank=bad).fit(X)


def test_failed_updates_change_nothing():
    from sklearn.exceptions import NotFittedError

    X, _, _ = gaussian_problem(n=50, seed=15)
    den = ad.GaussianDenoiser().fit(X)
    before = den.covariance_.clone()
    den.set_params(rank=100)
    with pytest.raises(ValueError, match="rank"):
        den.partial_fit(X)
    assert den.n_samples_seen_ == 50 and torch.equal(den.covariance_, before)
    with pytest.raises(ValueError, match=r"\(1, 4, 4\), but the denoiser was fitted on images of shape \(1, 3, 3\)"):
        den.set_params(rank=None).partial_fit(tiny_images(3, (1, 4, 4)))
    with pytest.raises(ValueError, match="cannot merge"):
        den.merge(ad.GaussianDenoiser().fit(tiny_images(3, (1, 4, 4))))
    assert den.n_samples_seen_ == 50
    bad = ad.GaussianDenoiser(rank=100)
    with pytest.raises(ValueError, match="rank"):
        bad.fit(X)
    with pytest.raises(NotFittedError):
        bad.denoise(X[:1], 1.0)


def test_partial_fit_and_merge_are_exact():
    X, _, _ = gaussian_problem(n=301, seed=10)
    whole = ad.GaussianDenoiser().fit(X)
    parts = ad.GaussianDenoiser().partial_fit(X[:100]).partial_fit(X[100:101]).partial_fit(X[101:])
    merged = ad.GaussianDenoiser().fit(X[:57]).merge(ad.GaussianDenoiser().fit(X[57:]))
    for other in (parts, merged):
        assert other.n_samples_seen_ == 301
        assert other.fingerprint_ == whole.fingerprint_
        torch.testing.assert_close(other.mean_, whole.mean_, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(other.covariance_, whole.covariance_, rtol=1e-10, atol=1e-13)


def test_fit_chunk_size_does_not_change_result():
    X, _, _ = gaussian_problem(n=200, seed=11)
    a, b = ad.GaussianDenoiser(chunk_size=1).fit(X), ad.GaussianDenoiser(chunk_size=1000).fit(X)
    torch.testing.assert_close(a.covariance_, b.covariance_, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("rank", [None, 4])
def test_trajectory_is_the_kernel_on_the_fitted_basis(rank):
    X, _, _ = gaussian_problem(n=400, seed=12)
    den = ad.GaussianDenoiser(rank=rank).fit(X)
    x_T, sigmas = 20.0 * randn(3, 1, 3, 3, seed=13), ad.schedules.karras(6, 0.01, 20.0)
    expect = gaussian_trajectory(x_T, sigmas, den.mean_, den.eigvals_, den.eigvecs_)
    assert torch.equal(den.trajectory(x_T, sigmas), expect)


def test_trajectory_validates_sigmas():
    den = ad.GaussianDenoiser().fit(tiny_images(5))
    with pytest.raises(ValueError, match="sigmas"):
        den.trajectory(tiny_images(2), torch.tensor([0.0, 1.0]))
    assert math.isfinite(float(den.trajectory(tiny_images(2), [1.0]).sum()))
