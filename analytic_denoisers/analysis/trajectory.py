"""Trajectory geometry: "diffusion as painting" (Wang & Vastola, arXiv 2303.02490).

For Gaussian data with mean ``mu`` and covariance ``U diag(lam) U^T`` the probability-flow ODE
from ``x_T`` at ``sigma_T`` is solved by ``x(sigma) - mu = U diag(c(sigma)) U^T (x_T - mu)``
with ``c_i(sigma) = sqrt((sigma^2 + lam_i) / (sigma_T^2 + lam_i))``. Three consequences are
measured here on any denoiser's sampling trajectories and set beside that prediction:

* **Low-dimensional rotation**: directions with ``lam_i << sigma^2`` shrink together like
  ``sigma``, those with ``lam_i >> sigma_T^2`` barely move, so a whole trajectory lies close to a
  plane. :func:`top2_fraction` measures the share of a trajectory's variance (its states about
  their mean) in its top two principal components; :func:`gaussian_top2_fraction` is the same
  number for the closed form, from an S x S Gram matrix of the ``c_i``.
* **Outline first, details later**: the x̂0 component along eigen-direction ``i`` is
  ``sqrt(lam_i / (lam_i + sigma^2))`` times its final value, so it is committed to a fraction
  ``q`` of that value at ``sigma_q = sqrt(lam_i (1 / q^2 - 1))``: high-variance directions (the
  outline) first. :func:`commitment` measures the fraction by regression of each component
  on its final value across samples.
* **Perturbation sensitivity**: a perturbation ``delta`` of the state at ``sigma_k`` moves the
  final sample by ``U diag(sqrt(lam / (lam + sigma_k^2))) U^T delta`` (:func:`gaussian_flow_gain`);
  :func:`perturbation_sensitivity` measures it for any denoiser by re-running the sampler.

The measured numbers are float64 tensors on the CPU (they go into JSON and figures).
"""

import torch
from scipy.stats import spearmanr

from .. import metrics
from ..core.validation import Interval, Sequence, as_images, check_scalar, check_sigmas
from ..kernels.wiener import flow_gains, gaussian_trajectory
from ..sampling.samplers import get_sampler, sample
from ..viz import pyplot, save_figure

COMMIT_LEVELS = (0.5, 0.9)


def record_path(denoiser, noise, sigmas, method="heun"):
    """Sample from ``sigmas[0] * noise`` and keep every state and every step's x̂0.

    Returns
    -------
    dict with ``states``, Tensor of shape (S + 1, N, C, H, W) (the state at each sigma, the
    last one the final sample) and ``denoised``, Tensor of shape (S, N, C, H, W) (x̂0 at each
    step's first denoiser call, at ``sigmas[:-1]``), S = ``len(sigmas) - 1``.
    """
    denoised = []
    _, states = sample(denoiser, noise, sigmas, method, return_trajectory=True,
                       callback=lambda info: denoised.append(info["denoised"]))
    return {"states": states, "denoised": torch.stack(denoised)}


def top2_fraction(states):
    """Share of each trajectory's variance in its top two principal components.

    Parameters
    ----------
    states : Tensor of shape (S, N, C, H, W), N trajectories of S states

    Returns
    -------
    Tensor of shape (N,) in [0, 1]: ``(s_1^2 + s_2^2) / sum s_j^2`` for the singular values of
    the (S, d) matrix of one trajectory's states minus their mean.
    """
    flat = states.reshape(states.shape[0], states.shape[1], -1).transpose(0, 1)  # (N, S, d)
    flat = flat - flat.mean(1, keepdim=True)
    return _top2_share(torch.linalg.svdvals(flat.double()))


def _top2_share(singular_values):
    energy = singular_values.square()
    return energy[..., :2].sum(-1) / energy.sum(-1)


def gaussian_top2_fraction(eigvals, sigmas, coords, perp_sq):
    """Top-2 variance fraction of the closed-form Gaussian trajectories, without pixels.

    With ``A[k] = (c(sigmas[k]) * coords, (sigmas[k] / sigma_T) |x_perp|)`` the trajectory's
    Gram matrix is ``A A^T`` (S x S), so the fraction follows from ``A`` minus its mean over k.

    Parameters
    ----------
    eigvals : Tensor of shape (r,)
    sigmas : 1-D tensor of shape (S,), ``sigmas[0] = sigma_T > 0``
    coords : Tensor of shape (N, r), ``U^T (x_T - mu)`` of each trajectory's start
    perp_sq : Tensor of shape (N,), ``|x_T - mu|^2`` outside the span of U (0 for a full basis)

    Returns
    -------
    Tensor of shape (N,), float64.
    """
    eigvals = eigvals.double()
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=eigvals.device)
    gain = flow_gains(eigvals, sigmas)  # (S, r)
    A = gain * coords.double()[:, None, :]  # (N, S, r)
    perp = torch.as_tensor(perp_sq, dtype=torch.float64, device=eigvals.device).clamp_min(0).sqrt()
    shrink = (sigmas / sigmas[0])[None, :, None] * perp[:, None, None]  # (N, S, 1)
    A = torch.cat([A, shrink], -1)
    A = A - A.mean(-2, keepdim=True)
    return _top2_share(torch.linalg.svdvals(A))


