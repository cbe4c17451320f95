"""Input validation: images, noise levels, labels, schedules, and hyper-parameter constraints.

Every check raises ``ValueError`` saying what was expected and what was given. Hyper-parameters
are declared once per estimator, in the manner of scikit-learn's ``_parameter_constraints``::

    _parameter_constraints = {"rank": [Interval(int, 1, None), None],
                              "padding": [Options("zeros", "circular")]}

and checked by :func:`check_params` when the estimator is fitted or its parameters are set, so
that nothing unusable is ever fitted or saved. :func:`check_scalar` checks one value the same way.
"""

import math
import numbers

import numpy as np
import torch

# -- hyper-parameter constraints ----------------------------------------------------------------


class Interval:
    """A number in an interval: ``Interval(int, 1, None)`` is a positive integer.

    Parameters
    ----------
    kind : int or float. ``int`` accepts Python and numpy integers (not bools); ``float`` accepts
        any finite real number (not bools).
    low, high : bounds, or None for none
    closed : "both", "left", "right" or "neither": which bounds belong to the interval
    odd : bool, only odd integers
    multiple_of : int, optional, only integer multiples of it
    """

    def __init__(self, kind, low=None, high=None, *, closed="both", odd=False, multiple_of=None):
        if kind not in (int, float) or closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"bad Interval({kind!r}, closed={closed!r})")
        self.kind, self.low, self.high, self.closed, self.odd = kind, low, high, closed, odd
        self.multiple_of = multiple_of

    def is_satisfied_by(self, value):
        if isinstance(value, (bool, np.bool_)):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Real):
            return False
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))):
            return False
        return (not self.odd or value % 2 == 1) and (self.multiple_of is None or value % self.multiple_of == 0)

    def describe(self, plural=False):
        """E.g. "a positive integer", "an odd integer >= 3", "numbers in [0, 1]" (``plural``)."""
        noun = ("odd integer" if self.odd else f"multiple of {self.multiple_of}" if self.multiple_of else "integer") \
            if self.kind is int else "finite number"
        lower_closed, upper_closed = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None and ((self.kind is int and self.low == 1 and lower_closed)
                                  or (self.low == 0 and not lower_closed)):
            noun, bounds = "positive " + noun.replace("finite ", ""), ""
        elif self.low is None and self.high is None:
            bounds = ""
        elif self.high is None:
            bounds = f" {'>=' if lower_closed else '>'} {self.low:g}"
        elif self.low is None:
            bounds = f" {'<=' if upper_closed else '<'} {self.high:g}"
        else:
            noun = noun.replace("finite ", "")
            bounds = f" in {'[' if lower_closed else '('}{self.low:g}, {self.high:g}{']' if upper_closed else ')'}"
        if plural:
            return (noun.replace("multiple of", "multiples of") if self.multiple_of else noun + "s") + bounds
        return ("an " if noun[0] in "aeiou" else "a ") + noun + bounds

    def __str__(self):
        return self.describe()


class Options:
    """One of a fixed set of values, e.g. ``Options("zeros", "circular")``."""

    def __init__(self, *values):
        self.values = values

    def is_satisfied_by(self, value):
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self):
        return "one of " + ", ".join(repr(v) for v in self.values)


class Callable:
    """Any callable but a class, described as ``description``."""

    def __init__(self, description="a callable"):
        self.description = description

    def is_satisfied_by(self, value):
        return callable(value) and not isinstance(value, type)

    def __str__(self):
        return self.description


class Schedule(Callable):
    """A schedule of sigma: any callable ``f(sigma) -> number`` (its values are checked where read)."""

    def __init__(self):
        super().__init__("a schedule (a callable of sigma, such as analytic_denoisers.scales.Table)")


class Sequence:
    """A non-empty list, tuple or 1-D array / tensor whose items all satisfy ``item`` (e.g.
    ``Interval(int, 1)``)."""

    def __init__(self, item):
        self.item = item

    def is_satisfied_by(self, value):
        if isinstance(value, (np.ndarray, torch.Tensor)):
            if value.ndim != 1:
                return False
            value = value.tolist()
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(
            self.item.is_satisfied_by(v) for v in value)

    def __str__(self):
        items = self.item.describe(plural=True) if isinstance(self.item, Interval) else f"items, each {self.item}"
        return f"a non-empty list of {items}"


BOOLEAN = Options(False, True)


def _satisfied(value, constraint):
    return value is None if constraint is None else constraint.is_satisfied_by(value)


