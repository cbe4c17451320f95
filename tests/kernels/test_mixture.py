"""The Gaussian mixture model (kernels.mixture): the posterior mean against an explicit-loop
float64 reference with full covariance matrices, full and low rank, per-image sigma; its limits
(one component is the Wiener filter), float32 accuracy, autograd and refusals."""

import math

import pytest
import torch

from analytic_denoisers.kernels.mixture import gaussian_mixture_posterior_mean
from analytic_denoisers.kernels.wiener import gaussian_posterior_mean
from references import SIGMAS, mixture_reference, randn

D_SHAPE = (1, 3, 3)
D = math.prod(D_SHAPE)


def random_mixture(k=3, rank=None, seed=0):
    """A mixture of ``k`` Gaussians on 3 x 3 images: (log_weights (K,), means (K, d),
    eigvals (K, r), eigvecs (K, d, r)), float64; each component has one zero eigenvalue among
    its r, so even the full-rank ones are singular."""
    g = torch.Generator().manual_seed(seed)
    r = D if rank is None else rank
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.2
    means = 0.6 * torch.randn(k, D, generator=g, dtype=torch.float64)
    eigvecs = torch.stack([torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0][:, :r]
                           for _ in range(k)])
    eigvals = torch.rand(k, r, generator=g, dtype=torch.float64) * 0.5
    eigvals[:, -1] = 0
    return (weights / weights.sum()).log(), means, eigvals, eigvecs


