"""The anchored patch composite estimator; the math is in :mod:`analytic_denoisers.kernels.anchored`."""

from ..core.validation import Interval
from ..kernels.anchored import anchored_composite_posterior_mean
from .mixture import MIXTURE_STATE, GaussianMixtureDenoiser, MixtureState
from .patches import PatchCompositeDenoiser


class AnchoredCompositeDenoiser(MixtureState, PatchCompositeDenoiser):
    """Niedoba et al.'s patch composite anchored by a Gaussian mixture (this package's own method).

    ``D(x, sigma) = (1 - weight) * PSPC(x, sigma) + weight * GMM(x, sigma)``: the convex
    combination of the exact PSPC-Square posterior mean (:class:`PatchCompositeDenoiser`, crops
    of side ``patch_size``) and the exact posterior mean of a mixture of ``n_components``
    Gaussians fitted to k-means clusters of the same images (:class:`GaussianMixtureDenoiser`).
    The composite brings local detail; the mixture generalises where a crop covering the whole
    image would return a training image. A heuristic, not the posterior mean of one prior; see
    :mod:`analytic_denoisers.kernels.anchored`.

    The defaults ``weight=0.5, n_components=10`` are the values frozen on Fashion-MNIST
    (``benchmarks/results/anchored-composite/FROZEN.md``), which the benchmark runs with the data's
    SNR crop rule (``"patch_size": "snr"``, as for PSPC).

    Parameters
    ----------
    patch_size : int or schedule, default 8
        Crop side, or a function / Table of sigma giving it (as :class:`PatchCompositeDenoiser`).
    weight : float in [0, 1], default 0.5
        The mixture's share: 0 is the patch composite, 1 the mixture.
    n_components : int, default 10
        k-means clusters of the mixture (at most the number of training images).
    random_state : int, optional, default 0
        Seed of the k-means initialisation.
    chunk_size : int, optional
        Training images per chunk of the composite's streaming softmax; does not change the result.

    Attributes
    ----------
    data_ : the training images (N, C, H, W) (unconditional: ``fit`` takes no labels)
    weights_, means_, eigvals_, eigvecs_ : the mixture, as in :class:`GaussianMixtureDenoiser`
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.

    Examples
    --------
    >>> from analytic_denoisers.scales import snr_resolution_schedule
    >>> den = AnchoredCompositeDenoiser(patch_size=snr_resolution_schedule(X, sigmas)).fit(X)
    >>> x0 = den(x, 0.5)
    """

    _shardable = False  # the mixture is fitted on the whole set
    _fitted_state = PatchCompositeDenoiser._fitted_state + MIXTURE_STATE
    _parameter_constraints = {
        **PatchCompositeDenoiser._parameter_constraints,
        "weight": [Interval(float, 0, 1)],
        "n_components": [Interval(int, 1)],
        "random_state": [Interval(int, 0, 2**32 - 1), None],
    }

    def __init__(self, patch_size=8, weight=0.5, n_components=10, random_state=0, chunk_size=None):
        super().__init__(patch_size=patch_size, chunk_size=chunk_size)
        self.weight = weight
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        """Keep the training images ``X`` (N, C, H, W) and fit the mixture to them. Returns self."""
        self._check_params()
        if y is not None:
            raise ValueError("AnchoredCompositeDenoiser is unconditional: call fit(X) without labels")
        mixture = GaussianMixtureDenoiser(n_components=self.n_components, random_state=self.random_state).fit(X)
        super().fit(X)
        for name in MIXTURE_STATE:
            setattr(self, name, getattr(mixture, name))
        return self

    def _denoise(self, x, sigma, y):
        return anchored_composite_posterior_mean(x, sigma, self._fitted_on("data_", x), self.patch_size_at,
                                                 self._mixture_statistics(x), self.weight, chunk_size=self.chunk_size)
