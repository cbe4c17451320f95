"""The Gaussian model of the data: Wiener gains, the posterior mean and the closed-form flow.

If the data were Gaussian with mean ``mu`` and covariance ``Sigma = U diag(lam) U^T``, the
posterior mean would be the Wiener filter

    D(x, sigma) = mu + U diag(lam / (lam + sigma^2)) U^T (x - mu),

and the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` would be solved by

    x(sigma) = mu + U diag(sqrt((sigma^2 + lam) / (sigma_T^2 + lam))) U^T (x_T - mu)

(Wang & Vastola, arXiv 2303.02490 and 2311.10892). Both are applied in the eigenbasis with two
matrix products, never through a d x d matrix per call. :func:`wiener_gains` and
:func:`flow_gains` are the one place each factor is written.
"""

from typing import NamedTuple

import torch

from ..core.validation import Interval, as_images, as_sigma, check_scalar, check_sigmas


def wiener_gains(eigvals, sigma):
    """``lam / (lam + sigma^2)``: the Wiener filter's shrinkage of each eigen-direction.

    ``sigma`` is a float (result of shape (r,)) or a tensor of shape (N, 1) (result (N, r)).
    """
    return eigvals / (eigvals + sigma**2)


def flow_gains(eigvals, sigmas):
    """``sqrt((sigma^2 + lam) / (sigma_T^2 + lam))`` for each level of ``sigmas`` (S,), with
    ``sigma_T = sigmas[0]``: the closed-form flow's factor per eigen-direction, shape (S, r)."""
    s2 = sigmas.square()[:, None]  # (S, 1)
    return torch.sqrt((s2 + eigvals) / (s2[0] + eigvals))


def wiener_matrix(sigma, eigvals, eigvecs):
    """``U diag(lam / (lam + sigma^2)) U^T``, shape (d, d), for one float ``sigma``."""
    return (eigvecs * wiener_gains(eigvals, sigma)) @ eigvecs.T


class Eigenbasis(NamedTuple):
    """Mean, covariance and its leading eigenpairs, float64 on the CPU (see :func:`eigenbasis`)."""

    mean: torch.Tensor
    covariance: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor


def eigenbasis(moments, rank=None):
    """The Gaussian model of a set of images from its :class:`~.moments.Moments`.

    Parameters
    ----------
    moments : Moments
    rank : int, optional, eigenpairs kept (default: all d)

    Returns
    -------
    Eigenbasis: ``mean`` (d,), ``covariance`` (d, d) with divisor N, ``eigvals`` (r,) in
    decreasing order clipped at 0, ``eigvecs`` (d, r) orthonormal columns.
    """
    covariance = moments.covariance().cpu()
    d = covariance.shape[0]
    rank = d if rank is None else check_scalar(rank, f"rank (at most d = {d})", Interval(int, 1, d))
    eigvals, eigvecs = torch.linalg.eigh(covariance)  # ascending
    return Eigenbasis(moments.mean.cpu(), covariance, eigvals.flip(0)[:int(rank)].clamp_min(0).contiguous(),
                      eigvecs.flip(1)[:, :int(rank)].contiguous())


def _check_basis(x, mean, eigvals, eigvecs):
    """The Gaussian's statistics must fit the images ``x`` (N, ...): mean (d,), eigvals (r,), eigvecs (d, r)."""
    d = x[0].numel()
    if mean.shape != (d,) or eigvecs.dim() != 2 or eigvecs.shape[0] != d or eigvals.shape != eigvecs.shape[1:]:
        raise ValueError(f"expected mean ({d},), eigvals (r,) and eigvecs ({d}, r) for images of {d} pixels, got "
                         f"{tuple(mean.shape)}, {tuple(eigvals.shape)} and {tuple(eigvecs.shape)}")


def gaussian_posterior_mean(x, sigma, mean, eigvals, eigvecs):
    """Wiener-filter posterior mean ``mu + U diag(lam / (lam + sigma^2)) U^T (x - mu)``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), or flattened (N, d)
    sigma : float or Tensor of shape (N,)
    mean : Tensor of shape (d,), d = C * H * W
    eigvals : Tensor of shape (r,), non-negative
    eigvecs : Tensor of shape (d, r), orthonormal columns

    Returns
    -------
    Tensor of shape (N, C, H, W). Directions outside the span of ``eigvecs`` are treated as
    having zero variance (they are set to the mean).
    """
    x = as_images(x, flat=True)
    _check_basis(x, mean, eigvals, eigvecs)
    flat = x.reshape(x.shape[0], -1) - mean
    coef = wiener_gains(eigvals, as_sigma(sigma, x)[:, None])  # (N, r) shrinkage per direction
    z = flat @ eigvecs  # (N, r) coordinates in the eigenbasis
    return (mean + (z * coef) @ eigvecs.T).reshape(x.shape)


def gaussian_trajectory(x_T, sigmas, mean, eigvals, eigvecs):
    """Exact probability-flow ODE solution of the Gaussian model from ``sigmas[0]`` down.

    ``x(sigma) = mu + U diag(sqrt((sigma^2 + lam) / (sigma_T^2 + lam))) U^T (x_T - mu)
    + (sigma / sigma_T) x_perp`` with ``x_perp`` the part of ``x_T - mu`` outside the span of U
    (Wang & Vastola, arXiv 2303.02490).

    Parameters
    ----------
    x_T : Tensor of shape (N, C, H, W) or (N, d)
        The state at ``sigma_T = sigmas[0]``.
    sigmas : 1-D tensor of shape (S,)
        Non-negative noise levels, ``sigmas[0] > 0``.
    mean, eigvals, eigvecs : as in :func:`gaussian_posterior_mean`.

    Returns
    -------
    Tensor of shape (S, N, C, H, W): ``x(sigmas[k])`` for each k (the first equals x_T).
    """
    x_T = as_images(x_T, name="x_T", flat=True)
    _check_basis(x_T, mean, eigvals, eigvecs)
    sigmas = check_sigmas(sigmas, schedule=False).to(dtype=x_T.dtype, device=x_T.device)
    flat = x_T.reshape(x_T.shape[0], -1) - mean
    z = flat @ eigvecs  # (N, r)
    perp = flat - z @ eigvecs.T  # (N, d), zero for a full-rank basis
    gain = flow_gains(eigvals, sigmas)  # (S, r)
    states = mean + torch.einsum("nr,sr,dr->snd", z, gain, eigvecs)  # (S, N, d)
    states = states + (sigmas / sigmas[0])[:, None, None] * perp
    return states.reshape((len(sigmas),) + tuple(x_T.shape))
