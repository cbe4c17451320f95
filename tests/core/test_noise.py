"""Seeded noise (core.noise): each sample's noise depends only on its own seed."""

import torch

from analytic_denoisers.core.noise import seeded_noise


def test_seeded_noise_is_per_sample():
    a, b = seeded_noise([3, 4, 5], (1, 4, 4)), seeded_noise([4], (1, 4, 4))
    torch.testing.assert_close(a[1], b[0], rtol=0, atol=0)
    assert not torch.equal(a[0], a[1])
