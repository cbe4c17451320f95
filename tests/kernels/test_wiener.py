"""The Gaussian model (kernels.wiener): the posterior mean against a linear-solve reference, the
eigenbasis of fitted moments, and the closed-form flow against a fine Heun integration."""

import pytest
import torch

from analytic_denoisers.kernels.moments import moments
from analytic_denoisers.kernels.wiener import eigenbasis, gaussian_posterior_mean, gaussian_trajectory, wiener_matrix
from analytic_denoisers.sampling.samplers import sample
from analytic_denoisers.sampling.schedules import karras
from references import gaussian_problem, randn, wiener_reference


def data_moments(X):
    """Mean and covariance (divisor N) of the flattened images, computed directly."""
    flat = X.reshape(len(X), -1)
    return flat.mean(0), torch.cov(flat.T, correction=0)


@pytest.mark.parametrize("sigma", [1e-2, 0.3, 1.0, 10.0, 1e2])
def test_posterior_mean_matches_linear_solve(sigma):
    X, _, _ = gaussian_problem(n=500)
    mean, cov = data_moments(X)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    x = randn(6, *X.shape[1:], seed=1)
    out = gaussian_posterior_mean(x, sigma, mean, eigvals, eigvecs)
    torch.testing.assert_close(out, wiener_reference(x, sigma, mean, cov), rtol=1e-9, atol=1e-9)


def test_per_image_sigma_matches_linear_solve():
    X, _, _ = gaussian_problem(n=500)
    mean, cov = data_moments(X)
    basis = eigenbasis(moments(X))
    x, sigma = randn(5, *X.shape[1:], seed=2), torch.tensor([1e-2, 0.3, 1.0, 10.0, 1e2], dtype=torch.float64)
    out = gaussian_posterior_mean(x, sigma, basis.mean, basis.eigvals, basis.eigvecs)
    torch.testing.assert_close(out, wiener_reference(x, sigma, mean, cov), rtol=1e-9, atol=1e-9)


def test_eigenbasis_of_moments_is_the_data_covariance_in_decreasing_order():
    X, _, _ = gaussian_problem(n=300, seed=9)
    mean, cov = data_moments(X)
    full, low = eigenbasis(moments(X, chunk_size=7)), eigenbasis(moments(X), rank=3)
    torch.testing.assert_close(full.mean, mean)
    torch.testing.assert_close(full.covariance, cov)
    assert bool((full.eigvals[:-1] >= full.eigvals[1:]).all()) and full.eigvals.min() >= 0
    torch.testing.assert_close(full.eigvecs.T @ full.eigvecs, torch.eye(9, dtype=torch.float64))
    torch.testing.assert_close((full.eigvecs * full.eigvals) @ full.eigvecs.T, cov)
    assert low.eigvecs.shape == (9, 3)
    torch.testing.assert_close(low.eigvals, full.eigvals[:3])
    torch.testing.assert_close(wiener_matrix(0.5, full.eigvals, full.eigvecs),
                               cov @ torch.linalg.inv(cov + 0.25 * torch.eye(9, dtype=torch.float64)))
    with pytest.raises(ValueError, match="rank"):
        eigenbasis(moments(X), rank=10)


def _heun_error(model, x_T, n):
    """Max deviation of an n-step Heun path from the closed-form path on the same grid."""
    sigmas = karras(n, 0.01, 20.0)[:-1]  # Heun all the way
    closed = gaussian_trajectory(x_T, sigmas, *model)
    torch.testing.assert_close(closed[0], x_T)
    _, numeric = sample(lambda x, s: gaussian_posterior_mean(x, s, *model), x_T / 20.0, sigmas, "heun",
                        return_trajectory=True)
    assert closed.shape == numeric.shape == (n,) + tuple(x_T.shape)
    return float((closed - numeric).abs().max())


@pytest.mark.parametrize("rank", [None, 4])
def test_trajectory_agrees_with_fine_heun_integration(rank):
    X, _, _ = gaussian_problem(n=400, seed=12)
    basis = eigenbasis(moments(X), rank)
    model, x_T = (basis.mean, basis.eigvals, basis.eigvecs), 20.0 * randn(3, 1, 3, 3, seed=13)
    coarse, fine = _heun_error(model, x_T, 200), _heun_error(model, x_T, 400)
    assert fine < 2e-4
    assert coarse / fine > 3  # second-order convergence to the closed form


def test_trajectory_removes_the_part_outside_a_rank_r_basis():
    X, _, _ = gaussian_problem(n=400, seed=14)
    basis = eigenbasis(moments(X), rank=4)
    final = gaussian_trajectory(10.0 * randn(2, 1, 3, 3, seed=104), karras(5, 0.01, 10.0),
                                basis.mean, basis.eigvals, basis.eigvecs)[-1]
    centred = final.reshape(2, -1) - basis.mean
    residual = centred - (centred @ basis.eigvecs) @ basis.eigvecs.T
    assert residual.abs().max() < 1e-12 < centred.abs().max()
