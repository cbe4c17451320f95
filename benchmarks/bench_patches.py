"""Speed of the patch denoisers against the straightforward formulations, on Fashion-MNIST.

For a few noisy test images (per-sample seeded noise) at each sigma of the default 10-step
Karras schedule, times in one run and on the same inputs:

* PSPC-Square: ``patch_composite_posterior_mean`` (two passes of window sums, O(M d) per
  query) against a loop over crop positions, each a full-data softmax whose distances come
  from one matrix product (the straightforward formulation of the published method);
* ELS: ``equivariant_local_score_posterior_mean`` with ``prune_tol=1e-6`` (identical patches
  merged with their counts, k-means clusters of patches skipped when they provably hold less
  than 1e-6 of a softmax: error at most 2e-6) against every training patch used as a
  convolution filter on the circularly padded query (the published code's formulation), with
  a streaming log-sum-exp so that memory stays bounded. The patch index is built once per
  patch size (timed separately);

and prints the time per call, the speed-up, the max abs difference of each to a float64 run
of the exact path (which the tests check against explicit loops) and peak memory. Exact ELS
costs about ``(H W)^2`` logits per query and training image (3.7e10 per query on the 60k set),
so it runs on the first ``--els-train`` training images. Needs the Debian package
dataset-fashion-mnist (or ``--root``).

    python benchmarks/bench_patches.py --out benchmarks/results/patches.md
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import analytic_denoisers as ad
from analytic_denoisers.bench import PeakMemory
from analytic_denoisers.kernels.patch_index import build_patch_index
from analytic_denoisers.kernels.patches import equivariant_local_score_posterior_mean, patch_composite_posterior_mean
from analytic_denoisers.kernels.softmax import StreamingSoftmax
from common import fashion_mnist_inputs, markdown_table, report_header, write_report


def pspc_by_crop(x, sigma, data, size):
    """Loop over crop positions; per crop a softmax over all training crops (GEMM distances)."""
    n, c, h, w = x.shape
    num, cover = torch.zeros_like(x), x.new_zeros(1, 1, h, w)
    for a in range(h - size + 1):
        for b in range(w - size + 1):
            q = x[:, :, a:a + size, b:b + size].reshape(n, -1)
            keys = data[:, :, a:a + size, b:b + size].reshape(len(data), -1)
            logits = (q @ keys.T - 0.5 * keys.square().sum(1)) / sigma**2  # |q|^2 cancels
            crop_mean = torch.softmax(logits, 1) @ keys  # (n, c s s)
            num[:, :, a:a + size, b:b + size] += crop_mean.reshape(n, c, size, size)
            cover[:, :, a:a + size, b:b + size] += 1
    return num / cover


def els_by_convolution(x, sigma, data, size, chunk=8):
    """Every circular training patch as a conv filter on the circularly padded query."""
    n, c, h, w = x.shape
    pad = size // 2
    x_pad = F.pad(x, (pad,) * 4, mode="circular")
    q_norm = F.unfold(x_pad, size).square().sum(1)  # (n, HW)
    acc = StreamingSoftmax((n * h * w, 1), x.dtype, x.device)
    for start in range(0, len(data), chunk):
        images = data[start:start + chunk]
        filters = F.unfold(F.pad(images, (pad,) * 4, mode="circular"), size)  # (k, c P P, HW)
        filters = filters.transpose(1, 2).reshape(-1, c, size, size)  # (k HW, c, P, P)
        dots = F.conv2d(x_pad, filters)  # (n, k HW, H, W)
        dist = q_norm[:, None] - 2 * dots.flatten(2) + filters.square().sum((1, 2, 3))[None, :, None]
        logits = (dist * (-0.5 / sigma**2)).transpose(1, 2).reshape(n * h * w, -1)
        centres = F.pad(images.flatten(2).transpose(1, 2).reshape(-1, c), (0, 1), value=1)
        acc.add(logits, 1, lambda weights: weights @ centres)
    return acc.mean(x.dtype).reshape(n, h * w, c).transpose(1, 2).reshape(x.shape)


def timed(fn, repeats):
    """Median wall time of ``repeats`` calls, and the last output."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def compare(name, fast, slow, exact, x, sigma, repeats):
    with PeakMemory() as mem_fast:
        t_fast, out_fast = timed(lambda: fast(x), repeats)
    with PeakMemory() as mem_slow:
        t_slow, out_slow = timed(lambda: slow(x), repeats)
    ref = exact(x.double())
    err_fast = float((out_fast.double() - ref).abs().max())
    err_slow = float((out_slow.double() - ref).abs().max())
    row = [name, f"{sigma:.4g}", f"{t_fast:.2f}", f"{t_slow:.2f}", f"{t_slow / t_fast:.2f}x",
           f"{err_fast:.1e}", f"{err_slow:.1e}", f"{mem_fast.peak_mib:.0f}", f"{mem_slow.peak_mib:.0f}"]
    print(*row, flush=True)
    return row, t_fast, t_slow


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="Fashion-MNIST folder (default: the Debian package)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train", type=int, help="training images for PSPC (default: all)")
    parser.add_argument("--crop", type=int, default=8, help="PSPC crop side")
    parser.add_argument("--patch", type=int, default=3, help="ELS patch side")
    parser.add_argument("--els-train", type=int, default=2000, help="training images for ELS")
    parser.add_argument("--prune-tol", type=float, default=1e-6, help="ELS pruning tolerance")
    parser.add_argument("--els-batch", type=int, default=2, help="queries for ELS")
    parser.add_argument("--methods", default="pspc,els", help="comma-separated subset of pspc,els")
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args()

    X, test, noise = fashion_mnist_inputs(args.root, args.batch)
    X = X[:args.train]
    sigmas = ad.schedules.karras(10, 0.002, 80.0)[:-1].tolist()
    header = ["method", "sigma", "fast s", "straightforward s", "speed-up", "fast: max abs diff to float64",
              "straightforward: max abs diff to float64", "fast peak MiB", "straightforward peak MiB"]
    lines = report_header("Patch denoisers benchmark")
    X_els = X[:args.els_train]
    start = time.perf_counter()
    index = build_patch_index(X_els, args.patch, "circular", torch.arange(X.shape[2] * X.shape[3]))
    els_note = (f"ELS patch index (P={args.patch}, {args.els_train} images, {index.total} patches, "
                f"{len(index.keys)} distinct, {len(index.centroids)} clusters): built in "
                f"{time.perf_counter() - start:.1f} s, once per patch size.")
    print(els_note)
    stats = {}
    pspc = lambda x, s, d: patch_composite_posterior_mean(x, s, d, args.crop)  # noqa: E731
    cases = [
        (f"PSPC s={args.crop}", pspc, lambda x, s, d: pspc_by_crop(x, s, d, args.crop), pspc, X, args.batch),
        (f"ELS P={args.patch}", lambda x, s, d: equivariant_local_score_posterior_mean(
            x, s, d, args.patch, prune_tol=args.prune_tol, indexes=[index], stats=stats),
         lambda x, s, d: els_by_convolution(x, s, d, args.patch),
         lambda x, s, d: equivariant_local_score_posterior_mean(x, s, d, args.patch), X_els, args.els_batch),
    ]
    chosen = args.methods.split(",")
    for (name, fast, slow, exact, data, batch), key in zip(cases, ("pspc", "els")):
        if key not in chosen:
            continue
        rows, total_fast, total_slow = [], 0.0, 0.0
        for sigma in sigmas:
            x = (test + sigma * noise)[:batch]
            row, t_fast, t_slow = compare(
                name, lambda q: fast(q, sigma, data.to(q.dtype)), lambda q: slow(q, sigma, data.to(q.dtype)),
                lambda q: exact(q, sigma, data.to(q.dtype)), x, sigma, args.repeats)
            if stats:  # share of (query patch, training patch) pairs the pruned ELS computed
                row[0] += f" ({stats.pop('computed_fraction'):.0%} of pairs)"
            rows.append(row)
            total_fast, total_slow = total_fast + t_fast, total_slow + t_slow
        rows.append([name, "sum", f"{total_fast:.2f}", f"{total_slow:.2f}", f"{total_slow / total_fast:.2f}x",
                     "", "", "", ""])
        lines += [f"## {name}", "", f"Training images: {len(data)} (Fashion-MNIST train); {batch} test "
                  f"images + sigma * seeded noise; float32; medians of {args.repeats} run(s); sigmas "
                  "of karras(10, 0.002, 80).", ""]
        lines += markdown_table(header, rows) + [""]
    lines += [els_note, ""]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
