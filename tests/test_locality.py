"""PCALocalityDenoiser against an explicit-loop float64 reference and its closed-form limits."""

import functools

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.locality import block_plan, pca_locality_posterior_mean
from references import pca_locality_reference, tiny_images


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 3, 4)])
@pytest.mark.parametrize("sigma", [1e-2, 0.1, 1.0, 10.0, 1e2])
@pytest.mark.parametrize("threshold", [0.05, 0.3])
def test_matches_brute_force(shape, sigma, threshold):
    data, x = tiny_images(14, shape, seed=1), tiny_images(3, shape, seed=2)
    den = ad.PCALocalityDenoiser(threshold=threshold, chunk_size=4).fit(data)
    ref, ref_mask = pca_locality_reference(x, sigma, data, threshold)
    assert torch.equal(den.masks(sigma), ref_mask)
    torch.testing.assert_close(den(x, sigma).reshape(3, -1), ref, rtol=1e-9, atol=1e-9)


@functools.lru_cache
def mixed_problem(sigma):
    """Threshold 0.15 mixes dense mask columns (summed as complements) and sparse ones (gathered)."""
    data, x = tiny_images(14, (1, 5, 5), seed=1), tiny_images(3, (1, 5, 5), seed=2)
    return (data, x) + pca_locality_reference(x, sigma, data, 0.15)


@pytest.mark.parametrize("sigma", [0.1, 0.5])
@pytest.mark.parametrize("block_size", [1, 3, 7, 25, None])
def test_every_block_plan_matches_brute_force(sigma, block_size):
    data, x, ref, mask = mixed_problem(sigma)
    plan = block_plan(mask, block_size, torch.float64)
    if block_size in (3, 7):  # each path is exercised
        assert any(b.complement for b in plan.blocks) and not all(b.complement for b in plan.blocks)
        assert all(b.rows is not None for b in plan.blocks)
    for chunk_size in (1, 100):
        out = pca_locality_posterior_mean(x, sigma, data.reshape(14, -1), mask, chunk_size=chunk_size,
                                          block_size=block_size)
        torch.testing.assert_close(out.reshape(3, -1), ref, rtol=1e-9, atol=1e-9)


def test_automatic_plan_gathers_for_sparse_masks_only():
    d = 144
    band = (torch.arange(d)[:, None] - torch.arange(d)[None, :]).abs() <= 2
    plan = block_plan(band)
    assert plan.block_size < d and all(b.rows is not None and not b.complement for b in plan.blocks)
    assert sorted(plan.order.tolist()) == list(range(d))
    ones = block_plan(torch.ones(d, d, dtype=torch.bool))  # full distances: no product at all
    assert all(b.complement and len(b.rows) == 0 for b in ones.blocks)
    assert block_plan(torch.rand(d, d, generator=torch.Generator().manual_seed(0)) < 0.5).block_size == d
    plan = block_plan(~band)  # nearly full columns: complements of the band, gathered
    assert plan.block_size < d and all(b.complement and b.rows is not None for b in plan.blocks)


@pytest.mark.parametrize("block_size", [1, 4, None])
def test_empty_masks_give_the_data_mean(block_size):
    data, x = tiny_images(9, seed=5).reshape(9, -1), tiny_images(2, seed=6)
    mask = torch.zeros(data.shape[1], data.shape[1], dtype=torch.bool)
    mask[:, :3] = True  # a few outputs see every input, the rest see none
    out = pca_locality_posterior_mean(x, 0.3, data, mask, block_size=block_size).reshape(2, -1)
    torch.testing.assert_close(out[:, 3:], data.mean(0)[3:].expand(2, -1))
    ones = pca_locality_posterior_mean(x, 0.3, data, torch.ones_like(mask)).reshape(2, -1)
    torch.testing.assert_close(out[:, :3], ones[:, :3])


def test_float32_matches_float64_at_large_sigma():
    # the query's own squared norm is dropped from the logits: no float32 loss at sigma = 80
    data, x = tiny_images(40, seed=7), tiny_images(3, seed=8) + 80 * tiny_images(3, seed=9)
    den = ad.PCALocalityDenoiser(threshold=0.05).fit(data)
    torch.testing.assert_close(den(x.float(), 80.0).double(), den(x, 80.0), rtol=0, atol=1e-6)


def test_invalid_block_size_is_rejected():
    with pytest.raises(ValueError, match="block_size"):
        block_plan(torch.ones(4, 4, dtype=torch.bool), 0)


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
    with pytest.raises(ValueError, match="threshold must be a number in"):
        ad.PCALocalityDenoiser(threshold=1.5).fit(tiny_images(5))  # refused at fit
    den = ad.PCALocalityDenoiser(threshold=lambda sigma: 1.5).fit(tiny_images(5))
    with pytest.raises(ValueError, match="threshold"):  # a schedule's value: refused where read
        den(tiny_images(2), 1.0)
