"""The denoiser contract: the mixin every estimator inherits.

A denoiser maps noisy images ``x = x0 + sigma * eps`` to the posterior mean
``D(x, sigma) ~ E[x0 | x]``. Subclasses implement ``_denoise(x, sigma, y)`` on validated
inputs; the mixin derives everything else once:

* ``denoise(x, sigma, y=None)`` and ``den(x, sigma)`` -> tensor of the shape, device and dtype of x,
* ``score(x, sigma) = (D - x) / sigma**2`` (the diffusion score, grad log p_sigma(x)),
* ``eps(x, sigma) = (x - D) / sigma``,
* hyper-parameter checks against the class's ``_parameter_constraints`` in ``fit`` and
  ``set_params`` (see :mod:`.validation`), and ``save`` (see :mod:`.artifact`).
"""

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from . import artifact, distributed
from .batching import groups
from .files import dumps
from .fingerprint import SUMMARY, data_summary, merge_summaries
from .validation import as_images, as_labels, as_sigma, as_training_images, check_params

# Computed in float32 and returned in their own dtype: in half precision a softmax's exp
# overflows (float16 ends at 65504) and squared distances keep 3 significant digits.
HALF_PRECISION = (torch.float16, torch.bfloat16)


def append_dims(t, ndim):
    """Append singleton dimensions to ``t`` until it has ``ndim`` dimensions (k-diffusion)."""
    return t.reshape(t.shape + (1,) * (ndim - t.dim()))


def as_denoise_fn(denoiser, y=None, name="denoiser"):
    """``f(x, sigma)`` from a denoiser (its ``denoise`` method, with labels ``y`` bound if given)
    or from any callable ``f(x, sigma)``; ValueError for anything else."""
    fn = denoiser.denoise if hasattr(denoiser, "denoise") else denoiser
    if not callable(fn):
        raise ValueError(f"{name} must have a denoise(x, sigma) method or be a callable (x, sigma), "
                         f"got {type(denoiser).__name__}")
    return fn if y is None else (lambda x, sigma: fn(x, sigma, y=y))


