"""Samplers of the probability-flow ODE as plain functions of any denoiser.

A denoiser is any object with ``denoise(x, sigma)`` (or any callable ``f(x, sigma)``) returning
``E[x0 | x]``; no sampler knows about timesteps or network internals. Each sampler takes the
state ``x`` at ``sigmas[0]`` (already scaled: ``x = sigmas[0] * noise``) and returns the state at
``sigmas[-1]`` (normally 0). ``callback(info)`` is called after each step with a dict holding
``i``, ``x`` (state before the step), ``sigma``, ``sigma_next``, ``denoised`` and ``x_next``
(DDIM adds ``alpha_bar`` and ``alpha_bar_next``).
"""

import math

import torch

from ..core.contract import as_denoise_fn
from ..core.validation import Interval, as_images, check_scalar, check_sigmas
from .schedules import alpha_bar_from_sigma, sigma_from_alpha_bar


class CountingDenoiser:
    """Wraps a denoiser (or callable ``f(x, sigma)``) and counts its calls in ``.calls``."""

    def __init__(self, denoiser):
        self.fn, self.calls = as_denoise_fn(denoiser, None), 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.fn(x, sigma)


def _checked_denoise_fn(denoiser, y):
    """:func:`as_denoise_fn`, with a clear error as soon as the denoiser returns something other
    than finite images of the shape of ``x`` (instead of a broadcasting error, or NaN carried
    silently to the samples)."""
    fn = as_denoise_fn(denoiser, y)

    def denoise(x, sigma):
        out = fn(x, sigma)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the denoiser returned {got} at sigma = {sigma:g} for x of shape {tuple(x.shape)}; "
                             "it must return D(x, sigma), a tensor of the shape of x")
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"the denoiser returned NaN or Inf at sigma = {sigma:g}; sampling stopped there")
        return out

    return denoise


def _report(callback, **info):
    if callback is not None:
        callback(info)


@torch.no_grad()
def sample_euler(denoiser, x, sigmas, *, y=None, callback=None):
    """First-order Euler steps ``x <- x + (sigma_next - sigma) (x - D(x, sigma)) / sigma``."""
    denoise, sigmas = _checked_denoise_fn(denoiser, y), check_sigmas(sigmas).tolist()
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = denoise(x, sigma)
        x_next = x + (sigma_next - sigma) * (x - denoised) / sigma
        _report(callback, i=i, x=x, sigma=sigma, sigma_next=sigma_next, denoised=denoised, x_next=x_next)
        x = x_next
    return x


@torch.no_grad()
def sample_heun(denoiser, x, sigmas, *, y=None, callback=None):
    """Heun's second-order method, deterministic (Karras et al., arXiv 2206.00364, Algorithm 1).

    Costs two denoiser calls per step except the last step to sigma = 0, which is an Euler step.
    """
    denoise, sigmas = _checked_denoise_fn(denoiser, y), check_sigmas(sigmas).tolist()
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = denoise(x, sigma)
        slope = (x - denoised) / sigma  # dx/dsigma at sigma
        x_next = x + (sigma_next - sigma) * slope
        if sigma_next > 0:  # trapezoidal correction with the slope at the Euler prediction
            slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
        _report(callback, i=i, x=x, sigma=sigma, sigma_next=sigma_next, denoised=denoised, x_next=x_next)
        x = x_next
    return x


