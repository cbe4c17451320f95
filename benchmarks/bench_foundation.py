"""Speed of the empirical-optimal and Gaussian denoisers on the full Fashion-MNIST train set.

For a batch of noisy test images (per-sample seeded noise) at several sigmas, this times, in one
run and on the same inputs:

* the float32 GEMM floor: the two matrix products of the query-by-data shape that any exact
  empirical denoiser needs (logits ``Q D^T`` and weighted sum ``W D``), at this machine's rate;
* ``EmpiricalOptimalDenoiser`` (streaming log-sum-exp, chunked) and the straightforward
  formulation (``cdist`` -> ``softmax`` over the full N x M matrix -> matmul), with their max abs
  difference to a float64 evaluation of the straightforward formulation;
* ``GaussianDenoiser``: fit time (float64 moments + eigh) and a call applied in the eigenbasis,
  beside the straightforward formulation that builds the d x d Wiener matrix for each call.

Reports medians, ratios and peak resident memory above the start of each step, and writes a
markdown table. Needs the Debian package dataset-fashion-mnist (or ``--root``).

    python benchmarks/bench_foundation.py --out benchmarks/results/foundation.md
"""

import argparse

import torch

import analytic_denoisers as ad
from analytic_denoisers.bench import PeakMemory
from common import (fashion_mnist_inputs, markdown_table, median_time, report_header,
                    write_report)

SIGMAS = (0.002, 0.01, 0.1, 0.5, 1.0, 5.0, 80.0)


def straightforward_empirical(x, sigma, data):
    """The textbook formulation: all distances, one softmax over the full matrix, one matmul."""
    q = x.reshape(len(x), -1)
    logits = -torch.cdist(q, data).square() / (2 * sigma**2)  # (N, M)
    return (torch.softmax(logits, 1) @ data).reshape(x.shape)


def straightforward_gaussian(x, sigma, den):
    """Build the d x d Wiener matrix for this sigma, then apply it."""
    U, lam, mu = (t.to(x.dtype) for t in (den.eigvecs_, den.eigvals_, den.mean_))
    W = U @ torch.diag(lam / (lam + sigma**2)) @ U.T  # (d, d)
    return (mu + (x.reshape(len(x), -1) - mu) @ W.T).reshape(x.shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="Fashion-MNIST folder (default: the Debian package)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args()

    X, test, noise = fashion_mnist_inputs(args.root, args.batch)
    n, m, d = args.batch, len(X), X[0].numel()
    lines = report_header("Foundation benchmark: empirical-optimal and Gaussian denoisers")
    lines += [f"Training set: Fashion-MNIST train, {m} x {d}; queries: {n} test images + sigma * "
              f"seeded noise; float32; medians of {args.repeats} runs.", ""]

    # -- GEMM floor ------------------------------------------------------------------------
    data = X.reshape(m, -1).contiguous()
    q, w = test.reshape(n, -1).contiguous(), torch.rand(n, m)
    t_logits = median_time(lambda: q @ data.T, args.repeats)
    t_sum = median_time(lambda: w @ data, args.repeats)
    floor = t_logits + t_sum
    flops = 2 * n * m * d
    lines += ["## float32 GEMM floor", ""]
    lines += markdown_table(["product", "shape", "median s", "GFLOP/s"], [
        ["logits Q D^T", f"({n}x{d}) @ ({d}x{m})", f"{t_logits:.3f}", f"{flops / t_logits / 1e9:.0f}"],
        ["weighted sum W D", f"({n}x{m}) @ ({m}x{d})", f"{t_sum:.3f}", f"{flops / t_sum / 1e9:.0f}"],
        ["both (the floor)", "", f"{floor:.3f}", f"{2 * flops / floor / 1e9:.0f}"],
    ]) + [""]

    # -- empirical denoiser ----------------------------------------------------------------
    emp = ad.EmpiricalOptimalDenoiser().fit(X)
    data64 = data.double()
    rows, fractions = [], []
    for sigma in SIGMAS:
        x = test + sigma * noise
        with PeakMemory() as mem_fast:
            t_fast = median_time(lambda: emp(x, sigma), args.repeats)
        with PeakMemory() as mem_naive:
            t_naive = median_time(lambda: straightforward_empirical(x, sigma, data), args.repeats)
        ref = straightforward_empirical(x.double(), sigma, data64)
        fast, naive = emp(x, sigma).double(), straightforward_empirical(x, sigma, data).double()
        fractions.append(floor / t_fast)
        rows.append([f"{sigma:g}", f"{t_fast:.3f}", f"{floor / t_fast:.0%}", f"{t_naive:.3f}",
                     f"{t_naive / t_fast:.2f}x", f"{(fast - ref).abs().max():.1e}",
                     f"{(naive - ref).abs().max():.1e}", f"{mem_fast.peak_mib:.0f}",
                     f"{mem_naive.peak_mib:.0f}"])
        print(*rows[-1], flush=True)
    fractions.sort()
    lines += ["## EmpiricalOptimalDenoiser, one call on the batch", ""]
    lines += markdown_table(
        ["sigma", "fast s", "GEMM floor / fast", "straightforward s", "speed-up",
         "max abs diff fast vs float64", "max abs diff straightforward vs float64",
         "fast peak MiB", "straightforward peak MiB"], rows)
    lines += ["", f"Fraction of the float32 GEMM rate reached (floor time / call time): median "
              f"{fractions[len(fractions) // 2]:.0%}, min {fractions[0]:.0%} (target: at least 75%). "
              "Above 100% means the cache-sized chunked products ran faster than the two large "
              "products of the floor. The first call's peak memory includes the cached "
              "augmented copy of the data, (M, d + 2) float32, built once per device and dtype. "
              "Both formulations differ from float64 by the same order: float32 rounding of the "
              "distances, which matters most where near-ties meet a small sigma.", ""]

    # -- Gaussian denoiser -----------------------------------------------------------------
    with PeakMemory() as mem_fit:
        t_fit = median_time(lambda: ad.GaussianDenoiser().fit(X), repeats=3, warmup=0)
    gauss = ad.GaussianDenoiser().fit(X)
    rows = []
    for sigma in SIGMAS:
        x = test + sigma * noise
        t_fast = median_time(lambda: gauss(x, sigma), args.repeats)
        t_naive = median_time(lambda: straightforward_gaussian(x, sigma, gauss), args.repeats)
        ref = straightforward_gaussian(x.double(), sigma, gauss)
        diff = (gauss(x, sigma).double() - ref).abs().max()
        rows.append([f"{sigma:g}", f"{t_fast * 1e3:.2f}", f"{t_naive * 1e3:.2f}",
                     f"{t_naive / t_fast:.1f}x", f"{diff:.1e}"])
        print(*rows[-1], flush=True)
    lines += ["## GaussianDenoiser", "",
              f"Fit on {m} images (float64 moments + eigendecomposition): median {t_fit:.2f} s "
              f"of 3 (target: under 10 s), peak {mem_fit.peak_mib:.0f} MiB above start.", ""]
    lines += markdown_table(["sigma", "eigenbasis ms", "d x d matrix per call ms", "speed-up",
                             "max abs diff vs float64"], rows)

    write_report(lines, args.out)


if __name__ == "__main__":
    main()
