"""``analytic-denoisers info MODEL``: a saved denoiser's metadata as JSON."""

from ..core.artifact import info
from ..core.files import dumps


def add_parser(sub):
    p = sub.add_parser("info", help="print a saved denoiser's metadata as JSON")
    p.add_argument("model", help=".h5 file written by `fit`")
    p.set_defaults(func=run)


def run(args):
    print(dumps(info(args.model), indent=2))
    return 0
