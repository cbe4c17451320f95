"""knn_posterior_mean and knn_proposal_posterior_mean (kernels.knn) against explicit-loop float64
references of the two estimators, the exact limit, exact_neighbours, batch and block invariance,
gradients and bad input."""

import math

import pytest
import torch

import analytic_denoisers.core.batching as batching
from analytic_denoisers.kernels.empirical import empirical_posterior_mean
from analytic_denoisers.kernels.knn import exact_neighbours, knn_posterior_mean, knn_proposal_posterior_mean
from references import SIGMAS, near_data, tiny_images


def order_of(m, seed=0):
    return torch.randperm(m, generator=torch.Generator().manual_seed(seed))


def uniforms(n, seed=0):
    return torch.rand((n, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _neighbours_and_logits(xn, s, flat, k):
    """Python-float logits of every training image, and the indices of the k nearest (ties by index)."""
    logits = [-float(((xn - xi) ** 2).sum()) / (2 * s**2) for xi in flat]
    nearest = sorted(range(len(flat)), key=lambda i: (-logits[i], i))[:k]
    return logits, nearest


def _weighted_mean(items, flat):
    """sum_i w_i x_i / sum_i w_i over ``items``: (index, log w) pairs, with a float64 log-sum-exp."""
    top = max(lw for _, lw in items)
    weights = [(i, math.exp(lw - top)) for i, lw in items]
    return sum(w * flat[i] for i, w in weights) / sum(w for _, w in weights)


def tail_reference(x, sigma, data, k, n, order):
    """Per query: sort the distances, K = the k nearest, S = the first n images of ``order`` not in
    K, each with the multiplier (N - k) / n; the weighted mean over K and S."""
    x, flat = x.double().reshape(len(x), -1), data.double().reshape(len(data), -1)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x))
    m = len(flat)
    k = min(k, m)
    out = torch.empty_like(x)
    for b in range(len(x)):
        logits, nearest = _neighbours_and_logits(x[b], float(sigma[b]), flat, k)
        tail = [int(j) for j in order if int(j) not in nearest][:n]
        items = [(i, logits[i]) for i in nearest]
        items += [(j, logits[j] + math.log((m - k) / len(tail))) for j in tail]
        out[b] = _weighted_mean(items, flat)
    return out


def proposal_reference(x, sigma, data, k, draws):
    """Per query: the proposal q over all N images written out (q_i ~ w_i on K, ~ w_(k) elsewhere),
    each draw decided from its uniforms (u: uniform part or not; t: which image; v: which
    neighbour, by the cumulative w_i - w_(k) over K in index order), then sum_r (w/q) x / sum_r w/q."""
    x, flat = x.double().reshape(len(x), -1), data.double().reshape(len(data), -1)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x))
    m = len(flat)
    k = min(k, m)
    out = torch.empty_like(x)
    for b in range(len(x)):
        logits, nearest = _neighbours_and_logits(x[b], float(sigma[b]), flat, k)
        near = sorted(nearest)
        top = max(logits[i] for i in near)
        w = {i: math.exp(logits[i] - top) for i in near}
        kth = min(w.values())
        z = sum(w.values()) + (m - k) * kth
        q = [(w[i] if i in w else kth) / z for i in range(m)]
        items = []
        for u, v, t in draws.tolist():
            if u < m * kth / z:
                i = min(int(t * m), m - 1)
            else:
                target, acc = v * sum(w[j] - kth for j in near), 0.0
                i = near[-1]
                for j in near:
                    acc += w[j] - kth
                    if acc > target:
                        i = j
                        break
            items.append((i, logits[i] - math.log(q[i])))
        out[b] = sum(math.exp(lw - max(lw for _, lw in items)) * flat[i] for i, lw in items) / sum(
            math.exp(lw - max(lw for _, lw in items)) for _, lw in items)
    return out


DATA = tiny_images(30, seed=1)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("k, n", [(1, 4), (5, 7), (8, 0), (12, 30)])
def test_tail_estimator_matches_loop_reference(sigma, k, n):
    x = near_data(DATA, 4, sigma, seed=2)
    out = knn_posterior_mean(x, sigma, DATA, k=k, n_tail=n, tail_order=order_of(30))
    assert torch.isfinite(out).all()
    ref = tail_reference(x, sigma, DATA, k, n, order_of(30))
    torch.testing.assert_close(out.reshape(len(x), -1), ref, rtol=1e-10, atol=1e-10)


