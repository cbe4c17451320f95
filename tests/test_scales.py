"""Scale schedules: lookup, serialisation, data-derived rules with known answers, calibration."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import analytic_denoisers as ad
from analytic_denoisers import scales
from analytic_denoisers.core import artifact as io
from analytic_denoisers.scales import Table
from references import randn, tiny_images


# -- value_at ----------------------------------------------------------------------------------

def test_value_at_numbers_callables_and_tables():
    assert scales.value_at(5, 0.3) == 5 and type(scales.value_at(5, 0.3)) is int
    assert scales.value_at(0.25, torch.tensor(2.0)) == 0.25
    assert scales.value_at(lambda s: 2 * s, 0.5) == 1.0
    assert scales.value_at(Table([0.1, 10.0], [3, 9]), torch.tensor(20.0)) == 9


@pytest.mark.parametrize("schedule", ["5", None, [3, 5], True])
def test_value_at_rejects_what_is_not_a_scale(schedule):
    with pytest.raises(ValueError, match="number or a schedule"):
        scales.value_at(schedule, 1.0)


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, [1.0, 2.0], torch.ones(2)])
def test_value_at_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        scales.value_at(3, sigma)


def test_value_at_rejects_a_schedule_returning_a_non_number():
    with pytest.raises(ValueError, match="returned"):
        scales.value_at(lambda s: "big", 1.0)


# -- Table -------------------------------------------------------------------------------------

def test_table_nearest_lookup_is_in_log_sigma_and_holds_the_ends():
    t = Table([10.0, 0.1, 1.0], [15, 3, 7])  # any order
    assert t.sigmas == (0.1, 1.0, 10.0) and t.values == (3, 7, 15)
    assert [t(s) for s in (0.01, 0.1, 0.2, 0.5, 5.0, 1e4)] == [3, 3, 3, 7, 15, 15]
    assert t(math.sqrt(0.1)) == 7  # the log-midpoint goes to the larger level
    assert all(type(t(s)) is int for s in (0.01, 1.0, 100.0))


def test_table_log_linear_interpolates_in_log_sigma():
    t = Table([0.1, 10.0], [0.0, 0.2], interpolation="log-linear")
    assert t(1.0) == pytest.approx(0.1) and t(0.01) == 0.0 and t(100.0) == 0.2
    assert t(10 ** -0.5) == pytest.approx(0.05)


def test_table_accepts_tensors_and_arrays():
    t = Table(torch.tensor([0.5, 2.0]), np.array([3, 5]))
    assert t == Table([0.5, 2.0], [3, 5]) and t(1.9) == 5


@pytest.mark.parametrize("sigmas, values, kwargs, match", [
    ([], [], {}, "at least one"),
    ([0.1, 1.0], [3], {}, "same length"),
    ([0.0, 1.0], [3, 5], {}, "positive"),
    ([-1.0, 1.0], [3, 5], {}, "positive"),
    ([math.inf, 1.0], [3, 5], {}, "positive"),
    ([1.0, 1.0], [3, 5], {}, "distinct"),
    ([[0.1, 1.0]], [[3, 5]], {}, "1-D"),
    ([0.1, 1.0], [3, math.nan], {}, "finite"),
    ([0.1, 1.0], ["a", "b"], {}, "real numbers"),
    ([0.1, 1.0], [True, False], {}, "real numbers"),
    ([0.1, 1.0], [3, 5], {"interpolation": "cubic"}, "interpolation"),
])
def test_table_validation(sigmas, values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Table(sigmas, values, **kwargs)


def test_table_from_steps_pairs_each_value_with_its_step_sigma():
    sigmas = ad.schedules.karras(4, 0.002, 80)  # 4 steps, ends in 0
    t = Table.from_steps([27, 15, 7, 3], sigmas)
    assert t.sigmas == tuple(sorted(sigmas[:-1].tolist())) and t.values == (3, 7, 15, 27)
    assert [t(float(s)) for s in sigmas[:-1]] == [27, 15, 7, 3]
    assert Table.from_steps([27, 15, 7, 3], sigmas[:-1]) == t  # the final 0 is optional
    with pytest.raises(ValueError, match="one value per step"):
        Table.from_steps([27, 15, 7], sigmas)
    with pytest.raises(ValueError, match="decreasing"):
        Table.from_steps([1, 2], [0.1, 1.0])


def test_table_equality_hash_repr_and_dict_round_trip():
    t = Table([0.1, 1.0], [0.3, 0.05], interpolation="log-linear")
    assert Table.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert hash(Table([0.1, 1.0], [0.3, 0.05], "log-linear")) == hash(t)
    assert t != Table([0.1, 1.0], [0.3, 0.05]) and t != 0.3
    assert eval(repr(t), {"Table": Table}) == t
    assert "..." in repr(Table(np.arange(1, 21), np.arange(20)))


# -- saving estimators that hold a schedule ----------------------------------------------------

def test_estimator_with_a_table_threshold_saves_and_loads(tmp_path):
    data, x = tiny_images(8, (1, 4, 4), seed=1), tiny_images(2, (1, 4, 4), seed=2)
    threshold = Table([0.1, 1.0, 10.0], [0.3, 0.1, 0.0], interpolation="log-linear")
    den = ad.PCALocalityDenoiser(threshold=threshold).fit(data)
    back = ad.load(den.save(tmp_path / "pca.h5"))
    assert isinstance(back.threshold, Table) and back.get_params() == den.get_params()
    for sigma in (0.05, 0.5, 20.0):
        assert torch.equal(back(x, sigma), den(x, sigma))
    assert io.info(tmp_path / "pca.h5")["params"]["threshold"]["__schedule__"] == "Table"


def test_a_plain_function_schedule_still_cannot_be_saved(tmp_path):
    den = ad.PCALocalityDenoiser(threshold=lambda s: 0.1).fit(tiny_images(4, (1, 3, 3)))
    with pytest.raises(ValueError, match="not JSON serialisable"):
        den.save(tmp_path / "x.h5")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_schedule_type_is_a_file_format_error(tmp_path):
    import h5py

    den = ad.PCALocalityDenoiser(threshold=Table([1.0], [0.1])).fit(tiny_images(4, (1, 3, 3)))
    path = den.save(tmp_path / "x.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["params"] = f.attrs["params"].replace('"Table"', '"Spline"')
    with pytest.raises(ad.FileFormatError, match="Spline"):
        ad.load(path)


# -- Wiener extent -----------------------------------------------------------------------------

def _gaussian(cov, image_shape):
    """Any object with eigvals_, eigvecs_ and image_shape_ will do (the exact covariance here)."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return SimpleNamespace(eigvals_=eigvals.flip(0).clamp_min(0), eigvecs_=eigvecs.flip(1),
                           image_shape_=image_shape)


