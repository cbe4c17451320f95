"""Peak memory of one ``denoise`` call against the number of queries, for every method.

Each measurement runs in a fresh process (so that freed memory of an earlier one does not hide
a peak): fit the method on the first ``--train`` default training images (ELS and bbELS on
``--train-els``, as their work space grows with the number of patches), then one call of
``denoise`` on N seeded noisy test images at sigma ``--sigma``; the peak resident memory above
the level before the call is sampled every millisecond (``bench.PeakMemory``). A method whose
work space is bounded independently of the number of queries shows the same peak at 32 and
512 queries.

    python benchmarks/bench_memory.py --out benchmarks/results/memory.md
"""

import argparse
import json
import subprocess
import sys

import torch

import analytic_denoisers as ad
from analytic_denoisers.bench import PeakMemory
from analytic_denoisers.core.noise import seeded_noise
from common import markdown_table, report_header, write_report

CASES = {  # name -> (registry name, hyper-parameters, uses --train-els)
    "gaussian": ("gaussian", {}, False),
    "empirical": ("empirical", {}, False),
    "empirical top_k=1000": ("empirical", {"top_k": 1000}, False),
    "pca-locality": ("pca-locality", {}, False),
    "LS (patch 5)": ("local-score", {"patch_size": 5}, False),
    "ELS (patch 5)": ("local-score", {"patch_size": 5, "equivariant": True, "padding": "circular"}, True),
    "bbELS (patch 5)": ("local-score", {"patch_size": 5, "equivariant": True, "padding": "zeros"}, True),
    "ELS prune_tol=1e-3": ("local-score", {"patch_size": 5, "equivariant": True, "padding": "circular",
                                           "prune_tol": 1e-3}, True),
    "PSPC (patch 8)": ("patch-composite", {"patch_size": 8}, False),
    "nearest": ("nearest", {}, False),
    "sigma-CFDM": ("sigma-cfdm", {}, False),
    "kNN (k=n=100)": ("knn", {}, False),
    "Gaussian mixture": ("gaussian-mixture", {}, False),
    "GoldDiff": ("golddiff", {}, False),
    "PSPC-Flex": ("patch-flex", {}, False),
}


def measure_one(case, n, train, train_els, sigma):
    """MiB above the level before one denoise call of ``n`` queries (run in a fresh process)."""
    method, params, els = CASES[case]
    X = ad.datasets.load("default")[:train_els if els else train]
    den = ad.registry.make(method, **params).fit(X)
    x0 = ad.datasets.load("default", "test")[:n]
    x = x0 + sigma * seeded_noise(range(n), x0.shape[1:])
    den.denoise(x[:1], sigma)  # one-time set-up (indices, plans) is not the call's work space
    with PeakMemory() as mem:
        den.denoise(x, sigma)
    return mem.peak_mib


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", default="1,32,512")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--train-els", type=int, default=2)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--out")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.train, args.train_els, args.sigma)))
        return
    queries = [int(q) for q in args.queries.split(",")]
    rows = []
    for case in CASES:
        peaks = []
        for n in queries:
            done = subprocess.run([sys.executable, __file__, "--one", case, str(n), "--train", str(args.train),
                                   "--train-els", str(args.train_els), "--sigma", str(args.sigma)],
                                  capture_output=True, text=True, check=True)
            peaks.append(json.loads(done.stdout.splitlines()[-1]))
        rows.append([case, *[f"{p:.1f}" for p in peaks]])
        print(rows[-1], file=sys.stderr)
    lines = report_header("Peak memory of one denoise call against the number of queries")
    lines += [f"Default data: {args.train} training images ({args.train_els} for ELS and bbELS), "
              f"28x28, float32, sigma = {args.sigma:g}; MiB of resident memory above the level before "
              f"the call, one fresh process per cell; torch {torch.__version__}.", ""]
    lines += markdown_table(["method", *[f"{n} queries (MiB)" for n in queries]], rows)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
