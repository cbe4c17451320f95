"""End to end at dataset scale: fit and sample every method on all 60,000 Fashion-MNIST images.

The default protocol's sampling (Heun on the 10-step Karras grid from 80 to 0.002, 19 denoiser
calls; LS and PSPC with the data's SNR patch schedule) for ``--samples`` samples per method, one
method at a time, all samples in one batch: seconds to fit, seconds to sample, calls, peak
memory. ``--estimate NAMES`` estimates the rows whose full run would not fit in a session (exact
ELS / bbELS on 60k) from one call per sigma on fewer samples and training images, scaled, and
says so in the row. Needs the Debian package dataset-fashion-mnist (or ``--root``).

    python benchmarks/bench_end_to_end.py --samples 64 --methods gaussian,...,els,bbels \
      --estimate els,bbels --out benchmarks/results/end-to-end.md
"""

import argparse
import time

import torch

import analytic_denoisers as ad
from analytic_denoisers.bench import PeakMemory
from analytic_denoisers.bench.protocol import make_protocol, sampling_grid
from analytic_denoisers.scales.rules import snr_resolution_schedule
from common import markdown_table, report_header, write_report

# the rows besides the registry's methods: ELS and bbELS, local-score machines with equivariance
EXTRA = {"els": ("local-score", dict(equivariant=True, padding="circular")),
         "bbels": ("local-score", dict(equivariant=True, padding="zeros"))}


def make(name, X, grid, protocol):
    """A new estimator for a row, with the default protocol's hyper-parameters ("snr" resolved)."""
    method, extra = EXTRA.get(name, (name, {}))
    params = {**protocol["params"].get(method, {}), **extra}
    params = {k: snr_resolution_schedule(X, grid) if v == "snr" else v for k, v in params.items()}
    return ad.registry.make(method, dataset="fashion-mnist", **params)


def run_method(name, X, noise, sigmas, protocol):
    """Fit on ``X``, then sample from ``noise`` along ``sigmas``: (fit s, sample s, calls, peak MiB)."""
    den = make(name, X, sigmas[:-1].tolist(), protocol)
    start = time.perf_counter()
    den.fit(X)
    fit = time.perf_counter() - start
    counting = ad.sampling.samplers.CountingDenoiser(den)
    with torch.no_grad(), PeakMemory() as mem:
        start = time.perf_counter()
        ad.sampling.samplers.sample(counting, noise, sigmas, protocol["sampling"]["sampler"])
        seconds = time.perf_counter() - start
    return fit, seconds, counting.calls, mem.peak_mib


def estimate_method(name, X, noise, sigmas, protocol, train, samples):
    """Seconds the full sampling run would take, from one call at each sigma of the grid with
    ``samples`` queries against the first ``train`` training images, scaled by the number of
    calls at that sigma, queries and training images (the exact window kernels cost
    O(queries x training images))."""
    den = make(name, X, sigmas[:-1].tolist(), protocol).fit(X[:train])
    total = 0.0
    levels = sigmas[:-1].tolist()
    with torch.no_grad():
        for k, sigma in enumerate(levels):
            start = time.perf_counter()
            den(sigma * noise[:samples], sigma)
            calls = 1 if k == 0 else 2  # Heun: the corrector of the step before, the predictor of this one
            total += calls * (time.perf_counter() - start)
    return total * (len(X) / train) * (len(noise) / samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="Fashion-MNIST folder (default: the Debian package)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--methods", default=",".join(ad.registry.METHODS),
                        help="comma-separated registry names, or els / bbels")
    parser.add_argument("--estimate", default="", help="comma-separated rows estimated from a smaller run")
    parser.add_argument("--estimate-train", type=int, default=500)
    parser.add_argument("--estimate-samples", type=int, default=2)
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args()

    protocol = make_protocol()
    sigmas = sampling_grid(protocol["sampling"])["sigmas"]
    X = ad.datasets.load("fashion-mnist", "train", args.root)
    noise = ad.core.noise.seeded_noise(range(args.samples), X.shape[1:])
    estimated = set(filter(None, args.estimate.split(",")))
    full_calls = 2 * (len(sigmas) - 1) - 1  # Heun: two calls per step but the last
    rows = []
    for name in args.methods.split(","):
        if name in estimated:
            total = estimate_method(name, X, noise, sigmas, protocol, args.estimate_train, args.estimate_samples)
            rows.append([name, "", f"{total:.0f}", f"{total / 60:.1f}", str(full_calls),
                         f"estimated: one call per sigma with {args.estimate_samples} samples and "
                         f"{args.estimate_train} training images, scaled", ""])
        else:
            fit, seconds, calls, peak = run_method(name, X, noise, sigmas, protocol)
            rows.append([name, f"{fit:.1f}", f"{seconds:.0f}", f"{seconds / 60:.1f}", str(calls), "measured",
                         f"{peak:.0f}"])
        print(*rows[-1], flush=True)
        report(rows, len(X), args.samples, full_calls, args.out)  # after every row: a long run keeps what it has


def report(rows, n_train, samples, calls, out):
    """Write the markdown report of the rows so far."""
    lines = report_header("End to end on the full Fashion-MNIST training set")
    lines += [f"Training images: {n_train}; {samples} samples in one batch; Heun on karras(10, 0.002, 80) "
              f"({calls} denoiser calls); the default protocol's hyper-parameters (LS / PSPC / ELS: the "
              "data's SNR patch schedule); float32.", ""]
    lines += markdown_table(["method", "fit s", "sample s", "sample min", "calls", "how", "peak MiB"], rows)
    write_report(lines, out)


if __name__ == "__main__":
    main()
