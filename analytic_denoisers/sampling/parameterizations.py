"""Exact bridges between what a trained network predicts and the posterior mean ``D(x, sigma)``.

A network trained on a variance-preserving process sees ``x_t = sqrt(alpha_bar) x0 +
sqrt(1 - alpha_bar) eps``; with ``sigma**2 = (1 - alpha_bar) / alpha_bar`` that is
``x_t = sqrt(alpha_bar) x`` for the sigma-native ``x = x0 + sigma eps``. From its prediction:

* ``eps``:  ``D = x - sigma eps_hat``;
* ``x0``:   ``D = x0_hat``;
* ``v``:    ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0`` (Salimans & Ho, arXiv 2202.00512),
  so ``D = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v_hat = alpha_bar x - sqrt(1 - alpha_bar) v_hat``;
* ``edm``:  the raw ``F`` of EDM's preconditioning (Karras et al., arXiv 2206.00364, Table 1),
  input ``c_in x``, ``D = c_skip x + c_out F``;
* ``denoised``: a network that is already ``D(x, sigma)``.

A discrete network's time input is its timestep on an ``alpha_bar`` table; a sigma between two
grid points gets a fractional timestep interpolated in log-sigma (as k-diffusion's
``DiscreteSchedule`` does), so grid points are exact (:func:`timestep_from_sigma`).
"""

import torch

from ..core.contract import append_dims
from .schedules import sigma_from_alpha_bar

PARAMETERIZATIONS = ("eps", "x0", "v", "edm", "denoised")


def edm_coefficients(sigma, sigma_data):
    """EDM preconditioning (Karras et al., arXiv 2206.00364, Table 1) for sigma of shape (N,).

    ``c_skip = s_d^2 / (sigma^2 + s_d^2)``, ``c_out = sigma s_d / sqrt(sigma^2 + s_d^2)``,
    ``c_in = 1 / sqrt(sigma^2 + s_d^2)``, ``c_noise = log(sigma) / 4``, each of shape (N,).
    """
    total = sigma.square() + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4


def timestep_from_sigma(sigma, alpha_bars):
    """The (fractional) timestep of each sigma on a discrete VP schedule.

    Linear in ``log sigma`` between neighbouring timesteps, so that a sigma of the table gives
    its integer timestep exactly; sigmas outside the table's range are clamped to its ends.

    Parameters
    ----------
    sigma : Tensor of shape (N,), positive
    alpha_bars : Tensor of shape (T,), strictly decreasing in (0, 1): timestep t has
        ``sigma_t = sqrt((1 - alpha_bars[t]) / alpha_bars[t])``

    Returns
    -------
    Tensor of shape (N,) in [0, T - 1], float64.
    """
    log_table = sigma_from_alpha_bar(torch.as_tensor(alpha_bars, dtype=torch.float64)).log()  # (T,) increasing
    log_table = log_table.to(sigma.device)
    log_sigma = sigma.double().log().clamp(log_table[0], log_table[-1])
    high = torch.searchsorted(log_table, log_sigma).clamp(1, len(log_table) - 1)  # log_table[high - 1] < s <= ...
    low = high - 1
    frac = (log_sigma - log_table[low]) / (log_table[high] - log_table[low])
    return low.double() + frac


def network_input(x, sigma, parameterization, sigma_data=0.5):
    """What the network is fed for the sigma-native state ``x`` (N, C, H, W) at ``sigma`` (N,)."""
    if parameterization in ("eps", "x0", "v"):
        return x * append_dims(sigma.square().add(1).rsqrt(), x.dim())  # x_t = sqrt(alpha_bar) x
    if parameterization == "edm":
        return x * append_dims(edm_coefficients(sigma, sigma_data)[2], x.dim())  # c_in x
    return x


def denoised_from(prediction, x, sigma, parameterization, sigma_data=0.5):
    """The posterior mean ``D(x, sigma)`` from the network's ``prediction`` (see the module docstring).

    prediction, x : Tensors of shape (N, C, H, W); sigma : Tensor of shape (N,)
    """
    s = append_dims(sigma, x.dim())
    if parameterization == "eps":
        return x - s * prediction
    if parameterization == "v":
        alpha_bar = 1 / (1 + s.square())
        return alpha_bar * x - (1 - alpha_bar).sqrt() * prediction
    if parameterization == "edm":
        c_skip, c_out, _, _ = edm_coefficients(sigma, sigma_data)
        return append_dims(c_skip, x.dim()) * x + append_dims(c_out, x.dim()) * prediction
    if parameterization in ("x0", "denoised"):
        return prediction
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