def test_tail_estimator_per_image_sigma():
    x = near_data(DATA, 5, 0.1, seed=3)
    sigma = torch.tensor([1e-2, 0.05, 0.3, 1.0, 10.0, 1e2], dtype=torch.float64)
    out = knn_posterior_mean(x, sigma, DATA, k=4, n_tail=6, tail_order=order_of(30, seed=4))
    ref = tail_reference(x, sigma, DATA, 4, 6, order_of(30, seed=4))
    torch.testing.assert_close(out.reshape(len(x), -1), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("k, n", [(1, 5), (4, 9), (30, 3)])
def test_proposal_estimator_matches_loop_reference(sigma, k, n):
    x = near_data(DATA, 4, sigma, seed=5)
    sigma_n = torch.full((len(x),), sigma, dtype=torch.float64) * torch.tensor([1.0, 0.5, 2.0, 1.0, 3.0],
                                                                                dtype=torch.float64)
    out = knn_proposal_posterior_mean(x, sigma_n, DATA, k=k, draws=uniforms(n, seed=6))
    assert torch.isfinite(out).all()
    ref = proposal_reference(x, sigma_n, DATA, k, uniforms(n, seed=6))
    torch.testing.assert_close(out.reshape(len(x), -1), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma", [1e-2, 0.3, 3.0, 1e2])
@pytest.mark.parametrize("k, n", [(30, 0), (30, 5), (45, 2), (20, 10), (25, 100)])
def test_all_images_equal_the_empirical_posterior_mean(sigma, k, n):
    """k >= N, or k + n >= N (the whole tail, each image standing for itself): exact."""
    x = near_data(DATA, 3, sigma, seed=7)
    out = knn_posterior_mean(x, sigma, DATA, k=k, n_tail=n, tail_order=order_of(30))
    torch.testing.assert_close(out, empirical_posterior_mean(x, sigma, DATA), rtol=0, atol=1e-12)


def test_the_approximation_is_one():
    """With k + n < N the tail estimate differs from the exact mean where the tail matters (large
    sigma), and approaches it as n grows (each query sees (N - k) / n times its sample)."""
    data, x = tiny_images(200, seed=8), tiny_images(4, seed=9)
    exact = empirical_posterior_mean(x, 5.0, data)
    errors = [float((knn_posterior_mean(x, 5.0, data, k=5, n_tail=n, tail_order=order_of(200)) - exact).abs().max())
              for n in (5, 50, 150, 190)]
    assert errors[0] > 0.1 and errors == sorted(errors, reverse=True) and errors[-1] < 2e-2
    small = knn_posterior_mean(x, 0.05, data, k=5, n_tail=5, tail_order=order_of(200))
    torch.testing.assert_close(small, empirical_posterior_mean(x, 0.05, data), rtol=0, atol=1e-12)


def test_proposal_estimate_is_consistent():
    """Many draws from the paper's proposal approach the exact mean; with k >= N each draw is a
    posterior sample, so the estimate is their average (not exact for finite n)."""
    data = tiny_images(40, seed=10)
    x = near_data(data, 3, 0.5, seed=11)
    exact = empirical_posterior_mean(x, 0.5, data)
    many = knn_proposal_posterior_mean(x, 0.5, data, k=3, draws=uniforms(20000, seed=12))
    torch.testing.assert_close(many, exact, rtol=0, atol=3e-2)
    few = knn_proposal_posterior_mean(x, 0.5, data, k=40, draws=uniforms(3, seed=12))
    assert (few - exact).abs().max() > 1e-3


def test_exact_neighbours_are_the_nearest():
    data, x = tiny_images(50, seed=13), tiny_images(7, seed=14)
    expect = torch.cdist(x.flatten(1), data.flatten(1)).argsort(1)[:, :6]
    for chunk in (None, 1, 7, 1000):
        assert torch.equal(exact_neighbours(x, data, 6, chunk), expect)
    assert exact_neighbours(x, data, 80).shape == (7, 50)
    assert torch.equal(exact_neighbours(x.float(), data.float(), 6), expect)


def test_batch_and_query_blocks_do_not_change_results(monkeypatch):
    x = near_data(DATA, 6, 0.3, seed=15)
    sigma = torch.tensor([0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0], dtype=torch.float64)

    def both(x, sigma):
        return (knn_posterior_mean(x, sigma, DATA, k=3, n_tail=4, tail_order=order_of(30)),
                knn_proposal_posterior_mean(x, sigma, DATA, k=3, draws=uniforms(5)))

    whole = both(x, sigma)
    for i in range(len(x)):  # each query alone
        for full, one in zip(whole, both(x[i:i + 1], sigma[i:i + 1])):
            torch.testing.assert_close(one, full[i:i + 1], rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(batching, "WORK_BUDGET", 1)  # one query per block
    for full, blocked in zip(whole, both(x, sigma)):
        torch.testing.assert_close(blocked, full, rtol=1e-12, atol=1e-12)


def test_a_pluggable_index_only_chooses_the_set():
    """Any search returning the same sets (in any order) gives the same result."""
    x = near_data(DATA, 3, 0.5, seed=16)

    def reversed_exact(queries, k):
        return exact_neighbours(queries, DATA, k).flip(1)

    for kernel, extra in ((knn_posterior_mean, dict(n_tail=4, tail_order=order_of(30))),
                          (knn_proposal_posterior_mean, dict(draws=uniforms(6)))):
        torch.testing.assert_close(kernel(x, 0.5, DATA, k=5, neighbours=reversed_exact, **extra),
                                   kernel(x, 0.5, DATA, k=5, **extra), rtol=0, atol=0)


def test_float32_keeps_dtype_and_agrees_with_float64():
    x = near_data(DATA, 3, 0.3, seed=17)
    for sigma in (0.05, 0.5, 5.0):
        out = knn_posterior_mean(x.float(), sigma, DATA.float(), k=4, n_tail=5, tail_order=order_of(30))
        assert out.dtype == torch.float32
        ref = knn_posterior_mean(x, sigma, DATA, k=4, n_tail=5, tail_order=order_of(30))
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


def test_gradients_match_finite_differences():
    data, x = tiny_images(12, (1, 3, 3), seed=18), tiny_images(2, (1, 3, 3), seed=19).requires_grad_(True)
    sigma = torch.tensor([0.4, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: knn_posterior_mean(x, sigma, data, k=3, n_tail=4, tail_order=order_of(12)), (x,))
    assert torch.autograd.gradcheck(lambda x: knn_proposal_posterior_mean(x, sigma, data, k=3, draws=uniforms(8)), (x,))


def test_bad_input_raises():
    x = tiny_images(2, seed=20)
    kwargs = dict(k=3, n_tail=2, tail_order=order_of(30))
    for bad_sigma, match in ((0.0, "positive"), (float("nan"), "NaN"), (torch.ones(3), r"shape \(2,\)")):
        with pytest.raises(ValueError, match=match):
            knn_posterior_mean(x, bad_sigma, DATA, **kwargs)
    with pytest.raises(ValueError, match="dtype torch.float64"):
        knn_posterior_mean(x, 1.0, DATA.float(), **kwargs)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn_posterior_mean(x, 1.0, DATA, **{**kwargs, "k": 0})
    with pytest.raises(ValueError, match="n_tail must be an integer >= 0"):
        knn_posterior_mean(x, 1.0, DATA, **{**kwargs, "n_tail": -1})
    with pytest.raises(ValueError, match="permutation"):
        knn_posterior_mean(x, 1.0, DATA, **{**kwargs, "tail_order": torch.zeros(30, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"LongTensor of shape \(30,\)"):
        knn_posterior_mean(x, 1.0, DATA, **{**kwargs, "tail_order": order_of(29)})
    with pytest.raises(ValueError, match="distinct indices"):
        knn_posterior_mean(x, 1.0, DATA, neighbours=lambda q, k: torch.zeros(len(q), k, dtype=torch.long), **kwargs)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        knn_posterior_mean(x, 1.0, DATA, neighbours=lambda q, k: torch.arange(k), **kwargs)
    for bad in (torch.rand(4, 2, dtype=torch.float64), torch.full((4, 3), 1.0, dtype=torch.float64),
                torch.zeros(0, 3, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"draws must be a float tensor of shape \(n, 3\)"):
            knn_proposal_posterior_mean(x, 1.0, DATA, k=3, draws=bad)
