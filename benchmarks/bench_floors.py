"""The window kernels beside their elementwise floor: LS and PSPC on Fashion-MNIST, ELS / bbELS by P.

A window kernel cannot avoid one exponential and one multiply-add per (query pixel, candidate)
pair: that work, done by itself on blocks of the kernel's own shape (``torch.exp`` of a block of
logits, then ``(weights * values).sum``), is its *floor*, timed in the same run. For each sigma
of the default 10-step Karras schedule, on a few noisy test images (per-sample seeded noise):

* LS (``local_score_posterior_mean``, zero padding) and PSPC-Square
  (``patch_composite_posterior_mean``, two passes: two floors) on the training set: seconds per
  call, the floor, their ratio, the share of (query pixel, training image) pairs whose float32
  distances were recomputed in float64 (where the bound on the logits' rounding asks for it),
  the max abs difference to a float64 run;
* ELS (circular) and bbELS (zeros) at patch sizes ``--els-sizes`` on the first ``--els-train``
  images at one sigma: the ``"shifts"`` path (cost independent of P beyond log P additions), the
  ``"products"`` path (2 C P^2 flops per pair of patches), what ``"auto"`` picks, and the floor of
  the pairs each path computes.

Needs the Debian package dataset-fashion-mnist (or ``--root``).

    python benchmarks/bench_floors.py --out benchmarks/results/floors.md
"""

import argparse
import statistics
import time

import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels import windows
from analytic_denoisers.kernels.patches import (els_method, equivariant_local_score_posterior_mean,
                                                equivariant_position_sets, local_score_posterior_mean,
                                                patch_composite_posterior_mean, shift_count)
from common import fashion_mnist_inputs, markdown_table, report_header, write_report


def floor_time(pairs, queries, h, w, candidate_block, repeats):
    """Seconds for ``exp`` and a multiply-add over ``pairs`` (query pixel, candidate) values, in
    blocks of ``queries x h x w x candidate_block`` (the kernels' shape, candidates last)."""
    logits = -10 * torch.rand(queries, h, w, candidate_block)
    values = torch.rand(h, w, candidate_block)
    blocks = max(1, round(pairs / logits.numel()))

    def run():
        for _ in range(blocks):
            (torch.exp(logits) * values).sum(-1)

    return timed(run, repeats)[0]


