"""``analytic-denoisers analyze {trajectory,teleport,chromatography,locality}``: the theory analyses.

Each analysis is one :class:`Analysis`: its options, what it computes from the reference and a
Gaussian fitted on the training images, its figures and its printed summary. :func:`run` does the
rest once: set-up, ``<out>/<name>.json`` (numbers, command, reference), figures, summary.
"""

from pathlib import Path
from typing import Callable, NamedTuple

import torch

from .. import bench, datasets, registry
from ..analysis.resolution import chromatography, plot_chromatogram
from ..analysis.locality import locality_maps, pixel_indices, plot_locality_maps
from ..analysis.teleport import plot_teleportation, teleportation
from ..analysis.trajectory import plot_trajectory_geometry, trajectory_geometry
from ..bench.run import reference_for
from ..core.files import write_json
from ..core.noise import seeded_noise
from ..viz import save_labelled_rows
from . import options


class Analysis(NamedTuple):
    help: str
    description: str
    n: int  # default number of samples; 0: the analysis does not sample
    steps: int
    add_arguments: Callable  # (parser) -> None
    compute: Callable  # (args, reference, gaussian, device) -> result dict
    figures: Callable  # (args, result, out folder) -> list of written paths
    report: Callable  # (args, result) -> lines to print


def _noise(args, ref, device):
    return seeded_noise(range(args.seed, args.seed + args.n), ref.image_shape_, device=device)


# -- trajectory geometry ------------------------------------------------------------------------

def _trajectory_arguments(p):
    p.add_argument("--perturb-norm", type=float, default=1.0, help="perturbation norm (default 1)")
    p.add_argument("--perturb-steps", type=options.number_list(int), help="comma-separated steps (default: all)")
    p.add_argument("--directions", type=options.positive_int, default=100,
                   help="eigen-directions reported for commitment, largest variance first (default 100)")


def _trajectory(args, ref, gaussian, device):
    return trajectory_geometry(ref, gaussian, _noise(args, ref, device), options.schedule(args), args.sampler,
                               args.perturb_steps, args.perturb_norm, args.directions, args.seed)


def _trajectory_figures(args, result, out):
    sigmas = options.schedule(args)
    shown = sorted({int(k) for k in torch.linspace(0, len(sigmas) - 2, 7).round()})
    rows = [(f"x̂0 at step {k} (σ={sigmas[k]:.3g})", result["_denoised"][k][:8]) for k in shown]
    return [plot_trajectory_geometry(result, out / "trajectory.png"),
            save_labelled_rows(rows + [("final sample", result["_states"][-1][:8])], out / "trajectory-x0.png",
                               title="the denoiser's x̂0 along sampling: outline first, details later")]


def _trajectory_report(args, result):
    top2, pert = result["top2"], result["perturbation"]
    yield (f"top-2 PC variance share (mean over samples): denoiser {top2['measured_mean']:.6f}, Gaussian closed "
           f"form {sum(top2['gaussian_closed_form']) / args.n:.6f}")
    for level, entry in result["commitment"]["sigma_at_level"].items():
        yield (f"commitment to {float(level):.0%}: Spearman rank correlation of variance and commit sigma "
               f"{entry['rank_correlation']:.3f} (Gaussian flow: 1)")
    for sigma, q25, med, q75, mean, pred in zip(*(pert[k] for k in ("sigma", "gain_q25", "gain_median", "gain_q75",
                                                                    "gain_mean", "gaussian_gain_median"))):
        yield (f"perturbation at sigma {sigma:8.3f}: final change x{med:.4f} [{q25:.4f}, {q75:.4f}] (median "
               f"[quartiles]; mean {mean:.4f}), Gaussian flow x{pred:.4f}")


# -- teleportation ------------------------------------------------------------------------------

def _teleport_arguments(p):
    p.add_argument("--skips", type=options.number_list(int), default=[2, 4, 6, 8, 10, 12],
                   help="comma-separated numbers of teleported steps (default 2,4,6,8,10,12)")


def _teleport(args, ref, gaussian, device):
    result = teleportation(ref, gaussian, _noise(args, ref, device), options.schedule(args), args.skips, args.sampler)
    return {"n_samples": args.n, **result}


def _teleport_figures(args, result, out):
    rows = [(f"skip {k} (from σ={result['sigmas'][k]:.3g})", v[:8]) for k, v in result["_samples"].items()]
    return [plot_teleportation(result, out / "teleport.png"),
            save_labelled_rows(rows, out / "teleport-samples.png", title="final samples, same seeds; skip 0 is the full run")]


def _teleport_report(args, result):
    for row in result["by_skip"]:
        yield (f"skip {row['skip']:>3} (jump to sigma {row['sigma_skip']:8.3f}): {row['calls']:>3} calls "
               f"({row['calls_saved']} saved), final R2 {row['r2']:.4f}, MSE {row['mse']:.2e}")


# -- resolution chromatography ------------------------------------------------------------------

def _chromatography_arguments(p):
    p.add_argument("--levels", type=options.positive_int, help="block-mean levels (default: down to one block)")


def _chromatography(args, ref, gaussian, device):
    return chromatography(ref, gaussian, _noise(args, ref, device), options.schedule(args), args.sampler, args.levels)


def _chromatography_report(args, result):
    for k, band in enumerate(result["bands"]):
        yield f"band {band:>7}: " + "; ".join(
            f"{what} sigma {result[key]['analytic'][k]:.3g} analytic, {result[key]['denoiser'][k]:.3g} denoiser"
            for what, key in (("peak", "peak_sigma"), ("half generated", "half_sigma")))