def overlapping_mixture(seed=20):
    """Two full-rank Gaussians (eigenvalues 1 to 3) whose means are about 1 apart: their
    weights stay mixed down to small sigma, where ``||x - mu||^2 / sigma^2`` is ~1e5."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(2, D, generator=g, dtype=torch.float64) / 3
    eigvecs = torch.stack([torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0] for _ in range(2)])
    eigvals = 1 + 2 * torch.rand(2, D, generator=g, dtype=torch.float64)
    return torch.tensor([0.4, 0.6], dtype=torch.float64).log(), means, eigvals, eigvecs


MIXTURES = {"full-rank": lambda: random_mixture(), "rank-4": lambda: random_mixture(rank=4),
            "overlapping": lambda: overlapping_mixture()}


def mixture_queries(mixture, sigma, n=6, seed=1):
    """Noisy samples ``x0 + sigma * eps`` of the mixture, n of them (cycling through the
    components), shape (n, 1, 3, 3); ``sigma`` a float or (n,)."""
    _, means, eigvals, eigvecs = mixture
    k = torch.arange(n) % len(means)
    x0 = means[k] + torch.einsum("ndr,nr->nd", eigvecs[k], eigvals[k].sqrt() * randn(n, eigvals.shape[1], seed=seed))
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(n)
    return (x0 + sigma[:, None] * randn(n, D, seed=seed + 1)).reshape(n, *D_SHAPE)


@pytest.mark.parametrize("name", MIXTURES)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_matches_loop_reference(sigma, name):
    mixture = MIXTURES[name]()
    x = mixture_queries(mixture, sigma)
    expect, _ = mixture_reference(x, sigma, *mixture)
    out = gaussian_mixture_posterior_mean(x, sigma, *mixture)
    torch.testing.assert_close(out, expect, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rank", [None, 4])
def test_per_image_sigma_matches_loop_reference(rank):
    mixture = random_mixture(rank=rank, seed=2)
    sigma = torch.tensor([1e-2, 0.1, 0.3, 1.0, 10.0, 1e2], dtype=torch.float64)
    x = mixture_queries(mixture, sigma, seed=3)
    expect, weights = mixture_reference(x, sigma, *mixture)
    assert float(weights.max(1).values.min()) < 0.9  # some images really mix components
    torch.testing.assert_close(gaussian_mixture_posterior_mean(x, sigma, *mixture), expect, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gaussian_mixture_posterior_mean(x.reshape(6, -1), sigma, *mixture),
                               expect.reshape(6, -1), rtol=1e-10, atol=1e-10)  # flattened images too


def test_one_component_is_the_wiener_filter():
    log_weights, means, eigvals, eigvecs = random_mixture(k=1, rank=5, seed=4)
    x, sigma = mixture_queries((log_weights, means, eigvals, eigvecs), 0.5, seed=5), torch.tensor([0.1, 0.5, 2.0] * 2)
    torch.testing.assert_close(gaussian_mixture_posterior_mean(x, sigma.double(), log_weights, means, eigvals, eigvecs),
                               gaussian_posterior_mean(x, sigma.double(), means[0], eigvals[0], eigvecs[0]),
                               rtol=1e-13, atol=1e-13)


def test_only_differences_of_log_weights_matter():
    mixture = random_mixture(seed=6)
    x = mixture_queries(mixture, 0.7, seed=7)
    shifted = (mixture[0] + 123.0,) + mixture[1:]
    torch.testing.assert_close(gaussian_mixture_posterior_mean(x, 0.7, *shifted),
                               gaussian_mixture_posterior_mean(x, 0.7, *mixture), rtol=1e-13, atol=1e-13)


def test_eigenvector_columns_of_zeros_pad_a_component_exactly():
    """Components of rank 4 padded to r = d with zero eigenvalues and zero columns: the padded
    directions still have zero variance (the part outside the span is formed explicitly)."""
    log_weights, means, eigvals, eigvecs = random_mixture(rank=4, seed=8)
    k = len(means)
    padded = (log_weights, means, torch.cat([eigvals, eigvals.new_zeros(k, D - 4)], 1),
              torch.cat([eigvecs, eigvecs.new_zeros(k, D, D - 4)], 2))
    sigma = torch.tensor([1e-2, 0.1, 1.0, 10.0, 1e2, 0.5], dtype=torch.float64)
    x = mixture_queries(padded, sigma, seed=9)
    expect, _ = mixture_reference(x, sigma, log_weights, means, eigvals, eigvecs)
    torch.testing.assert_close(gaussian_mixture_posterior_mean(x, sigma, *padded), expect, rtol=1e-10, atol=1e-10)


def test_float32_is_accurate_at_small_sigma():
    """float32 statistics and images give the float64 reference to float32 rounding where the
    weights are mixed and ``||x - mu||^2 / sigma^2`` is ~1e5."""
    mixture = overlapping_mixture(seed=21)
    sigma = torch.tensor([1e-2, 1e-2, 1e-2, 3e-2, 3e-2, 0.1, 0.1, 0.1], dtype=torch.float64)
    x = mixture_queries(mixture, sigma, n=8, seed=11)
    expect, weights = mixture_reference(x, sigma, *mixture)
    assert float(weights[:3].max(1).values.min()) < 0.9
    out = gaussian_mixture_posterior_mean(x.float(), sigma.float(), *(t.float() for t in mixture))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expect, rtol=0, atol=2e-6)


def test_jacobian_is_the_symmetric_posterior_covariance():
    """Autograd reaches x, and ``dD/dx = Cov[x0 | x] / sigma^2`` is symmetric (Tweedie)."""
    mixture = random_mixture(rank=4, seed=12)
    x = mixture_queries(mixture, 0.5, n=1, seed=13)
    assert torch.autograd.gradcheck(lambda x: gaussian_mixture_posterior_mean(x, 0.5, *mixture), (x.requires_grad_(),))
    jac = torch.autograd.functional.jacobian(lambda x: gaussian_mixture_posterior_mean(x, 0.5, *mixture),
                                             x.detach()).reshape(D, D)
    torch.testing.assert_close(jac, jac.T, rtol=1e-10, atol=1e-10)
    assert float(torch.linalg.eigvalsh((jac + jac.T) / 2).min()) > -1e-10


def test_keeps_dtype_and_shape():
    mixture = tuple(t.float() for t in random_mixture(seed=14))
    x = mixture_queries(random_mixture(seed=14), 0.3, seed=15).float()
    out = gaussian_mixture_posterior_mean(x, 0.3, *mixture)
    assert (out.shape, out.dtype, out.device) == (x.shape, x.dtype, x.device)


def test_statistics_that_do_not_fit_are_refused():
    log_weights, means, eigvals, eigvecs = random_mixture(rank=4, seed=16)
    x = mixture_queries((log_weights, means, eigvals, eigvecs), 1.0, n=2, seed=17)
    shapes = r"expected log_weights \(K,\), means \(K, 9\), eigvals \(K, r\) and eigvecs \(K, 9, r\)"
    for bad in ((log_weights[:2], means, eigvals, eigvecs), (log_weights, means[:, :4], eigvals, eigvecs),
                (log_weights, means, eigvals[:, :3], eigvecs), (log_weights, means, eigvals, eigvecs[0]),
                (log_weights[:0], means[:0], eigvals[:0], eigvecs[:0]),
                (log_weights, means, torch.ones(3, 10, dtype=torch.float64), torch.ones(3, 9, 10, dtype=torch.float64)),
                (log_weights[None], means, eigvals, eigvecs)):
        with pytest.raises(ValueError, match=shapes):
            gaussian_mixture_posterior_mean(x, 1.0, *bad)
    with pytest.raises(ValueError, match="eigvecs must have dtype torch.float64"):
        gaussian_mixture_posterior_mean(x, 1.0, log_weights, means, eigvals, eigvecs.float())
    with pytest.raises(ValueError, match="log_weights must be finite"):
        gaussian_mixture_posterior_mean(x, 1.0, torch.tensor([0.0, -math.inf, 0.0], dtype=torch.float64),
                                        means, eigvals, eigvecs)
    with pytest.raises(ValueError, match="eigvals must be non-negative"):
        gaussian_mixture_posterior_mean(x, 1.0, log_weights, means, -eigvals, eigvecs)
    with pytest.raises(ValueError, match="means must be a tensor"):
        gaussian_mixture_posterior_mean(x, 1.0, log_weights, means.tolist(), eigvals, eigvecs)
    for bad_sigma, match in ((0.0, "positive"), (float("nan"), "NaN"), (torch.ones(3), r"shape \(2,\)")):
        with pytest.raises(ValueError, match=match):
            gaussian_mixture_posterior_mean(x, bad_sigma, log_weights, means, eigvals, eigvecs)
    nan_x = x.clone()
    nan_x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        gaussian_mixture_posterior_mean(nan_x, 1.0, log_weights, means, eigvals, eigvecs)
