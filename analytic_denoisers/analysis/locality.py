"""Locality maps: which input pixels a denoiser's output pixel depends on, at each sigma.

Lukoianov et al. (arXiv 2509.09672) find that a trained network's sensitivity ``dD(x)[m] / dx``
is local, and that its extent follows the data's Wiener filter ``W = U diag(lam / (lam +
sigma^2)) U^T`` (the Jacobian of the Gaussian denoiser); their PCA-locality masks threshold
``W``. Here the denoiser's Jacobian rows are computed by autograd at noisy inputs
``x0 + sigma * eps`` and compared with the Wiener rows (cosine similarity) and with the masks
(the share of the row's absolute mass that falls inside the mask).
"""


import torch

from .. import metrics
from ..core.validation import Interval, Sequence, as_images, check_scalar
from ..kernels.jacobian import jacobian_rows
from ..kernels.locality import locality_masks, support
from ..kernels.wiener import wiener_matrix
from ..viz import pyplot, save_figure


def pixel_indices(image_shape, positions):
    """Flat indices of ``(row, col)`` positions in channel 0 of images of ``image_shape``."""
    _, H, W = image_shape
    for r, c in positions:
        if not (0 <= r < H and 0 <= c < W):
            raise ValueError(f"pixel ({r}, {c}) is outside the {H}x{W} image")
    return [int(r) * W + int(c) for r, c in positions]


def locality_maps(denoiser, gaussian, x0, sigmas, pixels, threshold=0.005, seed=0):
    """Jacobian rows of ``denoiser`` beside the Wiener rows and PCA-locality masks of ``gaussian``.

    Parameters
    ----------
    denoiser : the network (any denoiser that lets autograd reach its input)
    gaussian : a fitted :class:`~analytic_denoisers.GaussianDenoiser` of its training data
    x0 : Tensor of shape (N, C, H, W), clean images; the Jacobians are taken at
        ``x0 + sigma * eps`` with one seeded ``eps`` per image, shared by every sigma
    sigmas : sequence of float > 0
    pixels : sequence of flat output indices (see :func:`pixel_indices`)
    threshold : the PCA-locality threshold of the masks (``registry.DATASET_DEFAULTS``)
    seed : seeds ``eps``

    Returns
    -------
    dict with ``sigmas``, ``pixels``, ``threshold`` and ``by_sigma``: per sigma the median and
    quartiles over images and pixels of ``cosine`` (Jacobian row against Wiener row) and
    ``mass_in_mask`` (share of the row's absolute mass inside the mask), their per-pixel
    medians, the Wiener row's own share of mass inside the mask (what a perfect match would
    score) and the mask's size; under ``_maps`` the rows for the figure, (P, d) each: the mean
    Jacobian over images, the Wiener rows and the masks.
    """
    x0 = as_images(x0, name="x0", image_shape=gaussian.image_shape_)
    sigmas = check_scalar([float(s) for s in sigmas], "sigmas", Sequence(Interval(float, 0, closed="neither")))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    eps = eps.to(x0.dtype).to(x0.device)
    lam, U = gaussian.eigvals_.double().cpu(), gaussian.eigvecs_.double().cpu()
    idx = [int(m) for m in pixels]
    rows, maps = [], []
    for sigma in (float(s) for s in sigmas):
        J = jacobian_rows(denoiser, x0 + sigma * eps, sigma, idx).double().cpu()  # (N, P, d)
        W = wiener_matrix(sigma, lam, U)[idx]  # (P, d); W is symmetric
        mask = support(locality_masks(sigma, lam, U, threshold))[:, idx].T  # (P, d): inputs of pixel m
        cosine = torch.nn.functional.cosine_similarity(J, W.expand_as(J), dim=-1)  # (N, P)
        absJ = J.abs()
        mass = (absJ * mask).sum(-1) / absJ.sum(-1)
        flat = absJ.sum(-1) == 0  # a constant output: no direction to compare
        cosine[flat], mass[flat] = torch.nan, torch.nan
        wiener_mass = (W.abs() * mask).sum(-1) / W.abs().sum(-1)
        rows.append({"sigma": sigma, "cosine": _summary(cosine), "mass_in_mask": _summary(mass),
                     "wiener_mass_in_mask_by_pixel": wiener_mass.tolist(),
                     "cosine_by_pixel": cosine.nanmedian(0).values.tolist(),
                     "mass_in_mask_by_pixel": mass.nanmedian(0).values.tolist(),
                     "mask_size_by_pixel": mask.sum(1).tolist()})
        maps.append({"mean_jacobian": J.mean(0), "wiener": W, "mask": mask})
    return {"sigmas": [float(s) for s in sigmas], "pixels": idx, "threshold": threshold,
            "n_images": len(x0), "seed": seed, "by_sigma": rows, "_maps": maps}


