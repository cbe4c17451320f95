"""Compare a fresh run of the default benchmark and the four analyses with the committed results.

Timings, memory, the environment and the command line (its output path) are left out; every
other number must be identical, so a refactoring that claims to keep the numerics exactly can be
checked in one command. Re-run, then compare::

    analytic-denoisers bench -o out/check/bench-default
    for a in teleport trajectory chromatography locality; do
        analytic-denoisers analyze $a -o out/check/analysis-$a; done
    python benchmarks/compare_results.py out/check

Exits 1 if anything differs, naming it. ``--tolerance T`` accepts numbers that differ by at
most ``T * max(1, |committed|)`` and prints the largest difference of each file (a sharded run,
``torchrun ... bench``, adds its collectives' rounding); ``--bench-only`` compares the benchmark
alone::

    torchrun --standalone --nproc-per-node 2 -m analytic_denoisers bench -o out/check/bench-default
    python benchmarks/compare_results.py out/check --bench-only --tolerance 1e-5
"""

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from analytic_denoisers.bench.report import reproducible

COMMITTED = Path(__file__).resolve().parent / "results"
ANALYSES = ("teleport", "trajectory", "chromatography", "locality")


def _csv_rows(path):
    with open(path, newline="") as f:
        return [reproducible(row) for row in csv.DictReader(f)]


def _largest_difference(a, b):
    """The largest ``|a - b| / max(1, |b|)`` over the numbers of two nested values (inf where their
    structure or any non-number differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max([_largest_difference(a[k], b[k]) for k in a], default=0.0) if a.keys() == b.keys() else math.inf
    if isinstance(a, list) and isinstance(b, list):
        return max([_largest_difference(x, y) for x, y in zip(a, b)], default=0.0) if len(a) == len(b) else math.inf
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return 0.0 if a == b else math.inf
    return 0.0 if x == y or (math.isnan(x) and math.isnan(y)) else abs(x - y) / max(1.0, abs(y))


def compare(fresh, committed=COMMITTED, bench_only=False):
    """``(name, largest relative difference)`` for every compared file of ``fresh`` against ``committed``
    (0: identical)."""
    pairs = [(f"bench-default/{name}", _csv_rows) for name in ("denoising.csv", "sampling.csv")]
    pairs += [(name, lambda p: reproducible(json.loads(p.read_text())))
              for name in ["bench-default/results.json", *(() if bench_only else (f"analysis-{a}/{a}.json" for a in ANALYSES))]]
    return [(name, _largest_difference(read(Path(fresh) / name), read(Path(committed) / name))) for name, read in pairs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fresh", help="folder holding bench-default/ and analysis-*/ of the fresh run")
    parser.add_argument("--committed", default=str(COMMITTED), help="folder of the committed results")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest relative difference accepted")
    parser.add_argument("--bench-only", action="store_true", help="compare bench-default/ alone")
    args = parser.parse_args(argv)
    results = compare(args.fresh, args.committed, args.bench_only)
    for name, diff in results:
        verdict = "identical" if diff == 0 else f"largest difference {diff:.1e}" + ("" if diff <= args.tolerance else ": DIFFERS")
        print(f"{name}: {verdict} (bench.report.NOT_REPRODUCIBLE left out)")
    return 0 if all(diff <= args.tolerance for _, diff in results) else 1


if __name__ == "__main__":
    sys.exit(main())
