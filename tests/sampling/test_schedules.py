"""Noise schedules and the VP <-> VE bridge (sampling.schedules)."""

import math

import pytest
import torch

from analytic_denoisers.sampling import schedules
from references import randn


def _is_schedule(s, n):
    assert s.dtype == torch.float64 and s.shape == (n + 1,) and s[-1] == 0
    assert bool((s[1:] < s[:-1]).all())


def test_karras_endpoints_and_shape():
    s = schedules.karras(10, 0.002, 80.0)
    _is_schedule(s, 10)
    assert math.isclose(s[0], 80.0) and math.isclose(s[-2], 0.002)
    # rho = 1 is a linear ramp
    torch.testing.assert_close(schedules.karras(5, 1.0, 5.0, rho=1)[:-1],
                               torch.tensor([5.0, 4, 3, 2, 1], dtype=torch.float64))


@pytest.mark.parametrize("name", ["ddpm_linear", "cosine"])
def test_vp_schedules_are_sigma_grids_of_their_alpha_bars(name):
    s = schedules.SCHEDULES[name](10)
    _is_schedule(s, 10)
    alpha_bars = {"ddpm_linear": schedules.ddpm_linear_alpha_bars, "cosine": schedules.cosine_alpha_bars}[name]()
    torch.testing.assert_close(s[0], schedules.sigma_from_alpha_bar(alpha_bars[-1]))
    torch.testing.assert_close(s[-2], schedules.sigma_from_alpha_bar(alpha_bars[0]))


def test_ddpm_linear_alpha_bar_matches_definition():
    betas = [1e-4 + (0.02 - 1e-4) * t / 999 for t in range(1000)]
    expect = math.prod(1 - b for b in betas[:501])
    assert math.isclose(float(schedules.ddpm_linear_alpha_bars()[500]), expect, rel_tol=1e-12)


def test_bridge_round_trip_and_formula():
    x = randn(3, 1, 4, 4, seed=201)
    x_t, alpha_bar = schedules.ve_to_vp(x, 2.0)
    assert math.isclose(alpha_bar, 1 / 5)
    x_back, sigma = schedules.vp_to_ve(x_t, alpha_bar)
    assert math.isclose(sigma, 2.0)
    torch.testing.assert_close(x_back, x)


def test_bridge_per_image_levels():
    x = randn(3, 1, 2, 2, seed=206)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    x_t, alpha_bar = schedules.ve_to_vp(x, sigma)
    assert alpha_bar.shape == (3,)
    for n in range(3):
        expect, _ = schedules.ve_to_vp(x[n:n + 1], float(sigma[n]))
        torch.testing.assert_close(x_t[n:n + 1], expect)
    x_back, sigma_back = schedules.vp_to_ve(x_t, alpha_bar)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(sigma_back, sigma)


@pytest.mark.parametrize("kwargs, match", [
    ({"rho": 0}, "rho must be a positive number"), ({"rho": float("nan")}, "rho must be a positive number"),
    ({"sigma_min": 0}, "sigma_min must be a positive number"), ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min <= sigma_max"),
])
def test_karras_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedules.karras(10, **kwargs)
