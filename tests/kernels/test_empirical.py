"""empirical_posterior_mean (kernels.empirical) against the explicit-loop float64 reference: every
noise level, one level per image, chunking, split weights, float32, top-k and gradients."""

import pytest
import torch

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
    out = empirical_posterior_mean(x, sigma, data)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.reshape(len(x), -1), empirical_reference(x, sigma, data), rtol=1e-10, atol=1e-10)


def test_per_image_sigma_matches_reference():
    data, x = tiny_images(10, seed=4), tiny_images(5, seed=5)
    sigma = torch.tensor([1e-3, 0.05, 0.7, 3.0, 1e3], dtype=torch.float64)
    out = empirical_posterior_mean(x, sigma, data)
    torch.testing.assert_close(out.reshape(5, -1), empirical_reference(x, sigma, data), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma", [1e-3, 0.3, 1e3])
def test_chunk_size_does_not_change_result(sigma):
    data, x = tiny_images(20, seed=6), tiny_images(6, seed=7)
    outs = [empirical_posterior_mean(x, sigma, data, chunk_size=c) for c in (1, 7, 20)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-12, atol=1e-12)


def _midpoints(data, pairs):
    """Queries exactly halfway between training images: softmax weights near 1/2 at any sigma."""
    return torch.stack([(data[i] + data[j]) / 2 for i, j in pairs])


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_split_weights_at_small_sigma(sigma):
    data = tiny_images(12, seed=12)
    x = _midpoints(data, [(0, 1), (2, 5), (7, 11)])
    x = x + 1e-3 * sigma**2 * randn(*x.shape, seed=30)  # nudges the weights off exactly 1/2
    out = empirical_posterior_mean(x, sigma, data, chunk_size=5)
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
    out = empirical_posterior_mean(x.float(), sigma, data.float(), chunk_size=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-3)


def test_jacobian_matches_autograd_of_brute_force_formula():
    data, x = tiny_images(7, (1, 3, 3), seed=15), tiny_images(2, (1, 3, 3), seed=16)
    sigma = torch.tensor([0.3, 1.5], dtype=torch.float64)
    flat = data.reshape(7, -1)

    def brute(z):
        sq = ((z.reshape(2, 1, -1) - flat) ** 2).sum(-1)  # (2, 7)
        return (torch.softmax(-sq / (2 * sigma[:, None] ** 2), 1) @ flat).reshape(z.shape)

    jac = torch.autograd.functional.jacobian(lambda z: empirical_posterior_mean(z, sigma, data, chunk_size=3), x)
    torch.testing.assert_close(jac, torch.autograd.functional.jacobian(brute, x), rtol=1e-9, atol=1e-9)


def test_top_k_is_exact_with_all_images_and_close_at_small_sigma():
    data, x = tiny_images(25, seed=18), tiny_images(5, seed=19)

    def exact(sigma):
        return empirical_posterior_mean(x, sigma, data)

    def approx(sigma, top_k=3):
        return empirical_posterior_mean(x, sigma, data, top_k=top_k, chunk_size=4)

    assert torch.allclose(approx(0.7, top_k=25), exact(0.7))
    torch.testing.assert_close(approx(0.02), exact(0.02), rtol=0, atol=1e-8)
    assert (approx(5.0) - exact(5.0)).abs().max() > 1e-3  # it is an approximation