def _describe(constraints):
    return " or ".join("None" if c is None else str(c) for c in constraints)


def check_scalar(value, name, *constraints):
    """``value`` if it satisfies one of ``constraints`` (Interval, Options, Schedule or None),
    else ValueError naming ``name``. Integers are returned as Python ints."""
    if not any(_satisfied(value, c) for c in constraints):
        raise ValueError(f"{name} must be {_describe(constraints)}, got {value!r}")
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def check_params(owner, params, constraints):
    """Check a dict of hyper-parameters against ``constraints`` (name -> list of alternatives).

    ``owner`` (a class name) prefixes the error. As in scikit-learn, a parameter without a
    declared constraint is not checked; the contract suite
    (:func:`analytic_denoisers.testing.check_denoiser`) requires every one to be declared.
    """
    for name, value in params.items():
        if name in constraints and not any(_satisfied(value, c) for c in constraints[name]):
            raise ValueError(f"{owner}: {name} must be {_describe(constraints[name])}, got {value!r}")


# -- images, noise levels, labels ---------------------------------------------------------------


def as_images(x, name="x", image_shape=None, flat=False):
    """Validate a batch of images and return it as a floating-point tensor.

    Parameters
    ----------
    x : Tensor or ndarray of shape (N, C, H, W), or (N, ...) with ``flat``
    name : str
        Used in error messages.
    image_shape : tuple (C, H, W), optional
        The fitted image shape that ``x`` must match.
    flat : bool, also accept flattened images (N, d) or any (N, ...) of at least 2 dimensions

    Returns
    -------
    Tensor of shape (N, C, H, W), the input itself if it already was a float tensor.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if (x.dim() < 2) if flat else (x.dim() != 4):
        raise ValueError(f"{name} must have shape {'(N, ...)' if flat else '(N, C, H, W)'}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        if x.dtype == torch.uint8:
            raise ValueError(
                f"{name} has dtype uint8; convert images to floats in [-1, 1] first "
                "(x / 127.5 - 1), as analytic_denoisers.datasets.load does"
            )
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"{name} has image shape (C, H, W) = {tuple(x.shape[1:])}, but the denoiser was "
            f"fitted on images of shape {tuple(image_shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_data(data, x, name="data", allow_empty=False):
    """Training images for a kernel: a tensor (M, ...) with the trailing shape, dtype and device of
    the queries ``x`` (N, ...), non-empty unless ``allow_empty``. Returns it."""
    if (not isinstance(data, torch.Tensor) or (len(data) == 0 and not allow_empty)
            or tuple(data.shape[1:]) != tuple(x.shape[1:])
            or data.dtype != x.dtype or data.device != x.device):
        got = (f"shape {tuple(data.shape)}, {data.dtype} on {data.device}" if isinstance(data, torch.Tensor)
               else type(data).__name__)
        raise ValueError(f"{name} must be a non-empty tensor of shape (M, {', '.join(map(str, x.shape[1:]))}) with "
                         f"dtype {x.dtype} on {x.device} like x; got {got}")
    return data


def as_training_images(X):
    """Validated training images (N, C, H, W), kept in float64 if given so, else float32."""
    X = as_images(X, name="X")
    return X if X.dtype == torch.float64 else X.float()


def as_sigma(sigma, x):
    """Validate noise levels and return them as a tensor of shape (N,) like ``x``.

    Parameters
    ----------
    sigma : float, tensor of shape () or (1,) (one level for the batch, as other libraries pass
        it), or tensor of shape (N,)
        Positive, finite noise standard deviations.
    x : Tensor of shape (N, C, H, W) or (N, ...)
        Gives N, the dtype and the device.
    """
    n = x.shape[0]
    if isinstance(sigma, (bool, np.bool_)) or (isinstance(sigma, torch.Tensor) and sigma.dtype == torch.bool):
        raise ValueError(f"sigma must be a number or a tensor of numbers, got {sigma!r}")
    try:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"sigma must be a number or a tensor of shape ({n},), got {sigma!r}") from None
    if sigma.dim() == 0 or tuple(sigma.shape) == (1,):
        sigma = sigma.reshape(()).expand(n)
    elif tuple(sigma.shape) != (n,):
        raise ValueError(
            f"sigma must be a float or a tensor of shape ({n},) (one level per image), "
            f"got shape {tuple(sigma.shape)}"
        )
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError("sigma contains NaN or Inf values")
    if not bool((sigma > 0).all()):
        raise ValueError(f"sigma must be positive, got min(sigma) = {sigma.min().item():g}")
    if not bool(torch.isfinite(sigma.square().reciprocal()).all()):
        raise ValueError(f"sigma = {sigma.min().item():g} is too small for {x.dtype}: 1 / sigma**2 "
                         "overflows (use float64, or a larger sigma)")
    return sigma


def as_level(sigma):
    """One positive, finite noise level as a Python float."""
    if isinstance(sigma, (bool, np.bool_)):
        raise ValueError(f"sigma must be one number, got {sigma!r}")
    try:
        level = float(sigma)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"sigma must be one number, got {sigma!r}") from None
    if not (math.isfinite(level) and level > 0):
        raise ValueError(f"sigma must be positive and finite, got {level!r}")
    return level


def value_at(schedule, sigma):
    """The value of a scale (a number or a schedule) at one noise level.

    Parameters
    ----------
    schedule : number, or callable ``schedule(sigma) -> number`` (e.g. a :class:`~analytic_denoisers.scales.table.Table`)
    sigma : float or 0-d tensor, positive

    Returns
    -------
    The number itself (unchanged, an ``int`` stays an ``int``), or ``schedule(float(sigma))``.

    Raises
    ------
    ValueError if ``schedule`` is neither a number nor callable, if it returns something that
    is not a number, or if ``sigma`` is not one positive finite number.
    """
    level = as_level(sigma)
    if Interval(float).is_satisfied_by(schedule):
        return schedule
    if not callable(schedule):
        raise ValueError(f"a scale must be a number or a schedule (a callable of sigma, such as "
                         f"analytic_denoisers.scales.Table), got {type(schedule).__name__} {schedule!r}")
    value = schedule(level)
    if not Interval(float).is_satisfied_by(value):
        raise ValueError(f"schedule {schedule!r} returned {value!r} at sigma = {level:g}; "
                         "expected a number")
    return value


def as_vector(value, name):
    """A 1-D numpy array from a sequence, array or tensor (on any device)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def sigma_grid(sigmas, name="sigmas"):
    """Distinct positive noise levels as a list of floats in the given order; zeros (a
    schedule's end) are dropped. For grids of sigma on which something is evaluated."""
    levels = as_vector(sigmas, name)
    if levels.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be real numbers, got dtype {levels.dtype}")
    levels = levels.astype(np.float64)
    if not np.isfinite(levels).all() or (levels < 0).any():
        raise ValueError(f"{name} must be finite and non-negative, got {levels.tolist()}")
    levels = levels[levels > 0]
    if len(levels) == 0:
        raise ValueError(f"{name} must contain at least one positive noise level")
    if len(np.unique(levels)) != len(levels):
        raise ValueError(f"{name} must be distinct, got {levels.tolist()}")
    return levels.tolist()


