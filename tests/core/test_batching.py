"""Batches of denoiser calls and groups of queries that share a noise level or a class."""

import numpy as np
import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core.batching import groups, in_batches, per_level
from analytic_denoisers.testing import tiny_images


def test_in_batches_slices_per_image_sigma_with_the_images():
    x, sigma = tiny_images(7), torch.linspace(0.1, 1.0, 7, dtype=torch.float64)
    calls = []

    def shrink(images, level):
        calls.append(len(images))
        return images / (1 + torch.as_tensor(level).reshape(-1, 1, 1, 1) ** 2)

    expect = shrink(x, sigma)
    calls.clear()
    torch.testing.assert_close(in_batches(shrink, x, sigma, 3), expect, rtol=0, atol=0)
    assert calls == [3, 3, 1]
    torch.testing.assert_close(in_batches(shrink, x, 0.5), shrink(x, 0.5), rtol=0, atol=0)  # one call
    with pytest.raises(ValueError, match=r"returned shape \(3, 36\)"):
        in_batches(lambda images, level: images.flatten(1), x[:3], 0.5)


def test_groups_split_by_level_and_class():
    sigma = torch.tensor([0.5, 1.0, 0.5, 0.5, 1.0])
    y = torch.tensor([7, 7, 3, 7, 3])
    found = {(level, k): rows.tolist() for rows, level, k in groups(sigma, y, np.array([3, 7]))}
    assert found == {(0.5, 0): [2], (0.5, 1): [0, 3], (1.0, 0): [4], (1.0, 1): [1]}
    assert [(r.tolist(), level, k) for r, level, k in groups(sigma)] == [([0, 2, 3], 0.5, None), ([1, 4], 1.0, None)]
    assert [(r.tolist(), k) for r, _, k in groups(y=y, classes=[3, 7, 9])] == [([2, 4], 0), ([0, 1, 3], 1)]


def test_per_level_passes_a_number_exactly_and_tensor_levels_as_given():
    x, seen = tiny_images(3).float(), []

    def record(images, level):
        seen.append((len(images), level))
        return images * level

    per_level(x, 0.3, record)  # a Python number is not rounded to float32
    torch.testing.assert_close(per_level(x, torch.tensor([0.3, 2.0, 0.3]), record), x * torch.tensor(
        [0.3, 2.0, 0.3]).reshape(3, 1, 1, 1))
    assert seen[0] == (3, 0.3) and [n for n, _ in seen[1:]] == [2, 1]
    assert seen[1][1] == float(torch.tensor(0.3, dtype=torch.float32)) != 0.3  # a tensor level: its own value
    with pytest.raises(ValueError, match="positive"):
        per_level(x, -1.0, record)


@pytest.mark.parametrize("make", [
    lambda: ad.PCALocalityDenoiser(threshold=0.1),
    lambda: ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="circular"),
    lambda: ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="zeros"),
    lambda: ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="circular", prune_tol=1e-3),
    lambda: ad.EmpiricalOptimalDenoiser(top_k=5),
    lambda: ad.GoldDiffDenoiser(threshold=0.1, k_min=3, k_max=6),
    lambda: ad.KNNScoreDenoiser(n_neighbors=3, n_draws=4),
    lambda: ad.SmoothedClosedFormDenoiser(num_noise=3),
    lambda: ad.PatchFlexDenoiser(mass=0.5),
], ids=["pca-locality", "ELS", "bbELS", "ELS prune_tol", "empirical top_k", "golddiff", "knn", "sigma-cfdm",
        "patch-flex"])
def test_query_blocks_leave_the_result_unchanged(monkeypatch, make):
    """Kernels whose work space grows with the number of queries take them in blocks within
    WORK_BUDGET; with a budget of one byte every query is its own block, with the same result."""
    from analytic_denoisers.core import batching

    data, x = tiny_images(10, (1, 4, 4), seed=30), tiny_images(6, (1, 4, 4), seed=31)
    sigma = torch.tensor([0.2, 0.2, 1.0, 1.0, 3.0, 3.0], dtype=torch.float64)
    den = make().fit(data)
    whole = den(x, sigma)
    assert batching.query_block(10**6) > len(x)  # the default budget keeps these 6 queries together
    monkeypatch.setattr(batching, "WORK_BUDGET", 1)
    assert batching.query_block(10**6) == 1
    torch.testing.assert_close(den(x, sigma), whole, rtol=1e-12, atol=1e-12)
