"""PSPC-Flex kernels (kernels.flex, kernels.jacobian): mass_masks by hand and against explicit
sorting, patch_flex_posterior_mean against an explicit-loop float64 reference and its closed-form
cases, and the Jacobian rows / sensitivity maps of the Gaussian denoiser (its Wiener matrix)."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.flex import mass_masks, patch_flex_posterior_mean, sensitivity_maps
from analytic_denoisers.kernels.jacobian import jacobian_rows
from analytic_denoisers.kernels.moments import moments
from analytic_denoisers.kernels.wiener import eigenbasis, wiener_matrix
from references import SIGMAS, near_data, randn, tiny_images


def patches_by_sorting(S, mass, include_self=True):
    """Explicit loop: per row m, pixels in decreasing S (ties by index) until the mass is reached."""
    d = S.shape[0]
    mask = torch.zeros(d, d, dtype=torch.bool)
    for m in range(d):
        row = S[m].tolist()
        target = mass * sum(sorted(row, reverse=True))
        held = 0.0
        for n in sorted(range(d), key=lambda n: (-row[n], n)):
            if (held >= target) if mass < 1 else row[n] == 0:
                break
            mask[n, m] = True
            held += row[n]
        mask[m, m] |= include_self
    return mask


def composite_reference(x, sigma, data, mask):
    """Explicit loop: per query and patch (a column of ``mask``), the softmax over training images
    of the squared distance on the patch; each pixel averages the patches covering it."""
    data = data.reshape(len(data), -1).double()
    d, out = data.shape[1], []
    for q in x.reshape(len(x), -1).double():
        num, count = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        for m in range(d):
            patch = mask[:, m].nonzero().flatten()
            w = torch.softmax(-((q[patch] - data[:, patch]) ** 2).sum(1) / (2 * sigma**2), 0)  # (M,)
            num[patch] += w @ data[:, patch]
            count[patch] += 1
        out.append(num / count)
    return torch.stack(out).reshape(x.shape)


def per_pixel_softmax(x, sigma, data):
    """Every pixel on its own: ``sum_i softmax_i(-(x[n] - x_i[n])^2 / 2 sigma^2) x_i[n]``."""
    q, v = x.reshape(len(x), 1, -1), data.reshape(1, len(data), -1)
    w = torch.softmax(-(q - v) ** 2 / (2 * sigma**2), 1)  # (N, M, d)
    return (w * v).sum(1).reshape(x.shape)


def wiener_sensitivity(data, sigma):
    basis = eigenbasis(moments(data))
    return wiener_matrix(sigma, basis.eigvals, basis.eigvecs).abs()


# -- mass_masks -----------------------------------------------------------------------------------


def test_mass_masks_by_hand():
    S = torch.tensor([[3.0, 1.0, 0.0],   # total 4: 0.5 -> {0}; 0.8 -> {0, 1}; 1 -> {0, 1}
                      [1.0, 1.0, 2.0],   # total 4: 0.5 -> {2}; 0.6 -> {2, 0} (tie: lower index first)
                      [0.0, 0.0, 0.0]],  # nothing to hold: an empty patch
                     dtype=torch.float64)
    patches = {  # mass -> (patch of each row without self, with self)
        0.5: ([{0}, {2}, set()], [{0}, {1, 2}, {2}]),
        0.6: ([{0}, {0, 2}, set()], [{0}, {0, 1, 2}, {2}]),
        0.8: ([{0, 1}, {0, 1, 2}, set()], [{0, 1}, {0, 1, 2}, {2}]),  # row 1: 2 + 1 = 3 < 3.2, a third pixel
        1.0: ([{0, 1}, {0, 1, 2}, set()], [{0, 1}, {0, 1, 2}, {2}]),  # every nonzero entry
    }
    for mass, (bare, selfish) in patches.items():
        for include_self, expect in ((False, bare), (True, selfish)):
            mask = mass_masks(S, mass, include_self=include_self)
            assert mask.dtype == torch.bool and mask.shape == (3, 3)
            got = [set(mask[:, m].nonzero().flatten().tolist()) for m in range(3)]  # columns are patches
            assert got == expect, (mass, include_self, got)


@pytest.mark.parametrize("mass", [0.05, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_mass_masks_match_explicit_sorting(mass):
    S = randn(30, 30, seed=3).abs()
    S = torch.where(S < 0.3, 0.0, (S * 4).round() / 4)  # ties and zeros
    S[7] = 0.0  # an empty row
    for include_self in (False, True):
        assert torch.equal(mass_masks(S, mass, include_self=include_self), patches_by_sorting(S, mass, include_self))


def test_mass_masks_hold_their_mass_and_grow_with_it():
    S = wiener_sensitivity(tiny_images(20, (1, 5, 5), seed=1), 0.5)
    previous = torch.zeros(25, 25, dtype=torch.bool)
    for mass in (0.1, 0.4, 0.7, 0.95, 1.0):
        mask = mass_masks(S, mass, include_self=False)
        held = (S.T * mask).sum(0) / S.sum(1)  # (d,) the share of each row inside its patch
        assert bool((held >= mass - 1e-12).all())
        for m in range(25):  # the smallest such set: without its weakest pixel it holds less
            weakest = S[m][mask[:, m]].min()
            assert held[m] - weakest / S[m].sum() < mass
        assert bool((mask | ~previous).all())  # nested: a larger mass keeps every pixel
        previous = mask
    assert bool(mass_masks(S, 1.0).all())  # no zero entries: the whole image


def test_mass_masks_refuse_bad_input():
    S = torch.ones(4, 4, dtype=torch.float64)
    for bad in (0.0, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="mass must be a number in"):
            mass_masks(S, bad)
    for bad, match in ((torch.ones(4, 3), r"shape \(d, d\)"), (torch.ones(4, 4, dtype=torch.int64), "float tensor"),
                       (-S, "non-negative"), (S * float("inf"), "finite")):
        with pytest.raises(ValueError, match=match):
            mass_masks(bad, 0.5)


# -- patch_flex_posterior_mean ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 3, 4)])
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("mass", [0.3, 0.8])
def test_matches_loop_reference(shape, sigma, mass):
    data = tiny_images(8, shape, seed=1)
    x = near_data(data, 3, sigma, seed=2)  # near training images: small sigmas still mix several
    mask = mass_masks(wiener_sensitivity(data, sigma), mass)
    ref = composite_reference(x, sigma, data, mask)
    for chunk_size in (1, 3, None):
        out = patch_flex_posterior_mean(x, sigma, data.flatten(1), mask, chunk_size=chunk_size)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


def test_whole_image_patches_are_the_empirical_denoiser():
    data, x = tiny_images(10, seed=3), tiny_images(4, seed=4)
    ones = torch.ones(36, 36, dtype=torch.bool)
    for sigma in (0.05, 0.7, 20.0):
        torch.testing.assert_close(patch_flex_posterior_mean(x, sigma, data, ones),
                                   ad.EmpiricalOptimalDenoiser().fit(data)(x, sigma), rtol=0, atol=1e-12)


def test_one_pixel_patches_are_a_per_pixel_softmax():
    data, x = tiny_images(10, seed=5), tiny_images(4, seed=6)
    eye = torch.eye(36, dtype=torch.bool)
    for sigma in (0.05, 0.7, 20.0):
        torch.testing.assert_close(patch_flex_posterior_mean(x, sigma, data, eye), per_pixel_softmax(x, sigma, data),
                                   rtol=0, atol=1e-12)


def test_per_image_sigma_mask_function_and_autograd():
    data, x = tiny_images(9, seed=7), tiny_images(4, seed=8)
    S = {s: wiener_sensitivity(data, s) for s in (0.3, 2.0)}

    def masks(sigma):
        return mass_masks(S[sigma], 0.5)

    sigma = torch.tensor([0.3, 2.0, 0.3, 2.0], dtype=torch.float64)
    expect = torch.cat([patch_flex_posterior_mean(x[i:i + 1], float(sigma[i]), data, masks(float(sigma[i])))
                        for i in range(4)])
    torch.testing.assert_close(patch_flex_posterior_mean(x, sigma, data, masks), expect, rtol=1e-12, atol=1e-12)
    xg = x[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: patch_flex_posterior_mean(x, sigma[:2], data, masks), (xg,))


def test_patch_flex_refuses_bad_patches_and_data():
    data, x = tiny_images(5, seed=9), tiny_images(2, seed=10)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(36, 36\)"):
        patch_flex_posterior_mean(x, 1.0, data, torch.ones(36, 36))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(36, 36\)"):
        patch_flex_posterior_mean(x, 1.0, data, torch.ones(9, 9, dtype=torch.bool))
    uncovered = torch.eye(36, dtype=torch.bool)
    uncovered[3, 3] = False
    with pytest.raises(ValueError, match="1 pixels lie in none"):
        patch_flex_posterior_mean(x, 1.0, data, uncovered)
    with pytest.raises(ValueError, match="dtype torch.float64"):
        patch_flex_posterior_mean(x, 1.0, data.float(), uncovered | True)
    with pytest.raises(ValueError, match="non-empty tensor"):
        patch_flex_posterior_mean(x, 1.0, None, uncovered | True)


# -- Jacobian rows and sensitivity maps --------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian():
    return ad.GaussianDenoiser().fit(tiny_images(30, (1, 3, 3), seed=11))


def test_jacobian_of_the_gaussian_is_its_wiener_matrix(gaussian):
    x = randn(3, 1, 3, 3, seed=12)
    W = wiener_matrix(0.4, gaussian.eigvals_, gaussian.eigvecs_)  # (d, d), symmetric
    rows = jacobian_rows(gaussian, x, 0.4)  # all pixels
    torch.testing.assert_close(rows, W.expand(3, -1, -1), rtol=0, atol=1e-12)
    some = jacobian_rows(gaussian, x, torch.tensor([0.4, 0.4, 0.4], dtype=torch.float64), [8, 0, 4])
    torch.testing.assert_close(some, W[[8, 0, 4]].expand(3, -1, -1), rtol=0, atol=1e-12)
    assert jacobian_rows(gaussian, x, 0.4, []).shape == (3, 0, 9)


def test_jacobian_rows_of_a_plain_callable_and_bad_input(gaussian):
    x = tiny_images(2, seed=13)
    rows = jacobian_rows(lambda x, sigma: x / (1 + sigma**2), x, 1.0, [0, 5])
    expect = torch.zeros(2, 2, 36, dtype=torch.float64)
    expect[:, 0, 0] = expect[:, 1, 5] = 0.5
    torch.testing.assert_close(rows, expect)
    with pytest.raises(ValueError, match="pixels must be flat indices"):
        jacobian_rows(gaussian, randn(1, 1, 3, 3), 1.0, [9])
    with pytest.raises(ValueError, match="does not let autograd reach"):
        jacobian_rows(lambda x, sigma: gaussian(x, sigma).detach(), randn(1, 1, 3, 3), 1.0)


def test_sensitivity_maps_of_the_gaussian_are_its_absolute_wiener_matrix(gaussian):
    x0 = tiny_images(4, (1, 3, 3), seed=14)
    levels = [0.01, 0.3, 5.0]
    maps = sensitivity_maps(gaussian, x0, levels, seed=3)
    assert maps.shape == (3, 9, 9) and maps.dtype == torch.float64
    for S, sigma in zip(maps, levels):
        torch.testing.assert_close(S, wiener_matrix(sigma, gaussian.eigvals_, gaussian.eigvecs_).abs(),
                                   rtol=0, atol=1e-12)
    torch.testing.assert_close(sensitivity_maps(gaussian, x0, levels, pixels=[2, 7]), maps[:, [2, 7]])


def test_sensitivity_maps_average_absolute_rows_over_seeded_noisy_images():
    """D(x) = x^3 / 3 has the diagonal Jacobian x^2: the map's diagonal is the mean of z^2."""
    x0 = tiny_images(5, (1, 2, 2), seed=15)
    maps = sensitivity_maps(lambda x, sigma: x**3 / 3, x0, [0.5], seed=4)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    z = (x0 + 0.5 * eps).reshape(5, -1)
    torch.testing.assert_close(maps[0], torch.diag((z**2).mean(0)), rtol=0, atol=1e-14)
