"""Model selection with scikit-learn: score(x, sigma) is the diffusion score, so GridSearchCV needs
metrics.denoising_scorer, and says so without it."""

import pytest
import torch
from sklearn.model_selection import GridSearchCV

import analytic_denoisers as ad
from analytic_denoisers import metrics
from analytic_denoisers.core.noise import seeded_noise
from references import gaussian_problem, tiny_images

X = tiny_images(40, (1, 6, 6), seed=70)


def test_denoising_scorer_is_minus_the_seeded_denoising_mse():
    den = ad.GaussianDenoiser().fit(X[:20])
    eps = seeded_noise(range(3, 23), (1, 6, 6), dtype=X.dtype)
    expected = -((den(X[20:] + 0.5 * eps, 0.5) - X[20:]).square().mean(dim=(1, 2, 3))).mean()
    assert metrics.denoising_scorer(0.5, seed=3)(den, X[20:]) == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        metrics.denoising_scorer([0.5, -1.0])


def test_grid_search_with_the_denoising_scorer_picks_the_best_candidate():
    # samples of a Gaussian: the full-rank Wiener filter is the optimal denoiser, a rank-1 one
    # throws most of the signal away, so the search must pick rank None (the sign of the scorer
    # decides: it would pick rank 1 with the MSE itself as the score)
    data, _, _ = gaussian_problem((1, 3, 3), n=600, seed=71)
    search = GridSearchCV(ad.GaussianDenoiser(), {"rank": [1, None]},
                          scoring=metrics.denoising_scorer([0.3, 1.0]), cv=3).fit(data)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_ == {"rank": None} and scores[1] > scores[0] + 1e-3


def test_grid_search_without_a_scorer_says_what_to_pass():
    with pytest.raises(TypeError, match="denoising_scorer"):
        GridSearchCV(ad.GaussianDenoiser(), {"rank": [2, 4]}, cv=2, error_score="raise").fit(X)
    labels = torch.arange(len(X)) % 3 + 1  # with labels, sklearn passes them where sigma goes
    with pytest.raises(TypeError, match="denoising_scorer"):
        GridSearchCV(ad.GaussianDenoiser(), {"rank": [2, 4]}, cv=2, error_score="raise").fit(X, labels)
