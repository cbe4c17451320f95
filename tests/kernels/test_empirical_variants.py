"""nearest_training_index and smoothed_posterior_mean (kernels.empirical), the nearest-neighbour
baseline and sigma-CFDM, against float64 loop references and their closed-form cases."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.empirical import nearest_training_index, smoothed_posterior_mean
from references import SIGMAS, empirical_reference, randn, tiny_images


def nearest_reference(x, data):
    """Index of the nearest training image per query by an explicit loop (first one on ties)."""
    flat, xs = data.double().reshape(len(data), -1), x.double().reshape(len(x), -1)
    found = []
    for q in xs:
        dists = [float(((q - xi) ** 2).sum()) for xi in flat]
        found.append(min(range(len(dists)), key=lambda i: (dists[i], i)))
    return torch.tensor(found)


@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_nearest_matches_the_loop_and_keeps_the_first_of_ties(chunk_size):
    data = tiny_images(13, (2, 3, 3), seed=1)
    data[7] = data[2]  # a duplicate: the first copy wins
    x = torch.cat([tiny_images(5, (2, 3, 3), seed=2), data[2:3] + 1e-3 * randn(1, 2, 3, 3, seed=3)])
    index = nearest_training_index(x, data, chunk_size=chunk_size)
    assert torch.equal(index, nearest_reference(x, data)) and int(index[-1]) == 2
    out = ad.NearestNeighbourDenoiser(chunk_size=chunk_size).fit(data)(x, 0.5)
    assert torch.equal(out, data[index])  # exact copies


def test_nearest_is_the_small_sigma_limit_of_the_empirical_denoiser():
    data, x = tiny_images(20, seed=4), tiny_images(6, seed=5)
    nearest = ad.NearestNeighbourDenoiser().fit(data)
    torch.testing.assert_close(nearest(x, 3.0), ad.EmpiricalOptimalDenoiser().fit(data)(x, 1e-4), rtol=0, atol=1e-12)
    assert torch.equal(nearest(x, 0.01), nearest(x, 100.0))  # whatever sigma


def test_nearest_with_labels_searches_the_query_class():
    data, x = tiny_images(12, seed=6), tiny_images(3, seed=7)
    y = torch.tensor([0, 1] * 6)
    out = ad.NearestNeighbourDenoiser().fit(data, y)(x, 1.0, y=torch.tensor([1, 0, 1]))
    for n, label in enumerate([1, 0, 1]):
        members = data[y == label]
        assert torch.equal(out[n], members[nearest_reference(x[n:n + 1], members)[0]])


def smoothed_reference(x, sigma, data, noise, s):
    """The mean over the draws of the float64 loop reference of the empirical denoiser."""
    return torch.stack([empirical_reference(x + s * eps, sigma, data) for eps in noise]).mean(0)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_smoothed_matches_the_loop(sigma):
    data, x, noise = tiny_images(11, seed=8), tiny_images(3, seed=9), randn(5, 1, 6, 6, seed=10)
    out = smoothed_posterior_mean(x, sigma, data, noise, 0.3, chunk_size=4)
    torch.testing.assert_close(out.reshape(3, -1), smoothed_reference(x, sigma, data, noise, 0.3), rtol=1e-10, atol=1e-10)


def test_smoothed_per_image_sigma_and_its_limits():
    data, x, noise = tiny_images(9, seed=11), tiny_images(3, seed=12), randn(4, 1, 6, 6, seed=13)
    sigma = torch.tensor([0.05, 0.5, 5.0], dtype=torch.float64)
    out = smoothed_posterior_mean(x, sigma, data, noise, 0.2)
    expect = torch.cat([smoothed_reference(x[i:i + 1], float(sigma[i]), data, noise, 0.2) for i in range(3)])
    torch.testing.assert_close(out.reshape(3, -1), expect, rtol=1e-10, atol=1e-10)
    # no smoothing: the empirical denoiser; a one-image set: that image
    torch.testing.assert_close(smoothed_posterior_mean(x, sigma, data, noise, 0.0).reshape(3, -1),
                               empirical_reference(x, sigma, data), rtol=1e-10, atol=1e-10)
    one = smoothed_posterior_mean(x, sigma, data[:1], noise, 0.7)
    torch.testing.assert_close(one, data[:1].expand_as(one), rtol=0, atol=1e-15)


def test_smoothed_monte_carlo_converges_to_the_smoothed_closed_form():
    """Two one-pixel images a, b: D(z) = b + (a - b) sigmoid(((z - b)^2 - (z - a)^2) / (2 sigma^2)),
    and E D(x + s eps) is a one-dimensional Gaussian integral, here by quadrature. The Monte
    Carlo average with M seeded draws must lie within 4 standard errors of it."""
    a, b, x, sigma, s = 0.6, -0.4, 0.15, 0.3, 0.25
    data = torch.tensor([a, b], dtype=torch.float64).reshape(2, 1, 1, 1)

    def D(z):
        return b + (a - b) * torch.sigmoid(((z - b) ** 2 - (z - a) ** 2) / (2 * sigma**2))

    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    density = torch.exp(-grid**2 / 2) / math.sqrt(2 * math.pi)
    exact = float(torch.trapezoid(D(x + s * grid) * density, grid))
    spread = float(torch.trapezoid((D(x + s * grid) - exact) ** 2 * density, grid)) ** 0.5
    m = 20_000
    noise = randn(m, 1, 1, 1, seed=14)
    out = float(smoothed_posterior_mean(torch.full((1, 1, 1, 1), x, dtype=torch.float64), sigma, data, noise, s))
    assert abs(out - exact) < 4 * spread / math.sqrt(m)
    assert abs(float(D(torch.tensor(x))) - exact) > 20 * spread / math.sqrt(m)  # smoothing matters here


def test_smoothed_estimator_draws_are_seeded_and_saved(tmp_path):
    data, x = tiny_images(10, seed=15), tiny_images(2, seed=16)
    den = ad.SmoothedClosedFormDenoiser(smoothing_std=0.2, num_noise=6, random_state=3).fit(data)
    again = ad.SmoothedClosedFormDenoiser(smoothing_std=0.2, num_noise=6, random_state=3).fit(data)
    assert torch.equal(den.noise_, again.noise_) and den.noise_.shape == (6, 1, 6, 6)
    expect = smoothed_reference(x, 0.4, data, den.noise_, 0.2)
    torch.testing.assert_close(den(x, 0.4).reshape(2, -1), expect, rtol=1e-10, atol=1e-10)
    other = ad.SmoothedClosedFormDenoiser(smoothing_std=0.2, num_noise=6, random_state=4).fit(data)
    assert not torch.equal(other(x, 0.4), den(x, 0.4))
    with pytest.raises(ValueError, match="smoothing_std"):
        ad.SmoothedClosedFormDenoiser(smoothing_std=-1).fit(data)


def test_smoothed_draws_are_made_at_fit():
    data, x = tiny_images(8, seed=17), tiny_images(2, seed=18)
    den = ad.SmoothedClosedFormDenoiser(num_noise=3).fit(data)
    with pytest.raises(ValueError, match="fit again"):
        den.set_params(num_noise=5)(x, 0.5)
    assert den.fit(data).noise_.shape[0] == 5
