"""PatchFlexDenoiser (denoisers.flex): the whole denoiser against an explicit-loop float64
reference, its closed-form cases (mass 1: empirical; an identity sensitivity: per-pixel softmax),
the network source (a Gaussian network gives the Wiener patches), save / load of the network
maps, refusals, and the contract suite."""

import math

import pytest
import torch
from sklearn.base import clone

import analytic_denoisers as ad
from analytic_denoisers.denoisers.flex import CIFAR10_MASS, NETWORK_SIGMAS, PUBLISHED_CIFAR10_MASSES, PatchFlexDenoiser
from analytic_denoisers.kernels.flex import sensitivity_maps
from analytic_denoisers.registry import load
from analytic_denoisers.testing import CHECKS, check_denoiser
from references import SIGMAS, TINY_UNET, near_data, tiny_images


def covariance_wiener(data, sigma):
    """``Sigma (Sigma + sigma^2 I)^-1`` from the biased covariance, by a linear solve (no eigenbasis)."""
    X = data.reshape(len(data), -1).double()
    centred = X - X.mean(0)
    cov = centred.T @ centred / len(X)
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    return torch.linalg.solve(cov + sigma**2 * eye, cov).T  # cov (cov + s^2 I)^-1; both symmetric, commuting


def flex_reference(x, sigma, data, S, mass, aggregation="composite"):
    """The whole denoiser as explicit loops in float64.

    Per output pixel m: its patch, the pixels of row ``S[m]`` in decreasing order (ties by
    index) until they hold ``mass`` of the row (every nonzero one for mass 1), and m itself.
    Per query and patch: the softmax over training images of the squared distance on the patch.
    "composite": each pixel averages the posterior means of the patches covering it;
    "own-patch": pixel m is its own patch's posterior mean at m.
    """
    data = data.reshape(len(data), -1).double()
    d = data.shape[1]
    patches = []
    for m in range(d):
        row = [float(v) for v in S[m]]
        target, held, patch = mass * sum(sorted(row, reverse=True)), 0.0, {m}
        for n in sorted(range(d), key=lambda n: (-row[n], n)):
            if (held >= target) if mass < 1 else row[n] == 0:
                break
            patch.add(n)
            held += row[n]
        patches.append(sorted(patch))
    out = []
    for q in x.reshape(len(x), -1).double():
        num, count, own = [0.0] * d, [0] * d, [0.0] * d
        for m, patch in enumerate(patches):
            logits = [-sum((q[n] - image[n]) ** 2 for n in patch) / (2 * sigma**2) for image in data.tolist()]
            top = max(logits)
            w = [math.exp(v - top) for v in logits]
            total = sum(w)
            for n in patch:
                num[n] += sum(wi * image[n] for wi, image in zip(w, data.tolist())) / total
                count[n] += 1
            own[m] = sum(wi * image[m] for wi, image in zip(w, data.tolist())) / total
        out.append([a / c for a, c in zip(num, count)] if aggregation == "composite" else own)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


@pytest.fixture(scope="module")
def problem():
    return tiny_images(8, (1, 5, 5), seed=1)


@pytest.mark.parametrize("aggregation", ["composite", "own-patch"])
@pytest.mark.parametrize("mass", [0.3, 0.8])
def test_matches_loop_reference(problem, mass, aggregation):
    den = PatchFlexDenoiser(mass=mass, aggregation=aggregation, chunk_size=3).fit(problem)
    for sigma in SIGMAS:
        x = near_data(problem, 2, sigma, seed=2)  # two queries near training images, one far
        S = covariance_wiener(problem, sigma).abs()
        torch.testing.assert_close(den.sensitivity_at(sigma), S, rtol=0, atol=1e-10)
        ref = flex_reference(x, sigma, problem, S, mass, aggregation)
        torch.testing.assert_close(den(x, sigma), ref, rtol=0, atol=1e-10)


