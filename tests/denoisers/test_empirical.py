"""EmpiricalOptimalDenoiser (denoisers.empirical): the estimator is its kernel (chunking, top-k,
one level per image, gradients), class conditioning, and the closed-form limits end to end."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.empirical import empirical_posterior_mean
from references import empirical_reference, tiny_images


@pytest.mark.parametrize("params", [{}, dict(chunk_size=3), dict(top_k=4, chunk_size=5)])
def test_estimator_equals_its_kernel(params):
    data, x = tiny_images(15, seed=1), tiny_images(5, seed=2)
    sigma = torch.tensor([1e-3, 0.05, 0.7, 3.0, 1e3], dtype=torch.float64)
    x_est, x_kernel = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = ad.EmpiricalOptimalDenoiser(**params).fit(data)(x_est, sigma)
    expect = empirical_posterior_mean(x_kernel, sigma, data, **params)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)
    out.square().sum().backward()
    expect.square().sum().backward()
    torch.testing.assert_close(x_est.grad, x_kernel.grad, rtol=0, atol=1e-9)


def test_small_sigma_gives_nearest_training_image():
    data, x = tiny_images(20, seed=8), tiny_images(6, seed=9)
    nearest = torch.cdist(x.reshape(6, -1), data.reshape(20, -1)).argmin(1)
    out = ad.EmpiricalOptimalDenoiser(chunk_size=3).fit(data)(x, 1e-4)
    torch.testing.assert_close(out, data[nearest], rtol=0, atol=1e-12)


def test_large_sigma_gives_training_mean():
    data, x = tiny_images(20, seed=10), tiny_images(6, seed=11)
    out = ad.EmpiricalOptimalDenoiser().fit(data)(x, 1e6)
    torch.testing.assert_close(out, data.mean(0).expand_as(out), rtol=0, atol=1e-6)


def test_score_is_gradient_of_log_mixture_density():
    data, x = tiny_images(8, seed=14), tiny_images(3, seed=15)
    sigma, d = 0.4, data[0].numel()
    den = ad.EmpiricalOptimalDenoiser().fit(data)
    xr = x.clone().requires_grad_(True)
    sq = ((xr.reshape(3, 1, -1) - data.reshape(1, 8, -1)) ** 2).sum(-1)  # (3, 8)
    log_p = torch.logsumexp(-sq / (2 * sigma**2), 1) - math.log(8) - d / 2 * math.log(2 * math.pi * sigma**2)
    (grad,) = torch.autograd.grad(log_p.sum(), xr)
    torch.testing.assert_close(den.score(x, sigma), grad, rtol=1e-9, atol=1e-9)


def test_class_conditional_uses_only_that_class():
    data, x = tiny_images(12, seed=16), tiny_images(4, seed=17)
    y = torch.tensor([0, 1, 2] * 4)
    den = ad.EmpiricalOptimalDenoiser(chunk_size=2).fit(data, y)
    labels = torch.tensor([2, 0, 2, 1])
    out = den(x, 0.8, y=labels)
    for n, label in enumerate(labels):
        ref = empirical_reference(x[n:n + 1], 0.8, data[y == label])
        torch.testing.assert_close(out[n].reshape(1, -1), ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="pass y"):
        den(x, 0.8)
    with pytest.raises(ValueError, match="not in the training labels"):
        den(x, 0.8, y=torch.tensor([0, 1, 5, 0]))


def test_unconditional_rejects_labels():
    den = ad.EmpiricalOptimalDenoiser().fit(tiny_images(5))
    with pytest.raises(ValueError, match="without labels"):
        den(tiny_images(2), 1.0, y=torch.tensor([0, 1]))


@pytest.mark.parametrize("temperature", [0.3, 4.0])
def test_temperature_divides_the_logits(temperature):
    data, x = tiny_images(9, seed=30), tiny_images(3, seed=31)
    out = ad.EmpiricalOptimalDenoiser(temperature=temperature).fit(data)(x, 0.5)
    # softmax(-||x - x_i||^2 / (2 T sigma^2)), written out
    logits = -torch.cdist(x.reshape(3, -1), data.reshape(9, -1)).square() / (2 * temperature * 0.25)
    expect = torch.softmax(logits, 1) @ data.reshape(9, -1)
    torch.testing.assert_close(out.reshape(3, -1), expect, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="temperature"):
        ad.EmpiricalOptimalDenoiser(temperature=0).fit(data)
