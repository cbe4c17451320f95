"""Scale schedules as values: a patch size or threshold as a function of the noise level.

The locality and patch denoisers take a scale hyper-parameter that is a number or a *schedule*:
any callable ``schedule(sigma) -> number`` (read with
:func:`~analytic_denoisers.core.validation.value_at`). This leaf module owns :class:`Table`,
values on a grid of noise levels looked up in log-sigma, saved with the estimator that holds it
(``to_dict`` / :func:`json_object_hook`).
"""

import math

import numpy as np

from ..core.validation import as_level, as_vector, check_sigmas

INTERPOLATIONS = ("nearest", "log-linear")


class Table:
    """A schedule given by values on a grid of noise levels, looked up in log-sigma.

    Parameters
    ----------
    sigmas : sequence, array or tensor of shape (K,)
        Positive, finite, distinct noise levels, in any order.
    values : sequence, array or tensor of shape (K,)
        ``values[k]`` is the scale at ``sigmas[k]``: finite real numbers. Integers stay Python
        ``int`` (patch sizes), anything else becomes ``float``.
    interpolation : {"nearest", "log-linear"}
        ``"nearest"``: the value at the grid level nearest to sigma in ``log(sigma)`` (a tie goes
        to the larger level); integer values stay integers. ``"log-linear"``: linear in
        ``log(sigma)`` between the neighbouring levels, for real-valued scales such as
        thresholds; returns a float. Outside the grid both hold the end values.

    Attributes
    ----------
    sigmas : tuple of float, increasing
    values : tuple of numbers, aligned with ``sigmas``
    interpolation : str

    A Table is saved with the estimator holding it (``to_dict`` / ``from_dict``; see
    :func:`json_object_hook`), compares equal to a table with the same entries, and is hashable.

    Examples
    --------
    >>> t = Table([0.1, 1.0, 10.0], [3, 7, 15])
    >>> t(0.2), t(5.0), t(100.0)
    (3, 15, 15)
    >>> round(Table([0.1, 10.0], [0.0, 0.2], interpolation="log-linear")(1.0), 12)
    0.1
    """

    def __init__(self, sigmas, values, interpolation="nearest"):
        sigmas, values = as_vector(sigmas, "sigmas"), as_vector(values, "values")
        if len(sigmas) == 0:
            raise ValueError("a Table needs at least one (sigma, value) pair, got none")
        if len(sigmas) != len(values):
            raise ValueError(f"sigmas and values must have the same length, got {len(sigmas)} "
                             f"sigmas and {len(values)} values")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if sigmas.dtype.kind not in "iuf":
            raise ValueError(f"sigmas must be real numbers, got dtype {sigmas.dtype}")
        sigmas = sigmas.astype(np.float64)
        if not (np.isfinite(sigmas).all() and (sigmas > 0).all()):
            raise ValueError(f"sigmas must be positive and finite, got {sigmas.tolist()}")
        if values.dtype.kind not in "iuf":
            raise ValueError(f"values must be real numbers (ints or floats), got dtype {values.dtype}")
        if not np.isfinite(values).all():
            raise ValueError(f"values must be finite, got {values.tolist()}")
        order = np.argsort(sigmas, kind="stable")
        sigmas, values = sigmas[order], values[order]
        if (np.diff(sigmas) == 0).any():
            raise ValueError(f"sigmas must be distinct, got {sigmas.tolist()} (sorted)")
        self.sigmas = tuple(float(s) for s in sigmas)
        cast = int if values.dtype.kind in "iu" else float
        self.values = tuple(cast(v) for v in values.tolist())
        self.interpolation = interpolation
        self._log_sigmas = np.log(sigmas)

    @classmethod
    def from_steps(cls, values, sigmas, interpolation="nearest"):
        """A table from one value per sampling step, as published per-step scale lists are.

        Step ``i`` denoises at ``sigmas[i]``, so ``values[i]`` is paired with ``sigmas[i]``.

        Parameters
        ----------
        values : sequence of shape (n,), one value per step
        sigmas : 1-D tensor of shape (n + 1,) or (n,)
            A sampling schedule (strictly decreasing, as from :mod:`analytic_denoisers.sampling.schedules`),
            with or without its final 0.
        interpolation : see :class:`Table`

        Examples
        --------
        >>> sigmas = ad.schedules.karras(4, 0.002, 80)     # 4 steps, 5 levels ending in 0
        >>> Table.from_steps([27, 15, 7, 3], sigmas)
        """
        values = as_vector(values, "values")
        levels = as_vector(sigmas, "sigmas")
        if len(levels) and levels[-1] > 0:  # given without the final 0
            levels = np.append(levels, 0.0)
        levels = check_sigmas(levels)[:-1]
        if len(values) != len(levels):
            raise ValueError(f"got {len(values)} values for a schedule of {len(levels)} steps "
                             f"(sigmas {levels.tolist()}); give one value per step")
        return cls(levels, values, interpolation=interpolation)

    def __call__(self, sigma):
        """The value at noise level ``sigma`` (a positive float)."""
        x = math.log(as_level(sigma))
        logs = self._log_sigmas
        if self.interpolation == "log-linear":
            return float(np.interp(x, logs, np.asarray(self.values, dtype=np.float64)))
        k = int(np.searchsorted(logs, x))  # logs[k - 1] < x <= logs[k]
        if k == len(logs) or (k > 0 and x - logs[k - 1] < logs[k] - x):
            k -= 1
        return self.values[k]

    def to_dict(self):
        """JSON-ready dict: ``{"__schedule__": "Table", "sigmas", "values", "interpolation"}``."""
        return {"__schedule__": "Table", "sigmas": list(self.sigmas), "values": list(self.values),
                "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(data["sigmas"], data["values"], interpolation=data["interpolation"])
        except KeyError as err:
            raise ValueError(f"a Table dict needs sigmas, values and interpolation; {err} is missing") from None

    def __eq__(self, other):
        if not isinstance(other, Table):
            return NotImplemented
        return (self.sigmas, self.values, self.interpolation) == (other.sigmas, other.values,
                                                                 other.interpolation)

    def __hash__(self):
        return hash((self.sigmas, self.values, self.interpolation))

    def __repr__(self):
        def short(seq):
            items = [repr(v) for v in seq]
            return "[" + ", ".join(items if len(items) <= 8 else items[:3] + ["..."] + items[-2:]) + "]"

        return (f"Table(sigmas={short(self.sigmas)}, values={short(self.values)}, "
                f"interpolation={self.interpolation!r})")


SCHEDULE_TYPES = {"Table": Table}


def json_object_hook(data):
    """``json.loads(..., object_hook=json_object_hook)``: rebuild schedules from their ``to_dict()``."""
    if "__schedule__" not in data:
        return data
    cls = SCHEDULE_TYPES.get(data["__schedule__"])
    if cls is None:
        raise ValueError(f"unknown schedule type {data['__schedule__']!r}; known: {sorted(SCHEDULE_TYPES)}")
    return cls.from_dict(data)
