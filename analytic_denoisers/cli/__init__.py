"""Command-line interface: ``analytic-denoisers {fit,sample,train-unet,bench,analyze,info}`` (also ``python -m analytic_denoisers``).

Each subcommand is a function of parsed arguments; ``main(argv)`` returns an exit code, so the
tests call it in-process. Only the CLI chooses a device (``--device``, default: CUDA if present).
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import bench, datasets, registry
from ..bench.measure import shown_path
from ..core.artifact import info
from ..core.files import write_json
from ..core.noise import seeded_noise
from ..sampling import schedules
from ..sampling.samplers import SAMPLERS, sample
from ..unet.estimator import UNetDenoiser
from ..unet.training import log_path
from ..viz import save_grid


def _param(text):
    """``key=value`` with value parsed as JSON when possible (``rank=64``, ``top_k=null``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _device(name):
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def cmd_fit(args):
    X, y = datasets.load(args.dataset, args.split, args.root, return_labels=True)
    if args.limit:
        X, y = X[:args.limit], y[:args.limit]
    est = registry.make(args.method, dataset=args.dataset, **dict(args.param))
    print(f"fitting {est!r} on {args.dataset}/{args.split}: {tuple(X.shape)}", file=sys.stderr)
    est.fit(X.to(_device(args.device)), y if args.labels else None)
    if args.labels and est.classes_ is None:
        raise ValueError(f"method {args.method!r} does not use class labels: drop --labels")
    est.save(args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_sample(args):
    den = registry.load(args.model)
    device = _device(args.device)
    sigmas = schedules.karras(args.steps, args.sigma_min, args.sigma_max, args.rho)
    seeds = range(args.seed, args.seed + args.n)
    noise = seeded_noise(seeds, den.image_shape_, device=device)
    y = None
    if den.classes_ is None and args.label is not None:
        raise ValueError(f"{args.model} is not class-conditional: drop --label")
    if den.classes_ is not None:
        picks = [args.label] * args.n if args.label is not None else \
            [den.classes_[i % len(den.classes_)] for i in range(args.n)]
        y = torch.as_tensor(np.asarray(picks), device=device)
    with tqdm(total=len(sigmas) - 1, desc=f"{args.sampler} sampling", unit="step") as bar:
        x = sample(den, noise, sigmas, args.sampler, y=y, callback=lambda info: bar.update())
    out = Path(args.out)
    save_grid(x, out, nrow=args.nrow, scale=args.scale)
    np.save(out.with_suffix(".npy"), x.cpu().numpy())
    print(f"wrote {out} and {out.with_suffix('.npy')} ({args.n} samples, images in [-1, 1])")
    return 0


def cmd_train_unet(args):
    X = datasets.load(args.dataset, args.split, args.root)
    if args.limit:
        X = X[:args.limit]
    params = {**dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, bf16=args.bf16,
                     random_state=args.seed), **dict(args.param)}
    known = UNetDenoiser().get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown UNetDenoiser hyper-parameters {unknown}; known: {sorted(known)}")
    est = UNetDenoiser(**params)
    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(out.stem + ".ckpt")
    device = _device(args.device)
    action = "resuming from" if checkpoint.exists() else "checkpoints in"
    print(f"training {est!r} on {args.dataset}/{args.split}: {tuple(X.shape)} on {device}; "
          f"{action} {checkpoint}, loss log {log_path(checkpoint)}", file=sys.stderr)
    est.fit(X.to(device), checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
            progress=True)
    est.save(out)
    print(f"wrote {out} ({est.n_steps_} steps, final logged loss {est.loss_log_[-1, 1]:.4f})")
    return 0


def _method_param(text):
    """``method.key=value`` for bench, e.g. ``pca-locality.threshold=0.02``."""
    key, value = _param(text)
    method, dot, name = key.partition(".")
    if not dot or not name:
        raise argparse.ArgumentTypeError(f"expected METHOD.KEY=VALUE, got {text!r}")
    return method, name, value


def cmd_bench(args):
    overrides = {}
    for key in ("dataset", "root", "reference", "device"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.limit:
        overrides["train_limit"] = args.limit
    if args.methods:
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    sections = {"denoising": dict(n_images=args.n_images, sigmas=args.sigmas, seed=args.denoise_seed),
                "sampling": dict(n_samples=args.n_samples, steps=args.steps, sampler=args.sampler,
                                 seed=args.seed)}
    for section, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            overrides[section] = values
    for method, name, value in args.param:
        overrides.setdefault("params", {}).setdefault(method, {})[name] = value
    protocol = bench.make_protocol(overrides, path=args.protocol)
    protocol["device"] = str(_device(protocol["device"]))
    start = time.perf_counter()
    results = bench.run(protocol, log=lambda line: print(line, file=sys.stderr))
    command = _command_line(args)
    paths = bench.write(results, args.out, command=command)
    print(bench.gate_text(results["gate"]).splitlines()[0])
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f} s")
    return 0


def _command_line(args):
    """The command as typed, for result files."""
    return "analytic-denoisers " + " ".join(shlex.quote(a) for a in args.argv)


def _number_list(kind):
    """argparse type: comma-separated numbers of ``kind`` (float or int), at least one."""
    def parse(text):
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one number")
        return values
    return parse


def _analysis_setup(args):
    """The reference denoiser, its shown path, a Gaussian fitted on the training images, the device."""
    protocol = bench.make_protocol({"dataset": args.dataset, "root": args.root, "reference": args.reference})
    ref_path = bench.reference_path(protocol)
    ref = registry.load(ref_path)
    X = datasets.load(args.dataset, "train", args.root)[:args.limit]
    device = _device(args.device)
    gaussian = registry.make("gaussian").fit(X.to(device))
    return ref, shown_path(ref_path), gaussian, device


def _sampling_setup(args, ref, device):
    noise = seeded_noise(range(args.seed, args.seed + args.n), ref.image_shape_, device=device)
    return noise, schedules.karras(args.steps, args.sigma_min, args.sigma_max, args.rho)


def _write_analysis(args, name, ref_shown, result):
    """Write ``<out>/<name>.json`` (numbers, command, reference); returns the output folder."""
    out = Path(args.out)
    numbers = {k: v for k, v in result.items() if not k.startswith("_")}
    write_json(out / f"{name}.json", {"command": _command_line(args), "reference": ref_shown, **numbers})
    return out


def cmd_analyze_teleport(args):
    from ..analysis.teleport import plot_teleportation, teleportation
    from ..viz import save_labelled_rows

    ref, ref_shown, gaussian, device = _analysis_setup(args)
    noise, sigmas = _sampling_setup(args, ref, device)
    result = teleportation(ref, gaussian, noise, sigmas, args.skips, args.sampler)
    out = _write_analysis(args, "teleport", ref_shown, {"n_samples": args.n, **result})
    plot_teleportation(result, out / "teleport.png")
    save_labelled_rows([(f"skip {k} (from σ={sigmas[k]:.3g})", v[:8]) for k, v in result["_samples"].items()],
                       out / "teleport-samples.png", title="final samples, same seeds; skip 0 is the full run")
    for row in result["by_skip"]:
        print(f"skip {row['skip']:>3} (jump to sigma {row['sigma_skip']:8.3f}): {row['calls']:>3} calls "
              f"({row['calls_saved']} saved), final R2 {row['r2']:.4f}, MSE {row['mse']:.2e}")
    print(f"wrote {out / 'teleport.json'}, {out / 'teleport.png'}, {out / 'teleport-samples.png'}")
    return 0


def cmd_analyze_trajectory(args):
    from ..analysis.trajectory import plot_trajectory_geometry, trajectory_geometry
    from ..viz import save_labelled_rows

    ref, ref_shown, gaussian, device = _analysis_setup(args)
    noise, sigmas = _sampling_setup(args, ref, device)
    result = trajectory_geometry(ref, gaussian, noise, sigmas, args.sampler, args.perturb_steps,
                                 args.perturb_norm, args.directions, args.seed)
    out = _write_analysis(args, "trajectory", ref_shown, result)
    plot_trajectory_geometry(result, out / "trajectory.png")
    shown = sorted({int(k) for k in torch.linspace(0, len(sigmas) - 2, 7).round()})
    save_labelled_rows([(f"x̂0 at step {k} (σ={sigmas[k]:.3g})", result["_denoised"][k][:8]) for k in shown]
                       + [("final sample", result["_states"][-1][:8])], out / "trajectory-x0.png",
                       title="the denoiser's x̂0 along sampling: outline first, details later")
    top2 = result["top2"]
    print(f"top-2 PC variance share (mean over samples): denoiser {top2['measured_mean']:.6f}, Gaussian closed "
          f"form {sum(top2['gaussian_closed_form']) / args.n:.6f}")
    for level, entry in result["commitment"]["sigma_at_level"].items():
        print(f"commitment to {float(level):.0%}: Spearman rank correlation of variance and commit sigma "
              f"{entry['rank_correlation']:.3f} (Gaussian flow: 1)")
    pert = result["perturbation"]
    for sigma, q25, med, q75, mean, pred in zip(*(pert[k] for k in ("sigma", "gain_q25", "gain_median", "gain_q75",
                                                                    "gain_mean", "gaussian_gain_median"))):
        print(f"perturbation at sigma {sigma:8.3f}: final change x{med:.4f} [{q25:.4f}, {q75:.4f}] (median "
              f"[quartiles]; mean {mean:.4f}), Gaussian flow x{pred:.4f}")
    print(f"wrote {out / 'trajectory.json'}, {out / 'trajectory.png'}, {out / 'trajectory-x0.png'}")
    return 0


def cmd_analyze_chromatography(args):
    from ..analysis.chromatography import chromatography, plot_chromatogram

    ref, ref_shown, gaussian, device = _analysis_setup(args)
    noise, sigmas = _sampling_setup(args, ref, device)
    result = chromatography(ref, gaussian, noise, sigmas, args.sampler, args.levels)
    out = _write_analysis(args, "chromatography", ref_shown, result)
    plot_chromatogram(result, out / "chromatography.png")
    for k, band in enumerate(result["bands"]):
        timing = "; ".join(f"{what} sigma {result[key]['analytic'][k]:.3g} analytic, {result[key]['denoiser'][k]:.3g} "
                           f"denoiser" for what, key in (("peak", "peak_sigma"), ("half generated", "half_sigma")))
        print(f"band {band:>7}: {timing}")
    print(f"wrote {out / 'chromatography.json'}, {out / 'chromatography.png'}")
    return 0


def _pixel_list(text):
    """argparse type: comma-separated ``row:col`` pairs."""
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item.strip()]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected comma-separated row:col pairs, got {text!r}")
    return pairs


