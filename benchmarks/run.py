"""`make bench`: every benchmark, each printing its table and writing benchmarks/results/*.json.

Usage: python -m benchmarks.run [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, arguments for a full run, arguments for --quick)
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("benchmarks.bench_build", [], ["--sizes", "2000", "--repeat", "1"]),
    ("benchmarks.bench_query", [], ["--files", "2000", "--repeat", "1"]),
    (
        "benchmarks.bench_rowgroups",
        [],
        ["--files", "1000", "--groups", "64", "256", "--repeat", "1"],
    ),
    ("benchmarks.bench_incremental", [], ["--datapoints", "500"]),
    ("benchmarks.bench_report", [], ["--datapoints", "500", "--repeat", "1"]),
    ("benchmarks.bench_s3", [], ["--files", "200", "--repeat", "1"]),
    ("benchmarks.bench_dask_listing", [], ["--files", "500"]),
    ("benchmarks.bench_cold", [], ["--files", "2000", "--repeat", "1"]),
    ("benchmarks.bench_startup", [], ["--repeat", "3"]),
    ("benchmarks.bench_scale", [], ["--files", "20000", "--entries", "100000"]),
    ("benchmarks.bench_planner", [], ["--files", "200000"]),
    ("benchmarks.bench_open", [], ["--files", "1000000"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = ap.parse_args()
    for name, full, quick in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            print(f"skipping {name}: not present")
            continue
        print(f"\n== {name}")
        sys.argv = [name, *(quick if args.quick else full)]
        module.main()


if __name__ == "__main__":
    main()
