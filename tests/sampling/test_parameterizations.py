"""The bridges from a network's prediction and time input to D(x, sigma) (the adapter's formulas
are checked end to end against the Gaussian closed form in tests/denoisers/test_network.py)."""

import pytest
import torch

from analytic_denoisers.sampling.parameterizations import denoised_from, network_input, timestep_from_sigma
from analytic_denoisers.sampling.schedules import ddpm_linear_alpha_bars, sigma_from_alpha_bar
from references import randn


def test_timesteps_are_exact_on_the_grid_and_log_linear_between():
    alpha_bars = ddpm_linear_alpha_bars(1000)
    table = sigma_from_alpha_bar(alpha_bars)
    steps = torch.arange(1000)
    assert torch.equal(timestep_from_sigma(table, alpha_bars), steps.double())
    middle = torch.exp((table[:-1].log() + table[1:].log()) / 2)  # halfway in log-sigma
    torch.testing.assert_close(timestep_from_sigma(middle, alpha_bars), steps[:-1].double() + 0.5,
                               rtol=0, atol=1e-9)
    assert timestep_from_sigma(torch.tensor([1e-4, 1e4]), alpha_bars).tolist() == [0.0, 999.0]  # clamped


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "edm", "denoised"])
def test_a_network_that_predicts_exactly_gives_the_posterior_mean_back(parameterization):
    x, d = randn(3, 1, 2, 2, seed=1), randn(3, 1, 2, 2, seed=2)  # a state and "its" posterior mean
    sigma = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)
    s = sigma.reshape(-1, 1, 1, 1)
    alpha_bar = 1 / (1 + s**2)
    eps = (x - d) / s
    prediction = {"eps": eps, "x0": d, "denoised": d, "v": alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * d,
                  "edm": (d - 0.25 / (s**2 + 0.25) * x) / (0.5 * s / (s**2 + 0.25).sqrt())}[parameterization]
    torch.testing.assert_close(denoised_from(prediction, x, sigma, parameterization), d, rtol=1e-12, atol=1e-12)
    scale = {"eps": alpha_bar.sqrt(), "x0": alpha_bar.sqrt(), "v": alpha_bar.sqrt(), "edm": (s**2 + 0.25).rsqrt(),
             "denoised": torch.ones_like(s)}[parameterization]
    torch.testing.assert_close(network_input(x, sigma, parameterization), x * scale, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="parameterization must be one of"):
        denoised_from(prediction, x, sigma, "score")
