"""The patch kernels (kernels.patches): LS / ELS / bbELS and PSPC against explicit-loop float64
references, exact identities (whole-image patches, circular shifts), window sums, position sets, and
float32 at small sigma."""

from functools import partial

import pytest
import torch

from analytic_denoisers.kernels.patch_index import build_patch_index
from analytic_denoisers.kernels.patches import (equivariant_local_score_posterior_mean, equivariant_position_sets,
                                                local_score_posterior_mean, patch_composite_posterior_mean,
                                                window_sums)
from references import (SIGMAS, empirical_reference, local_score_reference, near_data, patch_composite_reference,
                        randn, tiny_images)

# the local score machines: mode of local_score_reference -> kernel(x, sigma, data, patch_size)
KERNELS = {"ls": local_score_posterior_mean,
           "els": partial(equivariant_local_score_posterior_mean, padding="circular"),
           "bbels": partial(equivariant_local_score_posterior_mean, padding="zeros")}


@pytest.mark.parametrize("mode", sorted(KERNELS))
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape, size", [((1, 6, 6), 3), ((3, 5, 6), 3), ((1, 6, 6), 5)])
def test_local_score_matches_brute_force(mode, sigma, shape, size):
    data = tiny_images(5, shape, seed=1)
    x = near_data(data, 1, sigma, seed=2)
    out = KERNELS[mode](x, sigma, data, size)
    ref = local_score_reference(x, sigma, data, size, mode)
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape, size", [((1, 6, 6), 3), ((3, 5, 6), 2), ((1, 6, 6), 4)])
def test_patch_composite_matches_brute_force(sigma, shape, size):
    data = tiny_images(8, shape, seed=3)
    x = near_data(data, 2, sigma, seed=4)
    out = patch_composite_posterior_mean(x, sigma, data, size)
    torch.testing.assert_close(out, patch_composite_reference(x, sigma, data, size), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sigma", [1e-2, 0.3, 10.0])
def test_whole_image_patches_are_the_empirical_denoiser(sigma):
    data = tiny_images(9, (2, 5, 6), seed=5)
    x = near_data(data, 3, sigma, seed=6)
    ref = empirical_reference(x, sigma, data).reshape(x.shape)
    ls = local_score_posterior_mean(x, sigma, data, 11)  # 2 max(H, W) - 1
    torch.testing.assert_close(ls, ref, rtol=1e-9, atol=1e-10)
    square, x5 = tiny_images(9, (2, 5, 5), seed=5), x[..., :5]
    torch.testing.assert_close(patch_composite_posterior_mean(x5, sigma, square, 5),
                               empirical_reference(x5, sigma, square).reshape(x5.shape), rtol=1e-9, atol=1e-10)


def test_els_is_exactly_equivariant_to_circular_shifts():
    data = tiny_images(6, (2, 6, 5), seed=7)
    x = near_data(data, 2, 0.3, seed=8)

    def shifted_pair(kernel, shift):
        """The output for the shifted input, and the shifted output."""
        moved = torch.roll(x, shift, dims=(2, 3))
        return kernel(moved, 0.3, data, 3), torch.roll(kernel(x, 0.3, data, 3), shift, dims=(2, 3))

    for shift in [(1, 0), (0, 2), (3, 4)]:
        torch.testing.assert_close(*shifted_pair(KERNELS["els"], shift), rtol=1e-10, atol=1e-12)
    # LS and bbELS are not: their borders break the symmetry
    for mode in ("ls", "bbels"):
        assert not torch.allclose(*shifted_pair(KERNELS[mode], (1, 0)))


def test_window_sums_and_position_sets():
    t = randn(2, 3, 5, 6, seed=18)
    sums = window_sums(t, 3, 1)
    padded = torch.nn.functional.pad(t, (1, 1, 1, 1))
    loops = torch.stack([torch.stack([padded[..., r:r + 3, c:c + 3].sum((-1, -2)) for c in range(6)], -1)
                         for r in range(5)], -2)
    torch.testing.assert_close(sums, loops)
    circ = window_sums(t, 3, 1, "circular")
    torch.testing.assert_close(circ[..., 0, 0], t[..., [4, 0, 1], :][..., [5, 0, 1]].sum((-1, -2)))
    # bbELS on 6x6 with P = 3: interior 4x4, four border rows/columns of 4, four corners
    sets = equivariant_position_sets(6, 6, 3, "zeros")
    assert sorted(len(s) for s in sets) == [1] * 4 + [4] * 4 + [16]
    assert sorted(torch.cat(sets).tolist()) == list(range(36))
    assert [len(s) for s in equivariant_position_sets(6, 6, 3, "circular")] == [36]


def test_float32_els_switches_to_float64_products_at_small_sigma():
    # a query halfway between two images: every pixel is a near-tie that float32 logits
    # q.k / sigma^2 would break (measured: 1.2e-2 off at sigma = 2e-3 with float32 products)
    data = tiny_images(2, (1, 6, 6), seed=33).float()
    x = data.mean(0, keepdim=True)
    for sigma in (2e-3, 2e-2, 1.0):
        exact = equivariant_local_score_posterior_mean(x.double(), sigma, data.double(), 3)
        out = equivariant_local_score_posterior_mean(x, sigma, data, 3)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-6)
        index = build_patch_index(data, 3, "circular", torch.arange(36), n_clusters=3)
        pruned = equivariant_local_score_posterior_mean(x, sigma, data, 3, prune_tol=1e-9, indexes=[index])
        torch.testing.assert_close(pruned.double(), exact, rtol=0, atol=1e-6)