def cmd_analyze_locality(args):
    from ..analysis.locality_maps import locality_maps, pixel_indices, plot_locality_maps

    ref, ref_shown, gaussian, device = _analysis_setup(args)
    x0 = datasets.load(args.dataset, "test", args.root)[:args.n_images].to(device)
    threshold = registry.make("pca-locality", dataset=args.dataset).threshold \
        if args.threshold is None else args.threshold
    pixels = pixel_indices(ref.image_shape_, args.pixels)
    result = locality_maps(ref, gaussian, x0, args.sigmas, pixels, threshold, args.seed)
    out = _write_analysis(args, "locality", ref_shown, result)
    plot_locality_maps(result, ref.image_shape_, out / "locality.png")
    for row in result["by_sigma"]:
        print(f"sigma {row['sigma']:6.3g}: cosine to Wiener row {row['cosine']['median']:.3f} "
              f"[{row['cosine']['q25']:.3f}, {row['cosine']['q75']:.3f}], |J| mass in mask "
              f"{row['mass_in_mask']['median']:.3f} (median [quartiles] over images x pixels)")
    print(f"wrote {out / 'locality.json'}, {out / 'locality.png'}")
    return 0


def cmd_info(args):
    print(json.dumps(info(args.model), indent=2))
    return 0


def _data_arguments(p):
    p.add_argument("--dataset", default="default", choices=datasets.NAMES,
                   help="dataset name (default: the small Fashion-MNIST subset shipped in data/)")
    p.add_argument("--root", help="folder or file holding the dataset (see datasets.load)")
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--limit", type=_positive_int, help="use only the first LIMIT images")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="analytic-denoisers",
        description="Fit training-free analytical diffusion denoisers, sample with them, train the "
                    "reference UNet and benchmark every denoiser against it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a denoiser on a dataset and save it as HDF5",
                       description="Fit a denoiser on a dataset and save it (HDF5).")
    p.add_argument("method", choices=sorted(registry.METHODS), help="which denoiser")
    _data_arguments(p)
    p.add_argument("--labels", action="store_true",
                   help="fit a class-conditional denoiser (methods that support it)")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter of the method, e.g. --param rank=64 (repeatable)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("-o", "--out", required=True, help="output .h5 file")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("sample", help="generate images with a saved denoiser",
                       description="Integrate the probability-flow ODE from seeded noise with a "
                                   "saved denoiser; writes a PNG grid and a .npy array beside it.")
    p.add_argument("model", help=".h5 file written by `fit`")
    p.add_argument("-n", type=_positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=_positive_int, default=18, help="sampling steps (default 18)")
    p.add_argument("--sampler", default="heun", choices=sorted(SAMPLERS))
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--sigma-max", type=float, default=80.0)
    p.add_argument("--rho", type=float, default=7.0, help="Karras schedule exponent")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED + i")
    p.add_argument("--label", type=int, help="class label for conditional models (default: cycle)")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row")
    p.add_argument("--scale", type=int, default=2, help="pixel enlargement of the PNG")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("-o", "--out", default="samples.png", help="output PNG (the .npy goes beside it)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train-unet", help="train the reference UNet (resumable) and save it as HDF5",
                       description="Train the reference UNet (EDM preconditioning and loss) on a "
                                   "dataset. A checkpoint is written periodically and on Ctrl-C; "
                                   "running the same command again resumes from it (a larger "
                                   "--steps extends a finished run). The loss log is written "
                                   "beside the checkpoint as CSV.")
    _data_arguments(p)
    p.add_argument("--steps", type=_positive_int, default=4000, help="optimiser steps in total (default 4000)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="training batch (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (about 2x faster on CPU)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, batches and noise (default 0)")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="other UNetDenoiser hyper-parameter, e.g. --param base_channels=64")
    p.add_argument("--checkpoint", help="training checkpoint (default: OUT with suffix .ckpt)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=250, help="steps (default 250)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("-o", "--out", required=True, help="output .h5 file (EMA weights)")
    p.set_defaults(func=cmd_train_unet)

    p = sub.add_parser(
        "bench", help="run the benchmark protocol: every method against the reference UNet",
        description="Fit every chosen method on the training images, then compare it with the "
                    "reference network (default: the UNet shipped in data/) on held-out noisy test "
                    "images over a sigma grid (denoiser agreement) and from shared initial noise "
                    "(sampler agreement). Prints the reference's quality gate; writes "
                    "results.json, denoising.csv, sampling.csv, results.md, samples.png and "
                    "metrics.png to --out. Options override the protocol file, which overrides "
                    "the defaults of analytic_denoisers.bench.DEFAULT_PROTOCOL.")
    p.add_argument("--protocol", help="protocol JSON file (keys of DEFAULT_PROTOCOL)")
    p.add_argument("--dataset", choices=datasets.NAMES, help="dataset (default: default)")
    p.add_argument("--root", help="folder or file holding the dataset (see datasets.load)")
    p.add_argument("--limit", type=_positive_int, help="fit on the first LIMIT training images only")
    p.add_argument("--reference", help="saved reference denoiser .h5 (default for the default "
                                       "dataset: data/unet-default.h5)")
    p.add_argument("--methods", help=f"comma-separated, from {','.join(sorted(registry.METHODS))} (default: all)")
    p.add_argument("--param", type=_method_param, action="append", default=[],
                   metavar="METHOD.KEY=VALUE", help="hyper-parameter of one method, e.g. "
                   "pca-locality.threshold=0.02; patch_size=\"snr\" is the SNR schedule (repeatable)")
    p.add_argument("--n-images", type=_positive_int, help="test images for denoiser agreement (default 32)")
    p.add_argument("--sigmas", type=_number_list(float), help="comma-separated sigma grid for denoiser agreement")
    p.add_argument("--denoise-seed", type=int, help="test image i uses noise seed DENOISE_SEED + i")
    p.add_argument("-n", "--n-samples", type=_positive_int, help="samples for sampler agreement (default 16)")
    p.add_argument("--steps", type=_positive_int, help="sampling steps (default 10)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help="sampler (default heun)")
    p.add_argument("--seed", type=int, help="sample i starts from seed SEED + i (default 0)")
    p.add_argument("--device", help="torch device (default: the protocol's, else cuda if available, else cpu)")
    p.add_argument("-o", "--out", default="out/bench", help="output folder (default out/bench)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("analyze", help="theory analyses: trajectory, teleport, chromatography, locality",
                       description="Theory analyses of the reference denoiser against the Gaussian "
                                   "model of its training data; each writes a JSON of its numbers "
                                   "(with the command) and figures to --out.")
    analyses = p.add_subparsers(dest="analysis", required=True)

    def analysis_parser(name, help, description, n=16, steps=18):
        q = analyses.add_parser(name, help=help, description=description)
        q.add_argument("--dataset", default="default", choices=datasets.NAMES)
        q.add_argument("--root", help="folder or file holding the dataset (see datasets.load)")
        q.add_argument("--limit", type=_positive_int, help="fit the Gaussian on the first LIMIT training images")
        q.add_argument("--reference", help="saved denoiser .h5 (default for the default dataset: "
                                           "data/unet-default.h5)")
        q.add_argument("--seed", type=int, default=0, help="seed of the noise (image i: SEED + i)")
        q.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
        q.add_argument("-o", "--out", default=f"out/analysis/{name}", help=f"output folder (default out/analysis/{name})")
        if n:
            q.add_argument("-n", type=_positive_int, default=n, help=f"samples (default {n})")
            q.add_argument("--steps", type=_positive_int, default=steps, help=f"sampling steps (default {steps})")
            q.add_argument("--sampler", default="heun", choices=sorted(SAMPLERS))
            q.add_argument("--sigma-min", type=float, default=0.002)
            q.add_argument("--sigma-max", type=float, default=80.0)
            q.add_argument("--rho", type=float, default=7.0, help="Karras schedule exponent")
        return q

    p = analysis_parser(
        "trajectory", "trajectory geometry: 2-D rotation, outline first, perturbation sensitivity",
        "Sample with the reference and measure (a) the share of each trajectory's variance in its top "
        "two principal components, (b) the sigma at which x̂0's component along each eigen-direction "
        "of the data reaches 50%% and 90%% of its final value, (c) the final change caused by a "
        "perturbation of fixed norm added at each step; each beside the closed-form Gaussian "
        "prediction (Wang & Vastola, arXiv 2303.02490).", n=32)
    p.add_argument("--perturb-norm", type=float, default=1.0, help="perturbation norm (default 1)")
    p.add_argument("--perturb-steps", type=_number_list(int), help="comma-separated steps (default: all)")
    p.add_argument("--directions", type=_positive_int, default=100,
                   help="eigen-directions reported for commitment, largest variance first (default 100)")
    p.set_defaults(func=cmd_analyze_trajectory)

    p = analysis_parser(
        "teleport", "analytical teleportation: skip early steps with the Gaussian closed form",
        "Jump from sigma_max to the SKIP-th sigma of the schedule with the closed-form Gaussian PF-ODE "
        "(fitted on the training images), then sample with the reference; reports denoiser calls saved "
        "and the final samples' change against the full run from the same seeds (Wang & Vastola, "
        "arXiv 2311.10892).")
    p.add_argument("--skips", type=_number_list(int), default=[2, 4, 6, 8, 10, 12],
                   help="comma-separated numbers of teleported steps (default 2,4,6,8,10,12)")
    p.set_defaults(func=cmd_analyze_teleport)

    p = analysis_parser(
        "chromatography", "resolution chromatography: when each resolution band is generated",
        "Analytic generation rate of each resolution band (Haar block-mean pyramid) from the Gaussian "
        "model of the training data, beside the rate measured from the band energy of the reference's "
        "x̂0 along sampling, with the sigma of peak generation per band (Hwang, Park & Jo, "
        "arXiv 2401.10247).", n=64, steps=32)
    p.add_argument("--levels", type=_positive_int, help="block-mean levels (default: down to one block)")
    p.set_defaults(func=cmd_analyze_chromatography)

    p = analysis_parser(
        "locality", "locality maps: the reference's Jacobian rows against the Wiener filter",
        "Jacobian rows dD[m]/dx of the reference at chosen pixels and sigmas (autograd, at noisy test "
        "images), beside the Wiener filter rows and PCA-locality masks of the training data, with "
        "their cosine similarity and the share of the Jacobian's mass inside the mask (Lukoianov et "
        "al., arXiv 2509.09672).", n=0)
    p.add_argument("--n-images", type=_positive_int, default=32, help="noisy test images (default 32)")
    p.add_argument("--sigmas", type=_number_list(float), default=[0.05, 0.2, 0.5, 1.0, 2.0],
                   help="comma-separated sigmas (default 0.05,0.2,0.5,1,2)")
    p.add_argument("--pixels", type=_pixel_list, default=[(14, 14), (7, 20), (20, 9)],
                   help="comma-separated row:col output pixels (default 14:14,7:20,20:9)")
    p.add_argument("--threshold", type=float, help="PCA-locality mask threshold (default: the dataset's)")
    p.set_defaults(func=cmd_analyze_locality)

    p = sub.add_parser("info", help="print a saved denoiser's metadata as JSON")
    p.add_argument("model", help=".h5 file written by `fit`")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
