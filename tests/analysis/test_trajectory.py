"""Trajectory geometry (analysis.trajectory) on the Gaussian, whose flow has a closed form."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.analysis import trajectory
from references import gaussian_problem, randn


@pytest.mark.parametrize("rank", [None, 4])
def test_closed_form_top2_fraction_matches_the_formula(rank):
    X, _, _ = gaussian_problem((1, 3, 3), n=500)
    g = ad.GaussianDenoiser(rank=rank).fit(X)
    sigmas = ad.schedules.karras(12, 0.01, 3.0)
    x_T = 3.0 * randn(6, 1, 3, 3)
    flat = x_T.reshape(6, -1) - g.mean_
    coords = flat @ g.eigvecs_
    perp_sq = flat.square().sum(1) - coords.square().sum(1)
    measured = trajectory.top2_fraction(g.trajectory(x_T, sigmas))  # PCA of the pixel-space path
    formula = trajectory.gaussian_top2_fraction(g.eigvals_, sigmas, coords, perp_sq)
    # Gaussian paths are nearly planar: compare what lies outside the plane, relatively
    assert float((1 - measured).min()) > 1e-8
    torch.testing.assert_close(1 - measured, 1 - formula, rtol=1e-7, atol=0)


def test_top2_fraction_of_planar_and_spread_paths():
    t = torch.linspace(0, 3, 20, dtype=torch.float64)
    a, b = randn(1, 9, seed=1)[0], randn(1, 9, seed=2)[0]
    plane = (torch.cos(t)[:, None] * a + torch.sin(t)[:, None] * b).reshape(20, 1, 1, 3, 3)
    assert abs(float(trajectory.top2_fraction(plane)) - 1) < 1e-12
    spread = randn(20, 1, 1, 3, 3, seed=3)  # 20 random states use every direction
    assert float(trajectory.top2_fraction(spread)) < 0.8


def test_gaussian_commitment_matches_the_closed_form(gaussian):
    # x̂0 along u_i is sqrt(lam_i / (lam_i + sigma^2)) of its final value, for every start
    sigmas = ad.schedules.karras(200, 0.002, 80.0)
    path = trajectory.record_path(gaussian, randn(40, 1, 3, 3), sigmas)
    ratios = trajectory.component_ratios(path["denoised"], path["states"][-1], gaussian.mean_, gaussian.eigvecs_)
    lam = gaussian.eigvals_
    exact = torch.sqrt(lam / (lam + sigmas[:-1, None].square()))
    torch.testing.assert_close(ratios, exact, rtol=0, atol=2e-4)
    for q in (0.5, 0.9):
        torch.testing.assert_close(trajectory.commit_sigma(ratios, sigmas[:-1], q),
                                   trajectory.gaussian_commit_sigma(lam, q), rtol=2e-3, atol=0)


def test_rank_correlation():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, float("nan")], dtype=torch.float64)
    assert trajectory.rank_correlation(a, a.exp()) == pytest.approx(1.0)  # any increasing map
    assert trajectory.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert trajectory.rank_correlation(a, torch.tensor([2.0, 1.0, 4.0, 3.0, 0.0])) == pytest.approx(0.6)
    assert math.isnan(trajectory.rank_correlation(a[:2], a[:2]))  # too few finite pairs
    assert math.isnan(trajectory.rank_correlation(a, torch.ones(5)))  # a constant side
    # ties take their average rank: ranks (1..5) against (3, 3, 3, 3, 5)
    six = torch.arange(1.0, 6.0)
    assert trajectory.rank_correlation(six, torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0])) == pytest.approx(0.5 ** 0.5)


def test_commit_sigma_interpolates_after_the_last_drop():
    sigmas = torch.tensor([16.0, 8.0, 4.0, 2.0, 1.0], dtype=torch.float64)
    ratios = torch.tensor([[0.1, 0.6, 0.2, 0.6], [0.4, 0.4, 0.3, 0.7], [0.6, 0.7, 0.35, 0.8],
                           [0.95, 1.0, 0.4, 0.9], [1.0, 1.0, 0.45, 1.0]], dtype=torch.float64)
    got = trajectory.commit_sigma(ratios, sigmas, 0.5)
    # column 0: 0.4 at 8 -> 0.6 at 4, halfway in log sigma; column 1 dips below 0.5 again at 8
    # (0.4 -> 0.7: a third of the way); column 2 never reaches 0.5; column 3 is above it from the
    # first step (a lower bound)
    torch.testing.assert_close(got[:2], torch.tensor([32 ** 0.5, 8 * 0.5 ** (1 / 3)], dtype=torch.float64))
    assert got[2].isnan() and got[3] == 16.0
    level = trajectory.commit_sigma(ratios[:, :1], sigmas, 0.9)
    torch.testing.assert_close(level, torch.tensor([4.0 * 0.5 ** (0.3 / 0.35)], dtype=torch.float64))


def test_gaussian_perturbation_gain_is_the_closed_form(gaussian):
    # the Gaussian flow is affine, so a perturbation's effect on the end is exact for any start;
    # Heun's error on it shrinks at second order with the number of steps
    errors = []
    for n in (100, 200):
        sigmas = ad.schedules.karras(n, 0.002, 80.0)
        path = trajectory.record_path(gaussian, randn(5, 1, 3, 3), sigmas)
        steps = [0, 2 * n // 5, 7 * n // 10, n - 1]
        out = trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, steps, norm=0.3, seed=4)
        assert torch.allclose(out["delta"].reshape(5, -1).norm(dim=1), torch.full((5,), 0.3, dtype=torch.float64))
        exact = torch.stack([trajectory.gaussian_flow_gain(out["delta"], float(sigmas[k]), gaussian.eigvals_,
                                                           gaussian.eigvecs_) / 0.3 for k in steps])
        assert float(exact[0].max()) < 0.1 and float(exact[-1].min()) > 0.9  # late perturbations survive
        errors.append(float(((out["gain"] - exact) / exact).abs().max()))
    assert errors[0] < 3e-3 and errors[1] < 1e-3 and errors[0] / errors[1] > 3.5
    for bad, match in (([200], "steps must be a non-empty list"), ([], "steps must be a non-empty list")):
        with pytest.raises(ValueError, match=match):
            trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, bad)
    with pytest.raises(ValueError, match="norm must be a positive number"):
        trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, [0], norm=0.0)
    with pytest.raises(ValueError, match="unknown sampler"):
        trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, [0], method="rk4")
    with pytest.raises(ValueError, match="one state per sigma"):
        trajectory.perturbation_sensitivity(gaussian, path["states"][1:], sigmas, [0])


def test_trajectory_geometry_checks_its_input_before_sampling(gaussian):
    class Refuses:
        def denoise(self, x, sigma):
            raise AssertionError("sampled before the input was checked")

    sigmas = ad.schedules.karras(4, 0.01, 10.0)
    with pytest.raises(ValueError, match="steps must be a non-empty list"):
        trajectory.trajectory_geometry(Refuses(), gaussian, randn(2, 1, 3, 3), sigmas, perturb_steps=[4])
    with pytest.raises(ValueError, match="unknown sampler"):
        trajectory.trajectory_geometry(Refuses(), gaussian, randn(2, 1, 3, 3), sigmas, method="rk4")
    with pytest.raises(ValueError, match="noise"):
        trajectory.trajectory_geometry(Refuses(), gaussian, randn(2, 1, 4, 4), sigmas)


def test_component_ratios_are_nan_for_directions_the_samples_lack():
    U = torch.eye(3, dtype=torch.float64)[:, :2]
    final = torch.tensor([[1.0, 0.0, 5.0], [2.0, 0.0, -1.0]], dtype=torch.float64).reshape(2, 1, 1, 3)
    ratios = trajectory.component_ratios(0.5 * final[None], final, torch.zeros(3), U)
    assert ratios[0, 0] == 0.5 and ratios[0, 1].isnan()
