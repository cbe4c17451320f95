"""Every denoiser of the package is a ``model`` of k-diffusion's samplers (k-diffusion is
installed by the README's test command, so CI runs this for real): its samplers call
``model(x, sigma * s_in)`` with sigma of shape (N,), as this package's denoisers take it."""

import pytest
import torch

import analytic_denoisers as ad
from test_contract import CASES, factory
from references import tiny_images

K = pytest.importorskip("k_diffusion", reason="k-diffusion: see the README's test command")

DATA = tiny_images(12, (1, 8, 8), seed=50)
SIGMAS = K.sampling.get_sigmas_karras(6, 0.02, 20.0, rho=7.0, device="cpu").double()


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_denoiser_runs_k_diffusions_samplers(case):
    den = factory(case)().fit(DATA)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(51), dtype=torch.float64)
    x = noise * SIGMAS[0]
    # Heun: k-diffusion's sample_heun is Karras et al.'s Algorithm 1, as ad.sample_heun
    torch.testing.assert_close(K.sampling.sample_heun(den, x, SIGMAS, disable=True),
                               ad.sample_heun(den, x, SIGMAS), rtol=1e-12, atol=1e-12)
    # Euler ancestral with eta = 0 adds no noise: the Euler method
    torch.testing.assert_close(K.sampling.sample_euler_ancestral(den, x, SIGMAS, eta=0.0, disable=True),
                               ad.sample_euler(den, x, SIGMAS), rtol=1e-12, atol=1e-12)
    out = K.sampling.sample_dpmpp_2m(den, x, SIGMAS, disable=True)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_dpmpp_2m_converges_to_the_gaussians_closed_form_endpoint():
    """DPM-Solver++(2M) integrates the same probability-flow ODE, whose end point the Gaussian
    denoiser gives in closed form (gaussian_trajectory): its error falls at second order
    (measured: 0.025 at 20 steps, 0.0054 at 40)."""
    den = ad.GaussianDenoiser().fit(DATA)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(52), dtype=torch.float64) * 20.0
    exact = ad.gaussian_trajectory(x, [20.0, 0.0], den.mean_, den.eigvals_, den.eigvecs_)[-1]
    errors = [(K.sampling.sample_dpmpp_2m(den, x, K.sampling.get_sigmas_karras(n, 1e-3, 20.0, device="cpu").double(),
                                          disable=True) - exact).abs().max() for n in (20, 40)]
    assert errors[1] < errors[0] / 3 and errors[1] < 1e-2


@pytest.mark.parametrize("shape", [(), (1,)])
def test_a_single_sigma_broadcasts_over_the_batch(shape):
    den = ad.GaussianDenoiser().fit(DATA)
    x = tiny_images(4, (1, 8, 8), seed=53)
    torch.testing.assert_close(den(x, torch.full(shape, 0.7, dtype=torch.float64)), den(x, 0.7))
