"""PCALocalityDenoiser against an explicit-loop float64 reference and its closed-form limits."""

import pytest
import torch

import analytic_denoisers as ad
from problems import pca_locality_reference, tiny_images


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 3, 4)])
@pytest.mark.parametrize("sigma", [1e-2, 0.1, 1.0, 10.0, 1e2])
@pytest.mark.parametrize("threshold", [0.05, 0.3])
def test_matches_brute_force(shape, sigma, threshold):
    data, x = tiny_images(14, shape, seed=1), tiny_images(3, shape, seed=2)
    den = ad.PCALocalityDenoiser(threshold=threshold, chunk_size=4).fit(data)
    ref, ref_mask = pca_locality_reference(x, sigma, data, threshold)
    assert torch.equal(den.masks(sigma), ref_mask)
    torch.testing.assert_close(den(x, sigma).reshape(3, -1), ref, rtol=1e-9, atol=1e-9)


def test_masks_are_partial_and_grow_with_sigma():
    den = ad.PCALocalityDenoiser(threshold=0.3).fit(tiny_images(14, (1, 5, 5), seed=1))
    sizes = [float(den.masks(s).double().mean()) for s in (1e-2, 0.3, 1e2)]
    assert 0 < sizes[0] < 1 and 0 < sizes[1] < 1  # the brute-force test above is not trivial
    assert sizes[0] <= sizes[1] <= sizes[2]
    assert bool(den.masks(1e-2).diagonal().all())  # M[m, m] = 1 is the max at small sigma


def test_all_ones_mask_is_the_empirical_denoiser():
    data, x = tiny_images(10, seed=3), tiny_images(4, seed=4)
    den = ad.PCALocalityDenoiser(threshold=0.0).fit(data)
    assert bool(den.masks(0.7).all())
    torch.testing.assert_close(den(x, 0.7), ad.EmpiricalOptimalDenoiser().fit(data)(x, 0.7))


def test_one_image_dataset_returns_that_image():
    data = tiny_images(1, seed=5)
    out = ad.PCALocalityDenoiser().fit(data)(tiny_images(2, seed=6), 0.5)
    torch.testing.assert_close(out, data.expand(2, -1, -1, -1))


def test_threshold_schedule_is_a_function_of_sigma():
    data, x = tiny_images(12, seed=7), tiny_images(3, seed=8)
    schedule = ad.PCALocalityDenoiser(threshold=lambda s: 0.0 if s > 1 else 0.3).fit(data)
    for sigma, fixed in ((0.5, 0.3), (5.0, 0.0)):
        torch.testing.assert_close(schedule(x, sigma), ad.PCALocalityDenoiser(threshold=fixed).fit(data)(x, sigma))
    sigma = torch.tensor([0.5, 5.0, 0.5], dtype=torch.float64)  # per-image levels, grouped
    expect = torch.cat([schedule(x[i:i + 1], float(sigma[i])) for i in range(3)])
    torch.testing.assert_close(schedule(x, sigma), expect)


def test_invalid_threshold_is_rejected():
    den = ad.PCALocalityDenoiser(threshold=1.5).fit(tiny_images(5))
    with pytest.raises(ValueError, match="threshold"):
        den(tiny_images(2), 1.0)
