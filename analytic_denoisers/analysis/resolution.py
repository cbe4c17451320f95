"""Resolution chromatography: when each resolution of the image is generated (Hwang, Park & Jo,
arXiv 2401.10247).

**Resolution bands.** ``P_k`` replaces every ``2^k x 2^k`` block of pixels (smaller at the
bottom and right edges when the size is not a power of two) by its mean. The ``P_k`` are nested
orthogonal projections, so ``B_k = P_k - P_{k+1}`` (the details between resolution
``ceil(H / 2^k)`` and ``ceil(H / 2^(k+1))``) and the coarsest ``B_K = P_K`` are orthogonal and
sum to the image: a Haar pyramid. The default ``K`` makes ``B_K`` the per-channel mean.
Resolution levels as average pooling by ``2^k`` are our reading of the paper; orthogonality makes
band energies add up and lets the analytic curve be computed exactly in any eigenbasis.
(:func:`~analytic_denoisers.scales.snr_resolution_schedule`, which turns the paper's SNR
criterion into patch sizes, uses radial Fourier rings instead.)

**Analytic chromatogram.** Under the Gaussian model of the data (``mu``, ``U diag(lam) U^T``),
x̂0 at noise ``sigma`` on the probability-flow path has covariance ``U diag(lam^2 / (lam +
sigma^2)) U^T``, so the share of band k's signal variance that has been generated is

    g_k(sigma) = sum_i w_ki lam_i^2 / (lam_i + sigma^2) / sum_i w_ki lam_i,   w_ki = |B_k u_i|^2,

rising from 0 at ``sigma = inf`` to 1 at ``sigma = 0``. The generation rate per unit of
``-log sigma`` (the time of the EDM sampler, which any schedule maps to its steps) is

    dg_k / d(-log sigma) = sum_i w_ki 2 sigma^2 lam_i^2 / (lam_i + sigma^2)^2 / sum_i w_ki lam_i,

a sum of bumps that peak at ``sigma^2 = lam_i``: coarse bands, which carry the large
eigenvalues, peak first.

**Measured chromatogram.** For any denoiser, the band energy of x̂0 along a sampling run,
``mean_n |B_k (x̂0_n - mu)|^2``, divided by that of the final samples; its rate is the finite
difference between steps.
"""

import math

import torch
import torch.nn.functional as F

from ..core.validation import Interval, as_images, check_scalar, check_sigmas
from ..viz import pyplot, save_figure
from .trajectory import commit_sigma, record_path


def default_levels(image_shape):
    """``ceil(log2(max(H, W)))``: the coarsest band is then the per-channel mean."""
    return max(1, math.ceil(math.log2(max(image_shape[-2:]))))


def _check_levels(levels, image_shape):
    most = default_levels(image_shape)
    levels = most if levels is None else levels
    # more levels would only add empty bands
    return check_scalar(levels, "levels", Interval(int, 1, most))


def block_means(x, size):
    """Orthogonal projection onto images constant on ``size x size`` blocks (edge blocks smaller).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    size : int >= 1

    Returns
    -------
    Tensor of shape (N, C, H, W): each pixel replaced by the mean of its block.
    """
    size = check_scalar(size, "size", Interval(int, 1))
    H, W = x.shape[-2:]
    pad = (0, (-W) % size, 0, (-H) % size)
    sums = F.avg_pool2d(F.pad(x, pad), size, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones((1, 1, H, W), dtype=x.dtype, device=x.device), pad),
                          size, divisor_override=1)
    means = sums / counts
    return means.repeat_interleave(size, -2).repeat_interleave(size, -1)[..., :H, :W]


def resolution_bands(x, levels=None):
    """Split images into orthogonal resolution bands that sum to them.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    levels : int K >= 1 (default: :func:`default_levels`)

    Returns
    -------
    Tensor of shape (K + 1, N, C, H, W): ``[P_0 x - P_1 x, ..., P_(K-1) x - P_K x, P_K x]``
    with ``P_k`` the ``2^k``-block means.
    """
    levels = _check_levels(levels, x.shape[1:])
    proj = [x] + [block_means(x, 2**k) for k in range(1, levels + 1)]
    return torch.stack([proj[k] - proj[k + 1] for k in range(levels)] + [proj[-1]])


def band_labels(image_shape, levels=None):
    """Names of the bands by the resolution they add, e.g. ``['28x28', '14x14', ..., '1x1']``."""
    levels = _check_levels(levels, image_shape)
    H, W = image_shape[-2:]
    return [f"{math.ceil(H / 2**k)}x{math.ceil(W / 2**k)}" for k in range(levels + 1)]