class DenoiserMixin:
    """Sigma-native denoiser interface shared by every estimator.

    Subclasses declare ``_parameter_constraints`` (name -> list of allowed kinds, see
    :mod:`~analytic_denoisers.core.validation`) for every constructor argument, call
    ``self._check_params()`` first in ``fit``, and implement ``_denoise(x, sigma, y)`` where
    ``x`` is a validated tensor of shape (N, C, H, W), ``sigma`` a positive tensor of shape (N,)
    with the dtype and device of ``x``, and ``y`` validated labels or None. Their ``fit``
    records the image shape, count, value range and fingerprint of the training data, which are
    saved with the estimator, with ``self._set_data_summary(X)``, and lists its own fitted
    attributes in ``_fitted_state``.

    Fitted state common to all denoisers:

    image_shape_ : tuple (C, H, W)
    n_samples_seen_ : int
    value_range_ : tuple (min, max) of the training pixel values
    fingerprint_ : str, see :func:`~analytic_denoisers.core.fingerprint.data_fingerprint`
    classes_ : ndarray of the training labels' classes, or None when fitted without labels
    """

    _fitted_state = SUMMARY  # attribute names a saved file must hold; subclasses extend it
    _parameter_constraints = {}

    def denoise(self, x, sigma, y=None):
        """Posterior-mean estimate ``D(x, sigma) ~ E[x0 | x]``.

        Parameters
        ----------
        x : Tensor or ndarray of shape (N, C, H, W)
            Noisy images ``x0 + sigma * eps``.
        sigma : float or Tensor of shape (N,)
            Noise level(s), positive.
        y : int or Tensor of shape (N,), optional
            Class labels; required by class-conditional denoisers (fitted with labels).

        Returns
        -------
        Tensor of shape (N, C, H, W), with the device and dtype of ``x``. A float16 or bfloat16
        ``x`` is denoised in float32 and the result rounded to its dtype.
        """
        self._check_fitted()
        x = as_images(x, image_shape=self.image_shape_)
        if x.dtype in HALF_PRECISION:
            return self.denoise(x.float(), sigma, y).to(x.dtype)
        sigma = as_sigma(sigma, x)
        y = self._check_y(y, x)
        shards = getattr(self, "_shards", None)
        if shards is None:
            return self._denoise(x, sigma, y)
        self._check_shardable()
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError(f"a sharded {type(self).__name__} does not propagate gradients across ranks: "
                             "differentiate an unsharded one")
        collectives = shards[1]
        collectives.check_same(x, sigma, *(() if y is None else (y,)), tags=(self._params_digest(),))
        with distributed.across(collectives):
            return self._denoise(x, sigma, y)

    def __call__(self, x, sigma, y=None):
        return self.denoise(x, sigma, y=y)

    def score(self, x, sigma=None, y=None):
        """Diffusion score ``grad_x log p_sigma(x) = (D(x, sigma) - x) / sigma**2``, shape of x.

        Not scikit-learn's model score: model selection (``GridSearchCV``) needs
        ``scoring=ad.metrics.denoising_scorer(sigma)``; without it, a TypeError says so.
        """
        integers = isinstance(sigma, (np.ndarray, torch.Tensor)) and sigma.ndim > 0 and \
            not (sigma.dtype.kind == "f" if isinstance(sigma, np.ndarray) else sigma.dtype.is_floating_point)
        if sigma is None or integers:  # integer arrays: class labels, as scikit-learn passes them
            raise TypeError(f"{type(self).__name__}.score(x, sigma) is the diffusion score grad log p_sigma(x) and "
                            "needs sigma; it is not a model score: to compare hyper-parameters (GridSearchCV, "
                            "cross_val_score) pass scoring=analytic_denoisers.metrics.denoising_scorer(sigma)")
        x, s, d, dtype = self._with_denoised(x, sigma, y)
        return ((d - x) / s**2).to(dtype)

    def eps(self, x, sigma, y=None):
        """Noise estimate ``(x - D(x, sigma)) / sigma``, shape of x."""
        x, s, d, dtype = self._with_denoised(x, sigma, y)
        return ((x - d) / s).to(dtype)

    def _with_denoised(self, x, sigma, y):
        """``(x, sigma as (N, 1, ...), D(x, sigma), dtype of the result)``, in float32 for half x."""
        self._check_fitted()
        x = as_images(x, image_shape=self.image_shape_)
        dtype = x.dtype
        if dtype in HALF_PRECISION:
            x = x.float()
        return x, append_dims(as_sigma(sigma, x), x.dim()), self.denoise(x, sigma, y), dtype

    def save(self, path):
        """Write the fitted denoiser to ``path`` (HDF5, atomic); ``ad.load(path)`` reads it back."""
        if getattr(self, "_shards", None) is not None:
            raise ValueError(f"this {type(self).__name__} holds one rank's shard of its training set, which cannot "
                             "be saved as the denoiser: save the unsharded one (then ad.load(path, shard=...))")
        return artifact.save(self, path)

    # -- hyper-parameters -------------------------------------------------------------------

    def _check_params(self, params=None):
        """Check hyper-parameters (default: the current ones) against ``_parameter_constraints``."""
        params = self.get_params(deep=False) if params is None else params
        check_params(type(self).__name__, params, self._parameter_constraints)

    def set_params(self, **params):
        """Set hyper-parameters (scikit-learn), refusing unusable values with a ValueError. What
        was derived from the old ones (cached masks, plans, prepared data) is forgotten."""
        self._check_params({**self.get_params(deep=False), **params})
        self._cache = {}
        return super().set_params(**params)

    # -- fitted-state helpers -------------------------------------------------------------

    def _check_fitted(self):
        check_is_fitted(self, "image_shape_")

    def __sklearn_is_fitted__(self):
        return hasattr(self, "image_shape_")

    def _check_y(self, y, x):
        classes = getattr(self, "classes_", None)
        if classes is None:
            if y is not None:
                raise ValueError(
                    f"{type(self).__name__} was fitted without labels; call fit(X, y) for a "
                    "class-conditional denoiser, or pass y=None"
                )
            return None
        if y is None:
            raise ValueError(
                f"{type(self).__name__} was fitted with class labels: pass y (shape (N,)) to denoise"
            )
        return as_labels(y, x.shape[0], classes, device=x.device)

    def _set_data_summary(self, X):
        """Start a new fitted state from training images ``X`` (N, C, H, W): record their shape,
        count, value range and fingerprint (and forget whatever was fitted before)."""
        self._reset_data_summary()
        self._update_data_summary(data_summary(X))

    def _reset_data_summary(self):
        for name in (*SUMMARY, "_shards"):  # a new fit is not sharded
            self.__dict__.pop(name, None)
        self._cache = {}

    def _update_data_summary(self, new):
        """Add a data summary (from :func:`data_summary`, or another fitted denoiser's)."""
        if isinstance(new, DenoiserMixin):
            new = {name: getattr(new, name) for name in SUMMARY}
        old = {name: getattr(self, name) for name in SUMMARY} if hasattr(self, "image_shape_") else None
        self.__dict__.update(merge_summaries(old, new))
        self._cache = {}

    def _fitted_on(self, name, like):
        """A fitted tensor attribute on the device and in the dtype of ``like`` (memoised)."""
        return self._derived(
            name, like, lambda: getattr(self, name).to(device=like.device, dtype=like.dtype)
        )

    def _derived(self, key, like, compute):
        """Memoise ``compute()`` per (key, device, dtype of ``like``) until the next fit."""
        cache = self.__dict__.setdefault("_cache", {})
        key = (key, like.device, like.dtype)
        if key not in cache:
            cache[key] = compute()
        return cache[key]


