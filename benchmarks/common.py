"""Shared helpers of the benchmark scripts: medians of repeated timings, peak memory, reports."""

import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import analytic_denoisers as ad
from analytic_denoisers.bench import environment
from analytic_denoisers.core.noise import seeded_noise

def median_time(fn, repeats=7, warmup=1):
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_line():
    env = environment(torch.device("cpu"))
    return (f"{env['machine']}, {env['cpu_count']} cores, torch {env['torch']} with "
            f"{env['torch_threads']} threads, Python {env['python']}")


def report_header(title):
    """Markdown lines: title, the exact command, date and machine."""
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"# {title}", "", f"Command: `{command}`", "", f"Run: {now} on {machine_line()}.", ""]


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def fashion_mnist_inputs(root, batch):
    """Full Fashion-MNIST train set, the first ``batch`` test images and their seeded noise."""
    X = ad.datasets.load("fashion-mnist", "train", root)
    test = ad.datasets.load("fashion-mnist", "test", root)[:batch]
    return X, test, seeded_noise(range(batch), test.shape[1:])


def add_data_options(parser, default_reference):
    """``--dataset``, ``--root``, ``--limit`` (the first LIMIT training images) and ``--reference``."""
    parser.add_argument("--dataset", default="default")
    parser.add_argument("--root")
    parser.add_argument("--limit", type=int, help="the first LIMIT training images (the reference's own)")
    parser.add_argument("--reference", default=str(default_reference), help="the reference denoiser (.h5)")


def training_images(args):
    """The training images that ``add_data_options`` chose."""
    return ad.datasets.load(args.dataset, "train", root=args.root, progress=False)[:args.limit]


def write_report(lines, out=None):
    """Print the markdown report and, if ``out`` is given, write it there."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
