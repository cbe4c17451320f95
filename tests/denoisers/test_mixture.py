"""GaussianMixtureDenoiser (denoisers.mixture): its limits (one component is the Gaussian
denoiser, one image per component the empirical one), the score as the gradient of the fitted
mixture's log-density, the groups it fits (classes, k-means), refusals, and the contract suite."""

import math

import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import analytic_denoisers as ad
from analytic_denoisers.core.artifact import read
from analytic_denoisers.denoisers.mixture import GaussianMixtureDenoiser
from analytic_denoisers.testing import check_denoiser
from references import SIGMAS, gaussian_problem, randn, tiny_images


def blobs(sizes=(30, 50, 20), seed=0):
    """Three well separated Gaussian blobs of 3 x 3 images: (X (N, 1, 3, 3), labels (N,))."""
    X, labels = [], []
    for k, n in enumerate(sizes):
        centre = torch.full((9,), 2.0 * k - 2.0, dtype=torch.float64)
        X.append(centre + (0.1 + 0.05 * k) * randn(n, 9, seed=seed + k))
        labels.append(torch.full((n,), 10 * k + 3))
    return torch.cat(X).reshape(-1, 1, 3, 3), torch.cat(labels)


def test_contract_suite():
    assert check_denoiser(lambda **p: GaussianMixtureDenoiser(**{"n_components": 3, **p}))
    assert check_denoiser(lambda **p: GaussianMixtureDenoiser(**{"n_components": 2, "rank": 4, **p}))


def test_saved_state_is_all_declared(tmp_path):
    """Only the attributes of ``_fitted_state`` are written (the registry's load refuses others)."""
    den = GaussianMixtureDenoiser(n_components=3).fit(tiny_images(10))
    _, params, state = read(den.save(tmp_path / "gmm.h5"), fitted_state=GaussianMixtureDenoiser._fitted_state)
    assert set(state) == set(GaussianMixtureDenoiser._fitted_state) and params == den.get_params()


