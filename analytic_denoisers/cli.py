"""Command-line interface: ``analytic-denoisers {fit,sample,info}`` (also ``python -m analytic_denoisers``).

Each subcommand is a function of parsed arguments; ``main(argv)`` returns an exit code, so the
tests call it in-process. Only the CLI chooses a device (``--device``, default: CUDA if present).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import datasets, io, registry, schedules
from .sampling import SAMPLERS, sample, seeded_noise
from .viz import save_grid


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
    io.save(est, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_sample(args):
    den = io.load(args.model)
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


def cmd_info(args):
    print(json.dumps(io.info(args.model), indent=2))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="analytic-denoisers",
        description="Fit training-free analytical diffusion denoisers and sample with them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a denoiser on a dataset and save it as HDF5",
                       description="Fit a denoiser on a dataset and save it (HDF5).")
    p.add_argument("method", choices=sorted(registry.METHODS), help="which denoiser")
    p.add_argument("--dataset", default="default", choices=datasets.NAMES,
                   help="dataset name (default: the small Fashion-MNIST subset shipped in data/)")
    p.add_argument("--root", help="folder or file holding the dataset (see datasets.load)")
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--limit", type=_positive_int, help="use only the first LIMIT images")
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

    p = sub.add_parser("info", help="print a saved denoiser's metadata as JSON")
    p.add_argument("model", help=".h5 file written by `fit`")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
