"""Sigma schedules for sampling, and the exact bridge between VP (DDPM) and VE (sigma) noise.

Every schedule returns a decreasing 1-D float64 tensor of ``n + 1`` noise levels that ends in 0.
DDPM-style schedules are defined by ``alpha_bar`` (cumulative signal fraction); they meet the
sigma-native convention through

    x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps  <=>  x_t / sqrt(alpha_bar) = x0 + sigma eps,
    sigma**2 = (1 - alpha_bar) / alpha_bar,

which is exact: no rounding to "the nearest timestep" happens anywhere in this package.
"""

import math

import torch

from ..core.validation import Interval, check_scalar


def sigma_from_alpha_bar(alpha_bar):
    """``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` (float64 tensor)."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return torch.sqrt((1 - alpha_bar) / alpha_bar)


def alpha_bar_from_sigma(sigma):
    """``alpha_bar = 1 / (1 + sigma**2)``, the inverse of :func:`sigma_from_alpha_bar`."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return 1 / (1 + sigma.square())


def _per_image(level, x):
    """A float stays a float; a tensor of shape (N,) is shaped (N, 1, ...) to broadcast with x."""
    if isinstance(level, torch.Tensor) and level.dim() > 0:
        return level.to(x.device, x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
    return float(level)


def vp_to_ve(x_t, alpha_bar):
    """VP state ``x_t`` at ``alpha_bar`` -> ``(x, sigma)`` with ``x = x_t / sqrt(alpha_bar)``.

    ``alpha_bar`` is a float or a tensor of shape (N,) (one level per image); ``sigma`` has the
    same form.
    """
    sigma = sigma_from_alpha_bar(alpha_bar)
    scale = _per_image(torch.as_tensor(alpha_bar, dtype=torch.float64).sqrt(), x_t)
    return x_t / scale, (sigma if sigma.dim() else float(sigma))


def ve_to_vp(x, sigma):
    """VE state ``x`` at ``sigma`` -> ``(x_t, alpha_bar)`` with ``x_t = sqrt(alpha_bar) x``.

    ``sigma`` is a float or a tensor of shape (N,); ``alpha_bar`` has the same form.
    """
    alpha_bar = alpha_bar_from_sigma(sigma)
    return x * _per_image(alpha_bar.sqrt(), x), (alpha_bar if alpha_bar.dim() else float(alpha_bar))


def _append_zero(sigmas):
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """EDM schedule (Karras et al., arXiv 2206.00364, eq. 5), ``n`` levels plus a final 0.

    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.

    Returns
    -------
    Tensor of shape (n + 1,), float64.
    """
    _check_n(n)
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        check_scalar(value, name, Interval(float, 0, closed="neither"))
    if not sigma_min <= sigma_max:
        raise ValueError(f"need sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def ddpm_linear_alpha_bars(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` for DDPM's linear betas (Ho et al., 2006.11239).

    Returns
    -------
    Tensor of shape (num_train_timesteps,), float64, decreasing.
    """
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def cosine_alpha_bars(num_train_timesteps=1000, s=0.008, max_beta=0.999):
    """Improved-DDPM cosine schedule (Nichol & Dhariwal, arXiv 2102.09672), betas clipped.

    Returns
    -------
    Tensor of shape (num_train_timesteps,), float64, decreasing.
    """
    t = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, 0)


BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def vp_alpha_bars(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"):
    """The ``alpha_bar`` table of a discrete VP schedule named as diffusers names it.

    ``"linear"``: DDPM's linear betas; ``"scaled_linear"``: betas linear in their square root
    (Stable Diffusion); ``"squaredcos_cap_v2"``: the improved-DDPM cosine schedule
    (:func:`cosine_alpha_bars`, ``beta_start`` / ``beta_end`` unused). The betas and their
    cumulative product are float32 (returned as float64), as diffusers' schedulers compute
    ``alphas_cumprod``, so that a trajectory can match theirs to float rounding.

    Returns
    -------
    Tensor of shape (num_train_timesteps,), float64, decreasing.
    """
    check_scalar(num_train_timesteps, "num_train_timesteps", Interval(int, 2))
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        alpha_bars = cosine_alpha_bars(num_train_timesteps)
        betas = (1 - alpha_bars / torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])).float()
    else:
        raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
    return torch.cumprod(1 - betas, 0).double()


def vp_timesteps(n, num_train_timesteps=1000, spacing="leading", steps_offset=0):
    """The ``n`` timesteps a diffusers scheduler's ``set_timesteps(n)`` picks, decreasing.

    ``"leading"`` (``DDIMScheduler``'s default; the only spacing ``steps_offset`` shifts):
    ``k * (T // n) + steps_offset`` for k = n-1 ... 0,
    so 10 of 1000 steps start at t = 900 (sigma 60.8 on DDPM's linear betas);
    ``"trailing"``: ``round(T - k T / n) - 1``, starting at t = T - 1;
    ``"linspace"``: ``round(linspace(0, T - 1, n))`` reversed (``schedules.ddpm_linear``'s grid).

    Returns
    -------
    LongTensor of shape (n,).
    """
    _check_n(n)
    check_scalar(num_train_timesteps, "num_train_timesteps", Interval(int, n))
    check_scalar(steps_offset, "steps_offset", Interval(int, 0))
    if spacing == "leading":
        t = torch.arange(n - 1, -1, -1, dtype=torch.float64) * (num_train_timesteps // n) + steps_offset
    elif spacing == "trailing":  # diffusers' float arange can give n + 1 entries (n = 61 of 1000): not here
        t = (num_train_timesteps - torch.arange(n, dtype=torch.float64) * (num_train_timesteps / n)).round() - 1
    elif spacing == "linspace":
        t = torch.linspace(0, num_train_timesteps - 1, n, dtype=torch.float64).round().flip(0)
    else:
        raise ValueError(f"timestep spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    t = t.long()
    if t.max() >= num_train_timesteps:
        raise ValueError(f"steps_offset={steps_offset} puts timestep {int(t.max())} past the table of "
                         f"{num_train_timesteps}")
    return t


def ddim_alpha_bars(alpha_bars, timesteps, set_alpha_to_one=True):
    """The ``alpha_bar`` of each DDIM step and the one it steps to, as ``DDIMScheduler.step`` does.

    diffusers steps from timestep ``t`` to ``t - T // n`` whatever the spacing (with
    ``"linspace"`` that is not the next timestep; the next step then starts from the next
    timestep), and past timestep 0 to 1 (``set_alpha_to_one``) or to ``alpha_bars[0]``.

    Parameters
    ----------
    alpha_bars : Tensor of shape (T,), the table
    timesteps : LongTensor of shape (n,), decreasing (see :func:`vp_timesteps`)

    Returns
    -------
    ``(at, to)``: two float64 tensors of shape (n,), for :func:`~.samplers.sample_ddim_vp`
    (``alpha_bars=at``, ``alpha_bars_next=to``).
    """
    alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
    timesteps = torch.as_tensor(timesteps)
    if timesteps.dim() != 1 or len(timesteps) == 0 or not (0 <= timesteps).all() or not (timesteps < len(alpha_bars)).all():
        raise ValueError(f"timesteps must be a 1-D list in [0, {len(alpha_bars) - 1}], got {timesteps.tolist()}")
    final = 1.0 if set_alpha_to_one else float(alpha_bars[0])
    previous = timesteps - len(alpha_bars) // len(timesteps)
    to = torch.where(previous >= 0, alpha_bars[previous.clamp(min=0)], torch.tensor(final, dtype=torch.float64))
    return alpha_bars[timesteps], to


def from_alpha_bars(alpha_bars, n):
    """Sigmas at ``n`` evenly spaced timesteps (first and last included) of a discrete VP schedule.

    Parameters
    ----------
    alpha_bars : Tensor of shape (T,), decreasing, in (0, 1)
    n : int, number of sampling steps

    Returns
    -------
    Tensor of shape (n + 1,), float64: decreasing sigmas, then 0.
    """
    _check_n(n)
    alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
    if n > len(alpha_bars):
        raise ValueError(f"cannot take {n} distinct steps from {len(alpha_bars)} timesteps")
    steps = torch.linspace(len(alpha_bars) - 1, 0, n, dtype=torch.float64).round().long()
    return _append_zero(sigma_from_alpha_bar(alpha_bars[steps]))


def ddpm_linear(n, num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """``n``-step sigma grid of DDPM's linear-beta schedule (see :func:`from_alpha_bars`)."""
    return from_alpha_bars(ddpm_linear_alpha_bars(num_train_timesteps, beta_start, beta_end), n)


def cosine(n, num_train_timesteps=1000, s=0.008, max_beta=0.999):
    """``n``-step sigma grid of the improved-DDPM cosine schedule."""
    return from_alpha_bars(cosine_alpha_bars(num_train_timesteps, s, max_beta), n)


SCHEDULES = {"karras": karras, "ddpm_linear": ddpm_linear, "cosine": cosine}


def _check_n(n):
    check_scalar(n, "the number of steps", Interval(int, 1))
