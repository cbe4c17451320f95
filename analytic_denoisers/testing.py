"""The denoiser contract as a public suite of checks, like scikit-learn's ``check_estimator``.

Run it on your own denoiser (any subclass of :class:`~analytic_denoisers.DenoiserMixin` with a
``fit``)::

    from analytic_denoisers.testing import check_denoiser
    check_denoiser(MyDenoiser)                       # or a factory: lambda **p: MyDenoiser(k=3, **p)

Each check fits fresh estimators made by ``make_estimator(**params)`` on small seeded float64
images and raises ``AssertionError`` (or the error the estimator raised) naming what broke:

* ``fit`` returns self, ``clone`` keeps the hyper-parameters and is unfitted;
* unfitted use raises ``NotFittedError``;
* every hyper-parameter has a declared constraint, and an unusable value is refused with a
  ``ValueError`` naming it, by ``set_params`` and by ``fit``;
* the output keeps the shape, dtype and device of ``x`` (``denoise``, ``__call__``, ``score``,
  ``eps``), and numpy input is accepted;
* a float sigma equals the same sigma per image; batches and chunk sizes do not change results;
* ``score`` and ``eps`` are consistent with ``denoise``;
* ``save`` -> ``load`` gives the same parameters, data summary and outputs;
* bad sigma, bad images and bad training data raise ``ValueError``.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from .registry import load

IMAGE_SHAPE = (1, 6, 6)
CHUNK_PARAM = "chunk_size"  # the hyper-parameter that only splits work, if the estimator has it
TOLERANCE = dict(rtol=1e-12, atol=1e-12)  # float64 invariances: equal up to rounding (a float32 network: pass more)
INVALID = "__not a valid value__"


def tiny_images(n=12, shape=IMAGE_SHAPE, seed=0, dtype=torch.float64):
    """``n`` seeded random images in [-1, 1] that share a little structure, shape (n, *shape)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand((1,) + tuple(shape), generator=g, dtype=dtype) * 2 - 1
    return (0.5 * base + 0.5 * (torch.rand((n,) + tuple(shape), generator=g, dtype=dtype) * 2 - 1)).clamp(-1, 1)