@pytest.mark.parametrize("rank", [None, 3])
def test_one_component_is_the_gaussian_denoiser(rank):
    X, _, _ = gaussian_problem(n=300, seed=1)
    gmm = GaussianMixtureDenoiser(n_components=1, rank=rank, chunk_size=64).fit(X)
    gauss = ad.GaussianDenoiser(rank=rank, chunk_size=64).fit(X)
    assert torch.equal(gmm.weights_, torch.ones(1, dtype=torch.float64))
    x = randn(5, 1, 3, 3, seed=2)
    for sigma in SIGMAS + [torch.tensor([1e-2, 0.1, 1.0, 10.0, 1e2], dtype=torch.float64)]:
        torch.testing.assert_close(gmm(x, sigma), gauss(x, sigma), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("components", ["kmeans", "classes"])
def test_one_image_per_component_is_the_empirical_denoiser(components):
    data = tiny_images(8, seed=3)
    y = torch.arange(8) if components == "classes" else None
    gmm = GaussianMixtureDenoiser(n_components=8, components=components).fit(data, y)
    assert torch.equal(gmm.weights_, torch.full((8,), 1 / 8, dtype=torch.float64))
    assert torch.equal(gmm.eigvals_, torch.zeros(8, 36, dtype=torch.float64))  # zero covariance each
    emp = ad.EmpiricalOptimalDenoiser().fit(data)
    x = torch.cat([data[:3] + 0.05 * randn(3, 1, 6, 6, seed=4), tiny_images(3, seed=5)])
    for sigma in SIGMAS + [torch.tensor([1e-2, 0.1, 0.3, 1.0, 10.0, 1e2], dtype=torch.float64)]:
        torch.testing.assert_close(gmm(x, sigma), emp(x, sigma), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rank", [None, 5])
def test_score_is_gradient_of_log_mixture_density(rank):
    """``score = grad_x log sum_k pi_k N(x; mu_k, Sigma_k + sigma^2 I)`` with the groups' own
    frequencies, means and covariances (divisor N_k), computed here from the labels."""
    X, labels = blobs(seed=6)
    den = GaussianMixtureDenoiser(components="classes", rank=rank).fit(X, labels)
    flat, eye = X.reshape(len(X), -1), torch.eye(9, dtype=torch.float64)
    parts = [flat[labels == c] for c in labels.unique()]
    covs = [torch.cov(p.T, correction=0) for p in parts]
    if rank is not None:  # the Gaussian of each group keeps its top eigenpairs
        covs = [(U[:, -rank:] * lam[-rank:]) @ U[:, -rank:].T for lam, U in map(torch.linalg.eigh, covs)]
    x = torch.cat([flat[[0, 40, 90]], (flat[0] + flat[40]) / 2 + 0.3 * randn(2, 9, seed=7)]).reshape(5, 1, 3, 3)
    sigma = torch.tensor([0.05, 0.3, 1.0, 1.5, 7.0], dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    log_p = sum(torch.logsumexp(torch.stack([  # per image, over the groups: log pi_k + log N(x; mu_k, S_k + s^2 I)
        math.log(len(p) / len(X)) + torch.distributions.MultivariateNormal(p.mean(0), cov + s**2 * eye).log_prob(xn)
        for p, cov in zip(parts, covs)]), 0) for xn, s in zip(xr.reshape(5, 9), sigma))
    (grad,) = torch.autograd.grad(log_p, xr)
    torch.testing.assert_close(den.score(x, sigma), grad, rtol=1e-10, atol=1e-10)


def test_classes_give_class_frequencies_and_means():
    X, labels = blobs(seed=8)
    den = GaussianMixtureDenoiser(components="classes").fit(X, labels)
    flat = X.reshape(len(X), -1)
    assert den.weights_.dtype == torch.float64 and den.means_.shape == (3, 9) and den.eigvecs_.shape == (3, 9, 9)
    torch.testing.assert_close(den.weights_, torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64))
    for k, label in enumerate([3, 13, 23]):  # components in increasing order of label
        group = flat[labels == label]
        torch.testing.assert_close(den.means_[k], group.mean(0))
        torch.testing.assert_close((den.eigvecs_[k] * den.eigvals_[k]) @ den.eigvecs_[k].T,
                                   torch.cov(group.T, correction=0))
    assert den.classes_ is None  # an unconditional mixture: no labels at denoise time
    with pytest.raises(ValueError, match="without labels"):
        den(X[:2], 1.0, y=labels[:2])
    assert den(X[:2], 1.0).shape == (2, 1, 3, 3)


def test_kmeans_finds_separated_groups_and_is_seeded():
    X, labels = blobs(seed=9)
    den = GaussianMixtureDenoiser(n_components=3, random_state=4).fit(X, labels)  # y is ignored by k-means
    order = torch.argsort(den.means_[:, 0])
    torch.testing.assert_close(den.weights_[order], torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64))
    flat = X.reshape(len(X), -1)
    for k, label in zip(order, [3, 13, 23]):
        torch.testing.assert_close(den.means_[k], flat[labels == label].mean(0))
    again = GaussianMixtureDenoiser(n_components=3, random_state=4).fit(X)
    for name in ("weights_", "means_", "eigvals_", "eigvecs_"):
        assert torch.equal(getattr(again, name), getattr(den, name))


def test_empty_kmeans_clusters_are_dropped():
    X = tiny_images(2, seed=10).repeat(3, 1, 1, 1)  # 6 images, 2 distinct
    with pytest.warns(ConvergenceWarning):
        den = GaussianMixtureDenoiser(n_components=4).fit(X)
    assert den.weights_.shape == (2,) and torch.equal(den.weights_, torch.full((2,), 0.5, dtype=torch.float64))
    assert bool(torch.isfinite(den(tiny_images(3, seed=11), 0.5)).all())


def test_fit_chunk_size_does_not_change_result():
    X, labels = blobs(seed=12)
    a = GaussianMixtureDenoiser(components="classes", chunk_size=1).fit(X, labels)
    b = GaussianMixtureDenoiser(components="classes", chunk_size=1000).fit(X, labels)
    torch.testing.assert_close(a.means_, b.means_, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.eigvals_, b.eigvals_, rtol=1e-10, atol=1e-13)


def test_bad_hyper_parameters_and_fits_are_refused():
    X, labels = blobs(sizes=(3, 4, 5), seed=13)
    for name, bad in (("n_components", 0), ("n_components", 2.5), ("components", "gmm"), ("rank", 0),
                      ("rank", 1.5), ("random_state", -1), ("random_state", "seed"), ("chunk_size", 0)):
        with pytest.raises(ValueError, match=name):
            GaussianMixtureDenoiser(**{name: bad}).fit(X)
        with pytest.raises(ValueError, match=name):
            GaussianMixtureDenoiser().set_params(**{name: bad})
    with pytest.raises(ValueError, match=r"rank \(at most d = 9\)"):
        GaussianMixtureDenoiser(n_components=2, rank=10).fit(X)
    with pytest.raises(ValueError, match="n_components = 13 k-means clusters need at least as many training images"):
        GaussianMixtureDenoiser(n_components=13).fit(X)
    with pytest.raises(ValueError, match=r"components='classes' .* fit\(X, y\)"):
        GaussianMixtureDenoiser(components="classes").fit(X)
    with pytest.raises(ValueError, match=r"y must have shape \(12,\)"):
        GaussianMixtureDenoiser(components="classes").fit(X, labels[:5])
    with pytest.raises(ValueError, match="integer class labels"):
        GaussianMixtureDenoiser(components="classes").fit(X, labels.double())
    den = GaussianMixtureDenoiser(n_components=2).fit(X)
    before = den.means_.clone()
    with pytest.raises(ValueError, match="rank"):
        den.set_params(rank=10).fit(X)  # a failed fit changes nothing
    assert torch.equal(den.means_, before)
