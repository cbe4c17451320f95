"""Locality maps (analysis.locality): Jacobian rows of a denoiser against the Wiener filter."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.analysis import locality
from analytic_denoisers.kernels.wiener import wiener_matrix
from references import TINY_UNET, randn, tiny_images


def test_jacobian_of_the_gaussian_is_its_wiener_matrix(gaussian):
    x = randn(3, 1, 3, 3, seed=7)
    pixels = [0, 4, 8]
    for sigma in (0.05, 1.0):
        J = locality.jacobian_rows(gaussian, x, sigma, pixels)
        W = wiener_matrix(sigma, gaussian.eigvals_, gaussian.eigvecs_)[pixels]
        torch.testing.assert_close(J, W.expand(3, -1, -1), rtol=0, atol=1e-12)
    result = locality.locality_maps(gaussian, gaussian, x, [0.1, 1.0], pixels)
    for row in result["by_sigma"]:
        assert abs(row["cosine"]["median"] - 1) < 1e-12
        torch.testing.assert_close(torch.tensor(row["mass_in_mask_by_pixel"]),
                                   torch.tensor(row["wiener_mass_in_mask_by_pixel"]))


def test_batched_jacobian_rows_match_finite_differences():
    X = tiny_images(16, (1, 6, 6))
    unet = ad.UNetDenoiser(**TINY_UNET).fit(X.float())
    x, sigma, pixels = tiny_images(2, (1, 6, 6), seed=1), 0.5, [7, 20]
    J = locality.jacobian_rows(unet, x, sigma, pixels)  # float64 through the network
    h = 1e-6
    for n in range(2):
        for j in range(36):
            e = torch.zeros_like(x[n:n + 1])
            e.view(-1)[j] = h
            diff = (unet.denoise(x[n:n + 1] + e, sigma) - unet.denoise(x[n:n + 1] - e, sigma)) / (2 * h)
            torch.testing.assert_close(J[n, :, j], diff.flatten()[pixels], rtol=1e-5, atol=1e-7)


def test_locality_maps_reject_bad_input(gaussian):
    x = randn(1, 1, 3, 3, seed=8)
    with pytest.raises(ValueError, match="pixels must be flat indices"):
        locality.jacobian_rows(gaussian, x, 1.0, [9])
    with pytest.raises(ValueError, match="sigmas must be a non-empty list of positive numbers"):
        locality.locality_maps(gaussian, gaussian, x, [0.0], [0])
    with pytest.raises(ValueError, match="outside the 3x3 image"):
        locality.pixel_indices((1, 3, 3), [(3, 0)])

    class Detached:
        def denoise(self, x, sigma):
            return gaussian.denoise(x, sigma).detach()

    with pytest.raises(ValueError, match="does not let autograd reach"):
        locality.jacobian_rows(Detached(), x, 1.0, [0])


def test_jacobian_rows_of_a_plain_callable():
    """Any callable f(x, sigma) works: here D(x) = x / (1 + sigma^2), whose Jacobian is 1 / (1 + sigma^2) I."""
    x = tiny_images(2, seed=70)
    rows = locality.jacobian_rows(lambda x, sigma: x / (1 + sigma**2), x, 1.0, [0, 5])
    expect = torch.zeros(2, 2, x[0].numel(), dtype=torch.float64)
    expect[:, 0, 0] = expect[:, 1, 5] = 0.5
    torch.testing.assert_close(rows, expect)
