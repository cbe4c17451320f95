"""The package's VP DDIM reproduces diffusers' ``DDIMScheduler.step`` trajectory, step by step,
for every timestep spacing, with and without ``clip_sample``, fed the same denoiser (diffusers is
in the test extra, so CI runs this)."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core.compat import import_diffusers
from analytic_denoisers.sampling import schedules
from references import tiny_images

diffusers = pytest.importorskip("diffusers", reason="the diffusers extra") and import_diffusers()
DATA = tiny_images(20, (1, 8, 8), seed=60, dtype=torch.float32)


def diffusers_trajectory(den, noise, steps, **config):
    """x_t after every DDIMScheduler.step, and its x̂0, with D(x, sigma) as the "sample" prediction."""
    scheduler = diffusers.DDIMScheduler(prediction_type="sample", **config)
    scheduler.set_timesteps(steps)
    x_t, states, denoised = noise, [], []
    for t in scheduler.timesteps:
        alpha_bar = float(scheduler.alphas_cumprod[t])
        x0 = den(x_t / math.sqrt(alpha_bar), math.sqrt((1 - alpha_bar) / alpha_bar))
        x_t = scheduler.step(x0, t, x_t, eta=0.0).prev_sample
        states.append(x_t)
        denoised.append(x0)
    return torch.stack(states), torch.stack(denoised)


@pytest.mark.parametrize("config", [
    {},  # DDIMScheduler's defaults: linear betas 1e-4 ... 0.02, leading spacing, clip_sample=True
    {"clip_sample": False},
    {"timestep_spacing": "trailing"},
    {"timestep_spacing": "linspace"},  # steps to t - T // n, which is not the next timestep
    {"steps_offset": 1, "set_alpha_to_one": False, "clip_sample_range": 0.5},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing"},
    {"beta_schedule": "squaredcos_cap_v2"},
])
@pytest.mark.parametrize("steps", [10, 7])
def test_vp_ddim_follows_diffusers_ddim_step_by_step(config, steps):
    den = ad.GaussianDenoiser().fit(DATA)  # its x̂0 leaves [-1, 1] at large sigma: clipping acts
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(61))
    expected, expected_x0 = diffusers_trajectory(den, noise, steps, **config)

    defaults = diffusers.DDIMScheduler(**config).config
    table = schedules.vp_alpha_bars(defaults.num_train_timesteps, defaults.beta_start, defaults.beta_end,
                                    defaults.beta_schedule)
    timesteps = schedules.vp_timesteps(steps, defaults.num_train_timesteps, defaults.timestep_spacing,
                                       defaults.steps_offset)
    at, to = schedules.ddim_alpha_bars(table, timesteps, defaults.set_alpha_to_one)
    seen = []
    ad.sample_ddim_vp(den, noise, at, alpha_bars_next=to, callback=seen.append,
                      clip_denoised=defaults.clip_sample_range if defaults.clip_sample else None)
    states = torch.stack([info["x_next"] for info in seen])
    assert (states - expected).abs().max() < 1e-5  # measured: at most 7.2e-7 (float32)
    assert (torch.stack([info["denoised"] for info in seen]) - expected_x0).abs().max() < 1e-5
    if defaults.clip_sample:  # the test means something: without clipping the trajectory differs
        assert (ad.sample_ddim_vp(den, noise, at, alpha_bars_next=to) - expected[-1]).abs().max() > 1e-2


def test_alpha_bars_next_is_checked():
    den = ad.GaussianDenoiser().fit(DATA)
    with pytest.raises(ValueError, match="alpha_bars_next"):
        ad.sample_ddim_vp(den, torch.zeros(1, 1, 8, 8), torch.tensor([0.1, 0.5]), alpha_bars_next=torch.tensor([0.05, 0.6]))
    with pytest.raises(ValueError, match="clip_denoised"):
        ad.sample_ddim_vp(den, torch.zeros(1, 1, 8, 8), torch.tensor([0.1, 0.5, 1.0]), clip_denoised=-1.0)


def test_vp_timesteps_and_alpha_bars_refuse_bad_input():
    with pytest.raises(ValueError, match="spacing"):
        schedules.vp_timesteps(10, spacing="uniform")
    with pytest.raises(ValueError, match="beta_schedule"):
        schedules.vp_alpha_bars(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="past the table"):
        schedules.vp_timesteps(10, 1000, "leading", steps_offset=100)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_every_step_count_gives_that_many_timesteps(spacing):
    # diffusers' float arange gives 62 "trailing" timesteps for 61 steps of 1000, the last -1
    for n in (1, 7, 61, 103, 121, 201, 1000):
        t = schedules.vp_timesteps(n, 1000, spacing)
        assert len(t) == n and t.min() >= 0 and t.max() <= 999 and (t[1:] < t[:-1]).all(), (spacing, n)