def _summary(values):
    """Median and quartiles over every image and pixel, with the count of non-NaN entries."""
    return {**metrics.quartiles(values.flatten(), dim=0), "n": int((~values.isnan()).sum())}


def plot_locality_maps(result, image_shape, path):
    """Per sigma (rows) and pixel: mean Jacobian row, Wiener row and mask (PNG), and the scores."""
    plt = pyplot()
    c, h, w = image_shape
    panels = (("mean Jacobian row", "mean_jacobian"), ("Wiener row", "wiener"), ("mask", "mask"))
    n_sig, n_pix = len(result["sigmas"]), len(result["pixels"])
    fig, axes = plt.subplots(n_sig, 3 * n_pix + 1, figsize=(1.7 * (3 * n_pix + 1) + 1.5, 1.8 * n_sig + 0.6),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * 3 * n_pix + [1.6]})
    for i, (row, maps) in enumerate(zip(result["by_sigma"], result["_maps"])):
        for p, m in enumerate(result["pixels"]):
            for j, (title, key) in enumerate(panels):
                ax = axes[i][3 * p + j]
                img = maps[key][p].double().reshape(c, h, w)[m // (h * w)]
                r, col = divmod(m % (h * w), w)
                off = img.clone()
                off[r, col] = 0  # the colour scale ignores the (dominant) pixel itself
                lim = float(off.abs().max()) or 1.0
                ax.imshow(img.numpy(), cmap="gray" if key == "mask" else "RdBu_r", vmin=0 if key == "mask" else -lim,
                          vmax=lim)
                ax.plot(col, r, "o", mfc="none", mec="lime", ms=7, mew=0.8)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{title}\npixel {(r, col)}", fontsize=7)
            axes[i][3 * p].set_ylabel(f"σ = {row['sigma']:g}", fontsize=8)
    gs = axes[0][-1].get_gridspec()
    for ax in axes[:, -1]:
        ax.remove()
    ax = fig.add_subplot(gs[:, -1])
    sig = result["sigmas"]
    for key, label, color in (("cosine", "cosine to Wiener row", "C0"), ("mass_in_mask", "|J| mass in mask", "C3")):
        med, lo, hi = ([r[key][q] for r in result["by_sigma"]] for q in ("median", "q25", "q75"))
        ax.plot(sig, med, marker="o", color=color, label=label)
        ax.fill_between(sig, lo, hi, color=color, alpha=0.2)
    ax.plot(sig, [float(torch.tensor(r["wiener_mass_in_mask_by_pixel"]).nanmedian()) for r in result["by_sigma"]],
            "--", color="C3", label="Wiener row's mass in mask")
    ax.set(xscale="log", xlabel="σ", ylim=(-0.05, 1.05), title="median, quartiles\nover images × pixels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"locality maps: denoiser Jacobian rows against the Wiener filter (mask threshold "
                 f"{result['threshold']:g}, {result['n_images']} noisy images; colour scales clipped at "
                 f"the largest value off the circled pixel)", fontsize=9)
    return save_figure(fig, path, dpi=100)


__all__ = ["jacobian_rows", "locality_maps", "pixel_indices", "plot_locality_maps"]
