"""Resolution chromatography (analysis.resolution): orthogonal resolution bands, and the
analytic chromatogram of a Gaussian against the measured one."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.analysis import resolution, trajectory
from references import gaussian_problem, randn


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 5, 7)])
def test_resolution_bands_are_orthogonal_and_sum_to_the_image(shape):
    x = randn(3, *shape)
    bands = resolution.resolution_bands(x)
    assert len(bands) == resolution.default_levels(shape) + 1
    torch.testing.assert_close(bands.sum(0), x)
    flat = bands.flatten(2)
    gram = torch.einsum("knd,lnd->kln", flat, flat)  # (K + 1, K + 1, N) band inner products
    off = gram[~torch.eye(len(bands), dtype=torch.bool)]
    assert float(gram.diagonal().min()) > 1e-3 and float(off.abs().max()) < 1e-12
    for size in (2, 4):  # projections: idempotent, and nested (coarser blocks are unions of finer ones)
        once = resolution.block_means(x, size)
        torch.testing.assert_close(resolution.block_means(once, size), once)
        torch.testing.assert_close(resolution.block_means(once, 2 * size), resolution.block_means(x, 2 * size))
    assert torch.allclose(bands[-1], x.mean((-2, -1), keepdim=True).expand_as(x))  # coarsest: the mean
    U = torch.linalg.qr(randn(1, x[0].numel(), 5)[0])[0]
    torch.testing.assert_close(resolution.band_weights(U, shape).sum(0), torch.ones(5, dtype=torch.float64))


def test_analytic_chromatogram_peaks_at_each_band_variance():
    # one eigen-direction inside each band: band k is generated at rate 2 s^2 lam^2 / (lam + s^2)^2,
    # which peaks at sigma = sqrt(lam_k) with height 1/2
    shape = (1, 4, 4)
    bands = resolution.resolution_bands(randn(1, *shape, seed=5))[:, 0]
    U = torch.stack([b.flatten() / b.norm() for b in bands], 1)
    lam = torch.tensor([0.01, 0.3, 9.0], dtype=torch.float64)
    sigmas = torch.logspace(-3, 2, 2001, dtype=torch.float64).flip(0)
    generated, rate = resolution.analytic_chromatogram(lam, U, shape, sigmas)
    torch.testing.assert_close(resolution.peak_sigma(rate, sigmas), lam.sqrt(), rtol=4e-3, atol=0)
    # ... and half of each band is generated there too: g_k = lam_k / (lam_k + sigma^2)
    torch.testing.assert_close(trajectory.commit_sigma(generated.T, sigmas, 0.5), lam.sqrt(), rtol=1e-5, atol=0)
    torch.testing.assert_close(rate.max(1).values, torch.full((3,), 0.5, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(generated, lam[:, None] / (lam[:, None] + sigmas.square()))


def test_measured_chromatogram_of_the_gaussian_equals_the_analytic_one():
    X, _, _ = gaussian_problem((1, 4, 4), n=3000)
    g = ad.GaussianDenoiser().fit(X)
    sigmas = ad.schedules.karras(40, 0.002, 80.0)
    result = resolution.chromatography(g, g, randn(8000, 1, 4, 4, seed=6), sigmas)
    analytic = torch.tensor(result["generated_at_steps"]["analytic at steps"])
    measured = torch.tensor(result["generated_at_steps"]["denoiser"])
    assert float((measured - analytic).abs().max()) < 0.01  # Monte Carlo error of 8000 samples
    assert result["peak_sigma"]["denoiser"] == result["peak_sigma"]["analytic at steps"]
    torch.testing.assert_close(torch.tensor(result["half_sigma"]["denoiser"]),
                               torch.tensor(result["half_sigma"]["analytic at steps"]), rtol=0.02, atol=0)


def test_step_position_along_a_schedule():
    sigmas = ad.schedules.karras(10, 0.002, 80.0)
    for k in (0, 4, 9):
        assert abs(float(resolution.step_position(sigmas[k], sigmas)) - k / 9) < 1e-12
    middle = (sigmas[4] * sigmas[5]).sqrt()  # halfway between steps 4 and 5 in log sigma
    assert abs(float(resolution.step_position(middle, sigmas)) - 4.5 / 9) < 1e-12
    assert float(resolution.step_position(1e3, sigmas)) == 0.0  # clamped to the schedule
    assert float(resolution.step_position(1e-5, sigmas)) == 1.0
    assert float(resolution.step_position(0.5, ad.schedules.karras(1, 0.1, 10.0))) == 0.0  # one step


def test_chromatography_rejects_bad_levels_and_sizes():
    x = randn(1, 1, 8, 8)
    for levels in (0, 4, 2.5, True):  # 8x8 images have 3 levels
        with pytest.raises(ValueError, match=r"levels must be an integer in \[1, 3\]"):
            resolution.resolution_bands(x, levels)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        resolution.block_means(x, 0)
