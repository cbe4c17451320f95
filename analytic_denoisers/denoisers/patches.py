"""The patch estimators: Kamb & Ganguli's LS / ELS / bbELS machines (arXiv 2412.20292) and
Niedoba et al.'s PSPC-Square (arXiv 2411.19339); the math is in
:mod:`analytic_denoisers.kernels.patches`."""

from sklearn.base import BaseEstimator

from ..core.contract import TrainingSetMixin
from ..core.validation import BOOLEAN, Interval, Options, Schedule
from ..kernels.patch_index import build_patch_index
from ..kernels.patches import (PADDINGS, equivariant_local_score_posterior_mean, equivariant_position_sets,
                               local_score_posterior_mean, patch_composite_posterior_mean, size_at)

CHUNK = [Interval(int, 1), None]


class LocalScoreDenoiser(TrainingSetMixin, BaseEstimator):
    """Kamb & Ganguli's local score machines: LS, ELS and boundary-broken ELS (arXiv 2412.20292).

    Parameters
    ----------
    patch_size : odd int or schedule, default 5
        Patch side P, or a function / :class:`~analytic_denoisers.scales.Table` of sigma giving
        it (the paper calibrates P per noise level). Sizes beyond the whole image are clipped:
        ``2 max(H, W) - 1`` for LS, ``2 min(H, W) - 1`` with circular padding.
    equivariant : bool, default False
        False: the LS machine (co-located patches). True: ELS / bbELS (patches from every
        location), which is exact but costs ``O(M (H W)^2 C P^2)`` per query.
    padding : "zeros" or "circular", default "zeros"
        With ``equivariant=True``: "circular" is the ELS machine, "zeros" the boundary-broken
        bbELS machine.
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.
    prune_tol : float in (0, 1), optional
        ELS / bbELS only. Cluster the training patches (k-means, built on first use per patch
        size and cached) and skip clusters that provably hold less than ``prune_tol`` of a
        pixel's softmax: each output pixel moves by at most ``2 prune_tol max|x_i|``
        (:func:`pruned_patch_softmax`). It saves most of the work at small sigma, little at
        large sigma. Default None: every patch pair is computed.

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : the training images, sorted by class when
        fitted with labels ``y`` (then ``denoise`` needs ``y`` and uses only that class)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    _shardable = True  # without prune_tol: see shard()
    _parameter_constraints = {
        "patch_size": [Interval(int, 1, odd=True), Schedule()],
        "equivariant": [BOOLEAN],
        "padding": [Options(*PADDINGS)],
        "chunk_size": CHUNK,
        "prune_tol": [Interval(float, 0, 1, closed="neither"), None],
    }

    def __init__(self, patch_size=5, equivariant=False, padding="zeros", chunk_size=None, prune_tol=None):
        self.patch_size = patch_size
        self.equivariant = equivariant
        self.padding = padding
        self.chunk_size = chunk_size
        self.prune_tol = prune_tol

    def _check_params(self, params=None):
        params = self.get_params(deep=False) if params is None else params
        super()._check_params(params)
        if params["prune_tol"] is not None and not params["equivariant"]:
            raise ValueError(f"LocalScoreDenoiser: prune_tol needs equivariant=True, got "
                             f"prune_tol={params['prune_tol']!r}, equivariant={params['equivariant']!r}")

    def patch_size_at(self, sigma):
        """The patch side used at noise level ``sigma`` (after clipping to the image)."""
        self._check_fitted()
        _, h, w = self.image_shape_
        limit = 2 * (min(h, w) if self.padding == "circular" else max(h, w)) - 1
        return min(size_at(self.patch_size, sigma, odd=True), limit)

    def _denoise(self, x, sigma, y):
        def machine(x, sigma, bounds):  # one class (or all of the data); the kernel groups by sigma
            data = self._fitted_on("data_", x)[slice(*bounds)]
            if not self.equivariant:
                return local_score_posterior_mean(x, sigma, data, self.patch_size_at, padding=self.padding,
                                                  chunk_size=self.chunk_size)

            def indexes(size):  # built once per patch size and class, then cached
                return self._derived(("patch_index", size, self.padding, *bounds), x, lambda: [
                    build_patch_index(data, size, self.padding, pos.to(x.device))
                    for pos in equivariant_position_sets(*x.shape[2:], size, self.padding)])

            return equivariant_local_score_posterior_mean(
                x, sigma, data, self.patch_size_at, padding=self.padding, chunk_size=self.chunk_size,
                prune_tol=self.prune_tol, indexes=indexes if self.prune_tol is not None else None)

        return self._by_class(x, sigma, y, machine)


class PatchCompositeDenoiser(TrainingSetMixin, BaseEstimator):
    """Niedoba et al.'s PSPC-Square patch composite (arXiv 2411.19339).

    Parameters
    ----------
    patch_size : int or schedule, default 8
        Crop side s (clipped to ``min(H, W)``), or a function / Table of sigma giving it.
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : as in :class:`LocalScoreDenoiser`
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    _shardable = True  # see shard()
    _parameter_constraints = {"patch_size": [Interval(int, 1), Schedule()], "chunk_size": CHUNK}

    def __init__(self, patch_size=8, chunk_size=None):
        self.patch_size = patch_size
        self.chunk_size = chunk_size

    def patch_size_at(self, sigma):
        """The crop side used at noise level ``sigma`` (after clipping to the image)."""
        self._check_fitted()
        _, h, w = self.image_shape_
        return min(size_at(self.patch_size, sigma, odd=False), min(h, w))

    def _denoise(self, x, sigma, y):
        return self._by_class(x, sigma, y, lambda x, sigma, bounds: patch_composite_posterior_mean(
            x, sigma, self._fitted_on("data_", x)[slice(*bounds)], self.patch_size_at, chunk_size=self.chunk_size))
