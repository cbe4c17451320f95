"""Calibration of a hyper-parameter per noise level against a target denoiser (scales.calibration)."""

import json

import numpy as np
import pytest

import analytic_denoisers as ad
from analytic_denoisers.scales.calibration import calibrate
from analytic_denoisers.scales.table import Table
from references import tiny_images


@pytest.fixture(scope="module")
def locality_problem():
    data, held = tiny_images(10, (1, 4, 4), seed=1), tiny_images(3, (1, 4, 4), seed=2)
    return data, held, ad.PCALocalityDenoiser(threshold=0.3).fit(data)


@pytest.mark.parametrize("metric, best", [("mse", 0.0), ("r2", 1.0)])
def test_calibration_recovers_the_target_threshold(locality_problem, metric, best):
    data, held, target = locality_problem
    est = ad.PCALocalityDenoiser(threshold=0.05).fit(data)
    sigmas = [0.05, 0.2, 1.0, 5.0]
    res = calibrate(est, "threshold", [0.05, 0.3, 0.6], target, held, sigmas,
                           metric=metric, progress=False)
    assert res.schedule == Table(sigmas, [0.3] * 4) and res.best.tolist() == [1] * 4
    assert res.scores.shape == (4, 3) and (res.scores[:, 1] == best).all()
    assert (res.scores[:, [0, 2]] != best).all()  # the masks differ: the choice is not a tie
    assert res.metric == metric and res.candidates == [0.05, 0.3, 0.6] and res.param == "threshold"
    assert est.threshold == 0.05  # restored
    json.dumps(res.to_dict())


def test_calibration_is_batch_invariant_and_accepts_a_callable_target(locality_problem):
    data, held, target = locality_problem
    est = ad.PCALocalityDenoiser().fit(data)
    args = (est, "threshold", [0.1, 0.3], lambda x, s: target.denoise(x, s), held, [0.3, 2.0])
    a = calibrate(*args, progress=False)
    b = calibrate(*args, batch_size=1, progress=False)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    assert a.schedule == b.schedule


def test_calibration_of_a_fit_time_parameter_refits_clones():
    X, held = tiny_images(40, (1, 3, 3), seed=3), tiny_images(4, (1, 3, 3), seed=4)
    target = ad.GaussianDenoiser(rank=3).fit(X)
    est = ad.GaussianDenoiser().fit(X)
    res = calibrate(est, "rank", [1, 3, 6, 9], target, held, [0.1, 1.0, 10.0], fit_X=X,
                           progress=False)
    assert res.schedule.values == (3, 3, 3) and (res.scores[:, 1] == 0).all()
    assert est.rank is None and est.eigvals_.shape == (9,)  # the estimator itself is untouched
    with pytest.warns(UserWarning, match="fit_X"):
        calibrate(est, "rank", [1, 3], target, held, [1.0], progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"param": "patch_size"}, "not a hyper-parameter"),
    ({"candidates": []}, "candidates"),
    ({"candidates": [0.1, None]}, "candidates"),
    ({"target": 3}, "target"),
    ({"metric": "psnr"}, "metric"),
    ({"sigmas": [0.0]}, "sigmas"),
    ({"batch_size": 0}, "batch_size"),
])
def test_calibration_rejects_bad_input(locality_problem, kwargs, match):
    data, held, target = locality_problem
    args = dict(estimator=ad.PCALocalityDenoiser().fit(data), param="threshold",
                candidates=[0.1, 0.3], target=target, X=held, sigmas=[1.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        calibrate(**args, progress=False)
