"""The one validation module: declarative hyper-parameter constraints and the input checks."""

import math

import numpy as np
import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core.validation import (BOOLEAN, Interval, Options, Schedule, Sequence, as_level, as_sigma,
                                                check_params, check_scalar, check_sigmas, sigma_grid)
from analytic_denoisers.testing import tiny_images


@pytest.mark.parametrize("constraint, good, bad, text", [
    (Interval(int, 1), [1, 7, np.int64(3)], [0, -1, 2.5, True, "3", None, float("nan")], "a positive integer"),
    (Interval(int, 0), [0, 5], [-1, 1.0], "an integer >= 0"),
    (Interval(int, 1, odd=True), [1, 3, 99], [2, 0, -3, 3.0], "a positive odd integer"),
    (Interval(int, 1, 5), [1, 5], [0, 6], "an integer in [1, 5]"),
    (Interval(float, 0, closed="neither"), [1e-9, 2, 3.5], [0, -1, math.inf, math.nan, False], "a positive number"),
    (Interval(float, 0, 1), [0, 0.5, 1], [-0.1, 1.1], "a number in [0, 1]"),
    (Interval(float, 0, 1, closed="left"), [0, 0.999], [1.0], "a number in [0, 1)"),
    (Interval(float), [-3, 2.5], [math.inf, "x"], "a finite number"),
    (Options("zeros", "circular"), ["zeros"], ["zero", 0, None], "one of 'zeros', 'circular'"),
    (BOOLEAN, [True, False], [0, 1, "True", None], "one of False, True"),
    (Schedule(), [lambda s: 3, ad.scales.Table([1.0], [3])], [3, "f", int], "a schedule"),
    (Sequence(Interval(int, 1)), [[1, 2], (3,)], [[], [0], 5, "12"], "a non-empty list of positive integers"),
])
def test_constraints_accept_exactly_what_they_describe(constraint, good, bad, text):
    assert str(constraint).startswith(text)
    assert all(constraint.is_satisfied_by(v) for v in good)
    assert not any(constraint.is_satisfied_by(v) for v in bad)


def test_check_scalar_names_the_value_and_the_alternatives():
    assert check_scalar(np.int64(4), "steps", Interval(int, 1)) == 4 and type(check_scalar(np.int64(4), "s", Interval(int, 1))) is int
    assert check_scalar(None, "limit", Interval(int, 1), None) is None
    with pytest.raises(ValueError, match=r"^limit must be a positive integer or None, got 0$"):
        check_scalar(0, "limit", Interval(int, 1), None)


def test_check_params_checks_the_declared_parameters():
    constraints = {"rank": [Interval(int, 1), None]}
    check_params("Est", {"rank": None, "undeclared": "anything"}, constraints)  # as scikit-learn does
    with pytest.raises(ValueError, match=r"^Est: rank must be a positive integer or None, got 0$"):
        check_params("Est", {"rank": 0}, constraints)


@pytest.mark.parametrize("make, fit_args, match", [
    (lambda: ad.GaussianDenoiser(rank=0), (), "GaussianDenoiser: rank must be a positive integer or None, got 0"),
    (lambda: ad.GaussianDenoiser(rank=99), (), r"rank \(at most d = 36\) must be an integer in \[1, 36\]"),
    (lambda: ad.LocalScoreDenoiser(patch_size=4), (), "LocalScoreDenoiser: patch_size must be a positive odd integer"),
    (lambda: ad.LocalScoreDenoiser(padding="reflect"), (), "padding must be one of 'zeros', 'circular'"),
    (lambda: ad.LocalScoreDenoiser(prune_tol=0.1), (), "prune_tol needs equivariant=True"),
    (lambda: ad.PatchCompositeDenoiser(chunk_size=0), (), "chunk_size must be a positive integer or None"),
    (lambda: ad.PCALocalityDenoiser(threshold=-1), (), "threshold must be a number in"),
    (lambda: ad.EmpiricalOptimalDenoiser(top_k=2.5), (), "top_k must be a positive integer or None"),
    (lambda: ad.UNetDenoiser(channel_mult=(1, 0)), (), "channel_mult must be a non-empty list of positive integers"),
])
def test_bad_hyper_parameters_fail_at_fit_naming_the_parameter(make, fit_args, match, tmp_path):
    est = make()
    with pytest.raises(ValueError, match=match):
        est.fit(tiny_images(6), *fit_args)
    assert not hasattr(est, "image_shape_")  # nothing fitted, so nothing can be saved


def test_set_params_refuses_and_keeps_the_old_value():
    den = ad.LocalScoreDenoiser(patch_size=3).fit(tiny_images(6))
    with pytest.raises(ValueError, match="patch_size must be a positive odd integer"):
        den.set_params(patch_size=6)
    assert den.patch_size == 3
    with pytest.raises(ValueError, match="prune_tol needs equivariant=True"):
        den.set_params(prune_tol=1e-3)  # the combination is checked too
    assert den.set_params(equivariant=True, prune_tol=1e-3, padding="circular").prune_tol == 1e-3


def test_sigma_checks():
    x = tiny_images(3)
    assert as_sigma(0.5, x).shape == (3,) and as_level(torch.tensor(2.0)) == 2.0
    for one in (torch.tensor(0.5), torch.tensor([0.5])):  # shape () or (1,): one level for the batch
        assert as_sigma(one, x).tolist() == [0.5] * 3
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        as_sigma(torch.ones(2), x)
    for bad in (0, -1, math.nan, "a"):
        with pytest.raises(ValueError, match="sigma must be"):
            as_level(bad)
    assert sigma_grid([5.0, 0.0, 1.0]) == [5.0, 1.0]  # a schedule's final 0 is dropped, order kept
    for bad, match in (([], "at least one positive"), ([1.0, 1.0], "distinct"), ([-1.0], "non-negative"),
                       ([[1.0]], "1-D")):
        with pytest.raises(ValueError, match=match):
            sigma_grid(bad)
    assert check_sigmas([2.0, 1.0, 0.0]).dtype == torch.float64
    for bad, match in (([1.0], "at least 2 levels"), ([1.0, 2.0, 0.0], "strictly decreasing"),
                       ([1.0, 0.0, 0.0], "positive"), ([1.0, math.inf, 0.0], "NaN or Inf")):
        with pytest.raises(ValueError, match=match):
            check_sigmas(bad)
    assert check_sigmas([1.0], schedule=False).tolist() == [1.0]  # points of a closed-form path
    assert check_sigmas([1.0, 3.0, 0.0], schedule=False).tolist() == [1.0, 3.0, 0.0]
    with pytest.raises(ValueError, match=r"sigmas\[0\] > 0"):
        check_sigmas([0.0, 1.0], schedule=False)
