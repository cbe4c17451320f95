"""The PSPC-Flex estimator (Niedoba et al., arXiv 2411.19339): patches cut from a sensitivity
map, from the fitted Gaussian's Wiener filter or a target network's Jacobian; the math is in
:mod:`analytic_denoisers.kernels.flex`."""

import copy

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from ..core.contract import TrainingSetMixin
from ..core.validation import (Callable, Interval, Options, Schedule, Sequence, as_training_images, check_scalar,
                               sigma_grid, value_at)
from ..kernels.flex import MASS, mass_masks, patch_flex_posterior_mean, sensitivity_maps
from ..kernels.locality import pca_locality_posterior_mean, prepare_transposed
from ..kernels.moments import moments
from ..kernels.wiener import eigenbasis, wiener_matrix
from ..sampling.schedules import karras
from ..scales.table import Table

SENSITIVITIES = ("wiener", "network")
AGGREGATIONS = ("composite", "own-patch")
# The published CIFAR-10 masses (plai-group/pspc, pspc/denoisers.py, CIFAR_THRESHOLD_SCHEDULE):
# one per step of EDM's 18-step schedule, sigma = 80 ... 0.002 (rho = 7), looked up at the
# nearest step in log-sigma (the published code: the nearest step in sigma).
PUBLISHED_CIFAR10_MASSES = (1.0,) * 7 + (0.7, 0.7, 0.5) + (0.4,) * 4 + (0.3,) * 4
CIFAR10_MASS = Table.from_steps(PUBLISHED_CIFAR10_MASSES, karras(18, 0.002, 80.0, 7.0))
# default levels of the network maps: 10 levels log-spaced over EDM's range
NETWORK_SIGMAS = tuple(float(s) for s in np.geomspace(0.002, 80.0, 10))


