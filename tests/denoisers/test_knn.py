"""KNNScoreDenoiser (denoisers.knn): the contract suite for both estimators and both indexes, the
estimator is its kernel, the exact limit, FAISS agrees with the exact search, seeding, class
conditioning and hyper-parameter checks."""

import sys

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.denoisers.knn import KNNScoreDenoiser
from analytic_denoisers.kernels.knn import exact_neighbours, knn_posterior_mean, knn_proposal_posterior_mean
from analytic_denoisers.testing import check_denoiser
from references import near_data, tiny_images


@pytest.mark.parametrize("sampling", ["tail", "proposal"])
@pytest.mark.parametrize("index", ["exact", "auto"])
def test_contract(sampling, index):
    check_denoiser(lambda **p: KNNScoreDenoiser(**{"n_neighbors": 4, "n_draws": 3, "sampling": sampling,
                                                   "index": index, **p}))


@pytest.mark.parametrize("sampling", ["tail", "proposal"])
def test_estimator_equals_its_kernel(sampling):
    data, x = tiny_images(20, seed=1), tiny_images(5, seed=2)
    sigma = torch.tensor([1e-2, 0.05, 0.7, 3.0, 1e2], dtype=torch.float64)
    den = KNNScoreDenoiser(n_neighbors=3, n_draws=4, sampling=sampling, index="exact", random_state=7).fit(data)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(7))
    assert torch.equal(den.tail_order_, order)
    x_est, x_kernel = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = den(x_est, sigma)
    if sampling == "tail":
        expect = knn_posterior_mean(x_kernel, sigma, data, k=3, n_tail=4, tail_order=order)
    else:
        draws = torch.rand((4, 3), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        expect = knn_proposal_posterior_mean(x_kernel, sigma, data, k=3, draws=draws)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)
    out.square().sum().backward()
    expect.square().sum().backward()
    torch.testing.assert_close(x_est.grad, x_kernel.grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("index", ["exact", "auto"])
@pytest.mark.parametrize("params", [dict(n_neighbors=25), dict(n_neighbors=25, n_draws=0), dict(n_neighbors=40),
                                    dict(n_neighbors=10, n_draws=15)])
def test_all_images_equal_the_empirical_denoiser(index, params):
    data = tiny_images(25, seed=3)
    exact = ad.EmpiricalOptimalDenoiser().fit(data)
    den = KNNScoreDenoiser(index=index, **params).fit(data)
    for sigma in (1e-2, 0.2, 2.0, 1e2):
        x = near_data(data, 4, sigma, seed=4)
        torch.testing.assert_close(den(x, sigma), exact(x, sigma), rtol=0, atol=1e-12)


def test_faiss_and_exact_search_agree():
    faiss = pytest.importorskip("faiss")
    data = tiny_images(60, seed=5)
    x = torch.cat([near_data(data, 6, 0.2, seed=6), tiny_images(4, seed=7)])
    index = faiss.IndexFlatL2(36)
    index.add(data.flatten(1).float().numpy())
    _, found = index.search(x.flatten(1).float().numpy(), 8)
    assert torch.equal(torch.from_numpy(found).sort(1).values, exact_neighbours(x, data, 8).sort(1).values)
    sigma = torch.logspace(-2, 2, len(x), dtype=torch.float64)
    for sampling in ("tail", "proposal"):
        exact, with_faiss = (KNNScoreDenoiser(n_neighbors=8, n_draws=10, sampling=sampling, index=kind).fit(data)
                             for kind in ("exact", "faiss"))
        torch.testing.assert_close(with_faiss(x, sigma), exact(x, sigma), rtol=0, atol=1e-12)


def test_missing_faiss_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    data, x = tiny_images(10, seed=8), tiny_images(2, seed=9)
    with pytest.raises(ImportError, match=r"pip install 'analytic-denoisers\[faiss\]'"):
        KNNScoreDenoiser(index="faiss").fit(data)
    auto = KNNScoreDenoiser(n_neighbors=3, n_draws=2, index="auto").fit(data)  # falls back to the exact search
    exact = KNNScoreDenoiser(n_neighbors=3, n_draws=2, index="exact").fit(data)
    assert torch.equal(auto(x, 0.5), exact(x, 0.5))


def test_seeded_and_reproducible():
    data, x = tiny_images(40, seed=10), tiny_images(4, seed=11)
    for sampling in ("tail", "proposal"):
        def fitted(seed):
            return KNNScoreDenoiser(n_neighbors=2, n_draws=3, sampling=sampling, random_state=seed).fit(data)

        assert torch.equal(fitted(3)(x, 2.0), fitted(3)(x, 2.0))
        assert not torch.allclose(fitted(3)(x, 2.0), fitted(4)(x, 2.0))


def test_class_conditional_uses_only_that_class():
    data, x = tiny_images(18, seed=12), tiny_images(5, seed=13)
    y = torch.tensor([0, 1, 2] * 6)
    labels = torch.tensor([2, 0, 2, 1, 0])
    for sampling in ("tail", "proposal"):
        den = KNNScoreDenoiser(n_neighbors=2, n_draws=2, sampling=sampling, index="exact", random_state=1).fit(data, y)
        out = den(x, 0.8, y=labels)
        draws = torch.rand((2, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for n, label in enumerate(labels.tolist()):
            lo, hi = int(den.class_offsets_[label]), int(den.class_offsets_[label + 1])
            members = den.data_[lo:hi]
            assert torch.equal(members, data[y == label])
            if sampling == "tail":
                order = den.tail_order_[(den.tail_order_ >= lo) & (den.tail_order_ < hi)] - lo
                ref = knn_posterior_mean(x[n:n + 1], 0.8, members, k=2, n_tail=2, tail_order=order)
            else:
                ref = knn_proposal_posterior_mean(x[n:n + 1], 0.8, members, k=2, draws=draws)
            torch.testing.assert_close(out[n:n + 1], ref, rtol=0, atol=1e-12)
        # every image of its class: the class's exact posterior mean
        full = KNNScoreDenoiser(n_neighbors=6, index="exact").fit(data, y)
        exact = ad.EmpiricalOptimalDenoiser().fit(data, y)
        torch.testing.assert_close(full(x, 0.8, y=labels), exact(x, 0.8, y=labels), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="pass y"):
        den(x, 0.8)


@pytest.mark.parametrize("params, match", [
    (dict(n_neighbors=0), "n_neighbors must be a positive integer"),
    (dict(n_neighbors=2.5), "n_neighbors"),
    (dict(n_draws=-1), "n_draws must be an integer >= 0"),
    (dict(sampling="uniform"), "sampling must be one of 'tail', 'proposal'"),
    (dict(index="annoy"), "index must be one of 'auto', 'exact', 'faiss'"),
    (dict(random_state=None), "random_state"),
    (dict(random_state=-1), "random_state"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(sampling="proposal", n_draws=0), "n_draws must be at least 1 with sampling='proposal'"),
])
def test_bad_hyper_parameters_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        KNNScoreDenoiser(**params).fit(tiny_images(5))
    with pytest.raises(ValueError, match=match):
        KNNScoreDenoiser().set_params(**params)


def test_random_choices_are_made_at_fit():
    data, x = tiny_images(30, seed=50), tiny_images(2, seed=51)
    for sampling in ("tail", "proposal"):
        den = KNNScoreDenoiser(n_neighbors=4, n_draws=5, sampling=sampling).fit(data)
        before = den(x, 2.0)
        assert torch.equal(den.set_params(random_state=9)(x, 2.0), before)  # until the next fit
        assert not torch.equal(den.fit(data)(x, 2.0), before)
    with pytest.raises(ValueError, match="fit again"):
        den.set_params(n_draws=7)(x, 2.0)