def _exponential_covariance(size=8, length=1.5):
    """Stationary Gaussian process on size x size images: ``Sigma[n, m] = exp(-|p_n - p_m| / length)``."""
    index = torch.arange(size * size)
    i, j = (index // size).double(), (index % size).double()
    dist = torch.sqrt((i[:, None] - i[None]) ** 2 + (j[:, None] - j[None]) ** 2)
    return torch.exp(-dist / length)


SIGMAS = [1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 1e2, 1e3]


def test_wiener_extent_grows_from_one_pixel_to_the_correlation_length():
    gp = _gaussian(_exponential_covariance(8, 1.5), (1, 8, 8))
    sizes = scales.wiener_extent_schedule(gp, SIGMAS, threshold=0.1).values
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] == 1  # W -> I as sigma -> 0
    # as sigma -> inf, W / diag W -> Sigma[n, m] / Sigma[n, n] = exp(-r / 1.5) >= 0.1 <=> r <= 3.45
    assert sizes[-1] == 2 * 3 + 1
    assert len(set(sizes)) > 2


def test_wiener_extent_is_one_pixel_for_independent_pixels():
    diag = _gaussian(torch.diag(torch.linspace(2.0, 0.1, 2 * 5 * 5, dtype=torch.float64)), (2, 5, 5))
    assert set(scales.wiener_extent_schedule(diag, SIGMAS).values) == {1}


def test_wiener_extent_from_a_fitted_gaussian_denoiser():
    X = tiny_images(60, (1, 5, 5), seed=3)
    den = ad.GaussianDenoiser().fit(X)
    t = scales.wiener_extent_schedule(den, ad.schedules.karras(6, 1e-4, 80), threshold=0.05)
    assert len(t.sigmas) == 6  # the final 0 is ignored
    assert all(v % 2 == 1 and 1 <= v <= 9 for v in t.values) and t(1e-4) == 1
    # threshold 0: every mask is the whole image, so each radius reaches the farthest pixel
    radii = scales.wiener_radii(80.0, den.eigvals_, den.eigvecs_, den.image_shape_, 0.0)
    far = scales.chebyshev_distances((1, 5, 5)).amax(0)
    assert torch.equal(radii, far) and far[0] == 4 and far[12] == 2  # corner, centre
    with pytest.raises(NotFittedError):
        scales.wiener_extent_schedule(ad.GaussianDenoiser(), [1.0])
    with pytest.raises(ValueError, match="eigvals_"):
        scales.wiener_extent_schedule(object(), [1.0])
    with pytest.raises(ValueError, match="threshold"):
        scales.wiener_extent_schedule(den, [1.0], threshold=2)


