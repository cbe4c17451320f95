"""The PCA-locality estimator (Lukoianov et al., arXiv 2509.09672) and GoldDiff, PCA-locality over a
golden subset (Shang et al., arXiv 2602.16498); the math is in
:mod:`analytic_denoisers.kernels.locality` and :mod:`analytic_denoisers.kernels.golddiff`."""

import torch
from sklearn.base import BaseEstimator

from ..core.contract import TrainingSetMixin
from ..core.validation import Interval, Options, Schedule
from ..kernels.golddiff import golddiff_posterior_mean, pool, proxy_factor, subset_sizes
from ..core.batching import LevelCache
from ..kernels.locality import MASK_RULES, locality_masks, pca_locality_posterior_mean, prepare_transposed
from ..kernels.moments import dask_statistics, is_dask_array, moments
from ..kernels.wiener import eigenbasis

CLASS_STATISTICS = ("class", "global")


class PCALocalityDenoiser(TrainingSetMixin, BaseEstimator):
    """Per-pixel softmax over training images with masks from the Wiener filter (Lukoianov et al.).

    Parameters
    ----------
    threshold : float in [0, 1] or callable, default 0.005
        Binarisation level of the normalised Wiener filter, relative to its maximum; or a
        function ``threshold(sigma) -> float``. 0 uses the real-valued normalised filter itself
        as the weights (the published code's ``mask_threshold = 0``). The paper's configurations
        use 0.005 for MNIST and Fashion-MNIST and 0.05 for CIFAR-10; GoldDiff's 0.02-0.04.
    temperature : float > 0, default 1
        Divides the softmax logits (the published code's ``temperature``).
    mask_rule : "published" or "positive-diagonal", default "published"
        How rows with a (nearly) zero Wiener diagonal are normalised (see
        :func:`~analytic_denoisers.kernels.locality.locality_masks`): "published" equals the
        published code's masks; "positive-diagonal" was this package's rule before 0.x and
        gives much smaller masks on data with near-constant pixels.
    class_statistics : "class" or "global", default "class"
        Fitted with labels ``y`` the denoiser is class-conditional (``denoise`` needs ``y``; the
        softmax runs over that class's images). The masks come from that class's own covariance
        ("class") or from the whole training set's ("global", what GoldDiff's ImageNet code does
        with its default mixing ratio). Unused without labels.
    rank : int, optional
        Eigenpairs of the covariance used for the Wiener filter (default: all).
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : the training images, sorted by class when fitted
        with labels (see :class:`~analytic_denoisers.core.contract.TrainingSetMixin`)
    mean_, eigvals_, eigvecs_ : the Gaussian of the whole training set (see :class:`GaussianDenoiser`)
    class_eigvals_ : Tensor of shape (n_classes, r), or None without labels
    class_eigvecs_ : Tensor of shape (n_classes, d, r), or None without labels
        Each class's eigenpairs (float64; ``n_classes * d^2`` numbers, 49 MB for ten 28 x 28 classes)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    _fitted_state = TrainingSetMixin._fitted_state + ("mean_", "eigvals_", "eigvecs_", "class_eigvals_",
                                                      "class_eigvecs_")
    _shardable = True  # see shard()
    _parameter_constraints = {
        "threshold": [Interval(float, 0, 1), Schedule()],
        "temperature": [Interval(float, 0, closed="neither")],
        "mask_rule": [Options(*MASK_RULES)],
        "class_statistics": [Options(*CLASS_STATISTICS)],
        "rank": [Interval(int, 1), None],
        "chunk_size": [Interval(int, 1), None],
    }

    def __init__(self, threshold=0.005, rank=None, chunk_size=None, temperature=1.0, mask_rule="published",
                 class_statistics="class"):
        self.threshold = threshold
        self.rank = rank
        self.chunk_size = chunk_size
        self.temperature = temperature
        self.mask_rule = mask_rule
        self.class_statistics = class_statistics

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,), and fit
        their Gaussian (and each class's, with labels and ``class_statistics="class"``). Returns self.

        ``X`` may be a ``dask.array``: the statistics behind the masks (of every class too) are then
        computed by Dask in one pass, block by block
        (:func:`~analytic_denoisers.kernels.moments.dask_statistics`); the training images are
        read into memory in a second pass, since every call scans them (shard them across
        processes with :meth:`shard` to split that).
        """
        lazy = None
        if is_dask_array(X):
            by_class = y is not None and self.class_statistics == "class"
            lazy = dask_statistics(X, labels=torch.as_tensor(y).cpu().numpy()) if by_class else (*dask_statistics(X), {})
            X = X.compute()
        super().fit(X, y)

        def statistics(k):  # the moments of class k's images (all of them for None)
            if lazy is None:
                return moments(self.data_[slice(*self._class_range(k))])
            return lazy[0] if k is None else lazy[2][self.classes_[k].item()]

        basis = eigenbasis(statistics(None), self.rank)
        self.mean_, self.eigvals_, self.eigvecs_ = basis.mean, basis.eigvals, basis.eigvecs
        self.class_eigvals_ = self.class_eigvecs_ = None
        if self.classes_ is not None and self.class_statistics == "class":
            bases = [eigenbasis(statistics(k), self.rank) for k in range(len(self.classes_))]
            self.class_eigvals_ = torch.stack([b.eigvals for b in bases])
            self.class_eigvecs_ = torch.stack([b.eigvecs for b in bases])
        return self

    @classmethod
    def _upgrade_saved(cls, params, state):
        """A file saved before the published mask rule and class conditioning (package 0.1.0 up to
        that change): its masks were made with the positive-diagonal rule, and it has no labels."""
        if "mask_rule" not in params:
            params = {**params, "mask_rule": "positive-diagonal"}
            state = {**{name: None for name in ("labels_", "classes_", "class_offsets_", "class_eigvals_",
                                                "class_eigvecs_")}, **state}
        return params, state

    def masks(self, sigma, k=None):
        """The masks ``mask[n, m]`` of shape (d, d) at noise level ``sigma`` (CPU): bool, or float64
        weights for threshold 0. ``k``: the index of a class in ``classes_`` (its own statistics)."""
        self._check_fitted()
        own = k is not None and self.class_statistics == "class"
        if own and self.class_eigvals_ is None:
            raise ValueError("PCALocalityDenoiser: class_statistics='class' needs each class's statistics, which "
                             "this fit did not compute (it was fitted with 'global'): call fit(X, y) again")
        eigvals, eigvecs = (self.class_eigvals_[k], self.class_eigvecs_[k]) if own else (self.eigvals_, self.eigvecs_)
        return locality_masks(float(sigma), eigvals, eigvecs, self.threshold, self.mask_rule)

    def _denoise(self, x, sigma, y):
        def posterior_mean(x, sigma, bounds, k):  # one class (or all of the data), one mask set per sigma
            prepared = self._derived(("prepared", k), x, lambda: prepare_transposed(  # by class (see shard())
                self.data_[slice(*bounds)].to(x.device, x.dtype)))
            plans = self._derived(("plans", k), x, LevelCache)  # kept until the next fit or set_params
            return pca_locality_posterior_mean(x, sigma, None, lambda s: self.masks(s, k), temperature=self.temperature,
                                               chunk_size=self.chunk_size, prepared=prepared, plans=plans)

        return self._by_class(x, sigma, y, posterior_mean, with_class=True)


