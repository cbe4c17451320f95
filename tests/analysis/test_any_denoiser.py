"""Every analysis is a function of any denoiser: an estimator, a NetworkDenoiser around a module,
or a plain callable f(x, sigma) give the same numbers for the same denoiser."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers import analysis
from references import randn

SIGMAS = ad.schedules.karras(6, 0.02, 3.0)


class WienerModule(torch.nn.Module):
    """The fitted Gaussian denoiser as a torch module that predicts x0 from sigma."""

    def __init__(self, gaussian):
        super().__init__()
        self.gaussian = gaussian

    def forward(self, x, sigma):
        return self.gaussian(x, sigma)


ANALYSES = {
    "trajectory_geometry": lambda den, g: analysis.trajectory_geometry(den, g, randn(6, 1, 3, 3, seed=1), SIGMAS),
    "teleportation": lambda den, g: analysis.teleportation(den, g, randn(4, 1, 3, 3, seed=2), SIGMAS, [0, 2]),
    "chromatography": lambda den, g: analysis.chromatography(den, g, randn(6, 1, 3, 3, seed=3), SIGMAS),
    "locality_maps": lambda den, g: analysis.locality_maps(den, g, randn(2, 1, 3, 3, seed=4), [0.1, 1.0], [0, 4]),
}


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_an_analysis_takes_any_denoiser(name, gaussian):
    assert callable(getattr(ad.analysis, name))
    expected = ANALYSES[name](gaussian, gaussian)
    network = ad.NetworkDenoiser(network=WienerModule(gaussian), parameterization="denoised",
                                 time_input="sigma").fit(torch.zeros(1, 1, 3, 3, dtype=torch.float64))
    for other in (lambda x, sigma: gaussian(x, sigma), network):
        assert _close(ANALYSES[name](other, gaussian), expected), name


def _close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True)
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
    return a == b