def component_ratios(denoised, final, mean, eigvecs):
    """x̂0 component along each direction as a fraction of its final value, by regression.

    ``ratio[k, i] = sum_n a[k, n, i] f[n, i] / sum_n f[n, i]^2`` with ``a = U^T (x̂0_k - mu)`` and
    ``f = U^T (x_final - mu)``; for the Gaussian flow it is exactly ``sqrt(lam_i / (lam_i +
    sigma_k^2))``. Directions whose final component is zero in every sample give NaN.

    Parameters
    ----------
    denoised : Tensor of shape (S, N, C, H, W)
    final : Tensor of shape (N, C, H, W)
    mean : Tensor of shape (d,); eigvecs : Tensor of shape (d, r)

    Returns
    -------
    Tensor of shape (S, r), float64.
    """
    S, N = denoised.shape[:2]
    U, mean = eigvecs.double().cpu(), mean.double().cpu()
    a = (denoised.reshape(S, N, -1).double().cpu() - mean) @ U  # (S, N, r)
    f = (final.reshape(N, -1).double().cpu() - mean) @ U  # (N, r)
    norm = f.square().sum(0)
    ratio = (a * f).sum(1) / norm
    return torch.where(norm > 1e-24 * norm.max(), ratio, torch.nan)


def commit_sigma(ratios, sigmas, level):
    """Sigma from which each ratio stays at or above ``level`` down to the last step.

    Interpolates linearly in ``log sigma`` between the last step below ``level`` and the next.

    Parameters
    ----------
    ratios : Tensor of shape (S, r), at decreasing ``sigmas`` (S,) > 0

    Returns
    -------
    Tensor of shape (r,): ``sigmas[0]`` if committed from the first step on (a lower bound of
    the true value), NaN if the last step is still below ``level`` or the ratio is NaN.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=ratios.device)
    below = ratios < level  # (S, r)
    S = len(sigmas)
    idx = torch.arange(S, device=ratios.device)[:, None].expand_as(below)
    last_below = torch.where(below, idx, -1).max(0).values  # (r,)
    out = torch.full((ratios.shape[1],), torch.nan, dtype=torch.float64, device=ratios.device)
    out[last_below < 0] = sigmas[0]
    inner = (last_below >= 0) & (last_below < S - 1)
    k = last_below[inner]
    cols = torch.nonzero(inner).flatten()
    r0, r1 = ratios[k, cols], ratios[k + 1, cols]
    l0, l1 = sigmas[k].log(), sigmas[k + 1].log()
    out[cols] = torch.exp(l0 + (level - r0) / (r1 - r0) * (l1 - l0))
    out[ratios.isnan().any(0)] = torch.nan
    return out


def gaussian_commit_sigma(eigvals, level):
    """``sqrt(lam (1 / level^2 - 1))``: where ``sqrt(lam / (lam + sigma^2))`` equals ``level``."""
    return torch.sqrt(eigvals.double() * (1 / level**2 - 1))


def rank_correlation(a, b):
    """Spearman's rank correlation (ties get their average rank) of two 1-D tensors over the
    entries finite in both; NaN with fewer than 3 such entries or a constant side.

    For commitment: +1 when the higher-variance directions are always committed at higher sigma
    (earlier), as the Gaussian flow predicts.
    """
    a, b = a.double().cpu(), b.double().cpu()
    keep = a.isfinite() & b.isfinite()
    if int(keep.sum()) < 3 or a[keep].unique().numel() < 2 or b[keep].unique().numel() < 2:
        return float("nan")
    return float(spearmanr(a[keep].numpy(), b[keep].numpy()).statistic)


def gaussian_flow_gain(delta, sigma, eigvals, eigvecs):
    """``|U diag(sqrt(lam / (lam + sigma^2))) U^T delta|``: a perturbation's effect on the end.

    The closed-form flow from ``sigma`` to 0 (:func:`~analytic_denoisers.kernels.wiener.gaussian_trajectory`)
    is affine, so this is exact for any start; the part of ``delta`` outside the span of U
    shrinks to zero. Returns a float64 CPU Tensor of shape (N,).
    """
    lam, U = eigvals.double().cpu(), eigvecs.double().cpu()
    moved = gaussian_trajectory(delta.double().cpu(), [sigma, 0.0], torch.zeros(len(U), dtype=torch.float64), lam, U)
    return moved[-1].reshape(len(delta), -1).norm(dim=1)


def _check_steps(steps, S):
    return [int(k) for k in check_scalar(list(steps), "steps", Sequence(Interval(int, 0, S - 1)))]


@torch.no_grad()
def perturbation_sensitivity(denoiser, states, sigmas, steps, norm=1.0, method="heun", seed=0):
    """Final-sample change caused by a perturbation of norm ``norm`` added at step k.

    Parameters
    ----------
    denoiser : object with ``denoise(x, sigma)``, or a callable
    states : Tensor of shape (S + 1, N, C, H, W), an unperturbed run (:func:`record_path`)
    sigmas : its schedule, shape (S + 1,)
    steps : sequence of int in ``[0, S - 1]``, where to perturb
    norm : float > 0, the perturbation's Euclidean norm (per image)
    seed : int, seeds the random directions (one per image, the same for every k)

    Returns
    -------
    dict with ``delta`` (N, C, H, W), and ``gain``: float64 CPU Tensor of shape (len(steps), N),
    the final change's norm divided by ``norm``.
    """
    sigmas = check_sigmas(sigmas)
    check_scalar(norm, "norm", Interval(float, 0, closed="neither"))
    sampler = get_sampler(method)
    if len(states) != len(sigmas):
        raise ValueError(f"states must hold one state per sigma: {len(sigmas)} sigmas, got {len(states)} states")
    steps = _check_steps(steps, len(sigmas) - 1)
    final = states[-1]
    g = torch.Generator().manual_seed(int(seed))
    delta = torch.randn(final.shape, generator=g, dtype=torch.float64)
    delta = (delta / delta.reshape(len(delta), -1).norm(dim=1).reshape(-1, 1, 1, 1) * norm)
    delta = delta.to(final.dtype).to(final.device)
    gains = []
    for k in steps:
        moved = sampler(denoiser, as_images(states[k] + delta), sigmas[k:])
        gains.append((moved - final).reshape(len(final), -1).double().norm(dim=1).cpu() / norm)
    return {"delta": delta, "gain": torch.stack(gains)}


def trajectory_geometry(denoiser, gaussian, noise, sigmas, method="heun", perturb_steps=None,
                        perturb_norm=1.0, n_directions=100, seed=0):
    """All three measurements for ``denoiser`` and for the Gaussian closed form, same noise.

    Parameters
    ----------
    denoiser : the denoiser under study (e.g. the reference UNet)
    gaussian : a fitted :class:`~analytic_denoisers.GaussianDenoiser` of its training data
    noise : Tensor of shape (N, C, H, W), standard normal
    sigmas : schedule ending in 0
    perturb_steps : steps for the perturbation sweep (default: every step)
    n_directions : eigen-directions (largest variance first) reported for commitment

    Returns
    -------
    dict of JSON-ready numbers (``top2``, ``commitment``, ``perturbation``) plus, under keys
    starting with ``_``, tensors for the figures.
    """
    noise = as_images(noise, name="noise", image_shape=gaussian.image_shape_)
    sigmas = check_sigmas(sigmas)
    get_sampler(method)  # fail before sampling
    S = len(sigmas) - 1
    steps = list(range(S)) if perturb_steps is None else _check_steps(perturb_steps, S)
    mean, lam, U = (t.double().cpu() for t in (gaussian.mean_, gaussian.eigvals_, gaussian.eigvecs_))
    r = min(int(n_directions), len(lam))
    path = record_path(denoiser, noise, sigmas, method)
    closed = gaussian.trajectory(noise * float(sigmas[0]), sigmas)

    flat_T = noise.reshape(len(noise), -1).double().cpu() * float(sigmas[0]) - mean
    coords = flat_T @ U
    perp_sq = flat_T.square().sum(1) - coords.square().sum(1)
    measured, closed_form = top2_fraction(path["states"]), top2_fraction(closed)
    formula = gaussian_top2_fraction(lam, sigmas, coords, perp_sq)

    ratios = component_ratios(path["denoised"], path["states"][-1], mean, U[:, :r])  # (S, r)
    commit = {}
    for q in COMMIT_LEVELS:
        measured_q = commit_sigma(ratios, sigmas[:-1], q)
        commit[f"{q:g}"] = {"measured": measured_q.tolist(), "gaussian": gaussian_commit_sigma(lam[:r], q).tolist(),
                            "rank_correlation": rank_correlation(lam[:r], measured_q)}

    pert = perturbation_sensitivity(denoiser, path["states"], sigmas, steps, perturb_norm, method, seed)
    predicted = torch.stack([gaussian_flow_gain(pert["delta"], float(sigmas[k]), lam, U) for k in steps])
    return {
        "sigmas": sigmas.tolist(), "method": method, "n_samples": len(noise),
        "top2": {"measured": measured.tolist(), "measured_mean": float(measured.mean()),
                 "gaussian_closed_form": closed_form.tolist(), "gaussian_formula": formula.tolist()},
        "commitment": {"levels": list(COMMIT_LEVELS), "eigvals": lam[:r].tolist(),
                       "sigma_at_level": commit, "ratio_by_step": ratios.T.tolist()},
        "perturbation": {"norm": perturb_norm, "seed": seed, "steps": steps,
                         "sigma": [float(sigmas[k]) for k in steps],
                         "gain_mean": pert["gain"].mean(1).tolist(),
                         **{f"gain_{k}": v for k, v in metrics.quartiles(pert["gain"], dim=1).items()},
                         "gain_by_sample": pert["gain"].T.tolist(),
                         "gaussian_gain_mean": predicted.mean(1).tolist(),
                         "gaussian_gain_median": predicted.median(1).values.tolist()},
        "_states": path["states"], "_closed": closed, "_denoised": path["denoised"],
    }


def plot_trajectory_geometry(result, path):
    """Four panels: trajectories in their top-2 PC plane, top-2 fractions, commitment, gain (PNG)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.3))

    ax = axes[0]  # each trajectory projected on its own top-2 principal plane
    for n in range(min(4, result["n_samples"])):
        for states, style in ((result["_states"], "-"), (result["_closed"], ":")):
            traj = states[:, n].reshape(states.shape[0], -1).double().cpu()
            traj = traj - traj.mean(0)
            _, _, v = torch.linalg.svd(traj, full_matrices=False)
            xy = (traj @ v[:2].T).numpy()
            ax.plot(xy[:, 0], xy[:, 1], style, color=f"C{n}", marker="o" if style == "-" else None, ms=2)
    ax.set(title="trajectories in their top-2 PC plane (axes scaled apart)\n"
                 "solid: denoiser, dotted: Gaussian closed form", xlabel="PC 1", ylabel="PC 2")

    ax = axes[1]  # the variance left outside the plane, per trajectory (1 - fraction, log scale)
    top2 = result["top2"]
    for x, (name, values) in enumerate((("denoiser", top2["measured"]),
                                        ("Gaussian closed form", top2["gaussian_closed_form"]))):
        rest = [max(1 - v, 1e-16) for v in values]
        ax.scatter([x + 0.1 * ((i % 5) - 2) for i in range(len(rest))], rest, s=10, color=f"C{x}")
    ax.set_xticks([0, 1], ["denoiser", "Gaussian\nclosed form"])
    ax.set(yscale="log", xlim=(-0.6, 1.6), ylabel="1 − (variance share of the top 2 PCs)",
           title="how far from a plane: variance outside the top 2 PCs")

    ax = axes[2]
    com = result["commitment"]
    lam = com["eigvals"]
    for q, color in zip(com["levels"], ("C0", "C3")):
        entry = com["sigma_at_level"][f"{q:g}"]
        ax.scatter(lam, entry["measured"], s=8, color=color,
                   label=f"denoiser, {q:.0%} committed (Spearman {entry['rank_correlation']:.2f})")
        ax.plot(lam, entry["gaussian"], color=color, lw=1, label=f"Gaussian: sqrt(λ(1/{q:g}² − 1))")
    ax.set(xscale="log", yscale="log", xlabel="variance λ of the eigen-direction",
           ylabel="σ at which x̂0's component is committed", title="outline first, details later")
    ax.legend(fontsize=7)

    ax = axes[3]
    pert = result["perturbation"]
    ax.plot(pert["sigma"], pert["gain_median"], marker="o", ms=3, color="C0", label="denoiser, median and quartiles")
    ax.fill_between(pert["sigma"], pert["gain_q25"], pert["gain_q75"], color="C0", alpha=0.2)
    ax.plot(pert["sigma"], pert["gain_mean"], ls=":", color="C0", label="denoiser, mean")
    ax.plot(pert["sigma"], pert["gaussian_gain_median"], "k--", label="Gaussian flow, same perturbations (median)")
    ax.set(xscale="log", yscale="log", xlabel="σ at which the perturbation is added",
           ylabel="|Δ final| / |perturbation|", title=f"perturbation sensitivity (norm {pert['norm']:g})")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    for ax in axes[1:]:
        ax.grid(alpha=0.3)
    fig.suptitle(f"trajectory geometry ({result['method']}, {len(result['sigmas']) - 1} steps, "
                 f"{result['n_samples']} samples)")
    return save_figure(fig, path)


__all__ = ["commit_sigma", "component_ratios", "gaussian_commit_sigma", "gaussian_flow_gain",
           "gaussian_top2_fraction", "perturbation_sensitivity", "plot_trajectory_geometry",
           "rank_correlation", "record_path", "top2_fraction", "trajectory_geometry"]