def _same(a, b):
    """Equal hyper-parameter values: tensors and arrays elementwise, modules by their weights (a
    clone deep-copies a network), containers item by item, anything else with ``==``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
        return torch.equal(torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b)))
    if isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module):
        return type(a) is type(b) and _same(dict(a.state_dict()), dict(b.state_dict()))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _fitted(make, **params):
    return make(**params).fit(tiny_images(16, seed=1))


def _raises(error, match, fn, what):
    try:
        fn()
    except error as err:
        assert match in str(err), f"{what}: raised {type(err).__name__}({err}), which does not say {match!r}"
        return
    raise AssertionError(f"{what}: did not raise {error.__name__}")


def check_fit_returns_self(make, tolerance=None):
    est = make()
    assert est.fit(tiny_images(5)) is est, "fit must return self"
    assert _same(clone(est).get_params(), est.get_params()), "clone must keep the hyper-parameters"
    assert not hasattr(clone(est), "image_shape_"), "a clone must be unfitted"


def check_unfitted_use_raises(make, tolerance=None):
    _raises(NotFittedError, "", lambda: make().denoise(tiny_images(2), 1.0), "denoise before fit")


def check_hyper_parameters_are_validated(make, tolerance=None):
    est = make()
    params = est.get_params(deep=False)
    missing = sorted(set(params) - set(getattr(est, "_parameter_constraints", {})))
    assert not missing, f"hyper-parameters without a declared constraint: {missing}"
    for name in params:
        _raises(ValueError, name, lambda: make().set_params(**{name: INVALID}), f"set_params({name}=invalid)")
        _raises(ValueError, name, lambda: make(**{name: INVALID}).fit(tiny_images(5)), f"fit with {name}=invalid")


def check_shape_dtype_device_kept(make, tolerance=None):
    den = _fitted(make)
    for dtype in (torch.float32, torch.float64):
        x = tiny_images(3, seed=2, dtype=dtype)
        for what, out in (("denoise", den.denoise(x, 0.5)), ("__call__", den(x, 0.5)),
                          ("score", den.score(x, 0.5)), ("eps", den.eps(x, 0.5))):
            assert (out.shape, out.dtype, out.device) == (x.shape, dtype, x.device), \
                f"{what} returned {tuple(out.shape)} {out.dtype} on {out.device} for {tuple(x.shape)} {dtype}"


def check_half_precision(make, tolerance=None):
    """float16 and bfloat16 inputs give finite results in their own dtype, within their rounding
    of the float32 result for the same (rounded) input, from sigma 0.01 to 1000."""
    den = _fitted(make)
    x32 = tiny_images(3, seed=6, dtype=torch.float32)
    for dtype, rtol in ((torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)):
        for sigma in (0.01, 0.5, 10.0, 1000.0):
            x = (x32 + sigma * tiny_images(3, seed=7, dtype=torch.float32)).to(dtype)
            for what in ("denoise", "score", "eps"):
                out, ref = getattr(den, what)(x, sigma), getattr(den, what)(x.float(), sigma)
                assert out.dtype == dtype, f"{what} returned {out.dtype} for {dtype} input"
                assert bool(torch.isfinite(out).all()), f"{what} of {dtype} input at sigma {sigma} is not finite"
                scale = float(ref.abs().max())
                torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=rtol * scale,
                                           msg=lambda m: f"{what} of {dtype} input at sigma {sigma}: {m}")


def check_autograd_reaches_x(make, tolerance=None):
    """With ``x.requires_grad``, the output is differentiable in ``x`` (the Jacobian analyses):
    the gradient of a weighted sum of the output is finite and not all zero. A denoiser that
    declares ``_piecewise_constant = True`` (e.g. the nearest training image) must instead have
    a zero gradient (or none) there."""
    den = _fitted(make)
    x = tiny_images(2, seed=8).requires_grad_()
    out = den(x, 0.5)
    if getattr(den, "_piecewise_constant", False):
        grad = torch.autograd.grad((out * tiny_images(2, seed=9)).sum(), x)[0] if out.requires_grad else None
        assert grad is None or not bool(grad.any()), "a piecewise-constant denoiser has a non-zero gradient"
        return
    assert out.requires_grad, "the output of a requires_grad input carries no gradient"
    (grad,) = torch.autograd.grad((out * tiny_images(2, seed=9)).sum(), x)
    assert bool(torch.isfinite(grad).all()) and bool(grad.abs().sum() > 0), "the gradient is not finite or all zero"


def check_numpy_input_is_accepted(make, tolerance=None):
    den, x = _fitted(make), tiny_images(3, seed=3)
    torch.testing.assert_close(den(x.numpy(), 0.5), den(x, 0.5))


def check_float_sigma_equals_per_image_sigma(make, tolerance=None):
    den, x = _fitted(make), tiny_images(4, seed=4)
    torch.testing.assert_close(den(x, 0.7), den(x, torch.full((4,), 0.7, dtype=torch.float64)))
    for one in (torch.tensor(0.7, dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)):  # shape () and (1,)
        torch.testing.assert_close(den(x, one), den(x, 0.7))


def check_batch_invariance(make, tolerance=None):
    den, x = _fitted(make), tiny_images(7, seed=5)
    sigma = torch.tensor([0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0], dtype=torch.float64)
    parts = torch.cat([den(x[:3], sigma[:3]), den(x[3:4], sigma[3:4]), den(x[4:], sigma[4:])])
    torch.testing.assert_close(den(x, sigma), parts, **(tolerance or TOLERANCE))


def check_chunk_size_invariance(make, tolerance=None):
    if CHUNK_PARAM not in make().get_params():
        return
    x = tiny_images(5, seed=6)
    outs = [_fitted(make, **{CHUNK_PARAM: c})(x, 0.4) for c in (1, 5, 1000)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], **(tolerance or TOLERANCE))


def check_score_and_eps_consistent_with_denoise(make, tolerance=None):
    den, x = _fitted(make), tiny_images(3, seed=7)
    sigma = torch.tensor([0.2, 1.0, 4.0], dtype=torch.float64)
    d, s4 = den(x, sigma), sigma.reshape(3, 1, 1, 1)
    torch.testing.assert_close(den.score(x, sigma), (d - x) / s4**2)
    torch.testing.assert_close(den.eps(x, sigma), (x - d) / s4)


def check_save_load_round_trip(make, tolerance=None):
    den, x = _fitted(make), tiny_images(3, seed=8)
    with tempfile.TemporaryDirectory() as folder:
        path = den.save(Path(folder) / "den.h5")
        unsaved = {name: getattr(den, name) for name in getattr(den, "_not_saved", ())}  # e.g. a network
        back = load(path, classes=[type(den)], **unsaved)
    assert type(back) is type(den) and _same(back.get_params(), den.get_params()), "load changed the class or params"
    for name in ("image_shape_", "n_samples_seen_", "value_range_", "fingerprint_"):
        assert getattr(back, name) == getattr(den, name), f"load changed {name}"
    assert torch.equal(back(x, 0.3), den(x, 0.3)), "the loaded denoiser gives other outputs"


def check_bad_sigma_raises(make, tolerance=None):
    den, x = _fitted(make), tiny_images(3)
    for bad, match in ((float("nan"), "NaN"), (float("inf"), "NaN or Inf"), (0.0, "positive"), (-1.0, "positive"),
                       (True, "number"),
                       (torch.ones(5), "shape (3,)"), (1e-200, "too small")):
        _raises(ValueError, match, lambda: den(x, bad), f"sigma = {bad!r}")


def check_bad_images_raise(make, tolerance=None):
    den = _fitted(make)
    x = tiny_images(2)
    x[0, 0, 1, 1] = float("nan")
    c, h, w = IMAGE_SHAPE
    for bad, match in ((x, "NaN or Inf"), (tiny_images(2, (c + 2, h, w)), "fitted on images of shape"),
                       (tiny_images(2, (c, h - 1, w)), "fitted on images of shape"),
                       (torch.zeros(2, c * h * w, dtype=torch.float64), "(N, C, H, W)"),
                       (torch.zeros(2, c, h, w, dtype=torch.uint8), "uint8")):
        _raises(ValueError, match, lambda: den(bad, 1.0), f"x of shape {tuple(bad.shape)}, {bad.dtype}")


def check_bad_training_data_raises(make, tolerance=None):
    X = tiny_images(4)
    X[1, 0, 0, 0] = float("inf")
    for bad, match in ((torch.zeros((0,) + IMAGE_SHAPE), "empty"), (X, "NaN or Inf"),
                       (np.zeros((4, int(np.prod(IMAGE_SHAPE)))), "(N, C, H, W)")):
        _raises(ValueError, match, lambda: make().fit(bad), f"fit on training data of shape {tuple(bad.shape)}")


CHECKS = {fn.__name__[len("check_"):]: fn for fn in (
    check_fit_returns_self, check_unfitted_use_raises, check_hyper_parameters_are_validated,
    check_shape_dtype_device_kept, check_half_precision, check_autograd_reaches_x, check_numpy_input_is_accepted, check_float_sigma_equals_per_image_sigma,
    check_batch_invariance, check_chunk_size_invariance, check_score_and_eps_consistent_with_denoise,
    check_save_load_round_trip, check_bad_sigma_raises, check_bad_images_raise, check_bad_training_data_raises)}


def check_denoiser(make_estimator, checks=None, tolerance=None):
    """Run the contract suite on estimators made by ``make_estimator(**params)``.

    Parameters
    ----------
    make_estimator : callable ``(**params) -> unfitted estimator``, e.g. the estimator class
    checks : iterable of names of :data:`CHECKS`, optional (default: all)
    tolerance : dict ``rtol``, ``atol`` for the batch and chunk invariances, optional (default
        1e-12: float64 inputs give the same results up to rounding; a network that computes in
        float32 is batch-invariant only to float32 rounding, about 1e-6)

    Returns
    -------
    list of the names of the checks run. Raises at the first failing check, naming it.
    """
    names = list(CHECKS) if checks is None else list(checks)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {sorted(CHECKS)}")
    for name in names:
        try:
            CHECKS[name](make_estimator, tolerance)
        except AssertionError as err:
            raise AssertionError(f"check_denoiser: {name} failed: {err}") from err
    return names
