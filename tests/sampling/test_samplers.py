"""The samplers (sampling.samplers) on denoisers, callables and closed-form Gaussian paths."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.sampling import schedules
from analytic_denoisers.sampling.samplers import sample_ddim_vp
from references import randn, gaussian_problem, tiny_images


def test_sample_accepts_numpy_noise():
    den = ad.GaussianDenoiser().fit(tiny_images(10))
    noise = randn(2, 1, 6, 6, seed=207)
    torch.testing.assert_close(ad.sample(den, noise.numpy(), schedules.karras(4)),
                               ad.sample(den, noise, schedules.karras(4)))


def test_ddim_on_vp_grid_equals_euler_on_matching_sigma_grid():
    data = tiny_images(10, seed=1)
    den = ad.EmpiricalOptimalDenoiser().fit(data)  # non-linear, so the test is not trivial
    timesteps = torch.linspace(999, 0, 12).round().long()
    alpha_bars = torch.cat([schedules.ddpm_linear_alpha_bars()[timesteps], torch.ones(1, dtype=torch.float64)])
    x_T = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    vp_result = sample_ddim_vp(den, x_T, alpha_bars)
    sigmas = schedules.sigma_from_alpha_bar(alpha_bars)
    ve_result = ad.sample_euler(den, x_T / math.sqrt(alpha_bars[0]), sigmas)
    torch.testing.assert_close(vp_result, ve_result, rtol=1e-10, atol=1e-10)
    assert (vp_result - x_T).abs().max() > 0.1  # it really moved


def test_sample_ddim_equals_euler_and_reports_ve_states():
    den = ad.GaussianDenoiser().fit(tiny_images(30, seed=3))
    noise, sigmas = randn(2, 1, 6, 6, seed=202), schedules.karras(8, 0.01, 50.0)
    seen = []
    x_ddim, traj = ad.sample(den, noise, sigmas, "ddim", callback=seen.append, return_trajectory=True)
    x_euler, traj_euler = ad.sample(den, noise, sigmas, "euler", return_trajectory=True)
    torch.testing.assert_close(x_ddim, x_euler, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(traj, traj_euler, rtol=1e-10, atol=1e-10)
    assert [info["i"] for info in seen] == list(range(8))
    torch.testing.assert_close(seen[0]["x"], noise * 50.0)


def test_heun_is_more_accurate_than_euler_on_the_closed_form():
    X, _, _ = gaussian_problem(n=300, seed=4)
    den = ad.GaussianDenoiser().fit(X)
    sigmas = schedules.karras(20, 0.05, 20.0)[:-1]
    noise = torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = den.trajectory(noise * 20.0, sigmas)[-1]
    err = {m: float((ad.sample(den, noise, sigmas, m) - exact).abs().max()) for m in ("euler", "heun")}
    assert err["heun"] < err["euler"] / 4


def test_sample_accepts_any_callable_and_object_with_denoise():
    data = tiny_images(5, seed=6)
    den = ad.EmpiricalOptimalDenoiser().fit(data)

    class Wrapper:
        def denoise(self, x, sigma):
            return den.denoise(x, sigma)

    noise, sigmas = randn(2, 1, 6, 6, seed=203), schedules.karras(5)
    a = ad.sample(den, noise, sigmas, "heun")
    torch.testing.assert_close(ad.sample(Wrapper(), noise, sigmas, "heun"), a)
    torch.testing.assert_close(ad.sample(lambda x, s: den(x, s), noise, sigmas, "heun"), a)
    with pytest.raises(ValueError, match="unknown sampler"):
        ad.sample(den, noise, sigmas, "rk45")


def test_class_conditional_sampling_passes_labels():
    data = tiny_images(6, seed=7)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    den = ad.EmpiricalOptimalDenoiser().fit(data, y)
    out = ad.sample(den, randn(2, 1, 6, 6, seed=204), schedules.karras(20), y=torch.tensor([1, 0]))
    dist = torch.cdist(out.reshape(2, -1), data.reshape(6, -1))
    assert dist[0].argmin() >= 3 and dist[1].argmin() < 3  # lands on a training image of its class


@pytest.mark.parametrize("bad", [[1.0], [1.0, 2.0, 0.0], [1.0, -0.5], [1.0, float("nan"), 0.0], [[1.0, 0.0]]])
def test_invalid_schedules_are_rejected(bad):
    den = ad.GaussianDenoiser().fit(tiny_images(5))
    with pytest.raises(ValueError, match="sigmas"):
        ad.sample(den, randn(1, 1, 6, 6, seed=205), torch.tensor(bad))


@pytest.mark.parametrize("method", ["euler", "heun", "ddim"])
def test_a_denoiser_returning_a_wrong_shape_or_nan_is_named(method):
    noise, sigmas = torch.randn(2, 1, 4, 4, dtype=torch.float64), ad.schedules.karras(3, 0.1, 10.0)
    with pytest.raises(ValueError, match=r"returned \(2, 1, 2, 4\) at sigma = 10 for x of shape \(2, 1, 4, 4\)"):
        ad.sample(lambda x, sigma: x[:, :, :2], noise, sigmas, method)
    with pytest.raises(ValueError, match="returned NaN or Inf at sigma = 10"):
        ad.sample(lambda x, sigma: x * float("nan"), noise, sigmas, method)
