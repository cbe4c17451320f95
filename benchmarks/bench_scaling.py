"""Strong scaling of a sharded denoiser call on the 60,000 Fashion-MNIST training images.

Each softmax denoiser is fitted once and saved; then one call on ``--queries`` noisy test images
at each sigma is timed (median of ``--repeats`` after a warm-up) in three set-ups, one at a time:
one process with 1 thread, one process with 2 threads, and ``--world`` processes of 1 thread each
started by ``torchrun`` (gloo), each loading only its shard of the file
(``ad.load(path, shard=(rank, world))``). The table gives the seconds per call, the speed-ups,
the bytes each rank passes to the collectives per call (measured by ``Collectives``), each
rank's peak resident memory and the largest difference from the single-process output. Needs
the Debian package dataset-fashion-mnist (or ``--root``).

From the single-thread seconds and the measured bytes, it then estimates the time of one
sampling step for an ImageNet-64-sized training set on K GPUs (:func:`estimate_lines`; its
assumptions about GPUs and links are stated in the report: no GPU was measured here). The raw
measurements go to ``--out`` with the suffix ``.json``; ``--estimate-from JSON`` redoes the
estimate alone.

    python benchmarks/bench_scaling.py --out benchmarks/results/scaling.md
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import analytic_denoisers as ad
from common import fashion_mnist_inputs, markdown_table, report_header, write_report

METHODS = {"empirical": {}, "pca-locality": {}, "local-score": {"patch_size": 5},
           "patch-composite": {"patch_size": 8}}

# The estimate's target and assumptions (none of them measured here: no GPU was lent)
IMAGENET = {"images": 1_281_167, "pixels": 3 * 64 * 64, "queries": 64, "calls_per_step": 2}  # Heun
# how many times faster than one core of this machine one datacentre GPU runs each kernel: the
# empirical denoiser is a matrix product (~50 Tflop/s fp32 vs ~50 Gflop/s measured per core here);
# the others are bound by memory traffic and exponentials (~3-5 TB/s vs ~15 GB/s per core)
GPU_SPEEDUP = {"empirical": 1000, "pca-locality": 200, "local-score": 200, "patch-composite": 200}
LINKS = {"NVLink within a node (~400 GB/s)": 400e9, "InfiniBand across nodes (~50 GB/s)": 50e9}
LATENCY = 50e-6  # seconds per all-reduce
GPUS = (1, 8, 64)


def timed_calls(den, x, sigmas, repeats, collectives=None):
    """Per sigma: (median seconds, output, bytes passed to the collectives per call, collectives per call)."""
    rows = {}
    for sigma in sigmas:
        den.denoise(x, sigma)  # warm-up: masks, prepared data
        times = []
        before = (collectives.bytes_reduced, collectives.calls) if collectives else (0, 0)
        for _ in range(repeats):
            start = time.perf_counter()
            out = den.denoise(x, sigma)
            times.append(time.perf_counter() - start)
        sent, calls = ((collectives.bytes_reduced - before[0]) // repeats, (collectives.calls - before[1]) // repeats) \
            if collectives else (0, 0)
        rows[sigma] = (statistics.median(times), out, sent, calls)
    return rows


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(folder, names):
    """One rank under torchrun: its shard of every saved denoiser, timed; rank 0 saves the results."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    spec = torch.load(folder / "spec.pt")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for name in names:
        start = time.perf_counter()
        den = ad.load(folder / f"{name}.h5", shard=(rank, world), verify=False)
        load_seconds = time.perf_counter() - start
        rows = timed_calls(den, spec["x"], spec["sigmas"], spec["repeats"], den._shards[1])
        results[name] = {"load_seconds": load_seconds, "rows": rows, "rows_held": len(den.data_)}
    peaks = [None] * world
    dist.all_gather_object(peaks, peak_rss_mib())
    if rank == 0:
        torch.save({"results": results, "peak_rss_mib": peaks}, folder / "sharded.pt")
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="Fashion-MNIST location (default: the Debian package)")
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--sigmas", default="0.1,1.0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--estimate-from", type=Path, help="a .json of an earlier run: print its estimate only")
    parser.add_argument("--out")
    args = parser.parse_args()
    names = args.methods.split(",")
    if args.worker:
        return worker(args.worker, names)
    if args.estimate_from:
        return write_report(estimate_lines(json.loads(args.estimate_from.read_text())))
    sigmas = [float(s) for s in args.sigmas.split(",")]
    X, test, noise = fashion_mnist_inputs(args.root, args.queries)
    x = test + 0.5 * noise  # one batch of noisy images for every sigma (the call's cost does not depend on x)
    folder = Path(tempfile.mkdtemp(prefix="scaling-"))
    exact = {}  # float64 outputs: the size of float32 rounding in one process, beside the sharded difference
    for name in names:
        ad.registry.make(name, dataset="fashion-mnist", **METHODS[name]).fit(X).save(folder / f"{name}.h5")
        den = ad.registry.make(name, dataset="fashion-mnist", **METHODS[name]).fit(X.double())
        exact.update({(name, sigma): den(x.double(), sigma) for sigma in sigmas})
    del X, den
    torch.save({"x": x, "sigmas": sigmas, "repeats": args.repeats}, folder / "spec.pt")

    single = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name in names:
            single[name, threads] = timed_calls(ad.load(folder / f"{name}.h5", verify=False), x, sigmas, args.repeats)
    single_peak = peak_rss_mib()
    launch = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(args.world),
              __file__, "--worker", str(folder), "--methods", args.methods]
    subprocess.run(launch, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    sharded = torch.load(folder / "sharded.pt")

    rows, measured = [], {"queries": args.queries, "images": 60_000, "pixels": int(x[0].numel()),
                          "world": args.world, "calls": []}
    for name in names:
        got = sharded["results"][name]
        for sigma in sigmas:
            t1, reference = single[name, 1][sigma][:2]
            t2 = single[name, 2][sigma][0]
            tk, out, sent, collectives = got["rows"][sigma]
            diff = (out - reference).abs().max().item()
            error = (reference.double() - exact[name, sigma]).abs().max().item()
            measured["calls"].append({"method": name, "sigma": sigma, "one_thread_s": t1, "two_threads_s": t2,
                                      "sharded_s": tk, "bytes_per_rank": sent, "collectives": collectives,
                                      "max_diff": diff, "float32_error": error})
            rows.append([name, f"{sigma:g}", f"{t1:.3f}", f"{t2:.3f}", f"{tk:.3f}", f"{t1 / tk:.2f}x",
                         f"{t2 / tk:.2f}x", f"{sent:,}", collectives, f"{diff:.1e}", f"{error:.1e}"])
    lines = report_header("Strong scaling of sharded denoiser calls (60,000 Fashion-MNIST images)")
    lines += [f"One call on {args.queries} noisy test images (28 x 28), median of {args.repeats} after a warm-up. "
              f"LS with P = 5, PSPC with s = 8, PCA-locality and the empirical denoiser with their defaults. "
              f"{args.world} processes: `torchrun --standalone --nproc-per-node {args.world}`, gloo, 1 thread each, "
              f"rank 0 holding {sharded['results'][names[0]]['rows_held']:,} of the 60,000 images (loaded with "
              "`ad.load(path, shard=(rank, world))`). Bytes: what each rank passes "
              "to all-reduce per call (the partial sums, sent in float64, the maxima, the query check) and the number "
              "of all-reduces; a ring all-reduce sends about twice that. Max diff: the sharded output against the single process's (float32); "
              "float32 error: the single process's float32 output against the same denoiser fitted and called in "
              "float64.", ""]
    lines += markdown_table(["method", "sigma", "1 proc x 1 thread (s)", "1 proc x 2 threads (s)",
                             f"{args.world} procs x 1 thread (s)", "speed-up vs 1 thread", "vs 2 threads",
                             "bytes per call per rank", "collectives per call", "max diff",
                             "float32 error of 1 proc"], rows)
    lines += ["", f"Peak resident memory: one process (all methods, both thread counts, and the float64 fits of the last "
              f"column) {single_peak:,.0f} MiB; "
              f"ranks {', '.join(f'{p:,.0f}' for p in sharded['peak_rss_mib'])} MiB. Load of a rank's shard: "
              + ", ".join(f"{n} {sharded['results'][n]['load_seconds']:.1f} s" for n in names) + ".", ""]
    shutil.rmtree(folder)
    lines += estimate_lines(measured)
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(measured, indent=1) + "\n")
    write_report(lines, args.out)


