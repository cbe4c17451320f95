"""``analytic-denoisers fit METHOD``: fit a denoiser on a dataset and save it (HDF5)."""

import sys

from .. import registry
from . import options


def add_parser(sub):
    p = sub.add_parser("fit", help="fit a denoiser on a dataset and save it as HDF5",
                       description="Fit a denoiser on a dataset and save it (HDF5).")
    p.add_argument("method", choices=sorted(registry.METHODS), help="which denoiser")
    options.add_data(p)
    p.add_argument("--labels", action="store_true", help="fit a class-conditional denoiser (methods that support it)")
    options.add_params(p, "rank=64")
    options.add_device(p)
    options.add_output(p, "output .h5 file")
    p.set_defaults(func=run)


def run(args):
    est = registry.make(args.method, dataset=args.dataset, **dict(args.param))
    est._check_params()  # a bad hyper-parameter is refused before the data is read
    X, y = options.load_data(args, return_labels=True)
    print(f"fitting {est!r} on {args.dataset}/{args.split}: {tuple(X.shape)}", file=sys.stderr)
    est.fit(X.to(options.device(args.device)), y if args.labels else None)
    # labels make a denoiser class-conditional, or (a mixture of classes) group its components
    if args.labels and est.classes_ is None and getattr(est, "components", None) != "classes":
        raise ValueError(f"method {args.method!r} does not use class labels: drop --labels")
    est.save(args.out)
    print(f"wrote {args.out}")
    return 0
