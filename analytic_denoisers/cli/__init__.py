"""Command-line interface: ``analytic-denoisers {fit,sample,train-unet,bench,analyze,info}`` (also
``python -m analytic_denoisers``).

One module per subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> exit code``;
the option groups they share (data, sampling and schedule, device, output) are defined once in
:mod:`.options`. ``main(argv)`` returns an exit code, so the tests call it in-process. Only the
CLI chooses a device (``--device``, default: CUDA if present).
"""

import argparse
import sys

import torch

from . import analyze, benchmark, fit, info, sample, train_unet

COMMANDS = (fit, sample, train_unet, benchmark, analyze, info)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="analytic-denoisers",
        description="Fit training-free analytical diffusion denoisers, sample with them, train the "
                    "reference UNet and benchmark every denoiser against it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None):
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    threads = torch.get_num_threads()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:  # bad input, named by the library
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the file system: permissions, a full disk
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)  # main may run in-process (tests): leave the process as it was