@pytest.mark.parametrize("sigmas", [[], [0.0], [-1.0, 1.0], [1.0, 1.0], [math.nan], [[1.0]]])
def test_data_schedules_reject_bad_sigma_grids(sigmas):
    with pytest.raises(ValueError, match="sigmas"):
        scales.snr_resolution_schedule(tiny_images(4, (1, 4, 4)), sigmas)


# -- SNR / resolution rule ---------------------------------------------------------------------

def test_radial_power_spectrum_is_in_per_pixel_variance_units():
    X = 0.5 * randn(400, 2, 8, 8, seed=1)  # white noise, variance 0.25
    frequencies, power = scales.radial_power_spectrum(X)
    np.testing.assert_allclose(frequencies, [0.125, 0.25, 0.375, 0.5])
    np.testing.assert_allclose(power, 0.25, rtol=0.1)


def test_snr_rule_on_white_noise_switches_at_the_noise_power():
    X = 0.5 * randn(400, 1, 8, 8, seed=2)  # flat spectrum at 0.25 = 0.5**2
    t = scales.snr_resolution_schedule(X, [0.05, 0.3, 0.4, 0.6, 0.8, 5.0])
    assert t.values == (3, 3, 3, 15, 15, 15)  # wavelength 2 (Nyquist) -> 3; nothing above noise -> whole image


def test_snr_rule_is_monotone_and_coarsens_on_smooth_data():
    cov = _exponential_covariance(8, 2.0)
    X = 0.4 * (randn(300, 64, seed=3) @ torch.linalg.cholesky(cov).T).reshape(300, 1, 8, 8)
    sizes = scales.snr_resolution_schedule(X, SIGMAS).values
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] == 3 and sizes[-1] == 15 and len(set(sizes)) > 2
    assert all(v % 2 == 1 for v in sizes)


def test_wavelength_patch_size_rounds_up_to_odd_and_clips():
    assert [scales.wavelength_patch_size(w, (1, 8, 8)) for w in (0.5, 2, 8 / 3, 3, 4, 8, 100)] == [1, 3, 3, 3, 5, 9, 15]


def test_snr_rule_rejects_bad_snr():
    with pytest.raises(ValueError, match="snr"):
        scales.snr_resolution_schedule(tiny_images(4, (1, 4, 4)), [1.0], snr=0)


# -- calibration -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def locality_problem():
    data, held = tiny_images(10, (1, 4, 4), seed=1), tiny_images(3, (1, 4, 4), seed=2)
    return data, held, ad.PCALocalityDenoiser(threshold=0.3).fit(data)


@pytest.mark.parametrize("metric, best", [("mse", 0.0), ("r2", 1.0)])
def test_calibration_recovers_the_target_threshold(locality_problem, metric, best):
    data, held, target = locality_problem
    est = ad.PCALocalityDenoiser(threshold=0.05).fit(data)
    sigmas = [0.05, 0.2, 1.0, 5.0]
    res = scales.calibrate(est, "threshold", [0.05, 0.3, 0.6], target, held, sigmas,
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
    a = scales.calibrate(*args, progress=False)
    b = scales.calibrate(*args, batch_size=1, progress=False)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    assert a.schedule == b.schedule


def test_calibration_of_a_fit_time_parameter_refits_clones():
    X, held = tiny_images(40, (1, 3, 3), seed=3), tiny_images(4, (1, 3, 3), seed=4)
    target = ad.GaussianDenoiser(rank=3).fit(X)
    est = ad.GaussianDenoiser().fit(X)
    res = scales.calibrate(est, "rank", [1, 3, 6, 9], target, held, [0.1, 1.0, 10.0], fit_X=X,
                           progress=False)
    assert res.schedule.values == (3, 3, 3) and (res.scores[:, 1] == 0).all()
    assert est.rank is None and est.eigvals_.shape == (9,)  # the estimator itself is untouched
    with pytest.warns(UserWarning, match="fit_X"):
        scales.calibrate(est, "rank", [1, 3], target, held, [1.0], progress=False)


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
        scales.calibrate(**args, progress=False)
