"""The Gaussian mixture estimator (Wang & Vastola, arXiv 2303.02490 / 2311.10892): k-means clusters
or classes of the training images, one Gaussian each; the math is in
:mod:`analytic_denoisers.kernels.mixture`."""

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans

from ..core.contract import DenoiserMixin
from ..core.validation import Interval, Options, as_images, as_labels, check_scalar
from ..kernels.mixture import gaussian_mixture_posterior_mean
from ..kernels.moments import moments
from ..kernels.wiener import eigenbasis

KMEANS_N_INIT = 10  # k-means restarts (k-means++ seeds), the best kept: fixed, not a hyper-parameter


MIXTURE_STATE = ("weights_", "means_", "eigvals_", "eigvecs_")


class MixtureState:
    """The fitted state of a Gaussian mixture (``weights_``, ``means_``, ``eigvals_``,
    ``eigvecs_``; see :class:`GaussianMixtureDenoiser`) and its kernel arguments."""

    def _mixture_statistics(self, like):
        """``(log_weights, means, eigvals, eigvecs)`` in ``like``'s dtype and device (cached)."""
        log_weights = self._derived("log_weights", like,
                                    lambda: self.weights_.log().to(device=like.device, dtype=like.dtype))
        return (log_weights,) + tuple(self._fitted_on(n, like) for n in MIXTURE_STATE[1:])


class GaussianMixtureDenoiser(MixtureState, DenoiserMixin, BaseEstimator):
    """Exact posterior mean of a Gaussian mixture fitted to clusters of the training images.

    The images are split into K groups (k-means clusters, or one group per class label); each
    group gets its frequency ``pi_k``, mean ``mu_k`` and covariance ``Sigma_k`` (divisor N_k, as
    :class:`~analytic_denoisers.GaussianDenoiser`), and the denoiser is the posterior mean of
    ``sum_k pi_k N(mu_k, Sigma_k)``:
    ``D(x, sigma) = sum_k softmax_k(log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I)) D_k(x)``,
    with ``D_k`` component k's Wiener filter (Wang & Vastola, arXiv 2303.02490 and 2311.10892).

    Exact for the fitted mixture (no approximation at denoise time). One component is the
    :class:`~analytic_denoisers.GaussianDenoiser`; one component per training image (zero
    covariance each) is the :class:`~analytic_denoisers.EmpiricalOptimalDenoiser`.

    Parameters
    ----------
    n_components : int
        Number of k-means clusters (at most the number of training images). Ignored with
        ``components="classes"``, which has one component per class.
    components : {"kmeans", "classes"}
        How the images are grouped: ``sklearn.cluster.KMeans`` on the flattened images
        (``n_init`` fixed to 10, seeded with ``random_state``), or by the class labels ``y``
        given to ``fit`` (required then). Either way the mixture is unconditional: ``denoise``
        takes no labels.
    rank : int, optional
        Keep only the ``rank`` largest eigenpairs of each component's covariance (default: all
        ``d``). Directions outside them have zero variance in that component.
    random_state : int, optional
        Seed of the k-means initialisation (None: not reproducible).
    chunk_size : int
        Images converted to float64 at a time while accumulating each component's moments.

    Attributes
    ----------
    weights_ : Tensor of shape (K,), float64
        Component weights ``pi_k``: the fraction of training images in each group (sum 1).
        K is ``n_components``, less any k-means cluster left empty (duplicate images), or the
        number of classes, in increasing order of label.
    means_ : Tensor of shape (K, d), float64
        Mean of each group (flattened, d = C * H * W).
    eigvals_ : Tensor of shape (K, r), float64
        Eigenvalues of each group's covariance in decreasing order, clipped at 0 (a one-image
        group has all zeros).
    eigvecs_ : Tensor of shape (K, d, r), float64
        Matching orthonormal eigenvectors (columns).
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.

    Examples
    --------
    >>> den = GaussianMixtureDenoiser(n_components=10).fit(X)        # X: (N, C, H, W) in [-1, 1]
    >>> den = GaussianMixtureDenoiser(components="classes").fit(X, y)  # one Gaussian per class
    >>> x0 = den(x, 0.5)
    """

    classes_ = None  # unconditional: labels only group the training images
    _fitted_state = DenoiserMixin._fitted_state + MIXTURE_STATE
    _parameter_constraints = {
        "n_components": [Interval(int, 1)],
        "components": [Options("kmeans", "classes")],
        "rank": [Interval(int, 1), None],
        "random_state": [Interval(int, 0, 2**32 - 1), None],
        "chunk_size": [Interval(int, 1)],
    }

    def __init__(self, n_components=10, components="kmeans", rank=None, random_state=0, chunk_size=4096):
        self.n_components = n_components
        self.components = components
        self.rank = rank
        self.random_state = random_state
        self.chunk_size = chunk_size

    def fit(self, X, y=None):
        """Group the images ``X`` (N, C, H, W) and fit one Gaussian per group. Returns self.

        ``y`` (N,) are the class labels, required with ``components="classes"`` and ignored
        with ``"kmeans"``.
        """
        self._check_params()
        X = as_images(X, name="X")
        d = X[0].numel()
        rank = None if self.rank is None else check_scalar(self.rank, f"rank (at most d = {d})", Interval(int, 1, d))
        # step 1: one group index per image, 0 .. K - 1, every group non-empty
        groups = self._group(X, y)
        # step 2: weight, mean and eigenbasis of each group, float64 on the CPU
        counts = np.bincount(groups)
        index = torch.as_tensor(groups, device=X.device)
        bases = [eigenbasis(moments(X[index == k], self.chunk_size), rank) for k in range(len(counts))]
        self._set_data_summary(X)
        self.weights_ = torch.as_tensor(counts / counts.sum(), dtype=torch.float64)
        self.means_ = torch.stack([b.mean for b in bases])  # (K, d)
        self.eigvals_ = torch.stack([b.eigvals for b in bases])  # (K, r)
        self.eigvecs_ = torch.stack([b.eigvecs for b in bases])  # (K, d, r)
        return self

    def _group(self, X, y):
        """Group index of each image (ndarray (N,)): consecutive, every group non-empty."""
        n = X.shape[0]
        if self.components == "classes":
            if y is None:
                raise ValueError("components='classes' groups the images by class: call fit(X, y) with the labels "
                                 "y of shape (N,)")
            labels = as_labels(y, n).cpu().numpy()
        else:
            if self.n_components > n:
                raise ValueError(f"n_components = {self.n_components} k-means clusters need at least as many "
                                 f"training images, got {n}")
            flat = X.reshape(n, -1).detach().cpu()
            flat = flat.to(torch.float64 if flat.dtype == torch.float64 else torch.float32).numpy()  # KMeans dtypes
            kmeans = KMeans(n_clusters=self.n_components, n_init=KMEANS_N_INIT, random_state=self.random_state)
            labels = kmeans.fit(flat).labels_
        return np.unique(labels, return_inverse=True)[1].reshape(n)  # empty clusters dropped

    def _denoise(self, x, sigma, y):
        return gaussian_mixture_posterior_mean(x, sigma, *self._mixture_statistics(x))
