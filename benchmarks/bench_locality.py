"""Speed of PCALocalityDenoiser against the dense masked formulation, full Fashion-MNIST.

For a few noisy test images (per-sample seeded noise) at each sigma of the default 10-step
Karras schedule, times in one run and on the same inputs:

* ``PCALocalityDenoiser`` (masked sums from matrix products per block of output pixels over the
  input pixels the block reads, on the transposed training set; streaming log-sum-exp per
  output pixel), with the plan it chose (one dense product, or blocks of similar masks that
  gather their inputs) and its multiply-adds relative to the dense product,
* the same call with empty masks: everything but the masked sums (the per-pixel softmax over
  the whole training set, N M d exponentials), the floor that no mask structure removes,
* the same call forced to one dense block (the automatic plan must never be slower), and
* the straightforward dense formulation of the published code: every squared difference
  ``(x - x_i)^2`` multiplied by the d x d mask (an einsum), one softmax over the whole set,

and prints the time per call (medians), the speed-up, each one's max abs difference to a float64
run of the exact path, and peak memory, with the sums over the schedule. Needs the Debian
package dataset-fashion-mnist (or ``--root``). ``--load`` runs the whole benchmark beside another
process that streams memory (a numpy copy loop over 400 MB), the contention under which a
sparse plan was once measured 4x slower than dense.

    python benchmarks/bench_locality.py --repeats 3 --out benchmarks/results/locality.md
    python benchmarks/bench_locality.py --load --sigmas 0.47,0.1166,0.02044,0.002 --out benchmarks/results/locality-load.md
"""

import argparse
import contextlib
import subprocess
import sys
import time

import torch

import analytic_denoisers as ad
from analytic_denoisers.bench import PeakMemory
from analytic_denoisers.kernels.locality import block_plan, pca_locality_posterior_mean, prepare_transposed
from analytic_denoisers.kernels.softmax import log_weight_floor
from common import (fashion_mnist_inputs, markdown_table, median_time, report_header,
                    write_report)


def dense_masked(x, sigma, data, mask, chunk=500):
    """All masked distances (B, M, d) via an einsum with the mask, one softmax over M."""
    q, maskf = x.reshape(len(x), -1), mask.to(x.dtype)
    logits = x.new_empty(len(q), len(data), q.shape[1])
    for start in range(0, len(data), chunk):
        diff2 = (q[:, None, :] - data[None, start:start + chunk]).square()  # (B, c, d)
        logits[:, start:start + chunk] = torch.einsum("bcn,nm->bcm", diff2, maskf) / (-2 * sigma**2)
    weights = torch.softmax(logits, dim=1)  # (B, M, d)
    return torch.einsum("bim,im->bm", weights, data).reshape(x.shape)


def kept_fraction(x, sigma, data, mask, chunk=5000):
    """Fraction of the (query, image, pixel) softmax weights above the weight floor.

    Weights below it could be skipped exactly; a large fraction means no pruning pays off.
    """
    maskf, kept = mask.to(x.dtype), 0
    for q in x.reshape(len(x), -1):
        logits = torch.cat([(data[s:s + chunk] - q).square() @ maskf for s in range(0, len(data), chunk)])
        logits /= -2 * sigma**2  # (M, d)
        kept += int((logits - logits.amax(0) > log_weight_floor(x.dtype)).sum())
    return kept / (len(x) * data.numel())


def describe(plan, d):
    """The plan in words and its multiply-adds per training image relative to a dense product."""
    products = sum((b.hi - b.lo) * (d if b.rows is None else len(b.rows)) for b in plan.blocks)
    if plan.block_size >= d:
        return "dense", products / d**2
    gathered = sum(b.rows is not None for b in plan.blocks)
    complements = sum(b.complement for b in plan.blocks)
    return (f"{plan.block_size}-px blocks ({gathered}/{len(plan.blocks)} gathered, "
            f"{complements} complement)"), products / d**2


STREAM = "import numpy as np\na = np.ones(50_000_000)\nb = np.empty_like(a)\nwhile True:\n    np.copyto(b, a)"


@contextlib.contextmanager
def memory_load(on):
    """Another process streaming memory while the block runs (if ``on``)."""
    process = subprocess.Popen([sys.executable, "-c", STREAM]) if on else None
    try:
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="Fashion-MNIST folder (default: the Debian package)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.005)
    parser.add_argument("--load", action="store_true", help="run beside a memory-streaming process")
    parser.add_argument("--sigmas", type=lambda t: [float(v) for v in t.split(",")],
                        help="comma-separated noise levels (default: karras(10, 0.002, 80))")
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args()
    with memory_load(args.load):
        run(args)


