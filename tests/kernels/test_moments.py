"""Mergeable moments (kernels.moments): chunked accumulation and merging two parts give the moments
of the whole."""

import pytest
import torch

from analytic_denoisers.kernels.moments import merge_moments, moments
from references import randn


def test_moments_merge_matches_direct_computation():
    X = randn(90, 7, seed=103) * 3 + 1
    m = merge_moments(moments(X[:10], chunk_size=3), moments(X[10:], chunk_size=50))
    assert m.count == 90
    torch.testing.assert_close(m.mean, X.mean(0))
    torch.testing.assert_close(m.covariance(ddof=1), torch.cov(X.T))
    torch.testing.assert_close(moments(X, chunk_size=1).covariance(), moments(X).covariance(),
                               rtol=1e-12, atol=1e-14)


def test_covariance_needs_enough_samples_and_merges_need_one_dimension():
    one = moments(randn(1, 4, seed=104))
    torch.testing.assert_close(one.covariance(), torch.zeros(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="ddof = 1 needs at least 2 samples, have 1"):
        one.covariance(ddof=1)
    with pytest.raises(ValueError, match="cannot merge moments"):
        merge_moments(one, moments(randn(2, 5, seed=105)))
