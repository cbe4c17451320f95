"""The public contract suite (analytic_denoisers.testing) over every registered denoiser."""

import pytest
import torch

from sklearn.base import BaseEstimator

import analytic_denoisers as ad
from analytic_denoisers.core.validation import as_training_images
from analytic_denoisers.registry import CLASSES, METHODS
from analytic_denoisers.testing import CHECKS, check_denoiser, tiny_images
from references import TINY_UNET

# every registered class, variants that take a different code path, and the reference network
# (a tiny UNet trained for two steps): name -> (estimator class, params)
CASES = {name: (cls, {}) for name, cls in METHODS.items()}
CASES["els"] = (METHODS["local-score"], dict(patch_size=3, equivariant=True, padding="circular"))
CASES["bbels"] = (METHODS["local-score"], dict(patch_size=3, equivariant=True, padding="zeros"))
CASES["gaussian-mixture"] = (METHODS["gaussian-mixture"], dict(n_components=3))  # the suite fits on 5 images
CASES["anchored-composite"] = (METHODS["anchored-composite"], dict(n_components=3))
CASES["golddiff"] = (METHODS["golddiff"], dict(k_min=2, k_max=4))  # a real subset of the suite's images
CASES["knn"] = (METHODS["knn"], dict(n_neighbors=4, n_draws=3))  # approximate: 7 of the suite's images
CASES["knn-proposal"] = (METHODS["knn"], dict(n_neighbors=4, n_draws=3, sampling="proposal"))
CASES["patch-flex-own-patch"] = (METHODS["patch-flex"], dict(mass=0.4, aggregation="own-patch"))
CASES["sigma-cfdm"] = (METHODS["sigma-cfdm"], dict(num_noise=3))
CASES["unet"] = (ad.UNetDenoiser, TINY_UNET)
# any network through the adapter: here D(x) = x / (1 + sigma^2), the Wiener filter of N(0, I)
CASES["network"] = (ad.NetworkDenoiser, dict(network=lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2),
                                              parameterization="denoised", time_input="sigma"))


def factory(case):
    cls, preset = CASES[case]
    return lambda **params: cls(**{**preset, **params})


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_contract(case, check):
    assert check_denoiser(factory(case), checks=[check]) == [check]


def test_every_registered_class_is_exported_and_covered():
    assert {cls for cls, _ in CASES.values()} == set(CLASSES.values())
    for name, cls in CLASSES.items():
        assert getattr(ad, name) is cls


def test_a_broken_denoiser_fails_the_suite():
    class Shifted(ad.GaussianDenoiser):  # its eps disagrees with its own denoise
        def eps(self, x, sigma, y=None):
            return super().eps(x, sigma, y) + 1e-3

    with pytest.raises(AssertionError, match="score_and_eps_consistent_with_denoise"):
        check_denoiser(Shifted, checks=["score_and_eps_consistent_with_denoise"])
    with pytest.raises(ValueError, match="unknown checks"):
        check_denoiser(Shifted, checks=["no such check"])


def test_a_users_own_denoiser_passes_the_whole_suite():
    class Shrink(ad.DenoiserMixin, BaseEstimator):  # D(x) = x / (1 + sigma^2): the Wiener filter of N(0, I)
        def fit(self, X, y=None):
            self._check_params()
            self._set_data_summary(as_training_images(X))
            return self

        def _denoise(self, x, sigma, y):
            return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    # no hyper-parameters: nothing to refuse; every other check runs, the save round trip too
    assert check_denoiser(Shrink) == list(CHECKS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_input_stays_on_cuda_and_matches_cpu(case):
    den, x = factory(case)().fit(tiny_images(16, seed=1)), tiny_images(3, seed=9)
    out = den(x.cuda(), 0.5)
    assert out.device.type == "cuda" and out.dtype == x.dtype
    torch.testing.assert_close(out.cpu(), den(x, 0.5))
