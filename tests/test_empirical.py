"""EmpiricalOptimalDenoiser against explicit-loop float64 references and closed-form limits."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.empirical import empirical_posterior_mean
from references import empirical_reference, randn, tiny_images

SIGMAS = [1e-3, 1e-2, 0.1, 0.5, 1.0, 10.0, 1e2, 1e3]


@pytest.mark.parametrize("shape", [(1, 6, 6), (3, 4, 5)])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_matches_brute_force_softmax(shape, sigma):
    data = tiny_images(15, shape, seed=1)
    # queries near the data so that small sigmas still give non-trivial weights
    x = data[:4] + 0.3 * sigma * torch.randn((4,) + shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = torch.cat([x, tiny_images(3, shape, seed=3)])
    out = ad.EmpiricalOptimalDenoiser().fit(data)(x, sigma)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.reshape(len(x), -1), empirical_reference(x, sigma, data), rtol=1e-10, atol=1e-10)


def test_per_image_sigma_matches_reference():
    data, x = tiny_images(10, seed=4), tiny_images(5, seed=5)
    sigma = torch.tensor([1e-3, 0.05, 0.7, 3.0, 1e3], dtype=torch.float64)
    out = ad.EmpiricalOptimalDenoiser().fit(data)(x, sigma)
    torch.testing.assert_close(out.reshape(5, -1), empirical_reference(x, sigma, data), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma", [1e-3, 0.3, 1e3])
def test_chunk_size_does_not_change_result(sigma):
    data, x = tiny_images(20, seed=6), tiny_images(6, seed=7)
    outs = [empirical_posterior_mean(x, sigma, data, chunk_size=c) for c in (1, 7, 20)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-12, atol=1e-12)


def test_small_sigma_gives_nearest_training_image():
    data, x = tiny_images(20, seed=8), tiny_images(6, seed=9)
    nearest = torch.cdist(x.reshape(6, -1), data.reshape(20, -1)).argmin(1)
    out = ad.EmpiricalOptimalDenoiser(chunk_size=3).fit(data)(x, 1e-4)
    torch.testing.assert_close(out, data[nearest], rtol=0, atol=1e-12)


def test_large_sigma_gives_training_mean():
    data, x = tiny_images(20, seed=10), tiny_images(6, seed=11)
    out = ad.EmpiricalOptimalDenoiser().fit(data)(x, 1e6)
    torch.testing.assert_close(out, data.mean(0).expand_as(out), rtol=0, atol=1e-6)


def _midpoints(data, pairs):
    """Queries exactly halfway between training images: softmax weights near 1/2 at any sigma."""
    return torch.stack([(data[i] + data[j]) / 2 for i, j in pairs])


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_split_weights_at_small_sigma(sigma):
    data = tiny_images(12, seed=12)
    x = _midpoints(data, [(0, 1), (2, 5), (7, 11)])
    x = x + 1e-3 * sigma**2 * randn(*x.shape, seed=30)  # nudges the weights off exactly 1/2
    out = ad.EmpiricalOptimalDenoiser(chunk_size=5).fit(data)(x, sigma)
    ref = empirical_reference(x, sigma, data)
    torch.testing.assert_close(out.reshape(3, -1), ref, rtol=1e-9, atol=1e-9)
    halfway = _midpoints(data, [(0, 1), (2, 5), (7, 11)]).reshape(3, -1)
    assert (ref - halfway).abs().max() < 1e-3  # the test really has split weights


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0, 1e3])
def test_float32_agrees_with_float64(sigma):
    data, x = tiny_images(30, seed=13), tiny_images(4, seed=14)
    if sigma >= 0.1:  # an exact tie at tiny sigma is decided by float32 rounding: float64 territory
        x = torch.cat([x, _midpoints(data, [(3, 4)])])
    ref = empirical_reference(x, sigma, data).reshape(x.shape)
    out = ad.EmpiricalOptimalDenoiser(chunk_size=4).fit(data.float())(x.float(), sigma)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-3)


def test_jacobian_matches_autograd_of_brute_force_formula():
    data, x = tiny_images(7, (1, 3, 3), seed=15), tiny_images(2, (1, 3, 3), seed=16)
    sigma = torch.tensor([0.3, 1.5], dtype=torch.float64)
    den = ad.EmpiricalOptimalDenoiser(chunk_size=3).fit(data)
    flat = data.reshape(7, -1)

    def brute(z):
        sq = ((z.reshape(2, 1, -1) - flat) ** 2).sum(-1)  # (2, 7)
        return (torch.softmax(-sq / (2 * sigma[:, None] ** 2), 1) @ flat).reshape(z.shape)

    jac = torch.autograd.functional.jacobian(lambda z: den(z, sigma), x)
    torch.testing.assert_close(jac, torch.autograd.functional.jacobian(brute, x), rtol=1e-9, atol=1e-9)


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


def test_top_k_is_exact_with_all_images_and_close_at_small_sigma():
    data, x = tiny_images(25, seed=18), tiny_images(5, seed=19)
    exact = ad.EmpiricalOptimalDenoiser().fit(data)
    assert torch.allclose(ad.EmpiricalOptimalDenoiser(top_k=25, chunk_size=4).fit(data)(x, 0.7), exact(x, 0.7))
    approx = ad.EmpiricalOptimalDenoiser(top_k=3, chunk_size=4).fit(data)
    torch.testing.assert_close(approx(x, 0.02), exact(x, 0.02), rtol=0, atol=1e-8)
    assert (approx(x, 5.0) - exact(x, 5.0)).abs().max() > 1e-3  # it is an approximation


def test_one_image_dataset_returns_that_image():
    data = tiny_images(1, seed=20)
    out = ad.EmpiricalOptimalDenoiser().fit(data)(tiny_images(3, seed=21), 2.5)
    torch.testing.assert_close(out, data.expand(3, -1, -1, -1))