def band_weights(eigvecs, image_shape, levels=None):
    """``w[k, i] = |B_k u_i|^2``, shape (K + 1, r); each column sums to 1 for unit ``u_i``."""
    images = eigvecs.T.reshape((eigvecs.shape[1],) + tuple(image_shape))
    return resolution_bands(images, levels).square().flatten(2).sum(-1)


def analytic_chromatogram(eigvals, eigvecs, image_shape, sigmas, levels=None):
    """Generated share ``g_k(sigma)`` and rate ``dg_k / d(-log sigma)`` of each band.

    Parameters
    ----------
    eigvals : Tensor of shape (r,); eigvecs : Tensor of shape (d, r)
    image_shape : (C, H, W)
    sigmas : 1-D tensor of shape (S,), positive

    Returns
    -------
    (generated, rate): Tensors of shape (K + 1, S), float64; NaN for a band with no variance.
    """
    lam = eigvals.double().cpu()
    w = band_weights(eigvecs.double().cpu(), image_shape, levels)  # (K + 1, r)
    s2 = torch.as_tensor(sigmas, dtype=torch.float64).square()[:, None]  # (S, 1)
    total = w @ lam  # (K + 1,) signal variance per band
    generated = (w @ (lam**2 / (lam + s2)).T) / total[:, None]
    rate = (w @ (2 * s2 * lam**2 / (lam + s2) ** 2).T) / total[:, None]
    return generated, rate


def band_energy(images, mean, levels=None):
    """``mean_n |B_k (x_n - mu)|^2`` for images of shape (N, C, H, W); shape (K + 1,), float64."""
    centred = images.double().cpu() - mean.double().cpu().reshape(images.shape[1:])
    return resolution_bands(centred, levels).square().flatten(2).sum(-1).mean(1)


def measured_chromatogram(denoised, final, mean, levels=None):
    """Band energy of x̂0 at each step as a share of the final samples' band energy.

    Parameters
    ----------
    denoised : Tensor of shape (S, N, C, H, W), x̂0 at each step (:func:`record_path`)
    final : Tensor of shape (N, C, H, W)
    mean : Tensor of shape (d,), the data mean ``mu``

    Returns
    -------
    Tensor of shape (K + 1, S), float64.
    """
    energy = torch.stack([band_energy(step, mean, levels) for step in denoised], 1)
    return energy / band_energy(final, mean, levels)[:, None]


def finite_rate(generated, sigmas):
    """``Delta g / Delta(-log sigma)`` between consecutive steps and the geometric mid sigmas.

    Returns
    -------
    (rate, mid): Tensors of shape (K + 1, S - 1) and (S - 1,).
    """
    log = torch.as_tensor(sigmas, dtype=torch.float64).log()
    return generated.diff(dim=1) / -log.diff(), torch.exp((log[1:] + log[:-1]) / 2)