def test_mass_schedule_is_read_per_sigma(problem):
    schedule = ad.scales.Table([0.1, 10.0], [0.3, 0.8])
    den = PatchFlexDenoiser(mass=schedule).fit(problem)
    x = tiny_images(3, (1, 5, 5), seed=3)
    sigma = torch.tensor([0.1, 10.0, 0.1], dtype=torch.float64)
    for k in range(3):
        s = float(sigma[k])
        ref = flex_reference(x[k:k + 1], s, problem, covariance_wiener(problem, s).abs(), schedule(s))
        torch.testing.assert_close(den(x, sigma)[k:k + 1], ref, rtol=0, atol=1e-10)


def test_mass_one_is_the_empirical_denoiser(problem):
    den = PatchFlexDenoiser(mass=1.0).fit(problem)
    empirical = ad.EmpiricalOptimalDenoiser().fit(problem)
    x = tiny_images(4, (1, 5, 5), seed=4)
    for sigma in SIGMAS:
        assert bool((den.sensitivity_at(sigma) > 0).all())  # strictly positive: whole-image patches
        assert bool(den.masks(sigma).all())
        torch.testing.assert_close(den(x, sigma), empirical(x, sigma), rtol=0, atol=1e-12)


@pytest.mark.parametrize("aggregation", ["composite", "own-patch"])
def test_identity_sensitivity_is_a_per_pixel_softmax(problem, aggregation):
    """A network D(x) = x / (1 + sigma^2) has the Jacobian I / (1 + sigma^2): one-pixel patches."""
    den = PatchFlexDenoiser(mass=0.9, sensitivity="network", network=lambda x, sigma: x / (1 + sigma**2),
                            sigmas=[0.1, 1.0], aggregation=aggregation).fit(problem)
    x = tiny_images(3, (1, 5, 5), seed=5)
    for sigma in (0.1, 1.0):
        torch.testing.assert_close(den.sensitivity_at(sigma), torch.eye(25, dtype=torch.float64) / (1 + sigma**2))
        assert torch.equal(den.masks(sigma), torch.eye(25, dtype=torch.bool))
        q, v = x.reshape(3, 1, 25), problem.reshape(1, 8, 25)
        expect = (torch.softmax(-(q - v) ** 2 / (2 * sigma**2), 1) * v).sum(1).reshape(x.shape)
        torch.testing.assert_close(den(x, sigma), expect, rtol=0, atol=1e-12)


def test_a_gaussian_network_gives_the_wiener_patches(problem):
    """The Gaussian denoiser's Jacobian is its Wiener matrix, the same at every input."""
    gaussian = ad.GaussianDenoiser().fit(problem)
    grid = [0.05, 0.5, 5.0]
    net = PatchFlexDenoiser(mass=0.6, sensitivity="network", network=gaussian, sigmas=grid, n_probe=4).fit(problem)
    wiener = PatchFlexDenoiser(mass=0.6).fit(problem)
    assert net.sensitivity_.shape == (3, 25, 25) and net.mean_ is None and wiener.sensitivity_ is None
    assert torch.equal(net.sensitivity_sigmas_, torch.tensor(grid, dtype=torch.float64))
    x = tiny_images(3, (1, 5, 5), seed=6)
    for sigma in grid:
        torch.testing.assert_close(net.sensitivity_at(sigma), wiener.sensitivity_at(sigma), rtol=0, atol=1e-12)
        assert torch.equal(net.masks(sigma), wiener.masks(sigma))
        torch.testing.assert_close(net(x, sigma), wiener(x, sigma), rtol=0, atol=1e-12)
    # between the levels: the map of the level nearest in log-sigma
    for sigma, level in ((0.1, 0), (0.2, 1), (1.5, 1), (2.0, 2), (80.0, 2), (1e-3, 0)):
        assert torch.equal(net.sensitivity_at(sigma), net.sensitivity_[level])


