"""The limit: read every file and orjson.loads it, nothing else, over N worker processes.

Prints the summed in-worker parse seconds (reading excluded) so the benchmark can
also report the pure parse time divided over the workers.

Usage: python benchmarks/peers/orjson_limit.py SOURCE WORKERS REPORT
"""

from __future__ import annotations

import glob
import os
import sys
import time
from multiprocessing import get_context

import orjson


def work(paths: list[str]) -> float:
    spent = 0.0
    for path in paths:
        with open(path, "rb") as fh:
            data = fh.read()
        t = time.perf_counter()
        orjson.loads(data)
        spent += time.perf_counter() - t
    return spent


def main() -> None:
    src, workers = sys.argv[1], int(sys.argv[2])
    pattern = os.path.join(src, "*", "*", "key_points", "face_dense_key_points.json")
    paths = sorted(glob.glob(pattern))
    chunks = [paths[i :: workers * 8] for i in range(workers * 8)]
    with get_context("fork").Pool(workers) as pool:
        parse_seconds = sum(pool.map(work, chunks))
    with open(sys.argv[3], "w") as fh:
        fh.write(f"{parse_seconds:.6f}\n")


if __name__ == "__main__":
    main()
