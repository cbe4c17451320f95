"""pca_locality_posterior_mean, locality_masks and block_plan (kernels.locality) against the
explicit-loop float64 reference, and their closed-form cases."""

import functools

import pytest
import torch

from analytic_denoisers.core.batching import LevelCache
from analytic_denoisers.kernels.locality import block_plan, locality_masks, pca_locality_posterior_mean
from analytic_denoisers.kernels.moments import moments
from analytic_denoisers.kernels.wiener import eigenbasis
from references import SIGMAS, pca_locality_reference, tiny_images


def masks_of(data, threshold):
    """The masks of ``data``'s fitted Gaussian as a function of sigma (what the estimator uses)."""
    basis = eigenbasis(moments(data))
    return lambda sigma: locality_masks(sigma, basis.eigvals, basis.eigvecs, threshold)


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 3, 4)])
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("threshold", [0.05, 0.3])
def test_matches_brute_force(shape, sigma, threshold):
    data, x = tiny_images(14, shape, seed=1), tiny_images(3, shape, seed=2)
    mask = masks_of(data, threshold)(sigma)
    ref, ref_mask = pca_locality_reference(x, sigma, data, threshold)
    assert torch.equal(mask, ref_mask)
    out = pca_locality_posterior_mean(x, sigma, data.reshape(14, -1), mask, chunk_size=4)
    torch.testing.assert_close(out.reshape(3, -1), ref, rtol=1e-9, atol=1e-9)


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


def test_per_image_sigma_with_a_mask_function_matches_brute_force():
    data, x, ref_small, _ = mixed_problem(0.1)
    ref_large = mixed_problem(0.5)[2]
    sigma = torch.tensor([0.1, 0.5] * 3, dtype=torch.float64)  # each query at both levels, interleaved
    out = pca_locality_posterior_mean(x.repeat_interleave(2, 0), sigma, data.reshape(14, -1),
                                      lambda s: mixed_problem(s)[3])
    expect = torch.stack([ref_small, ref_large], 1).reshape(6, -1)
    torch.testing.assert_close(out.reshape(6, -1), expect, rtol=1e-9, atol=1e-9)


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
    mask, flat = masks_of(data, 0.05)(80.0), data.reshape(40, -1)
    out = pca_locality_posterior_mean(x.float(), 80.0, flat.float(), mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), pca_locality_posterior_mean(x, 80.0, flat, mask), rtol=0, atol=1e-6)


def test_invalid_block_size_is_rejected():
    with pytest.raises(ValueError, match="block_size"):
        block_plan(torch.ones(4, 4, dtype=torch.bool), 0)


def test_masks_are_partial_and_grow_with_sigma():
    masks = masks_of(tiny_images(14, (1, 5, 5), seed=1), 0.3)
    sizes = [float(masks(s).double().mean()) for s in (1e-2, 0.3, 1e2)]
    assert 0 < sizes[0] < 1 and 0 < sizes[1] < 1  # the brute-force test above is not trivial
    assert sizes[0] <= sizes[1] <= sizes[2]
    assert bool(masks(1e-2).diagonal().all())  # M[m, m] = 1 is the max at small sigma


@pytest.mark.parametrize("sigma", [0.1, 0.5, 3.0])
def test_autograd_reaches_x_and_matches_finite_differences(sigma):
    """With x.requires_grad the kernel takes its out-of-place path: the same values as the fast
    path and the brute force, and a gradient that torch.autograd.gradcheck confirms by finite
    differences (float64)."""
    data, x = tiny_images(14, (1, 3, 3), seed=20), tiny_images(2, (1, 3, 3), seed=21)
    ref, mask = pca_locality_reference(x, sigma, data, 0.1)
    flat = data.reshape(14, -1)
    grad_x = x.clone().requires_grad_()
    out = pca_locality_posterior_mean(grad_x, sigma, flat, mask, chunk_size=4)
    assert out.requires_grad
    torch.testing.assert_close(out.detach(), pca_locality_posterior_mean(x, sigma, flat, mask), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.detach().reshape(2, -1), ref, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda q: pca_locality_posterior_mean(q, sigma, flat, mask, chunk_size=4),
                                    (grad_x,), eps=1e-6, atol=1e-7)


def near_constant_problem():
    """Images with one nearly constant pixel (variance ~1e-12), whose Wiener diagonal falls
    below the published rule's 1e-6 at sigma >= 1e-3."""
    data, x = tiny_images(14, (1, 4, 4), seed=30), tiny_images(2, (1, 4, 4), seed=31)
    data[:, 0, 0, 0] = 0.3 + 1e-6 * torch.arange(14, dtype=torch.float64).sin()
    return data, x


