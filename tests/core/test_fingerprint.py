"""Data fingerprints (core.fingerprint): a fitted denoiser records which images it saw."""

import analytic_denoisers as ad
from references import tiny_images


def test_fingerprint_identifies_the_data_not_its_order():
    X = tiny_images(6, seed=3)
    a = ad.GaussianDenoiser().fit(X).fingerprint_
    assert ad.GaussianDenoiser().fit(X.flip(0)).fingerprint_ == a
    assert ad.GaussianDenoiser().fit(X[:5]).fingerprint_ != a