def test_default_network_grid_and_probe_choice(problem):
    gaussian = ad.GaussianDenoiser().fit(problem)
    den = PatchFlexDenoiser(sensitivity="network", network=gaussian, n_probe=100).fit(problem)  # all 8 images
    assert den.sensitivity_sigmas_.tolist() == pytest.approx(list(NETWORK_SIGMAS), rel=1e-15)
    assert len(NETWORK_SIGMAS) == 10 and NETWORK_SIGMAS[0] == pytest.approx(0.002) and NETWORK_SIGMAS[-1] == 80.0

    def quadratic(x, sigma):  # a Jacobian that depends on x: the probes and their noise matter
        return x**2

    maps = [PatchFlexDenoiser(sensitivity="network", network=quadratic, sigmas=[0.5], n_probe=3,
                              random_state=seed).fit(problem).sensitivity_ for seed in (0, 0, 1)]
    assert torch.equal(maps[0], maps[1]) and not torch.equal(maps[0], maps[2])


def test_save_load_keeps_the_network_maps_not_the_network(problem, tmp_path):
    gaussian = ad.GaussianDenoiser().fit(problem)
    den = PatchFlexDenoiser(mass=0.5, sensitivity="network", network=gaussian, sigmas=[0.1, 1.0]).fit(problem)
    path = den.save(tmp_path / "flex.h5")
    assert den.network is gaussian  # saving did not touch the estimator
    back = load(path, classes=[PatchFlexDenoiser])
    assert back.network is None
    assert {k: v for k, v in back.get_params(deep=False).items() if k != "network"} == \
        {k: v for k, v in den.get_params(deep=False).items() if k != "network"}
    assert torch.equal(back.sensitivity_, den.sensitivity_)
    assert torch.equal(back.sensitivity_sigmas_, den.sensitivity_sigmas_)
    assert back.mean_ is None and back.eigvals_ is None
    x = tiny_images(3, (1, 5, 5), seed=7)
    for sigma in (0.05, 0.3, 3.0):
        assert torch.equal(back(x, sigma), den(x, sigma))
    with pytest.raises(ValueError, match="needs network="):  # refitting needs the network again
        back.fit(problem)
    wiener = PatchFlexDenoiser(mass=CIFAR10_MASS).fit(problem)  # and the Wiener source, with a schedule
    back = load(wiener.save(tmp_path / "wiener.h5"), classes=[PatchFlexDenoiser])
    assert back.mass == CIFAR10_MASS and back.sensitivity_ is None
    assert torch.equal(back(x, 0.3), wiener(x, 0.3))


def test_class_conditional_uses_the_class_images_and_the_global_patches(problem):
    y = torch.tensor([0, 1] * 4)
    den = PatchFlexDenoiser(mass=0.5).fit(problem, y)
    x, labels = tiny_images(3, (1, 5, 5), seed=8), torch.tensor([1, 0, 1])
    out = den(x, 0.4, y=labels)
    S = covariance_wiener(problem, 0.4).abs()
    for k, label in enumerate(labels.tolist()):
        ref = flex_reference(x[k:k + 1], 0.4, problem[y == label], S, 0.5)
        torch.testing.assert_close(out[k:k + 1], ref, rtol=0, atol=1e-10)


def test_published_cifar10_schedule_is_the_default():
    assert PatchFlexDenoiser().mass == CIFAR10_MASS
    steps = ad.schedules.karras(18, 0.002, 80.0, 7.0)[:-1]  # the published code's 18 EDM levels, 80 first
    assert [CIFAR10_MASS(float(s)) for s in steps] == list(PUBLISHED_CIFAR10_MASSES)
    assert CIFAR10_MASS(100.0) == 1.0 and CIFAR10_MASS(1e-3) == 0.3