def check_sigmas(sigmas, *, schedule=True):
    """Validate noise levels along a path and return them as a float64 CPU tensor of shape (S,).

    ``schedule=True`` (a sampling schedule): at least 2 levels, strictly decreasing, positive
    except the last, which may be 0. ``schedule=False`` (points of a closed-form path): at least
    one level, non-negative, the first positive, in any order. Always 1-D and finite.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
    least = 2 if schedule else 1
    if sigmas.dim() != 1 or len(sigmas) < least:
        raise ValueError(f"sigmas must be 1-D with at least {least} level{'s' * (least > 1)}, "
                         f"got shape {tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()):
        raise ValueError("sigmas contains NaN or Inf values")
    if not schedule:
        if bool((sigmas < 0).any()) or sigmas[0] <= 0:
            raise ValueError("sigmas must be finite and non-negative, with sigmas[0] > 0")
        return sigmas
    if not bool((sigmas[:-1] > 0).all()) or sigmas[-1] < 0:
        raise ValueError("sigmas must be positive (the last one may be 0)")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be strictly decreasing")
    return sigmas


def as_labels(y, n, classes=None, device=None):
    """Validate class labels: an integer tensor of shape (n,) whose values are in ``classes``."""
    y = torch.as_tensor(y, device=device)
    if y.dim() == 0:
        y = y.expand(n)
    if tuple(y.shape) != (n,):
        raise ValueError(f"y must have shape ({n},), got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    y = y.long()
    if classes is not None:
        known = torch.as_tensor(classes, device=y.device)
        unknown = ~torch.isin(y, known)
        if bool(unknown.any()):
            raise ValueError(
                f"y contains labels {sorted(set(y[unknown].tolist()))} that were not in the "
                f"training labels {list(np.asarray(classes).tolist())}"
            )
    return y
