"""The anchored patch composite (kernels.anchored): against the explicit-loop float64 references
of its two parts, at every test sigma and per-image sigma; its end points are its parts exactly."""

import pytest
import torch

from analytic_denoisers.kernels.anchored import anchored_composite_posterior_mean
from analytic_denoisers.kernels.mixture import gaussian_mixture_posterior_mean
from analytic_denoisers.kernels.moments import moments
from analytic_denoisers.kernels.patches import patch_composite_posterior_mean
from analytic_denoisers.kernels.wiener import eigenbasis
from references import SIGMAS, mixture_reference, near_data, patch_composite_reference, tiny_images

SHAPE = (1, 4, 5)
DATA = tiny_images(7, SHAPE, seed=41)
HALVES = [eigenbasis(moments(part)) for part in (DATA[:4], DATA[4:])]  # a two-component mixture of the images
MIXTURE = (torch.tensor([4 / 7, 3 / 7], dtype=torch.float64).log(), torch.stack([b.mean for b in HALVES]),
           torch.stack([b.eigvals for b in HALVES]), torch.stack([b.eigvecs for b in HALVES]))


def reference(x, sigma, size, weight):
    """``(1 - w) PSPC + w GMM``, each part by its explicit loops, one image and level at a time."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x))
    out = []
    for xn, s in zip(x, sigma):
        local = patch_composite_reference(xn[None], float(s), DATA, size)
        anchor, _ = mixture_reference(xn[None], float(s), *MIXTURE)
        out.append((1 - weight) * local + weight * anchor)
    return torch.cat(out)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("size, weight", [(2, 0.5), (3, 0.2), (4, 0.9)])
def test_matches_loop_reference(sigma, size, weight):
    x = near_data(DATA, 3, sigma, seed=42)
    out = anchored_composite_posterior_mean(x, sigma, DATA, size, MIXTURE, weight, chunk_size=3)
    torch.testing.assert_close(out, reference(x, sigma, size, weight), rtol=1e-10, atol=1e-10)


def test_per_image_sigma_and_a_schedule_match_loop_reference():
    sigma = torch.tensor([1e-2, 0.3, 2.0, 50.0], dtype=torch.float64)
    x = near_data(DATA, 3, 0.3, seed=43)
    out = anchored_composite_posterior_mean(x, sigma, DATA, lambda s: 2 if s < 1 else 4, MIXTURE, 0.5)
    expect = torch.cat([reference(x[i:i + 1], sigma[i], 2 if sigma[i] < 1 else 4, 0.5) for i in range(4)])
    torch.testing.assert_close(out, expect, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.05, 1.0, 20.0])
def test_end_points_are_the_two_parts(sigma):
    x = near_data(DATA, 3, sigma, seed=44)
    local = patch_composite_posterior_mean(x, sigma, DATA, 3)
    anchor = gaussian_mixture_posterior_mean(x, sigma, *MIXTURE)
    assert torch.equal(anchored_composite_posterior_mean(x, sigma, DATA, 3, MIXTURE, 0.0), local)
    assert torch.equal(anchored_composite_posterior_mean(x, sigma, DATA, 3, MIXTURE, 1.0), anchor)
    assert (local - anchor).abs().max() > 1e-3  # the two parts differ, so the end points test something
