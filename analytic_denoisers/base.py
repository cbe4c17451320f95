"""The denoiser contract: the mixin every estimator inherits, and input validation.

A denoiser maps noisy images ``x = x0 + sigma * eps`` to the posterior mean
``D(x, sigma) ~ E[x0 | x]``. Subclasses implement ``_denoise(x, sigma, y)`` on validated
inputs; the mixin derives everything else once:

* ``denoise(x, sigma, y=None)`` and ``den(x, sigma)`` -> tensor of the shape, device and dtype of x,
* ``score(x, sigma) = (D - x) / sigma**2`` (the diffusion score, grad log p_sigma(x)),
* ``eps(x, sigma) = (x - D) / sigma``.

Every validation error is a ``ValueError`` that says what was expected and what was given.
"""

import hashlib

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

_FINGERPRINT_MOD = 2**256
_SUMMARY = ("image_shape_", "n_samples_seen_", "value_range_", "fingerprint_")


def append_dims(t, ndim):
    """Append singleton dimensions to ``t`` until it has ``ndim`` dimensions (k-diffusion)."""
    return t.reshape(t.shape + (1,) * (ndim - t.dim()))


def as_images(x, name="x", image_shape=None):
    """Validate a batch of images and return it as a floating-point tensor.

    Parameters
    ----------
    x : Tensor or ndarray of shape (N, C, H, W)
    name : str
        Used in error messages.
    image_shape : tuple (C, H, W), optional
        The fitted image shape that ``x`` must match.

    Returns
    -------
    Tensor of shape (N, C, H, W), the input itself if it already was a float tensor.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
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


def as_training_images(X):
    """Validated training images (N, C, H, W), kept in float64 if given so, else float32."""
    X = as_images(X, name="X")
    return X if X.dtype == torch.float64 else X.float()


def as_sigma(sigma, x):
    """Validate noise levels and return them as a tensor of shape (N,) like ``x``.

    Parameters
    ----------
    sigma : float, 0-d tensor, or tensor of shape (N,)
        Positive, finite noise standard deviations.
    x : Tensor of shape (N, C, H, W)
        Gives N, the dtype and the device.
    """
    n = x.shape[0]
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        sigma = sigma.expand(n)
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


def data_fingerprint(x):
    """Order- and chunk-invariant fingerprint of a set of images.

    The sum, modulo 2**256, of the SHA-256 of each image's float32 bytes: two fits on the same
    images give the same fingerprint whatever their order or chunking, and the fingerprint of a
    merged fit is the sum of the parts' (see :func:`merge_fingerprints`).

    Parameters
    ----------
    x : Tensor of shape (N, ...)

    Returns
    -------
    str, 64 hexadecimal digits.
    """
    rows = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).numpy()
    total = sum(int.from_bytes(hashlib.sha256(r.tobytes()).digest(), "big") for r in rows)
    return f"{total % _FINGERPRINT_MOD:064x}"


def data_summary(X):
    """Image shape, count, value range and fingerprint of training images (N, C, H, W)."""
    return {
        "image_shape_": tuple(X.shape[1:]),
        "n_samples_seen_": int(X.shape[0]),
        "value_range_": (float(X.min()), float(X.max())),
        "fingerprint_": data_fingerprint(X),
    }


def merge_fingerprints(a, b):
    """Fingerprint of the union of two image sets from their fingerprints."""
    return f"{(int(a, 16) + int(b, 16)) % _FINGERPRINT_MOD:064x}"


class DenoiserMixin:
    """Sigma-native denoiser interface shared by every estimator.

    Subclasses implement ``_denoise(x, sigma, y)`` where ``x`` is a validated tensor of shape
    (N, C, H, W), ``sigma`` a positive tensor of shape (N,) with the dtype and device of ``x``,
    and ``y`` validated labels or None. Their ``fit`` records the image shape, count, value
    range and fingerprint of the training data, which are saved with the estimator, by calling
    ``_reset_data_summary()`` then ``_update_data_summary(data_summary(X))``, and lists its
    own fitted attributes in ``_fitted_state``.

    Fitted state common to all denoisers:

    image_shape_ : tuple (C, H, W)
    n_samples_seen_ : int
    value_range_ : tuple (min, max) of the training pixel values
    fingerprint_ : str, see :func:`data_fingerprint`
    classes_ : ndarray of the training labels' classes, or None when fitted without labels
    """

    _fitted_state = _SUMMARY  # attribute names a saved file must hold; subclasses extend it

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
        Tensor of shape (N, C, H, W), with the device and dtype of ``x``.
        """
        self._check_fitted()
        x = as_images(x, image_shape=self.image_shape_)
        sigma = as_sigma(sigma, x)
        y = self._check_y(y, x)
        return self._denoise(x, sigma, y)

    def __call__(self, x, sigma, y=None):
        return self.denoise(x, sigma, y=y)

    def score(self, x, sigma, y=None):
        """Diffusion score ``grad_x log p_sigma(x) = (D(x, sigma) - x) / sigma**2``, shape of x."""
        x, s, d = self._with_denoised(x, sigma, y)
        return (d - x) / s**2

    def eps(self, x, sigma, y=None):
        """Noise estimate ``(x - D(x, sigma)) / sigma``, shape of x."""
        x, s, d = self._with_denoised(x, sigma, y)
        return (x - d) / s

    def _with_denoised(self, x, sigma, y):
        d = self.denoise(x, sigma, y)
        x = torch.as_tensor(x)
        return x, append_dims(as_sigma(sigma, x), x.dim()), d

    def save(self, path):
        """Write the fitted denoiser to ``path`` (HDF5, atomic); ``ad.load(path)`` reads it back."""
        from .io import save

        return save(self, path)

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

    def _reset_data_summary(self):
        for name in _SUMMARY:
            self.__dict__.pop(name, None)
        self._cache = {}

    def _update_data_summary(self, new):
        """Add a data summary (from :func:`data_summary`, or another fitted denoiser's)."""
        if isinstance(new, DenoiserMixin):
            new = {name: getattr(new, name) for name in _SUMMARY}
        new = dict(new)
        if hasattr(self, "image_shape_"):
            if new["image_shape_"] != self.image_shape_:
                raise ValueError(
                    f"new data has image shape {new['image_shape_']}, but earlier data had "
                    f"shape {self.image_shape_}"
                )
            lo, hi = new["value_range_"]
            new["n_samples_seen_"] += self.n_samples_seen_
            new["value_range_"] = (min(lo, self.value_range_[0]), max(hi, self.value_range_[1]))
            new["fingerprint_"] = merge_fingerprints(new["fingerprint_"], self.fingerprint_)
        self.__dict__.update(new)
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
    are the images of ``classes_[k]``), all None without labels. ``_groups`` splits a batch
    into queries that share a noise level and a class.
    """

    _fitted_state = DenoiserMixin._fitted_state + ("data_", "labels_", "classes_", "class_offsets_")

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,). Returns self."""
        X = as_training_images(X)
        self._reset_data_summary()
        self.labels_ = self.classes_ = self.class_offsets_ = None
        if y is not None:
            y = as_labels(y, X.shape[0], device=X.device)
            order = torch.argsort(y, stable=True)
            X, y = X[order], y[order]
            classes, counts = torch.unique_consecutive(y, return_counts=True)
            self.labels_ = y.cpu()
            self.classes_ = classes.cpu().numpy()
            self.class_offsets_ = np.concatenate([[0], np.cumsum(counts.cpu().numpy())])
        self.data_ = X.detach().cpu().contiguous()
        self._update_data_summary(data_summary(self.data_))
        return self

    def _groups(self, sigma, y):
        """Queries sharing a noise level and a class: yields ``(rows, level, lo, hi)``.

        ``rows`` index the batch, ``level`` is their float sigma and ``data_[lo:hi]`` the
        training images they are compared with (all of them without labels).
        """
        bounds = [(None, 0, len(self.data_))] if y is None else [
            (label, int(lo), int(hi))
            for label, lo, hi in zip(self.classes_.tolist(), self.class_offsets_[:-1], self.class_offsets_[1:])
        ]
        for level in torch.unique(sigma).tolist():
            at_level = sigma == level
            for label, lo, hi in bounds:
                rows = (at_level if label is None else at_level & (y == label)).nonzero().squeeze(1)
                if len(rows):
                    yield rows, level, lo, hi


__all__ = [
    "DenoiserMixin",
    "TrainingSetMixin",
    "NotFittedError",
    "append_dims",
    "as_images",
    "as_training_images",
    "as_labels",
    "as_sigma",
    "data_fingerprint",
    "data_summary",
    "merge_fingerprints",
]
