"""Argument types and the option groups that several subcommands share, each defined once."""

import argparse
import contextlib
import json
import math
import os
import shlex
from pathlib import Path

import torch

from .. import datasets
from ..sampling import schedules
from ..sampling.samplers import SAMPLERS


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def key_value(text):
    """``key=value`` with value parsed as JSON when possible (``rank=64``, ``top_k=null``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def method_key_value(text):
    """``method.key=value``, e.g. ``pca-locality.threshold=0.02``: (method, key, value)."""
    key, value = key_value(text)
    method, dot, name = key.partition(".")
    if not dot or not name:
        raise argparse.ArgumentTypeError(f"expected METHOD.KEY=VALUE, got {text!r}")
    return method, name, value


def number_list(kind):
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


def pixel_list(text):
    """argparse type: comma-separated ``row:col`` pairs."""
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item.strip()]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected comma-separated row:col pairs, got {text!r}")
    return pairs


def unit_interval(text):
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def device_name(text):
    """argparse type: a torch device that this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    try:
        found = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this torch ({torch.__version__}) has no CUDA device")
    if found.type == "cuda" and (found.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if found.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here")
    return text


def _nearest_existing(path):
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def output_path(kind):
    """argparse type: where a ``kind`` ("file" or "folder") will be written, checked before any
    work: not an existing folder (file), below no file, in a writable place."""
    def parse(text):
        path = Path(text).expanduser()
        wrong = path.is_dir() if kind == "file" else path.exists() and not path.is_dir()
        if wrong:
            raise argparse.ArgumentTypeError(f"{text}: an existing {'folder' if kind == 'file' else 'file'}; "
                                             f"expected a {kind} to write")
        existing = _nearest_existing(path.parent if kind == "file" else path)
        if not existing.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {existing} is a file, so nothing can be written below it")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text}: {existing} is not writable")
        return text
    return parse


def device(name):
    """The torch device to run on: ``name``, else CUDA if present, else the CPU (only the CLI picks)."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


@contextlib.contextmanager
def process_group(device_name):
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group (gloo on the CPU, NCCL on
    GPUs, one per local rank) and yield ``(Collectives, device)``; otherwise yield ``(None, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield None, device(device_name)
        return
    import torch.distributed as dist

    from ..core.distributed import Collectives

    found = device(device_name)
    if found.type == "cuda" and found.index is None:
        found = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(found)
    dist.init_process_group("nccl" if found.type == "cuda" else "gloo")
    try:
        yield Collectives(), found
    finally:
        dist.destroy_process_group()


def command_line(args):
    """The command as typed, for result files (as ``torchrun`` launched it, under torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = "analytic-denoisers " if world == 1 else \
        f"torchrun --nnodes {world // int(os.environ.get('LOCAL_WORLD_SIZE', world))} " \
        f"--nproc-per-node {os.environ.get('LOCAL_WORLD_SIZE', world)} -m analytic_denoisers "
    return launcher + " ".join(shlex.quote(a) for a in args.argv)


# -- option groups ------------------------------------------------------------------------------

def add_data(parser, *, split=True, default="default", limit_help="use only the first LIMIT images"):
    """--dataset, --root, --split (optional) and --limit."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=default, choices=datasets.NAMES,
                       help="dataset name (default: " + (f"{default}; " if default else "the protocol's; ")
                       + "'default' is the small Fashion-MNIST subset shipped in data/)")
    group.add_argument("--root", help="folder or file holding the dataset (see datasets.load)")
    if split:
        group.add_argument("--split", default="train", choices=("train", "test"))
    group.add_argument("--limit", type=positive_int, help=limit_help)


def add_sampling(parser, *, n, steps, schedule=True):
    """-n, --steps, --sampler, --seed and, with ``schedule``, the Karras schedule's --sigma-min,
    --sigma-max and --rho. ``n=None`` and ``steps=None`` leave the defaults to a protocol."""
    group = parser.add_argument_group("sampling")
    default = "the protocol's" if n is None else None
    group.add_argument("-n", "--n-samples", dest="n", type=positive_int, default=n,
                       help=f"number of samples (default {default or n})")
    group.add_argument("--steps", type=positive_int, default=steps,
                       help=f"sampling steps (default {default or steps})")
    group.add_argument("--sampler", default=None if n is None else "heun", choices=sorted(SAMPLERS),
                       help=f"sampler (default {default or 'heun'})")
    group.add_argument("--seed", type=int, default=None if n is None else 0,
                       help=f"sample i starts from the noise of seed SEED + i (default {default or 0})")
    if schedule:
        group.add_argument("--sigma-min", type=float, default=0.002, help="smallest sigma (default 0.002)")
        group.add_argument("--sigma-max", type=float, default=80.0, help="largest sigma (default 80)")
        group.add_argument("--rho", type=float, default=7.0, help="Karras schedule exponent (default 7)")


def schedule(args):
    """The Karras schedule of the sampling options."""
    return schedules.karras(args.steps, args.sigma_min, args.sigma_max, args.rho)


def add_reference(parser):
    """--reference (a .h5 of this package, a diffusers folder, or MODULE:FACTORY) and --reference-param."""
    group = parser.add_argument_group("reference")
    group.add_argument("--reference", help="the denoiser to compare with: a .h5 saved by this package, a diffusers "
                                           "pipeline or UNet folder, or MODULE:FACTORY (a Python callable returning a "
                                           "denoiser or (network, adapter parameters)); default for the default "
                                           "dataset: the shipped UNet")
    group.add_argument("--reference-param", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="a NetworkDenoiser parameter for a network reference, e.g. parameterization=v or "
                            "batch_size=64 (repeatable)")


def add_device(parser):
    """--device and --threads."""
    parser.add_argument("--device", type=device_name, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=positive_int,
                        help="torch CPU threads (default: torch's; on a loaded machine 1 can be far faster)")


def add_params(parser, example, *, per_method=False):
    """--param KEY=VALUE (or METHOD.KEY=VALUE), repeatable."""
    parser.add_argument("--param", type=method_key_value if per_method else key_value, action="append",
                        default=[], metavar="METHOD.KEY=VALUE" if per_method else "KEY=VALUE",
                        help=f"hyper-parameter, e.g. --param {example} (repeatable)")


def add_output(parser, help, *, kind="file", default=None):
    """-o / --out: a ``kind`` ("file" or "folder") to write, checked when the command line is read."""
    parser.add_argument("-o", "--out", type=output_path(kind), required=default is None, default=default,
                        help=help + ("" if default is None else f" (default {default})"))


def load_data(args, split=None, return_labels=False):
    """The images (and labels) of the data options, the first ``--limit`` of them."""
    loaded = datasets.load(args.dataset, split or args.split, args.root, return_labels=return_labels)
    return tuple(t[:args.limit] for t in loaded) if return_labels else loaded[:args.limit]
