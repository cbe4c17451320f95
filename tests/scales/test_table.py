"""Scale schedules (scales.table): value_at, the Table lookup, its validation and serialisation,
and estimators that save a Table."""

import json
import math

import numpy as np
import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core import artifact as io
from analytic_denoisers.core.validation import value_at
from analytic_denoisers.scales.table import Table
from references import tiny_images


# -- value_at ----------------------------------------------------------------------------------

def test_value_at_numbers_callables_and_tables():
    assert value_at(5, 0.3) == 5 and type(value_at(5, 0.3)) is int
    assert value_at(0.25, torch.tensor(2.0)) == 0.25
    assert value_at(lambda s: 2 * s, 0.5) == 1.0
    assert value_at(Table([0.1, 10.0], [3, 9]), torch.tensor(20.0)) == 9


@pytest.mark.parametrize("schedule", ["5", None, [3, 5], True])
def test_value_at_rejects_what_is_not_a_scale(schedule):
    with pytest.raises(ValueError, match="number or a schedule"):
        value_at(schedule, 1.0)


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, [1.0, 2.0], torch.ones(2)])
def test_value_at_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        value_at(3, sigma)


def test_value_at_rejects_a_schedule_returning_a_non_number():
    with pytest.raises(ValueError, match="returned"):
        value_at(lambda s: "big", 1.0)


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
