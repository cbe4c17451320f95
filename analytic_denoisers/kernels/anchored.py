"""The anchored patch composite: Niedoba et al.'s patch composite, anchored by a Gaussian mixture.

This package's own denoiser (issue 16; not from a paper). The patch composite (PSPC-Square,
Niedoba et al., arXiv 2411.19339) assembles each pixel from the posterior means of the crops
covering it: sharp, local detail, but wherever a crop covers the whole image it is the empirical
denoiser and returns training images. A mixture of Gaussians (Wang & Vastola, arXiv 2303.02490)
generalises at the coarse scales, but blurs fine detail. The anchored composite is their convex
combination,

    D(x, sigma) = (1 - w) * D_PSPC(x, sigma) + w * D_GMM(x, sigma),

with both posterior means exact and fitted on the same training images. It is a heuristic: the
combination is not the posterior mean of any one prior. Its weight, mixture size and crop rule
were chosen on Fashion-MNIST against a trained UNet's samples and frozen before it was run on
any other data (``benchmarks/results/anchored-composite/``).
"""

from .mixture import gaussian_mixture_posterior_mean
from .patches import patch_composite_posterior_mean


def anchored_composite_posterior_mean(x, sigma, data, patch_size, mixture, weight, chunk_size=None):
    """``(1 - weight) * PSPC(x, sigma) + weight * GMM(x, sigma)``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, C, H, W), float64 or x's dtype: the composite's training images
    patch_size : int or callable sigma -> int: crop side (see :func:`patch_composite_posterior_mean`)
    mixture : (log_weights (K,), means (K, d), eigvals (K, r), eigvecs (K, d, r)), d = C H W:
        the fitted mixture (see :func:`gaussian_mixture_posterior_mean`)
    weight : float in [0, 1]: the mixture's share; 0 is the patch composite, 1 the mixture
    chunk_size : int, optional: training images per chunk of the composite's softmax

    Returns
    -------
    Tensor of shape (N, C, H, W), x's dtype.
    """
    local = patch_composite_posterior_mean(x, sigma, data, patch_size, chunk_size=chunk_size)
    anchor = gaussian_mixture_posterior_mean(x, sigma, *mixture)
    return (1 - weight) * local + weight * anchor
