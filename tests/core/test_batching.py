"""Batches of denoiser calls and groups of queries that share a noise level or a class."""

import numpy as np
import pytest
import torch

from analytic_denoisers.core.batching import groups, in_batches
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
