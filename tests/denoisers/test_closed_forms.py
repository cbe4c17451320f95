"""Closed forms that every analytical estimator meets (each file beside this one has its own)."""

import pytest
import torch

from analytic_denoisers.registry import METHODS
from references import tiny_images


# what a one-image set allows
ONE_IMAGE = {"gaussian-mixture": {"n_components": 1}, "anchored-composite": {"n_components": 1}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_image_dataset_returns_that_image(name):
    """Every posterior mean over a one-image set is that image, at any sigma (the equivariant
    patch machines are left out: they mix the image's patches across locations)."""
    data = tiny_images(1, (3, 4, 4), seed=9)
    den = METHODS[name](**ONE_IMAGE.get(name, {})).fit(data)
    x, sigma = tiny_images(3, (3, 4, 4), seed=10), torch.tensor([0.05, 0.5, 5.0], dtype=torch.float64)
    torch.testing.assert_close(den(x, sigma), data.expand_as(x))
