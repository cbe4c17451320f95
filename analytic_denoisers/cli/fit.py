"""``analytic-denoisers fit METHOD``: fit a denoiser on a dataset and save it (HDF5)."""

import contextlib
import sys

from .. import registry
from . import options

DASK_METHODS = ("gaussian", "pca-locality")  # methods whose statistics a --dask fit computes with Dask
LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


def add_parser(sub):
    p = sub.add_parser("fit", help="fit a denoiser on a dataset and save it as HDF5",
                       description="Fit a denoiser on a dataset and save it (HDF5).")
    p.add_argument("method", choices=sorted(registry.NAMES), help="which denoiser (els and bbels are local-score "
                                                                   "with equivariant patches)")
    options.add_data(p)
    p.add_argument("--labels", action="store_true", help="fit a class-conditional denoiser (methods that support it)")
    options.add_params(p, "rank=64")
    group = p.add_argument_group("Dask (the dask extra)")
    group.add_argument("--dask", metavar="SCHEDULER",
                       help=f"compute the statistics of {' / '.join(DASK_METHODS)} with Dask, block by block, and merge "
                            f"them exactly: {', '.join(LOCAL_SCHEDULERS)} (a local scheduler) or the address of a "
                            "dask.distributed scheduler (tcp://HOST:PORT)")
    group.add_argument("--dask-rows", type=options.positive_int, default=4096,
                       help="images per Dask block (default 4096)")
    options.add_device(p)
    options.add_output(p, "output .h5 file")
    p.set_defaults(func=run)


@contextlib.contextmanager
def dask_scheduler(name):
    """Dask computes on the local scheduler ``name`` or on the dask.distributed scheduler at that address."""
    try:
        import dask
    except ImportError:
        raise ValueError('--dask needs Dask: pip install "analytic-denoisers[dask]"') from None
    if name in LOCAL_SCHEDULERS:
        with dask.config.set(scheduler=name):
            yield
        return
    if "://" not in name:
        raise ValueError(f"--dask {name}: expected one of {', '.join(LOCAL_SCHEDULERS)} or a scheduler address "
                         "such as tcp://127.0.0.1:8786")
    try:
        from distributed import Client
    except ImportError:
        raise ValueError(f'--dask {name} needs dask.distributed: pip install "analytic-denoisers[dask]"') from None
    with Client(name, timeout=30):
        yield


def run(args):
    est = registry.make(args.method, dataset=args.dataset, **dict(args.param))
    est._check_params()  # a bad hyper-parameter is refused before the data is read
    if args.dask and args.method not in DASK_METHODS:
        raise ValueError(f"--dask computes the statistics of {', '.join(DASK_METHODS)}; {args.method!r} has none to split")
    X, y = options.load_data(args, return_labels=True)
    print(f"fitting {est!r} on {args.dataset}/{args.split}: {tuple(X.shape)}", file=sys.stderr)
    y = y if args.labels else None
    if args.dask:
        import dask.array as da

        with dask_scheduler(args.dask):
            est.fit(da.from_array(X.numpy(), chunks=(args.dask_rows, -1, -1, -1)), y)
    else:
        est.fit(X.to(options.device(args.device)), y)
    # labels make a denoiser class-conditional, or (a mixture of classes) group its components
    if args.labels and est.classes_ is None and getattr(est, "components", None) != "classes":
        raise ValueError(f"method {args.method!r} does not use class labels: drop --labels")
    est.save(args.out)
    print(f"wrote {args.out}")
    return 0