def run(args):
    """The benchmark proper (see the module docstring)."""

    X, test, noise = fashion_mnist_inputs(args.root, args.batch)
    data = X.reshape(len(X), -1)
    d = data.shape[1]
    den = ad.PCALocalityDenoiser(threshold=args.threshold).fit(X)
    start = time.perf_counter()
    den(test, 1.0)  # one-off: the transposed, centred training set is cached by the estimator
    setup = time.perf_counter() - start
    prepared = prepare_transposed(X)
    empty = torch.zeros(d, d, dtype=torch.bool)
    sigmas = args.sigmas or ad.schedules.karras(10, 0.002, 80.0)[:-1].tolist()
    rows, totals, kept_all, plan_ratio = [], dict(fast=0.0, floor=0.0, dense=0.0, block=0.0), [], []
    for sigma in sigmas:
        x, mask = test + sigma * noise, den.masks(sigma)
        plan, products = describe(block_plan(mask), d)
        with PeakMemory() as mem_fast:
            t_fast = median_time(lambda: den(x, sigma), args.repeats, warmup=0)
        t_floor = median_time(lambda: pca_locality_posterior_mean(x, sigma, None, empty, prepared=prepared),
                              args.repeats, warmup=0)
        t_block = median_time(lambda: pca_locality_posterior_mean(x, sigma, None, mask, block_size=d,
                                                                  prepared=prepared), args.repeats, warmup=0)
        if plan != "dense":  # a dense plan is the same call as one dense block
            plan_ratio.append(t_fast / t_block)
        with PeakMemory() as mem_dense:
            t_dense = median_time(lambda: dense_masked(x, sigma, data, mask), args.repeats, warmup=0)
        ref = den(x.double(), sigma)  # float64 run of the exact path (tested against brute force)
        err_fast = (den(x, sigma).double() - ref).abs().max()
        err_dense = (dense_masked(x, sigma, data, mask).double() - ref).abs().max()
        kept = kept_fraction(x, sigma, data, mask)
        kept_all.append(kept)
        totals["fast"] += t_fast
        totals["floor"] += t_floor
        totals["dense"] += t_dense
        totals["block"] += t_block
        rows.append([f"{sigma:.4g}", f"{float(mask.double().mean()):.3f}", plan, f"{products:.2f}",
                     f"{t_fast:.2f}", f"{t_block:.2f}", f"{t_floor:.2f}", f"{t_dense:.2f}", f"{t_dense / t_fast:.2f}x",
                     f"{err_fast:.1e}", f"{err_dense:.1e}", f"{kept:.2f}", f"{mem_fast.peak_mib:.0f}",
                     f"{mem_dense.peak_mib:.0f}"])
        print(*rows[-1], flush=True)
    rows.append(["sum", "", "", "", f"{totals['fast']:.2f}", f"{totals['block']:.2f}", f"{totals['floor']:.2f}",
                 f"{totals['dense']:.2f}", f"{totals['dense'] / totals['fast']:.2f}x", "", "", "", "", ""])
    lines = report_header("PCA-locality benchmark")
    lines += [f"Training set: Fashion-MNIST train, {len(X)} x {d}; {args.batch} test "
              f"images + sigma * seeded noise; float32; threshold {args.threshold}; medians of "
              f"{args.repeats} run(s); sigmas {'given' if args.sigmas else 'of karras(10, 0.002, 80)'}. One-off set-up of the "
              f"estimator (transposed training set), not in the times: {setup:.2f} s."
              + (" Run beside another process streaming memory (--load)." if args.load else ""), ""]
    lines += markdown_table(["sigma", "mask density", "plan", "products / dense",
                             "PCALocalityDenoiser s", "one dense block s", "softmax floor s (empty masks)",
                             "dense einsum s",
                             "speed-up", "fast: max abs diff to float64", "dense: max abs diff to float64",
                             "weights above floor", "fast peak MiB", "dense peak MiB"], rows)
    floor_ratio = totals["dense"] / totals["floor"]
    dense_rows = [r for r in rows[:-1] if r[2] == "dense"]
    dense_speedups = [float(r[8][:-1]) for r in dense_rows]
    lines += ["", f"Summed over the schedule the exact path is {totals['dense'] / totals['fast']:.1f}x "
              f"faster than the dense einsum; the issue's target is 20x. Even with free masked sums "
              f"(the empty-mask column: the per-pixel softmax over all {len(X)} images, N M d "
              f"exponentials, which no mask structure removes) the ratio would be at most "
              f"{floor_ratio:.1f}x in this run. Skipping weights below the floor would not pay: "
              f"{min(kept_all):.0%} to {max(kept_all):.0%} of them are above it at every sigma (at "
              f"small sigma many training pixels tie, e.g. the background at exactly -1). Where the "
              f"plan is one dense product ({len(dense_rows)} of {len(sigmas)} sigmas) both methods "
              f"do the same 2 N M d^2 multiply-adds in matrix products, so the speed-up there "
              f"({min(dense_speedups, default=0):.2f}x to {max(dense_speedups, default=0):.2f}x) "
              f"only comes from the cheaper softmax and from not holding the (N, M, d) logits; "
              f"blocks of similar masks that gather their inputs pay only where the masks are "
              f"sparse (the products / dense column). Where the automatic plan is sparse it took "
              f"{min(plan_ratio, default=0):.2f} to {max(plan_ratio, default=0):.2f} times as long as "
              f"one forced dense block (the same call with block_size = d)."]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