class GoldDiffDenoiser(PCALocalityDenoiser):
    """GoldDiff: PCA-locality over a per-query golden subset of the training set (Shang et al.,
    arXiv 2602.16498). **Approximate**: images outside the subset get no weight; with
    ``k_min = k_max = N`` it is exact PCA-locality. The math is in
    :mod:`analytic_denoisers.kernels.golddiff`.

    Parameters
    ----------
    threshold, rank, chunk_size, temperature, mask_rule, class_statistics :
        as in :class:`PCALocalityDenoiser` (the same masks and softmax); the default threshold
        is GoldDiff's Fashion-MNIST / MNIST / ImageNet configuration, 0.02 (0.03 for CIFAR-10
        and CelebA-HQ, 0.04 for AFHQ).
    k_min, k_max : int, optional
        Bounds of the subset size ``k_t`` (``k_min`` at low noise, ``k_max`` at high noise), and
        ``k_max`` is the number of images the proxy screening keeps. Default: ``N / 20`` and
        ``N / 10`` of the training images (of the class, with labels), as in GoldDiff's configs
        (3,000 and 6,000 for the 60,000 Fashion-MNIST images).
    proxy_resolution : int, default 16
        The screening proxies are average-pooled to at most this many pixels a side (GoldDiff's
        ``low_res_dim``: 28 x 28 images give a 14 x 14 proxy).
    random_state : int, default 0
        Seeds the pre-sampling permutation, drawn at fit and saved (the published code draws a
        fresh random pre-sample per query and step; here a query's subset depends only on the
        query and sigma, so the denoiser is deterministic and batch-invariant).

    Attributes
    ----------
    order_ : Long tensor of shape (M,), the pre-sampling permutation (within each class, with labels)
    the rest as in :class:`PCALocalityDenoiser`.
    """

    _fitted_state = PCALocalityDenoiser._fitted_state + ("order_",)
    _shardable = False  # its golden subsets are chosen from the whole set
    _parameter_constraints = {**PCALocalityDenoiser._parameter_constraints,
                              "k_min": [Interval(int, 1), None], "k_max": [Interval(int, 1), None],
                              "proxy_resolution": [Interval(int, 1)],
                              "random_state": [Interval(int, 0, 2**63 - 1)]}

    def __init__(self, threshold=0.02, rank=None, chunk_size=None, temperature=1.0, mask_rule="published",
                 class_statistics="class", k_min=None, k_max=None, proxy_resolution=16, random_state=0):
        super().__init__(threshold=threshold, rank=rank, chunk_size=chunk_size, temperature=temperature,
                         mask_rule=mask_rule, class_statistics=class_statistics)
        self.k_min = k_min
        self.k_max = k_max
        self.proxy_resolution = proxy_resolution
        self.random_state = random_state

    def fit(self, X, y=None):
        """As :meth:`PCALocalityDenoiser.fit`, and draw the pre-sampling permutation. Returns self."""
        super().fit(X, y)
        generator = torch.Generator().manual_seed(self.random_state)
        bounds = [self._class_range(k) for k in (range(len(self.classes_)) if self.classes_ is not None else [None])]
        self.order_ = torch.cat([lo + torch.randperm(hi - lo, generator=generator) for lo, hi in bounds])
        return self

    def subset_sizes(self, sigma, k=None):
        """``(m_t, k_t)``: pre-sample and subset sizes at ``sigma`` (for class index ``k``)."""
        self._check_fitted()
        lo, hi = self._class_range(k)
        return subset_sizes(float(sigma), hi - lo, *self._bounds(hi - lo))

    def _bounds(self, n):
        return (max(1, n // 20) if self.k_min is None else self.k_min,
                max(1, n // 10) if self.k_max is None else self.k_max)

    def _denoise(self, x, sigma, y):
        def posterior_mean(x, sigma, bounds, k):  # one class (or all of the data)
            lo, hi = bounds
            k_min, k_max = self._bounds(hi - lo)
            data = self._fitted_on("data_", x)[lo:hi]
            factor = proxy_factor(*self.image_shape_[1:], self.proxy_resolution)
            proxies = self._derived(("proxies", lo, hi, factor), x, lambda: pool(data, factor))
            order = self._derived(("order", lo, hi), x, lambda: (self.order_[lo:hi] - lo).to(x.device))
            cache = self._derived(("masks", k), x, LevelCache)  # kept until the next fit or set_params
            return golddiff_posterior_mean(x, sigma, data, lambda s: cache.get(s, lambda: self.masks(s, k)),
                                           order=order, k_min=k_min, k_max=k_max, proxy_factor=factor, proxies=proxies,
                                           temperature=self.temperature, chunk_size=self.chunk_size)

        return self._by_class(x, sigma, y, posterior_mean, with_class=True)
