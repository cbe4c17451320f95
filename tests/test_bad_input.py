"""Bad input, walked over every registered estimator, sampler and schedule: each is a ValueError
or TypeError whose message names the argument (the command line's table is
tests/cli/test_cli_bad_input.py; files that lie, tests/core/test_artifact_lies.py)."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.sampling import schedules
from analytic_denoisers.sampling.samplers import SAMPLERS
from references import tiny_images
from test_contract import CASES, factory

SHAPE = (1, 6, 6)
X = tiny_images(12, SHAPE, seed=90)
GOOD = tiny_images(2, SHAPE, seed=91)


def with_nan(x):
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    return x


BAD_IMAGES = [  # (x, words the message must contain)
    (with_nan(GOOD), "NaN or Inf"), (GOOD * float("inf"), "NaN or Inf"),
    (GOOD[0], "(N, C, H, W)"), (GOOD.reshape(2, -1), "(N, C, H, W)"), (GOOD[:, :, :5], "shape"),
    (GOOD.to(torch.uint8), "uint8"), (GOOD > 0, "floating-point"), (GOOD.to(torch.int64), "floating-point"),
    ("images", "x"), (None, "x"),
]
BAD_SIGMAS = [
    (float("nan"), "NaN"), (float("inf"), "NaN or Inf"), (0.0, "positive"), (-1.0, "positive"), (True, "number"),
    (torch.ones(3), "shape (2,)"), (torch.ones(2, 1), "shape (2,)"), ("0.5", "sigma"), (None, "sigma"),
    (1e-200, "too small"),
]


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    return factory(request.param)().fit(X)


@pytest.mark.parametrize("x, words", BAD_IMAGES, ids=[w for _, w in BAD_IMAGES])
def test_every_estimator_names_bad_images(fitted, x, words):
    for method in ("denoise", "score", "eps"):
        with pytest.raises((ValueError, TypeError)) as info:
            getattr(fitted, method)(x, 0.5)
        assert words in str(info.value), (method, info.value)


@pytest.mark.parametrize("sigma, words", BAD_SIGMAS, ids=[repr(s)[:20] for s, _ in BAD_SIGMAS])
def test_every_estimator_names_bad_sigma(fitted, sigma, words):
    for method in ("denoise", "score", "eps"):
        with pytest.raises((ValueError, TypeError)) as info:
            getattr(fitted, method)(GOOD, sigma)
        assert words in str(info.value), (method, info.value)


BAD_SCHEDULES = [
    (torch.tensor([1.0, 2.0, 0.0]), "decreasing"), (torch.tensor([1.0]), "at least 2"),
    (torch.tensor([1.0, float("nan"), 0.0]), "NaN"), (torch.tensor([1.0, -0.5]), "positive"),
    (torch.ones(2, 2), "1-D"), (torch.tensor([1.0, 0.0, 0.0]), "positive"),
]


@pytest.mark.parametrize("method", sorted(SAMPLERS))
@pytest.mark.parametrize("sigmas, words", BAD_SCHEDULES, ids=[w for _, w in BAD_SCHEDULES])
def test_every_sampler_names_a_bad_schedule(method, sigmas, words):
    den = ad.GaussianDenoiser().fit(X)
    with pytest.raises(ValueError, match="sigmas") as info:
        ad.sample(den, GOOD, sigmas, method)
    assert words in str(info.value), info.value


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_every_sampler_names_bad_noise_denoiser_and_output(method):
    den, sigmas = ad.GaussianDenoiser().fit(X), schedules.karras(3, 0.1, 10.0)
    for noise, words in ((with_nan(GOOD), "noise contains NaN"), (GOOD[0], "noise")):
        with pytest.raises(ValueError, match=words):
            ad.sample(den, noise, sigmas, method)
    with pytest.raises(ValueError, match="denoiser must have a denoise"):
        ad.sample(3, GOOD, sigmas, method)
    with pytest.raises(ValueError, match="unknown sampler"):
        ad.sample(den, GOOD, sigmas, method + "-x")
    with pytest.raises(ValueError, match="returned NaN or Inf"):
        ad.sample(lambda x, s: x / 0 * 0, GOOD, sigmas, method)


SCHEDULE_CALLS = {
    "karras": lambda n, **kw: schedules.karras(n, **kw),
    "ddpm_linear": lambda n, **kw: schedules.ddpm_linear(n, **kw),
    "cosine": lambda n, **kw: schedules.cosine(n, **kw),
    "vp_timesteps": lambda n, **kw: schedules.vp_timesteps(n, **kw),
}
BAD_STEPS = [0, -3, 2.5, True, "10", None]


@pytest.mark.parametrize("name", sorted(SCHEDULE_CALLS))
@pytest.mark.parametrize("n", BAD_STEPS, ids=repr)
def test_every_schedule_names_a_bad_step_count(name, n):
    with pytest.raises(ValueError, match="steps"):
        SCHEDULE_CALLS[name](n)
    if name != "karras":  # a discrete schedule has only its timesteps
        with pytest.raises(ValueError, match="num_train_timesteps|cannot take"):
            SCHEDULE_CALLS[name](2000)


@pytest.mark.parametrize("call, words", [
    (lambda: schedules.karras(10, rho=0), "rho"), (lambda: schedules.karras(10, sigma_min=-1), "sigma_min"),
    (lambda: schedules.karras(10, sigma_max=float("inf")), "sigma_max"),
    (lambda: schedules.vp_timesteps(10, spacing="uniform"), "spacing"),
    (lambda: schedules.vp_timesteps(10, steps_offset=-1), "steps_offset"),
    (lambda: schedules.vp_alpha_bars(beta_schedule="sigmoid"), "beta_schedule"),
    (lambda: schedules.vp_alpha_bars(num_train_timesteps=1), "num_train_timesteps"),
    (lambda: ad.sample_ddim_vp(lambda x, s: x, GOOD, torch.tensor([0.5, 0.2])), "sigmas"),
    (lambda: schedules.ddim_alpha_bars(schedules.vp_alpha_bars(), torch.tensor([1000, 0])), "timesteps"),
])
def test_schedule_arguments_are_named(call, words):
    with pytest.raises(ValueError, match=words):
        call()