class PatchFlexDenoiser(TrainingSetMixin, BaseEstimator):
    """Niedoba et al.'s PSPC-Flex: posterior composite of patches shaped by a sensitivity map.

    At noise level sigma, output pixel m's patch is the smallest set of input pixels holding a
    fraction ``mass`` of the sensitivity map's row m (largest entries first); each patch gets
    the posterior mean of the training images at the same pixels, and each pixel averages the
    patches covering it (:func:`~analytic_denoisers.kernels.flex.patch_flex_posterior_mean`).

    Parameters
    ----------
    mass : float in (0, 1] or schedule, default :data:`CIFAR10_MASS`
        The fraction ``lambda`` of each row's sensitivity that a patch holds, or a function /
        :class:`~analytic_denoisers.scales.Table` of sigma giving it. 1 takes every pixel of
        nonzero sensitivity (the empirical-optimal denoiser). The default is the only published
        setting, the paper code's CIFAR-10 schedule on EDM's 18 levels: 1 at the seven largest
        (sigma = 80 ... 8.4), then 0.7, 0.7, 0.5, 0.4 x 4, 0.3 x 4 down to sigma = 0.002 (it was
        chosen for CIFAR-10 networks: for other data, a value of your own may match better).
    sensitivity : {"wiener", "network"}, default "wiener"
        The map ``S[m, n]`` the patches are cut from. "wiener": ``|W[m, n]|``, the fitted
        Gaussian's Wiener filter ``U diag(lam / (lam + sigma^2)) U^T`` (the Jacobian of the
        Gaussian denoiser; network-free, exact at every sigma). "network": the paper's gradient
        heatmaps, ``network``'s mean absolute Jacobian ``E|dD(z)[m] / dz[n]|`` over ``n_probe``
        noisy training images ``z = x0 + sigma eps``, measured at fit on the levels ``sigmas``
        and used at the level nearest in log-sigma.
    network : denoiser or callable ``f(x, sigma)``, optional
        The target network (e.g. a fitted :class:`~analytic_denoisers.UNetDenoiser`), needed by
        and only allowed with ``sensitivity="network"``; autograd must reach its input. Used in
        ``fit`` only: its maps are the fitted state, and ``save`` stores the maps, not the network.
    sigmas : sequence of positive floats, optional
        The levels of the network maps (default :data:`NETWORK_SIGMAS`: 10 levels log-spaced
        from 0.002 to 80); only with ``sensitivity="network"``.
    n_probe : int, default 16
        Training images the network's Jacobian is averaged over (all of them if fewer).
    aggregation : {"composite", "own-patch"}, default "composite"
        "composite": each pixel averages the posterior means of every patch covering it (the
        paper's PSPC). "own-patch": each pixel is its own patch's posterior mean at that pixel
        (the PCA-locality kernel with these patches as masks).
    random_state : int, default 0
        Seeds the choice of the probe images and their noise.
    chunk_size : int, optional
        Training images per chunk of the streaming softmax; does not change the result.

    Attributes
    ----------
    data_, labels_, classes_, class_offsets_ : the training images, sorted by class when fitted
        with labels ``y`` (then ``denoise`` needs ``y`` and uses only that class's images; the
        patches come from the maps of the whole set)
    mean_, eigvals_, eigvecs_ : the fitted Gaussian ("wiener"; None for "network")
    sensitivity_ : float64 Tensor of shape (L, d, d), the network maps ``S[l, m, n]`` ("network";
        None for "wiener")
    sensitivity_sigmas_ : float64 Tensor of shape (L,), their levels, increasing (or None)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.

    Notes
    -----
    Every patch contains its own pixel, so that every pixel is covered. The network maps cost
    d backward passes of ``n_probe`` images per level (see
    :func:`~analytic_denoisers.kernels.flex.sensitivity_maps`); a call costs about
    ``6 U d M`` flops per query for U distinct patches (U = 1 at ``mass = 1``). ``clone`` (and
    so ``GridSearchCV``) shares the network instead of cloning it: it is a fitted reference,
    not a sub-estimator that ``fit`` would fit (scikit-learn >= 1.3).
    """

    _fitted_state = TrainingSetMixin._fitted_state + (
        "mean_", "eigvals_", "eigvecs_", "sensitivity_", "sensitivity_sigmas_")
    _parameter_constraints = {
        "mass": [MASS, Schedule()],
        "sensitivity": [Options(*SENSITIVITIES)],
        "network": [Callable("a denoiser or a callable f(x, sigma) that autograd reaches through"), None],
        "sigmas": [Sequence(Interval(float, 0, closed="neither")), None],
        "n_probe": [Interval(int, 1)],
        "aggregation": [Options(*AGGREGATIONS)],
        "random_state": [Interval(int, 0, 2**63 - 1)],
        "chunk_size": [Interval(int, 1), None],
    }

    def __init__(self, mass=CIFAR10_MASS, sensitivity="wiener", network=None, sigmas=None, n_probe=16,
                 aggregation="composite", random_state=0, chunk_size=None):
        self.mass = mass
        self.sensitivity = sensitivity
        self.network = network
        self.sigmas = sigmas
        self.n_probe = n_probe
        self.aggregation = aggregation
        self.random_state = random_state
        self.chunk_size = chunk_size

    def __sklearn_clone__(self):
        """An unfitted copy with the same hyper-parameters, the network shared (not re-made unfitted)."""
        params = self.get_params(deep=False)
        return type(self)(**{k: v if k == "network" else clone(v, safe=False) for k, v in params.items()})

    def _check_params(self, params=None):
        params = self.get_params(deep=False) if params is None else params
        super()._check_params(params)
        if params["sensitivity"] == "wiener":
            for name in ("network", "sigmas"):
                if params[name] is not None:
                    raise ValueError(f"PatchFlexDenoiser: {name} is used only with sensitivity='network', "
                                     f"got {name}={params[name]!r} with sensitivity='wiener'")
        if params["sigmas"] is not None:
            sigma_grid(params["sigmas"], "sigmas")  # distinct

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,), and fit
        the sensitivity source: the Gaussian of ``X``, or the network's maps. Returns self."""
        self._check_params()
        if self.sensitivity == "network" and self.network is None:
            raise ValueError("PatchFlexDenoiser: sensitivity='network' needs network= (the target denoiser "
                             "whose Jacobian shapes the patches), got network=None")
        X = as_training_images(X)
        maps = levels = None
        if self.sensitivity == "network":  # before anything is stored: a failing network leaves no half fit
            levels = sorted(sigma_grid(NETWORK_SIGMAS if self.sigmas is None else self.sigmas, "sigmas"))
            probe = torch.randperm(len(X), generator=torch.Generator().manual_seed(int(self.random_state)))
            probe = probe[:self.n_probe].to(X.device)
            maps = sensitivity_maps(self.network, X[probe], levels, seed=self.random_state).cpu()  # (L, d, d)
        super().fit(X, y)
        self.mean_ = self.eigvals_ = self.eigvecs_ = None
        self.sensitivity_ = self.sensitivity_sigmas_ = None
        if maps is None:
            basis = eigenbasis(moments(self.data_))
            self.mean_, self.eigvals_, self.eigvecs_ = basis.mean, basis.eigvals, basis.eigvecs
        else:
            self.sensitivity_ = maps
            self.sensitivity_sigmas_ = torch.tensor(levels, dtype=torch.float64)
        return self

    def sensitivity_at(self, sigma):
        """The map ``S[m, n]`` of shape (d, d) used at noise level ``sigma`` (float64, CPU)."""
        self._check_fitted()
        sigma = float(sigma)
        if (self.sensitivity == "network") != (self.sensitivity_ is not None):
            raise ValueError(f"PatchFlexDenoiser: sensitivity={self.sensitivity!r} was set after a fit with the "
                             "other source: call fit again")
        if self.sensitivity_ is None:
            return wiener_matrix(sigma, self.eigvals_, self.eigvecs_).abs()
        nearest = Table(self.sensitivity_sigmas_, range(len(self.sensitivity_sigmas_)))  # index, in log-sigma
        return self.sensitivity_[nearest(sigma)]

    def masks(self, sigma):
        """The patches ``mask[n, m]`` (bool, shape (d, d)) at noise level ``sigma``."""
        mass = check_scalar(value_at(self.mass, sigma), f"mass at sigma = {float(sigma):g}", MASS)
        return mass_masks(self.sensitivity_at(sigma), mass)

    def save(self, path):
        """Write the fitted denoiser to ``path`` (HDF5). The network is not saved (its maps are):
        the file holds ``network=None``, and what ``ad.load`` gives back denoises without it."""
        if self.network is None:
            return super().save(path)
        shallow = copy.copy(self)
        shallow.network = None
        return shallow.save(path)

    def _denoise(self, x, sigma, y):
        kernel = patch_flex_posterior_mean if self.aggregation == "composite" else pca_locality_posterior_mean

        def compute(x, sigma, bounds):  # one class (or all of the data); the kernel groups by sigma
            prepared = self._derived(("prepared", *bounds), x, lambda: prepare_transposed(
                self.data_[slice(*bounds)].to(device=x.device, dtype=x.dtype)))
            return kernel(x, sigma, None, self.masks, chunk_size=self.chunk_size, prepared=prepared)

        return self._by_class(x, sigma, y, compute)
