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

COMMITTED = Path(__file__).resolve().parent / "results"
NOT_COMPARED = {"seconds_per_call", "seconds", "peak_mib", "fit_seconds", "fit_peak_mib", "denoise_peak_mib",
                "reference_seconds_per_call", "environment", "command"}
ANALYSES = ("teleport", "trajectory", "chromatography", "locality")


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in NOT_COMPARED}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _csv_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in NOT_COMPARED} for row in csv.DictReader(f)]


def compare(fresh, committed=COMMITTED):
    """``(name, identical)`` for every compared file of ``fresh`` against ``committed``."""
    pairs = [(f"bench-default/{name}", _csv_rows) for name in ("denoising.csv", "sampling.csv")]
    pairs += [("bench-default/results.json", lambda p: _without_timings(json.loads(p.read_text())))]
    pairs += [(f"analysis-{a}/{a}.json", lambda p: _without_timings(json.loads(p.read_text()))) for a in ANALYSES]
    return [(name, read(Path(fresh) / name) == read(Path(committed) / name)) for name, read in pairs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fresh", help="folder holding bench-default/ and analysis-*/ of the fresh run")
    parser.add_argument("--committed", default=str(COMMITTED), help="folder of the committed results")
    args = parser.parse_args(argv)
    results = compare(args.fresh, args.committed)
    for name, same in results:
        print(f"{name}: {'identical' if same else 'DIFFERS'} (timings, memory, environment and command left out)")
    return 0 if all(same for _, same in results) else 1


if __name__ == "__main__":
    sys.exit(main())
