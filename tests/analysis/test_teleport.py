"""Teleportation (analysis.teleport): skipping the first steps with the Gaussian's closed form."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.analysis.teleport import teleport_sample, teleportation


def test_no_teleport_is_a_plain_run(gaussian):
    noise = torch.randn(3, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = ad.schedules.karras(8, 0.01, 50.0)
    final, calls = teleport_sample(gaussian, gaussian, noise, sigmas, 0)
    assert torch.equal(final, ad.sample(gaussian, noise, sigmas)) and calls == 2 * 8 - 1


def test_teleporting_with_the_gaussian_itself_changes_nothing(gaussian):
    # every hybrid run lands on the exact closed-form end point, up to Heun's error, which
    # shrinks at second order with the number of steps
    noise = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    worst = []
    for n in (100, 400):
        sigmas = ad.schedules.karras(n, 0.002, 80.0)
        exact = gaussian.trajectory(noise * 80.0, sigmas)[-1]
        result = teleportation(gaussian, gaussian, noise, sigmas, [n // 4, n // 2, n - 1])
        assert [r["skip"] for r in result["by_skip"]] == [0, n // 4, n // 2, n - 1]
        assert all(r["calls_saved"] == 2 * r["skip"] for r in result["by_skip"])
        worst.append(max(float((f - exact).abs().max()) for f in result["_samples"].values()))
    assert worst[1] < 2e-4 and worst[0] / worst[1] > 8


def test_bad_skip_raises(gaussian):
    noise = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    for bad in (-1, 9, 1.5):
        with pytest.raises(ValueError, match="skip must be an int"):
            teleport_sample(gaussian, gaussian, noise, ad.schedules.karras(8), bad)