@torch.no_grad()
def sample_ddim_vp(denoiser, x_t, alpha_bars, *, alpha_bars_next=None, clip_denoised=None, y=None, callback=None):
    """Deterministic DDIM (eta = 0; Song et al., arXiv 2010.02502) in VP coordinates.

    ``x0 = D(x_t / sqrt(a), sigma(a))``, ``eps = (x_t - sqrt(a) x0) / sqrt(1 - a)``,
    ``x_t' = sqrt(a') clip(x0) + sqrt(1 - a') eps`` for consecutive ``alpha_bars`` a -> a'.
    This is diffusers' ``DDIMScheduler.step`` with ``eta=0``, and with the same arguments
    (:func:`~.schedules.vp_timesteps` and :func:`~.schedules.ddim_alpha_bars`) it follows
    its trajectory to float rounding (tested against diffusers, clipping included).

    Parameters
    ----------
    x_t : Tensor of shape (N, C, H, W), the VP state at ``alpha_bars[0]``
    alpha_bars : 1-D tensor, increasing, in (0, 1]; a final 1 means sigma = 0
    alpha_bars_next : 1-D tensor of shape (len(alpha_bars),), optional
        Where each step goes, when that is not the next entry of ``alpha_bars``: step i then
        goes from ``alpha_bars[i]`` to ``alpha_bars_next[i]``, and step i + 1 takes its result
        as the state at ``alpha_bars[i + 1]`` (diffusers' stepping on ``"linspace"`` timesteps,
        see :func:`~.schedules.ddim_alpha_bars`). Every step is then taken, the last one to
        ``alpha_bars_next[-1]``.
    clip_denoised : float, optional
        diffusers' ``clip_sample`` with ``clip_sample_range``: the x̂0 of each step is clamped
        to [-c, c] where it enters ``x_t'``, while ``eps`` keeps the unclamped x̂0 (diffusers'
        default ``use_clipped_model_output=False``). A clamp of x̂0 with an unclamped ``eps``
        is not a sigma-native step of any denoiser, so it exists only in this VP form.
        The callback's ``denoised`` is the unclamped x̂0.

    Returns
    -------
    Tensor of shape (N, C, H, W): the VP state after the last step.
    """
    alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
    if alpha_bars_next is None:
        alpha_bars, alpha_bars_next = alpha_bars[:-1], alpha_bars[1:]
    else:
        alpha_bars_next = torch.as_tensor(alpha_bars_next, dtype=torch.float64)
        if alpha_bars_next.shape != alpha_bars.shape or not (alpha_bars_next > alpha_bars).all():
            raise ValueError("alpha_bars_next must have the shape of alpha_bars and each entry above its own")
    check_sigmas(sigma_from_alpha_bar(torch.cat([alpha_bars, alpha_bars_next[-1:]])))
    if clip_denoised is not None:
        check_scalar(clip_denoised, "clip_denoised", Interval(float, 0, closed="neither"))
    sigmas, sigmas_next = sigma_from_alpha_bar(alpha_bars).tolist(), sigma_from_alpha_bar(alpha_bars_next).tolist()
    denoise = _checked_denoise_fn(denoiser, y)
    for i, (a, a_next) in enumerate(zip(alpha_bars.tolist(), alpha_bars_next.tolist())):
        denoised = denoise(x_t / math.sqrt(a), sigmas[i])  # the VE denoiser through the bridge
        eps = (x_t - math.sqrt(a) * denoised) / math.sqrt(1 - a)
        kept = denoised if clip_denoised is None else denoised.clamp(-clip_denoised, clip_denoised)
        x_next = math.sqrt(a_next) * kept + math.sqrt(1 - a_next) * eps
        _report(callback, i=i, x=x_t, sigma=sigmas[i], sigma_next=sigmas_next[i],
                denoised=denoised, x_next=x_next, alpha_bar=a, alpha_bar_next=a_next)
        x_t = x_next
    return x_t


def sample_ddim(denoiser, x, sigmas, *, y=None, callback=None):
    """DDIM (eta = 0) on a sigma grid: the VE state is mapped to VP, stepped, and mapped back.

    Mathematically identical to :func:`sample_euler` on the same grid (DDIM is the Euler method
    of the probability-flow ODE in the ``x / sqrt(alpha_bar)`` coordinates); the test suite
    checks this numerically as a test of the VP <-> VE bridge.
    """
    alpha_bars = alpha_bar_from_sigma(check_sigmas(sigmas))

    def ve_callback(info):  # report VE states, like the other samplers
        callback(dict(info, x=info["x"] / math.sqrt(info["alpha_bar"]),
                      x_next=info["x_next"] / math.sqrt(info["alpha_bar_next"])))

    x_t = sample_ddim_vp(denoiser, x * math.sqrt(alpha_bars[0]), alpha_bars, y=y,
                         callback=None if callback is None else ve_callback)
    return x_t / math.sqrt(alpha_bars[-1])


SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "ddim": sample_ddim}


def get_sampler(method):
    """The sampler function named ``method`` (a key of ``SAMPLERS``); ValueError for any other name."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[method]


def sample(denoiser, noise, sigmas, method="heun", *, y=None, callback=None, return_trajectory=False):
    """Generate images: integrate the probability-flow ODE from ``sigmas[0] * noise`` to 0.

    Parameters
    ----------
    denoiser : object with ``denoise(x, sigma)``, or a callable ``f(x, sigma)``
    noise : Tensor of shape (N, C, H, W)
        Standard normal noise; the initial state is ``sigmas[0] * noise``.
    sigmas : 1-D tensor, decreasing, ending in 0 (see :mod:`analytic_denoisers.sampling.schedules`)
    method : {"euler", "heun", "ddim"}
    y : Tensor of shape (N,), optional
        Class labels for class-conditional denoisers.
    callback : callable, optional
        Called with a dict after every step (see the module docstring).
    return_trajectory : bool
        Also return the states at every sigma.

    Returns
    -------
    Tensor of shape (N, C, H, W), or ``(x, trajectory)`` with trajectory of shape
    (len(sigmas), N, C, H, W) when ``return_trajectory`` is set.
    """
    sampler = get_sampler(method)
    sigmas = check_sigmas(sigmas)
    x = as_images(noise, name="noise") * float(sigmas[0])
    states = [x]

    def record(info):
        states.append(info["x_next"])
        if callback is not None:
            callback(info)

    x = sampler(denoiser, x, sigmas, y=y, callback=record if return_trajectory else callback)
    return (x, torch.stack(states)) if return_trajectory else x
