"""``analytic-denoisers info MODEL``: a saved denoiser's metadata as JSON."""

import json

from ..core.artifact import info


def add_parser(sub):
    p = sub.add_parser("info", help="print a saved denoiser's metadata as JSON")
    p.add_argument("model", help=".h5 file written by `fit`")
    p.set_defaults(func=run)


def run(args):
    print(json.dumps(info(args.model), indent=2))
    return 0