# -- locality maps ------------------------------------------------------------------------------

def _locality_arguments(p):
    p.add_argument("--n-images", type=options.positive_int, default=32, help="noisy test images (default 32)")
    p.add_argument("--sigmas", type=options.number_list(float), default=[0.05, 0.2, 0.5, 1.0, 2.0],
                   help="comma-separated sigmas (default 0.05,0.2,0.5,1,2)")
    p.add_argument("--pixels", type=options.pixel_list, default=[(14, 14), (7, 20), (20, 9)],
                   help="comma-separated row:col output pixels (default 14:14,7:20,20:9)")
    p.add_argument("--threshold", type=options.unit_interval, help="PCA-locality mask threshold (default: the dataset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (image i: SEED + i)")


def _locality(args, ref, gaussian, device):
    x0 = datasets.load(args.dataset, "test", args.root)[:args.n_images].to(device)
    threshold = registry.make("pca-locality", dataset=args.dataset).threshold \
        if args.threshold is None else args.threshold
    pixels = pixel_indices(ref.image_shape_, args.pixels)
    return {**locality_maps(ref, gaussian, x0, args.sigmas, pixels, threshold, args.seed),
            "_image_shape": ref.image_shape_}


def _locality_report(args, result):
    for row in result["by_sigma"]:
        yield (f"sigma {row['sigma']:6.3g}: cosine to Wiener row {row['cosine']['median']:.3f} "
               f"[{row['cosine']['q25']:.3f}, {row['cosine']['q75']:.3f}], |J| mass in mask "
               f"{row['mass_in_mask']['median']:.3f} (median [quartiles] over images x pixels)")


ANALYSES = {
    "trajectory": Analysis(
        "trajectory geometry: 2-D rotation, outline first, perturbation sensitivity",
        "Sample with the reference and measure (a) the share of each trajectory's variance in its top "
        "two principal components, (b) the sigma at which x̂0's component along each eigen-direction "
        "of the data reaches 50% and 90% of its final value, (c) the final change caused by a "
        "perturbation of fixed norm added at each step; each beside the closed-form Gaussian "
        "prediction (Wang & Vastola, arXiv 2303.02490).",
        32, 18, _trajectory_arguments, _trajectory, _trajectory_figures, _trajectory_report),
    "teleport": Analysis(
        "analytical teleportation: skip early steps with the Gaussian closed form",
        "Jump from sigma_max to the SKIP-th sigma of the schedule with the closed-form Gaussian PF-ODE "
        "(fitted on the training images), then sample with the reference; reports denoiser calls saved "
        "and the final samples' change against the full run from the same seeds (Wang & Vastola, "
        "arXiv 2311.10892).",
        16, 18, _teleport_arguments, _teleport, _teleport_figures, _teleport_report),
    "chromatography": Analysis(
        "resolution chromatography: when each resolution band is generated",
        "Analytic generation rate of each resolution band (Haar block-mean pyramid) from the Gaussian "
        "model of the training data, beside the rate measured from the band energy of the reference's "
        "x̂0 along sampling, with the sigma of peak generation per band (Hwang, Park & Jo, "
        "arXiv 2401.10247).",
        64, 32, _chromatography_arguments, _chromatography,
        lambda args, result, out: [plot_chromatogram(result, out / "chromatography.png")], _chromatography_report),
    "locality": Analysis(
        "locality maps: the reference's Jacobian rows against the Wiener filter",
        "Jacobian rows dD[m]/dx of the reference at chosen pixels and sigmas (autograd, at noisy test "
        "images), beside the Wiener filter rows and PCA-locality masks of the training data, with "
        "their cosine similarity and the share of the Jacobian's mass inside the mask (Lukoianov et "
        "al., arXiv 2509.09672).",
        0, 0, _locality_arguments, _locality,
        lambda args, result, out: [plot_locality_maps(result, tuple(result["_image_shape"]), out / "locality.png")],
        _locality_report),
}


def add_parser(sub):
    p = sub.add_parser("analyze", help="theory analyses: " + ", ".join(ANALYSES),
                       description="Theory analyses of the reference denoiser against the Gaussian "
                                   "model of its training data; each writes a JSON of its numbers "
                                   "(with the command) and figures to --out.")
    analyses = p.add_subparsers(dest="analysis", required=True)
    for name, spec in ANALYSES.items():
        q = analyses.add_parser(name, help=spec.help, description=spec.description)
        options.add_data(q, split=False, limit_help="fit the Gaussian on the first LIMIT training images")
        options.add_reference(q)
        if spec.n:
            options.add_sampling(q, n=spec.n, steps=spec.steps)
        spec.add_arguments(q)
        options.add_device(q)
        options.add_output(q, "output folder", kind="folder", default=f"out/analysis/{name}")
        q.set_defaults(func=run)


def run(args):
    spec = ANALYSES[args.analysis]
    protocol = bench.make_protocol({"dataset": args.dataset, "root": args.root, "reference": args.reference,
                                    "reference_params": dict(args.reference_param)})
    X = options.load_data(args, split="train")
    ref, ref_name, _ = reference_for(protocol, X)
    device = options.device(args.device)
    gaussian = registry.make("gaussian").fit(X.to(device))
    result = spec.compute(args, ref, gaussian, device)
    out = Path(args.out)
    numbers = {k: v for k, v in result.items() if not k.startswith("_")}
    paths = [write_json(out / f"{args.analysis}.json",
                        {"command": options.command_line(args), "reference": ref_name, **numbers})]
    paths += spec.figures(args, result, out)
    for line in spec.report(args, result):
        print(line)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
