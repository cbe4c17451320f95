"""Shared by the analysis tests: a Gaussian denoiser fitted to samples of a known Gaussian."""

import pytest

import analytic_denoisers as ad
from references import gaussian_problem


@pytest.fixture(scope="module")
def gaussian():
    X, _, _ = gaussian_problem((1, 3, 3), n=500)
    return ad.GaussianDenoiser().fit(X)
