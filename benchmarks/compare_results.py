"""Compare a fresh run of the default benchmark and the four analyses with the committed results.

Timings, memory, the environment and the command line (its output path) are left out; every
other number must be identical, so a refactoring that claims to keep the numerics exactly can be
checked in one command. Re-run, then compare::

    analytic-denoisers bench -o out/check/bench-default
    for a in teleport trajectory chromatography locality; do
        analytic-denoisers analyze $a -o out/check/analysis-$a; done
    python benchmarks/compare_results.py out/check

Exits 1 if anything differs, naming it.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from analytic_denoisers.bench.report import reproducible

COMMITTED = Path(__file__).resolve().parent / "results"
ANALYSES = ("teleport", "trajectory", "chromatography", "locality")


def _csv_rows(path):
    with open(path, newline="") as f:
        return [reproducible(row) for row in csv.DictReader(f)]


def compare(fresh, committed=COMMITTED):
    """``(name, identical)`` for every compared file of ``fresh`` against ``committed``."""
    pairs = [(f"bench-default/{name}", _csv_rows) for name in ("denoising.csv", "sampling.csv")]
    pairs += [(name, lambda p: reproducible(json.loads(p.read_text())))
              for name in ["bench-default/results.json", *(f"analysis-{a}/{a}.json" for a in ANALYSES)]]
    return [(name, read(Path(fresh) / name) == read(Path(committed) / name)) for name, read in pairs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fresh", help="folder holding bench-default/ and analysis-*/ of the fresh run")
    parser.add_argument("--committed", default=str(COMMITTED), help="folder of the committed results")
    args = parser.parse_args(argv)
    results = compare(args.fresh, args.committed)
    for name, same in results:
        print(f"{name}: {'identical' if same else 'DIFFERS'} (bench.report.NOT_REPRODUCIBLE left out)")
    return 0 if all(same for _, same in results) else 1


if __name__ == "__main__":
    sys.exit(main())