def estimate_lines(measured):
    """Markdown: the seconds of one sampling step for an ImageNet-64-sized set on K GPUs, scaled from
    the measured single-thread seconds (per query, training image and pixel; the slower sigma) and
    bytes (per query and pixel), under the assumptions of :data:`GPU_SPEEDUP`, :data:`LINKS` and
    :data:`LATENCY`."""
    unit = measured["queries"] * measured["images"] * measured["pixels"]
    target = IMAGENET["queries"] * IMAGENET["images"] * IMAGENET["pixels"]
    per_method = {}
    for call in measured["calls"]:
        seconds, sent, count = per_method.get(call["method"], (0.0, 0, 0))
        per_method[call["method"]] = (max(seconds, call["one_thread_s"]), max(sent, call["bytes_per_rank"]),
                                      max(count, call["collectives"]))
    header = ["method", "ns per (query, image, pixel), 1 core", "MB all-reduced per call"]
    header += [f"{k} GPU{'s' * (k > 1)}: step (s)" for k in GPUS]
    rows, gemm = [], ""
    if "empirical" in per_method:  # its logits are one matrix product: 2 flops per (query, image, pixel)
        gemm = f" (the empirical call ran at {2 * unit / per_method['empirical'][0] / 1e9:.0f} Gflop/s on one core here)"
    for name, (seconds, sent, count) in per_method.items():
        per_unit = seconds / unit
        megabytes = sent / (measured["queries"] * measured["pixels"]) * IMAGENET["queries"] * IMAGENET["pixels"] / 1e6
        steps = []
        for k in GPUS:
            compute = per_unit * target / GPU_SPEEDUP[name] / k
            link = LINKS[next(iter(LINKS))] if k <= 8 else LINKS[list(LINKS)[1]]
            talk = 0.0 if k == 1 else 2 * megabytes * 1e6 / link + count * LATENCY
            steps.append(f"{IMAGENET['calls_per_step'] * (compute + talk):.3g}")
        rows.append([name, f"{per_unit * 1e9:.3f}", f"{megabytes:.1f}", *steps])
    return ["", "## Estimate: one sampling step on an ImageNet-64-sized training set", "",
            f"{IMAGENET['images']:,} training images of 3 x 64 x 64, a batch of {IMAGENET['queries']} samples, "
            f"{IMAGENET['calls_per_step']} calls per step (Heun). Compute: the measured single-thread seconds per "
            "(query, image, pixel) at the slower sigma, times the target's count, divided by an assumed speed-up "
            f"of one GPU over one core of this machine ({', '.join(f'{k} {v}x' for k, v in GPU_SPEEDUP.items())}: "
            f"matrix products at ~25-50 Tflop/s in fp32{gemm}; the rest bound by memory "
            "traffic and exponentials, ~3-5 TB/s against ~15 GB/s) and by K. Communication: the measured bytes per query and pixel "
            "scaled to the target, sent twice (ring all-reduce) over NVLink (~400 GB/s, K <= 8) or InfiniBand "
            f"(~50 GB/s, K = 64), plus {LATENCY * 1e6:.0f} us of latency per all-reduce (as many as measured per "
            "call here: the merges of each block of queries and the query check). None of the GPU numbers is measured "
            "(no GPU was lent to this run); the costs per (query, image, pixel) are for 28 x 28 images and grow for "
            "PCA-locality with the masks' size at 64 x 64, so its row is a lower bound.", ""] + markdown_table(header, rows)


if __name__ == "__main__":
    main()
