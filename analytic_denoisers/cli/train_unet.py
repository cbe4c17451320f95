"""``analytic-denoisers train-unet``: train the reference UNet (resumable) and save it (HDF5)."""

import sys
from pathlib import Path

from ..registry import check_param_names
from ..unet.estimator import UNetDenoiser
from ..unet.training import log_path
from . import options


def add_parser(sub):
    p = sub.add_parser("train-unet", help="train the reference UNet (resumable) and save it as HDF5",
                       description="Train the reference UNet (EDM preconditioning and loss) on a "
                                   "dataset. A checkpoint is written periodically and on Ctrl-C; "
                                   "running the same command again resumes from it (a larger "
                                   "--steps extends a finished run). The loss log is written "
                                   "beside the checkpoint as CSV.")
    options.add_data(p)
    p.add_argument("--steps", type=options.positive_int, default=4000, help="optimiser steps in total (default 4000)")
    p.add_argument("--batch-size", type=options.positive_int, default=128, help="training batch (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (about 2x faster on CPU)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, batches and noise (default 0)")
    options.add_params(p, "base_channels=64")
    p.add_argument("--checkpoint", type=options.output_path("file"),
                   help="training checkpoint (default: OUT with suffix .ckpt)")
    p.add_argument("--checkpoint-every", type=options.positive_int, default=250, help="steps (default 250)")
    options.add_device(p)
    options.add_output(p, "output .h5 file (EMA weights)")
    p.set_defaults(func=run)


def run(args):
    params = {**dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, bf16=args.bf16,
                     random_state=args.seed), **dict(args.param)}
    check_param_names(UNetDenoiser, params)
    est = UNetDenoiser(**params)
    est._check_params()
    X = options.load_data(args)
    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(out.stem + ".ckpt")
    device = options.device(args.device)
    action = "resuming from" if checkpoint.exists() else "checkpoints in"
    print(f"training {est!r} on {args.dataset}/{args.split}: {tuple(X.shape)} on {device}; "
          f"{action} {checkpoint}, loss log {log_path(checkpoint)}", file=sys.stderr)
    try:
        est.fit(X.to(device), checkpoint=checkpoint, checkpoint_every=args.checkpoint_every, progress=True)
    except KeyboardInterrupt:
        print("\ninterrupted: " + (f"the training state is saved in {checkpoint}; run the same command to resume"
                                   if checkpoint.exists() else "before the first training step, nothing was saved"),
              file=sys.stderr)
        return 130
    est.save(out)
    print(f"wrote {out} ({est.n_steps_} steps, final logged loss {est.loss_log_[-1, 1]:.4f})")
    return 0