class TrainingSetMixin(DenoiserMixin):
    """A denoiser whose fitted state is its training set (optionally labelled, then conditional).

    ``fit`` keeps ``data_`` (M, C, H, W) on the CPU, sorted by class when labelled, and
    ``labels_``, ``classes_`` and ``class_offsets_`` (``data_[class_offsets_[k]:class_offsets_[k + 1]]``
    are the images of ``classes_[k]``), all None without labels.
    """

    _fitted_state = DenoiserMixin._fitted_state + ("data_", "labels_", "classes_", "class_offsets_")
    # True where a call on a sharded training set is exact (a softmax merged across ranks)
    _shardable = False

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,). Returns self."""
        self._check_params()
        X = as_training_images(X)
        labels = classes = offsets = None
        if y is not None:
            y = as_labels(y, X.shape[0], device=X.device)
            order = torch.argsort(y, stable=True)
            X, y = X[order], y[order]
            found, counts = torch.unique_consecutive(y, return_counts=True)
            labels, classes = y.cpu(), found.cpu().numpy()
            offsets = np.concatenate([[0], np.cumsum(counts.cpu().numpy())])
        self.labels_, self.classes_, self.class_offsets_ = labels, classes, offsets
        self.data_ = X.detach().cpu().contiguous()
        self._set_data_summary(self.data_)
        return self

    def shard(self, shard, group=None):
        """Keep only this rank's rows of the training set: a sharded denoiser (torch.distributed).

        Every rank of ``group`` holds its shard, and every call, made by every rank with the same
        queries, merges the ranks' partial softmax sums with collectives into the exact result
        (the unsharded one up to the order of additions) on every rank
        (:mod:`~analytic_denoisers.core.distributed`). For each rank's own queries, wrap it in
        :class:`~analytic_denoisers.core.distributed.GatheredQueries`. ``ad.load(path,
        shard=...)`` reads only the shard from a file. Collective: every rank of ``group`` calls
        it (it checks that the shards cover the training set once).

        Parameters
        ----------
        shard : ``(rank, world)`` (nearly equal consecutive shards) or ``slice(start, stop)``
            (explicit rows of ``data_``, e.g. uneven shards; together the ranks' slices must
            cover every row once)
        group : torch.distributed process group, optional (default: the default group, which
            must be initialised)

        Returns
        -------
        self. Afterwards ``data_`` and ``labels_`` hold the shard's rows and ``class_offsets_``
        indexes them; ``n_samples_seen_`` and ``fingerprint_`` still describe the whole set.
        """
        return self._become_shard(shard, group, whole=True)

    def _become_shard(self, shard, group, whole):
        """Become the sharded denoiser of rows ``shard`` of the fitted set: ``whole``, ``data_`` and
        ``labels_`` hold every row (then the shard's are kept), else the shard's already. Everything
        is checked first, on every rank together, so a refusal changes nothing and leaves no rank
        waiting: fitted, exact for this class and hyper-parameters, a valid shard, a process group,
        and shards of the same fitted set that tile its rows."""
        spec = error = None
        try:
            self._check_fitted()
            if getattr(self, "_shards", None) is not None:
                raise ValueError(f"this {type(self).__name__} is already sharded")
            self._check_shardable()
            spec = distributed.as_shard(shard, self.n_samples_seen_)
        except (ValueError, AttributeError) as err:
            error = err
        collectives = distributed.collectives_after(error, group)
        collectives.check(spec, self.fingerprint_)
        if whole:
            self.data_ = self.data_[spec.start:spec.stop].clone()
            self.labels_ = None if self.labels_ is None else self.labels_[spec.start:spec.stop].clone()
        if self.class_offsets_ is not None:
            self.class_offsets_ = np.clip(self.class_offsets_ - spec.start, 0, spec.stop - spec.start)
        self._shards, self._cache = (spec, collectives), {}
        return self

    def _params_digest(self):
        """A number identifying the hyper-parameters, the same in every process: JSON values (numbers,
        schedules as Tables) by value, anything else (a function of sigma) by its type only."""
        def text(value):
            try:
                return dumps(value)
            except ValueError:
                return type(value).__name__
        return distributed.digest(repr(sorted((k, text(v)) for k, v in self.get_params(deep=False).items())))

    def _check_shardable(self):
        """Raise unless a call on a sharded training set is exact for this class and hyper-parameters."""
        name = type(self).__name__
        if not self._shardable:
            raise ValueError(f"{name} cannot be sharded: {distributed.SHARDABLE}")
        for param in ("top_k", "prune_tol"):  # approximations whose candidates would be chosen per shard
            if getattr(self, param, None) is not None:
                raise ValueError(f"a sharded {name} must be exact: {param}={getattr(self, param)!r} would choose its "
                                 f"candidates per shard; set {param}=None")

    @property
    def shard_(self):
        """This rank's :class:`~analytic_denoisers.core.distributed.Shard` of the training set, or None."""
        shards = getattr(self, "_shards", None)
        return None if shards is None else shards[0]

    def _class_range(self, k):
        """``(lo, hi)``: ``data_[lo:hi]`` are the images of class ``k`` (all of them for None)."""
        if k is None:
            return 0, len(self.data_)
        return int(self.class_offsets_[k]), int(self.class_offsets_[k + 1])

    def _by_class(self, x, sigma, y, compute, with_class=False):
        """``compute(x rows, sigma rows, (lo, hi))`` per class of ``y``, where ``data_[lo:hi]``
        are the class's training images (once for the whole batch without labels), reassembled;
        ``with_class=True`` also passes the class's index in ``classes_`` (None without labels)."""
        def call(x, sigma, k):
            return compute(x, sigma, self._class_range(k), *((k,) if with_class else ()))

        if y is None:
            return call(x, sigma, None)
        out = torch.empty_like(x)
        for rows, _, k in groups(y=y, classes=self.classes_):
            out[rows] = call(x[rows], sigma[rows], k)
        return out