@pytest.mark.parametrize("rule", ["published", "positive-diagonal"])
@pytest.mark.parametrize("threshold", [0.0, 0.05])
@pytest.mark.parametrize("sigma", [0.05, 1.0, 20.0])
def test_both_mask_rules_and_real_valued_masks_match_brute_force(rule, threshold, sigma):
    data, x = near_constant_problem()
    basis = eigenbasis(moments(data))
    mask = locality_masks(sigma, basis.eigvals, basis.eigvecs, threshold, rule)
    ref, ref_mask = pca_locality_reference(x, sigma, data, threshold, rule)
    # the positive-diagonal rule divides a row by a diagonal of ~1e-10: its real weights carry
    # the relative rounding of that difference (eigenbasis against the reference's solve)
    tol = 1e-3 if (rule, threshold) == ("positive-diagonal", 0.0) else 1e-9
    if threshold == 0:
        assert mask.dtype == torch.float64
        torch.testing.assert_close(mask, ref_mask, rtol=tol, atol=1e-9)
    else:
        assert torch.equal(mask, ref_mask)
    for chunk_size in (3, None):
        out = pca_locality_posterior_mean(x, sigma, data.reshape(14, -1), mask, chunk_size=chunk_size)
        torch.testing.assert_close(out.reshape(2, -1), ref, rtol=tol, atol=tol)


def test_published_rule_keeps_the_masks_that_a_near_constant_pixel_shrinks():
    data, _ = near_constant_problem()
    basis = eigenbasis(moments(data))
    published, strict = (locality_masks(1.0, basis.eigvals, basis.eigvecs, 0.05, rule)
                         for rule in ("published", "positive-diagonal"))
    # dividing the near-constant pixel's row by its tiny diagonal sets max |M| for every pixel
    assert int(strict.sum()) < int(published.sum())
    assert int(published.sum()) > published.shape[0]  # more than the diagonal: not trivial


@pytest.mark.parametrize("temperature", [0.25, 3.0])
def test_temperature_divides_the_logits(temperature):
    data, x = tiny_images(14, (1, 4, 4), seed=32), tiny_images(2, (1, 4, 4), seed=33)
    ref, mask = pca_locality_reference(x, 0.4, data, 0.1, temperature=temperature)
    out = pca_locality_posterior_mean(x, 0.4, data.reshape(14, -1), mask, temperature=temperature)
    torch.testing.assert_close(out.reshape(2, -1), ref, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        pca_locality_posterior_mean(x, 0.4, data.reshape(14, -1), mask, temperature=0.0)


def test_bad_masks_are_refused():
    data, x = tiny_images(5, (1, 2, 2), seed=34), tiny_images(1, (1, 2, 2), seed=35)
    for mask in (torch.ones(4, 4, dtype=torch.long), torch.ones(3, 3), torch.full((4, 4), float("nan"))):
        with pytest.raises(ValueError, match="mask"):
            pca_locality_posterior_mean(x, 0.4, data.reshape(5, -1), mask)
    with pytest.raises(ValueError, match="rule"):
        basis = eigenbasis(moments(data))
        locality_masks(0.4, basis.eigvals, basis.eigvecs, 0.1, "studio")


def test_plan_cache_builds_each_level_once_and_forgets_the_oldest(monkeypatch):
    from analytic_denoisers.kernels import locality

    built = []  # each build checks the level's mask once
    real = locality.checked_mask
    monkeypatch.setattr(locality, "checked_mask", lambda *a, **k: built.append(1) or real(*a, **k))
    data, x, ref, mask = mixed_problem(0.1)
    plans = LevelCache(maxsize=2)
    for _ in range(3):  # the same level again: one plan
        out = pca_locality_posterior_mean(x, 0.1, data.reshape(14, -1), mask, plans=plans)
        torch.testing.assert_close(out.reshape(3, -1), ref, rtol=1e-9, atol=1e-9)
    assert len(built) == 1
    for level in (0.2, 0.3, 0.1):  # a third level pushes out the least recently used (0.1)
        pca_locality_posterior_mean(x, level, data.reshape(14, -1), mask, plans=plans)
    assert len(built) == 4
    with pytest.raises(ValueError, match="maxsize"):
        LevelCache(0)


def test_set_params_forgets_the_cached_masks():
    data, x = tiny_images(14, (1, 4, 4), seed=36), tiny_images(2, (1, 4, 4), seed=37)
    import analytic_denoisers as ad

    den = ad.PCALocalityDenoiser(threshold=0.05).fit(data)
    den(x, 0.4)
    fresh = ad.PCALocalityDenoiser(threshold=0.3).fit(data)
    torch.testing.assert_close(den.set_params(threshold=0.3)(x, 0.4), fresh(x, 0.4), rtol=0, atol=0)
