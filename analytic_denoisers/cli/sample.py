"""``analytic-denoisers sample MODEL``: generate images with a saved denoiser."""

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import registry
from ..core.noise import seeded_noise
from ..sampling.samplers import sample
from ..viz import save_grid
from . import options


def add_parser(sub):
    p = sub.add_parser("sample", help="generate images with a saved denoiser",
                       description="Integrate the probability-flow ODE from seeded noise with a "
                                   "saved denoiser; writes a PNG grid and a .npy array beside it.")
    p.add_argument("model", help=".h5 file written by `fit`")
    options.add_sampling(p, n=64, steps=18)
    p.add_argument("--label", type=int, help="class label for conditional models (default: cycle)")
    p.add_argument("--nrow", type=options.positive_int, default=8, help="images per grid row")
    p.add_argument("--scale", type=int, default=2, help="pixel enlargement of the PNG")
    options.add_device(p)
    options.add_output(p, "output PNG (the .npy goes beside it)", default="samples.png")
    p.set_defaults(func=run)


def run(args):
    den = registry.load(args.model)
    device = options.device(args.device)
    sigmas = options.schedule(args)
    noise = seeded_noise(range(args.seed, args.seed + args.n), den.image_shape_, device=device)
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
