"""Error and speed-up of the approximate methods against the exact method they approximate.

GoldDiff against exact PCA-locality (the same masks: GoldDiff's threshold 0.02 for both), the
kNN score estimator against the exact empirical denoiser: both fitted on the same training
images (the shipped default set, or the first ``--train`` of it), the same seeded noisy test
images at each sigma of the default sampling schedule (Karras, 10 steps, 0.002 to 80), timed in
one process, one method at a time: median seconds per call, the speed-up, the max abs
difference and the mean per-image R² of the approximation against the exact output.

    python benchmarks/bench_approximate.py --out benchmarks/results/approximate.md
"""

import argparse

import analytic_denoisers as ad
from analytic_denoisers.core.noise import seeded_noise
from common import markdown_table, median_time, report_header, write_report

PAIRS = {  # approximate (registry name, params) -> exact (registry name, params)
    "golddiff": (("golddiff", {}), ("pca-locality", {"threshold": 0.02})),
    "knn": (("knn", {}), ("empirical", {})),
    "knn-1000": (("knn", {"n_neighbors": 1000, "n_draws": 1000}), ("empirical", {})),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--train", type=int, default=None, help="fit on the first N default training images")
    p.add_argument("-n", "--n-images", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    X = ad.datasets.load("default", "train")[:args.train]
    x0 = ad.datasets.load("default", "test")[:args.n_images]
    noise = seeded_noise(range(len(x0)), x0.shape[1:])
    sigmas = ad.schedules.karras(args.steps, 0.002, 80.0)[:-1].tolist()
    lines = report_header("Approximate methods against their exact counterparts")
    lines += [f"{len(X)} training images, {len(x0)} held-out test images with seeded noise, sigmas of the "
              f"{args.steps}-step Karras schedule; median of {args.repeats} calls after one warm-up.", ""]
    for name in args.pairs:
        (approx_name, approx_params), (exact_name, exact_params) = PAIRS[name]
        approx = ad.registry.make(approx_name, **approx_params).fit(X)
        exact = ad.registry.make(exact_name, **exact_params).fit(X)
        rows = []
        for sigma in sigmas:
            x = x0 + sigma * noise
            t_approx = median_time(lambda: approx(x, sigma), args.repeats)
            t_exact = median_time(lambda: exact(x, sigma), args.repeats)
            a, e = approx(x, sigma), exact(x, sigma)
            r2 = ad.metrics.r2(a, e).mean()
            rows.append([f"{sigma:.3g}", f"{t_exact:.3f}", f"{t_approx:.3f}", f"{t_exact / t_approx:.1f}",
                         f"{float((a - e).abs().max()):.2e}", f"{float(r2):.6f}"])
            print(name, rows[-1], flush=True)
        lines += [f"## {approx_name} {approx.get_params()} against {exact_name} {exact_params or ''}", ""]
        lines += markdown_table(["sigma", f"{exact_name} s/call", f"{approx_name} s/call", "speed-up",
                                 "max abs diff", "R² against exact"], rows) + [""]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