def timed(fn, repeats):
    """Median seconds of ``repeats`` calls, and the last output."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def refined_share(call, pairs):
    """The share of the ``pairs`` (query pixel, candidate) of a window-kernel call whose distances
    were recomputed in float64 (where the bound on float32 logits' rounding asks for it),
    recorded around ``call()``."""
    original, refined = windows.WindowDistances.exact, []

    def recording(self, candidates, chosen):
        refined.append(len(chosen))
        return original(self, candidates, chosen)

    windows.WindowDistances.exact = recording
    try:
        call()
    finally:
        windows.WindowDistances.exact = original
    return sum(refined) / pairs


def window_rows(name, kernel, x, sigma, data, size, pad, passes, repeats):
    """One row: the kernel, its floor, ratio, precision and error to float64."""
    n, _, h, w = x.shape
    t_kernel, out = timed(lambda: kernel(x, sigma, data, size), repeats)
    step = windows.query_blocks(n, (h + 2 * pad) * (w + 2 * pad))
    block = windows.candidates_per_block(step, (h + 2 * pad) * (w + 2 * pad))
    t_floor = passes * floor_time(n * len(data) * h * w, step, h, w, block, repeats)
    err = float((out.double() - kernel(x.double(), sigma, data.double(), size)).abs().max())
    share = refined_share(lambda: kernel(x, sigma, data, size), passes * n * len(data) * h * w)
    return [name, f"{sigma:.4g}", f"{t_kernel:.3f}", f"{t_floor:.3f}", f"{t_kernel / t_floor:.2f}",
            f"{share:.4%}", f"{err:.1e}"], t_kernel, t_floor


def els_rows(x, sigma, data, sizes, repeats):
    """ELS and bbELS at each patch size: both exact paths, the auto choice and their floors."""
    n, c, h, w = x.shape
    rows = []
    for padding, name in (("circular", "ELS"), ("zeros", "bbELS")):
        for size in sizes:
            if padding == "circular" and size > 2 * min(h, w) - 1:
                continue
            times = {}
            for method in ("shifts", "products"):
                times[method], out = timed(lambda: equivariant_local_score_posterior_mean(
                    x, sigma, data, size, padding=padding, method=method), repeats)
            shifts = shift_count(h, w, size, padding)
            pairs = sum(len(s) ** 2 for s in equivariant_position_sets(h, w, size, padding))
            floor_pairs = n * len(data) * pairs  # the pairs the softmax needs
            floor = floor_time(floor_pairs, 1, h, w, 512, repeats)
            auto = els_method(n, len(data), (c, h, w), size, padding)
            rows.append([name, str(size), f"{times['shifts']:.2f}", f"{times['products']:.2f}", auto,
                         f"{min(times.values()) / floor:.1f}", f"{h * w * shifts / pairs:.2f}",
                         f"{floor:.3f}"])
            print(*rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="Fashion-MNIST folder (default: the Debian package)")
    parser.add_argument("--batch", type=int, default=8, help="queries for LS and PSPC")
    parser.add_argument("--train", type=int, help="training images for LS and PSPC (default: all)")
    parser.add_argument("--patch", type=int, default=5, help="LS patch side")
    parser.add_argument("--crop", type=int, default=8, help="PSPC crop side")
    parser.add_argument("--els-train", type=int, default=100)
    parser.add_argument("--els-batch", type=int, default=2)
    parser.add_argument("--els-sizes", type=lambda t: [int(v) for v in t.split(",")], default=[3, 9, 27])
    parser.add_argument("--els-sigma", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="ls,pspc,els", help="comma-separated subset of ls,pspc,els")
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args()

    X, test, noise = fashion_mnist_inputs(args.root, max(args.batch, args.els_batch))
    X = X[:args.train]
    sigmas = ad.schedules.karras(10, 0.002, 80.0)[:-1].tolist()
    chosen = args.methods.split(",")
    lines = report_header("Window kernels beside their elementwise floor")
    header = ["method", "sigma", "kernel s", "floor s", "kernel / floor", "pairs refined in float64",
              "max abs diff to float64"]
    cases = [("ls", f"LS P={args.patch}", local_score_posterior_mean, args.patch, args.patch // 2, 1),
             ("pspc", f"PSPC s={args.crop}", patch_composite_posterior_mean, args.crop, 0, 2)]
    for key, name, kernel, size, pad, passes in cases:
        if key not in chosen:
            continue
        rows, total, total_floor = [], 0.0, 0.0
        for sigma in sigmas:
            x = (test + sigma * noise)[:args.batch]
            row, t, f = window_rows(name, kernel, x, sigma, X, size, pad, passes, args.repeats)
            print(*row, flush=True)
            rows.append(row)
            total, total_floor = total + t, total_floor + f
        rows.append([name, "sum", f"{total:.3f}", f"{total_floor:.3f}", f"{total / total_floor:.2f}", "", ""])
        lines += [f"## {name}", "", f"Training images: {len(X)} (Fashion-MNIST train); {args.batch} test images + "
                  f"sigma * seeded noise; float32; medians of {args.repeats} run(s). Floor: "
                  f"{passes} exponential(s) and multiply-add(s) per (query pixel, training image).", ""]
        lines += markdown_table(header, rows) + [""]
    if "els" in chosen:
        x = (test + args.els_sigma * noise)[:args.els_batch]
        rows = els_rows(x, args.els_sigma, X[:args.els_train], args.els_sizes, args.repeats)
        lines += ["## ELS and bbELS by patch size", "", f"Training images: {args.els_train}; {args.els_batch} test "
                  f"images + sigma * seeded noise at sigma = {args.els_sigma:g}; float32; medians of "
                  f"{args.repeats} run(s). 'shifts / pairs': the window distances the shifts path computes "
                  "per pair the softmax needs (bbELS evaluates every shift within the interior's extent at "
                  "every pixel and masks the pairs outside a pixel's position set).", ""]
        lines += markdown_table(["machine", "P", "shifts s", "products s", "auto picks", "best / floor",
                                 "shifts / pairs", "floor s"], rows) + [""]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
