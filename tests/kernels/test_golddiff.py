"""golddiff_posterior_mean (kernels.golddiff) against an explicit-loop float64 reference of the
whole pipeline (pre-sample, pooled screening, full-resolution selection, masked softmax), and
GoldDiffDenoiser's exact case k = N."""

import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.golddiff import golddiff_posterior_mean, proxy_factor, subset_sizes
from references import SIGMAS, tiny_images


def golddiff_reference(x, sigma, data, mask, k_min, k_max, order, factor):
    """Per query: sizes from the formula, the first m_t of ``order``, pooled distances by loops
    over blocks, the k_max nearest, the k_t nearest of those, then the masked per-pixel softmax."""
    n_data, (c, h, w) = len(data), data.shape[1:]
    nu = sigma / math.sqrt(1 + sigma**2)
    k_lo, k_hi = min(k_min, n_data), min(max(k_max, k_min), n_data)
    m_t = min(n_data, max(k_hi, round(k_hi + (n_data - k_hi) * (1 - nu))))
    k_t = max(k_lo, round(k_hi - (k_hi - k_lo) * (1 - nu)))

    def pooled(img):
        return [sum(float(img[ch, i * factor + a, j * factor + b]) for a in range(factor) for b in range(factor))
                / factor**2 for ch in range(c) for i in range(h // factor) for j in range(w // factor)]

    weights = mask.double()
    out = torch.empty(len(x), c * h * w, dtype=torch.float64)
    for q, query in enumerate(x):
        pre = [int(i) for i in order[:m_t]]
        pq = pooled(query)
        coarse = sorted(pre, key=lambda i: sum((u - v) ** 2 for u, v in zip(pq, pooled(data[i]))))[:min(max(k_t, k_hi), m_t)]
        subset = sorted(coarse, key=lambda i: float(((query - data[i]) ** 2).sum()))[:k_t]
        flat_q = query.reshape(-1)
        for m in range(c * h * w):
            logits = [-float((weights[:, m] * (flat_q - data[i].reshape(-1)) ** 2).sum()) / (2 * sigma**2)
                      for i in subset]
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            out[q, m] = sum(e * float(data[i].reshape(-1)[m]) for e, i in zip(exps, subset)) / sum(exps)
    return out


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("mask_kind", ["bool", "real"])
def test_matches_the_loop_reference(sigma, mask_kind):
    data, x = tiny_images(24, (1, 4, 4), seed=1), tiny_images(3, (1, 4, 4), seed=2)
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(16, 16, generator=g) < 0.4 if mask_kind == "bool" else torch.randn(16, 16, generator=g).double()
    mask.fill_diagonal_(True if mask_kind == "bool" else 1.0)
    out = golddiff_posterior_mean(x, sigma, data, mask, k_min=3, k_max=8, order=order, proxy_factor=2, chunk_size=2)
    ref = golddiff_reference(x, sigma, data, mask, 3, 8, order, 2)
    torch.testing.assert_close(out.reshape(3, -1), ref, rtol=1e-9, atol=1e-9)


def test_subset_sizes_interpolate_between_their_bounds():
    assert subset_sizes(1e-6, 1000, 50, 100) == (1000, 50)  # low noise: every image pre-sampled, k_min kept
    assert subset_sizes(1e6, 1000, 50, 100) == (100, 100)  # high noise: k_max of each
    m_t, k_t = subset_sizes(1.0, 1000, 50, 100)  # nu = 1 / sqrt(2)
    assert (m_t, k_t) == (round(100 + 900 * (1 - 2**-0.5)), round(100 - 50 * (1 - 2**-0.5)))
    assert subset_sizes(0.5, 30, 50, 100) == (30, 30)  # clipped to the training set
    with pytest.raises(ValueError, match="k_min"):
        subset_sizes(0.5, 30, 0, 100)


@pytest.mark.parametrize("shape, resolution, factor", [((28, 28), 16, 2), ((32, 32), 16, 2), ((64, 64), 16, 4),
                                                       ((5, 5), 16, 1), ((6, 6), 4, 2), ((6, 9), 2, 3)])
def test_proxy_factor_follows_golddiffs_low_res_rule(shape, resolution, factor):
    assert proxy_factor(*shape, resolution) == factor


@pytest.mark.parametrize("sigma", [0.01, 0.3, 3.0, 100.0])
def test_a_subset_of_every_image_is_exact_pca_locality(sigma):
    data, x = tiny_images(30, (1, 6, 6), seed=5), tiny_images(4, (1, 6, 6), seed=6)
    y = torch.tensor([0, 1, 2] * 10)
    for labels in (None, torch.tensor([2, 0, 1, 2])):
        fit_y = None if labels is None else y
        exact = ad.PCALocalityDenoiser(threshold=0.05).fit(data, fit_y)(x, sigma, y=labels)
        gold = ad.GoldDiffDenoiser(threshold=0.05, k_min=30, k_max=30).fit(data, fit_y)(x, sigma, y=labels)
        torch.testing.assert_close(gold, exact, rtol=1e-12, atol=1e-12)


def test_smaller_subsets_are_approximate_and_seeded():
    data, x = tiny_images(40, (1, 6, 6), seed=7), tiny_images(4, (1, 6, 6), seed=8)
    exact = ad.PCALocalityDenoiser(threshold=0.05).fit(data)(x, 2.0)
    den = ad.GoldDiffDenoiser(threshold=0.05, k_min=4, k_max=8).fit(data)
    assert den.subset_sizes(2.0) == subset_sizes(2.0, 40, 4, 8)
    assert float((den(x, 2.0) - exact).abs().max()) > 1e-3  # the subset matters at this size
    again = ad.GoldDiffDenoiser(threshold=0.05, k_min=4, k_max=8).fit(data)
    assert torch.equal(den.order_, again.order_) and torch.equal(den(x, 2.0), again(x, 2.0))
    defaults = ad.GoldDiffDenoiser().fit(data)
    assert defaults.subset_sizes(1e6) == (4, 4)  # k_max = N / 10


def test_bad_inputs_are_refused():
    data, x = tiny_images(10, (1, 4, 4), seed=9), tiny_images(2, (1, 4, 4), seed=10)
    mask = torch.ones(16, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match="order"):
        golddiff_posterior_mean(x, 1.0, data, mask, k_min=2, k_max=4, order=torch.arange(9))
    with pytest.raises(ValueError, match="training data"):
        golddiff_posterior_mean(x, 1.0, data.float(), mask, k_min=2, k_max=4, order=torch.arange(10))
    with pytest.raises(ValueError, match="k_max"):
        ad.GoldDiffDenoiser(k_max=0).fit(data)