def test_unusable_hyper_parameters_are_refused(problem):
    def quadratic(x, sigma):
        return x**2

    for params, match in (
            (dict(sensitivity="network"), "needs network="),
            (dict(network=quadratic), "network is used only with sensitivity='network'"),
            (dict(sigmas=[0.1, 1.0]), "sigmas is used only with sensitivity='network'"),
            (dict(sensitivity="network", network=quadratic, sigmas=[0.1, 0.1]), "sigmas must be distinct"),
            (dict(sensitivity="network", network=quadratic, sigmas=[0.0, 1.0]), "sigmas must be"),
            (dict(mass=0.0), "mass must be a number in"), (dict(mass=1.5), "mass must be a number in"),
            (dict(sensitivity="jacobian"), "sensitivity must be one of"),
            (dict(aggregation="mean"), "aggregation must be one of"),
            (dict(n_probe=0), "n_probe"), (dict(random_state=-1), "random_state")):
        with pytest.raises(ValueError, match=match):
            PatchFlexDenoiser(**params).fit(problem)
    with pytest.raises(ValueError, match="does not let autograd reach"):
        PatchFlexDenoiser(sensitivity="network", network=lambda x, s: x.detach(), sigmas=[1.0]).fit(problem)
    den = PatchFlexDenoiser(mass=lambda sigma: 1.5).fit(problem)  # a schedule's value: refused where read
    with pytest.raises(ValueError, match="mass at sigma = 0.5 must be a number in"):
        den(tiny_images(1, (1, 5, 5)), 0.5)


@pytest.mark.parametrize("params", [{}, {"mass": 0.4}, {"mass": 0.4, "aggregation": "own-patch"}])
def test_contract(params):
    check_denoiser(lambda **p: PatchFlexDenoiser(**{**params, **p}))


def test_contract_with_the_network_source():
    """The network is not saved (load gives network=None): every check but the round trip,
    which test_save_load_keeps_the_network_maps_not_the_network covers."""
    network = ad.GaussianDenoiser().fit(tiny_images(16, seed=1))
    check_denoiser(lambda **p: PatchFlexDenoiser(**{"mass": 0.4, "sensitivity": "network", "network": network,
                                                     "sigmas": [0.1, 1.0], **p}),
                   checks=[name for name in CHECKS if name != "save_load_round_trip"])


def test_clone_shares_the_fitted_network(problem):
    gaussian = ad.GaussianDenoiser().fit(problem)
    den = PatchFlexDenoiser(mass=0.5, sensitivity="network", network=gaussian, sigmas=[0.3])
    twin = clone(den)
    assert twin.network is gaussian and twin.sigmas == [0.3] and twin.sigmas is not den.sigmas
    assert torch.equal(twin.fit(problem).sensitivity_, den.fit(problem).sensitivity_)


def test_network_maps_of_a_unet_match_finite_differences():
    """fit averages |Jacobian rows| of the UNet over the probes random_state picks (with noise
    seeded by it); two of the rows, against central differences."""
    X = tiny_images(16, (1, 6, 6))
    unet = ad.UNetDenoiser(**TINY_UNET).fit(X.float())
    den = PatchFlexDenoiser(sensitivity="network", network=unet, sigmas=[0.1, 2.0], n_probe=3).fit(X)
    assert den.sensitivity_.shape == (2, 36, 36) and bool(torch.isfinite(den.sensitivity_).all())
    probe = torch.randperm(16, generator=torch.Generator().manual_seed(0))[:3]
    assert torch.equal(den.sensitivity_, sensitivity_maps(unet, X[probe], [0.1, 2.0], seed=0))
    eps = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z, h, pixels = X[probe] + 2.0 * eps, 1e-6, [7, 20]
    rows = torch.zeros(3, 2, 36, dtype=torch.float64)
    for j in range(36):
        e = torch.zeros(1, 36, dtype=torch.float64)
        e[0, j] = h
        diff = (unet(z + e.reshape(1, 1, 6, 6), 2.0) - unet(z - e.reshape(1, 1, 6, 6), 2.0)) / (2 * h)  # (3, 1, 6, 6)
        rows[:, :, j] = diff.reshape(3, 36)[:, pixels]
    torch.testing.assert_close(den.sensitivity_[1, pixels], rows.abs().mean(0), rtol=1e-5, atol=1e-7)
