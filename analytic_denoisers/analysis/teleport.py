"""Analytical teleportation: skip the early sampling steps with the Gaussian closed form.

Wang & Vastola (arXiv 2311.10892; 2412.09726) observe that at large sigma a trained network
behaves like the Gaussian (Wiener) denoiser of its training data, whose probability-flow ODE
has a closed-form solution. A hybrid sampler therefore jumps from ``sigmas[0]`` to
``sigmas[skip]`` with that solution and runs any denoiser only from there: ``skip`` steps of
denoiser calls are saved, and the final samples move by an amount measured here against the
full run from the same noise.
"""

from .. import metrics
from ..core.validation import Interval, check_scalar, check_sigmas
from ..sampling.samplers import CountingDenoiser, get_sampler, sample
from ..viz import pyplot, save_figure


def teleport_sample(denoiser, gaussian, noise, sigmas, skip, method="heun"):
    """Jump ``sigmas[0] -> sigmas[skip]`` in closed form, then sample the rest with ``denoiser``.

    Parameters
    ----------
    denoiser : object with ``denoise(x, sigma)``, or a callable ``f(x, sigma)``
    gaussian : a fitted :class:`~analytic_denoisers.GaussianDenoiser` (its ``trajectory``)
    noise : Tensor of shape (N, C, H, W), standard normal; the start is ``sigmas[0] * noise``
    sigmas : 1-D schedule ending in 0
    skip : int in ``[0, len(sigmas) - 2]``, steps replaced by the closed form (0: a plain run)
    method : a sampler name of :data:`analytic_denoisers.sampling.samplers.SAMPLERS`

    Returns
    -------
    (Tensor of shape (N, C, H, W), int): the final samples and the number of denoiser calls.
    """
    sigmas = check_sigmas(sigmas)
    skip = check_scalar(skip, "skip", Interval(int, 0, len(sigmas) - 2))
    get_sampler(method)  # fail before the closed-form jump
    counting = CountingDenoiser(denoiser)
    start = noise
    if skip:  # the closed-form state at sigmas[skip], expressed as noise for sample()
        x_skip = gaussian.trajectory(noise * float(sigmas[0]), sigmas[[0, skip]])[-1]
        start = x_skip / float(sigmas[skip])
    final = sample(counting, start, sigmas[skip:], method)
    return final, counting.calls


def teleportation(denoiser, gaussian, noise, sigmas, skips, method="heun"):
    """Final-sample change and calls saved for each number of teleported steps.

    The full run (``skip = 0``) from the same ``noise`` is the reference.

    Returns
    -------
    dict with ``sigmas``, and ``by_skip``: one entry per skip with ``skip``, ``sigma_skip``,
    ``calls``, ``calls_saved``, and the final samples' ``mse``, ``r2`` (mean over images) and
    ``max_abs`` difference to the full run; plus the final samples under ``_samples``.
    """
    sigmas = check_sigmas(sigmas)
    full, full_calls = teleport_sample(denoiser, gaussian, noise, sigmas, 0, method)
    rows, samples = [], {0: full}
    for skip in sorted(set(int(s) for s in skips) | {0}):
        final, calls = (full, full_calls) if skip == 0 else \
            teleport_sample(denoiser, gaussian, noise, sigmas, skip, method)
        samples[skip] = final
        rows.append({"skip": skip, "sigma_skip": float(sigmas[skip]), "calls": calls,
                     "calls_saved": full_calls - calls,
                     "mse": float(metrics.mse(final, full).mean()),
                     "r2": float(metrics.r2(final, full).nanmean()),
                     "max_abs": float((final - full).abs().max())})
    return {"sigmas": sigmas.tolist(), "method": method, "by_skip": rows, "_samples": samples}


def plot_teleportation(result, path):
    """Final-sample R² and MSE against the full run, by denoiser calls saved (PNG)."""
    plt = pyplot()

    rows = result["by_skip"]
    saved = [r["calls_saved"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "r2", "final-sample R² to the full run"),
                           (axes[1], "mse", "final-sample MSE to the full run")):
        ax.plot(saved, [r[key] for r in rows], marker="o")
        for r, x in zip(rows, saved):
            ax.annotate(f"σ={r['sigma_skip']:.3g}", (x, r[key]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set(xlabel="denoiser calls saved", title=title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("symlog", linthresh=1e-6)
    fig.suptitle(f"analytical teleportation ({result['method']}, {len(result['sigmas']) - 1} steps)")
    return save_figure(fig, path)


__all__ = ["plot_teleportation", "teleport_sample", "teleportation"]