def peak_sigma(rate, sigmas):
    """Sigma of the largest rate per band (NaN for an all-NaN band), shape (K + 1,)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    filled = torch.nan_to_num(rate, nan=-math.inf)
    peak = sigmas[filled.argmax(1)]
    return torch.where(rate.isnan().all(1), torch.nan, peak)


def step_position(sigma, sigmas):
    """Where ``sigma`` falls along a schedule, as a fraction of its steps (0: first, 1: last).

    Interpolates the step index linearly in ``log sigma`` over ``sigmas[:-1]`` (the positive
    ones, decreasing).
    """
    log = torch.as_tensor(sigmas[:-1], dtype=torch.float64).log()
    if len(log) == 1:  # one step: every sigma is at its start
        return torch.zeros_like(torch.as_tensor(sigma, dtype=torch.float64))
    idx = torch.arange(len(log), dtype=torch.float64)
    s = torch.as_tensor(sigma, dtype=torch.float64).log().clamp(log[-1], log[0])
    k = torch.searchsorted(-log, -s, right=True).clamp(1, len(log) - 1)
    t = (s - log[k - 1]) / (log[k] - log[k - 1])
    return (idx[k - 1] + t) / (len(log) - 1)


def chromatography(denoiser, gaussian, noise, sigmas, method="heun", levels=None, grid_size=400):
    """Analytic chromatogram of ``gaussian``'s fit beside the measured one of ``denoiser``.

    The Gaussian denoiser's own measured chromatogram is included as a check of the
    measurement (it equals the analytic one up to sampling error).

    Parameters
    ----------
    denoiser : the denoiser under study (e.g. the reference UNet)
    gaussian : a fitted :class:`~analytic_denoisers.GaussianDenoiser` of its training data
    noise : Tensor of shape (N, C, H, W), standard normal
    sigmas : the sampling schedule, ending in 0
    levels : number of block-mean levels (default: :func:`default_levels`)
    grid_size : points of the fine log-sigma grid of the analytic curves

    Returns
    -------
    dict of JSON-ready numbers. Per band and curve (the analytic one on the fine grid, the
    analytic one sampled at the schedule's steps, each measured run): ``peak_sigma``, where the
    rate is largest, and ``half_sigma``, from which on half of the band's signal is generated
    (the median of the rate over ``-log sigma``: a timing that, unlike the peak of a measured
    rate, is not thrown by step-to-step noise), each with its ``*_step_position`` along the
    schedule.
    """
    image_shape = tuple(gaussian.image_shape_)
    noise = as_images(noise, name="noise", image_shape=image_shape)
    sigmas = check_sigmas(sigmas)
    levels = _check_levels(levels, image_shape)
    steps = sigmas[:-1]
    lam, U, mean = gaussian.eigvals_, gaussian.eigvecs_, gaussian.mean_
    fine = torch.logspace(math.log10(float(steps[-1])), math.log10(float(steps[0])), grid_size,
                          dtype=torch.float64).flip(0)
    fine_generated, fine_rate = analytic_chromatogram(lam, U, image_shape, fine, levels)
    at_steps, _ = analytic_chromatogram(lam, U, image_shape, steps, levels)
    curves = {"analytic at steps": at_steps}
    for name, den in (("denoiser", denoiser), ("gaussian denoiser", gaussian)):
        path = record_path(den, noise, sigmas, method)
        curves[name] = measured_chromatogram(path["denoised"], path["states"][-1], mean, levels)
    peaks = {"analytic": peak_sigma(fine_rate, fine)}
    halves = {"analytic": commit_sigma(fine_generated.T, fine, 0.5)}
    rates = {}
    for name, generated in curves.items():
        rates[name], mid = finite_rate(generated, steps)
        peaks[name] = peak_sigma(rates[name], mid)
        halves[name] = commit_sigma(generated.T, steps, 0.5)
    return {
        "sigmas": sigmas.tolist(), "method": method, "n_samples": len(noise), "levels": levels,
        "bands": band_labels(image_shape, levels),
        "band_variance": (band_weights(U.double().cpu(), image_shape, levels) @ lam.double().cpu()).tolist(),
        "fine_sigmas": fine.tolist(), "mid_sigmas": mid.tolist(),
        "analytic": {"generated": fine_generated.tolist(), "rate": fine_rate.tolist()},
        "generated_at_steps": {k: v.tolist() for k, v in curves.items()},
        "rate_at_mid": {k: v.tolist() for k, v in rates.items()},
        "peak_sigma": {k: v.tolist() for k, v in peaks.items()},
        "peak_step_position": {k: step_position(v, sigmas).tolist() for k, v in peaks.items()},
        "half_sigma": {k: v.tolist() for k, v in halves.items()},
        "half_step_position": {k: step_position(v, sigmas).tolist() for k, v in halves.items()},
    }


def plot_chromatogram(result, path):
    """Generated share and generation rate of each band against sigma (PNG)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    steps, mid, fine = result["sigmas"][:-1], result["mid_sigmas"], result["fine_sigmas"]
    for k, label in enumerate(result["bands"]):
        color = f"C{k}"
        axes[0].plot(fine, result["analytic"]["generated"][k], color=color, label=f"{label} analytic")
        axes[0].plot(steps, result["generated_at_steps"]["denoiser"][k], "o", ms=3, color=color)
        axes[0].plot(steps, result["generated_at_steps"]["gaussian denoiser"][k], "x", ms=3, color=color)
        axes[1].plot(fine, result["analytic"]["rate"][k], color=color, label=label)
        axes[1].plot(mid, result["rate_at_mid"]["denoiser"][k], "o--", ms=3, lw=0.8, color=color)
        peak = result["peak_sigma"]["denoiser"][k]
        if peak is not None and math.isfinite(peak):  # null in a JSON read back
            axes[1].axvline(peak, color=color, ls=":", lw=0.8)
    axes[0].axhline(0.5, color="k", lw=0.6, ls=":")
    axes[0].set(ylabel="share of the band's variance generated in x̂0", ylim=(-0.05, 1.1),
                title="generated signal per resolution band\nlines: analytic; o: denoiser; x: Gaussian denoiser")
    axes[1].set(ylabel="generation rate  dg / d(−log σ)",
                title="resolution chromatogram\nlines: analytic; o--: denoiser; dotted: denoiser's peak")
    for ax in axes:
        ax.set(xscale="log", xlabel="σ (sampling runs left to right)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="band (resolution)")
    fig.suptitle(f"resolution chromatography ({result['method']}, {len(steps)} steps, "
                 f"{result['n_samples']} samples)")
    return save_figure(fig, path)


__all__ = ["analytic_chromatogram", "band_energy", "band_labels", "band_weights", "block_means",
           "chromatography", "default_levels", "finite_rate", "measured_chromatogram", "peak_sigma",
           "plot_chromatogram", "resolution_bands", "step_position"]
