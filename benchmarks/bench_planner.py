"""Planning per prefix: the coordinator's peak RSS and planning rate, plan only.

Run: ``python -m benchmarks.bench_planner [--files 1000000 4000000] [--per-prefix 10000]``.

Each size is planned in a fresh interpreter from a generated source (no disk, no
parsing): ``--files`` landmark files in top-level prefixes of ``--per-prefix`` files
each (``prefix_00042/dp_00017/camera_1/key_points/face_dense_key_points.json``, two
cameras per datapoint), each prefix's listing made in columns when it is asked for,
as a folder or an object store lists it. The coordinator discovers and plans every
shard (:func:`~kpcompile.ingest.units.discover_units`,
:func:`~kpcompile.compile.plan.plan_units`) and keeps one record per shard, as a build
does; nothing is compiled. Reported: the peak RSS (``VmHWM``) above the RSS before
planning, per file, and files planned per second, beside the load average.
Memory bounded by the batch shows as a peak that does not grow with ``--files``.

Writes ``benchmarks/results/planner.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benchmarks.common import arguments, load_guard, loadavg, machine, save

_PLAN = r"""
import json, sys, time
import numpy as np
import pyarrow as pa
from kpcompile.compile.incremental import ShardInput
from kpcompile.compile.plan import plan_units
from kpcompile.ingest.base import Source
from kpcompile.ingest.discover import LANDMARK_NAMES
from kpcompile.ingest.listing import Listing, binary_array
from kpcompile.ingest.units import discover_units

FILES, PER = int(sys.argv[1]), int(sys.argv[2])
CAMERAS = 2

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

class Generated(Source):
    kind = "generated"
    def prefixes(self, names):
        return tuple(f"prefix_{p:05d}" for p in range(-(-FILES // PER)))
    def prefix_listing(self, prefixes, names):
        return Listing.concat([self._one(p) for p in prefixes])
    def _one(self, prefix):
        p = int(prefix.rsplit("_", 1)[1])
        n = min(PER, FILES - p * PER)
        folders = [
            f"{prefix}/dp_{d:05d}/camera_{c}/key_points/".encode()
            for d in range(-(-n // CAMERAS)) for c in range(CAMERAS)
        ][:n]
        chunk = pa.chunked_array([binary_array(folders)], type=pa.large_binary())
        at = np.arange(n, dtype=np.int64)
        return Listing(chunk, at.astype(np.int32), np.zeros(n, np.int32),
                       ("face_dense_key_points.json",), 300_000 + at, 10**18 + at)
    def list(self, names):
        raise AssertionError("listed per prefix")
    def read(self, rel, max_bytes):
        raise AssertionError("plan only")

with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # VmHWM from here
before = status("VmRSS")
started = time.perf_counter()
records, files = [], 0
units = discover_units(Generated("/generated", "generated"), LANDMARK_NAMES, "camera")
for shard in plan_units(units, 512, "camera"):
    files += len(shard.files)
    records.append(ShardInput.of(shard.files, shard.digest, "camera"))
seconds = time.perf_counter() - started
print(json.dumps({"files": files, "shards": len(records), "seconds": seconds,
                  "peak": status("VmHWM") - before, "before": before}))
"""


def plan(files: int, per_prefix: int) -> dict[str, Any]:
    """Plan ``files`` generated files in a fresh interpreter; what it reports."""
    load = loadavg()
    done = subprocess.run(
        [sys.executable, "-c", _PLAN, str(files), str(per_prefix)],
        check=True,
        capture_output=True,
        text=True,
    )
    got: dict[str, Any] = json.loads(done.stdout)
    got["load"] = load
    return got


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--per-prefix", type=int, default=10_000)
    args = arguments(ap, argv)
    started_load = load_guard(args.loaded)
    runs = [plan(n, args.per_prefix) for n in args.files]
    head = ("files", 12), ("prefixes", 9), ("peak MiB", 9), ("B/file", 7), ("files/s", 10)
    print(" ".join(f"{name:>{width}}" for name, width in head), f"{'load':>5}")
    for r in runs:
        prefixes = -(-r["files"] // args.per_prefix)
        print(
            f"{r['files']:>12,} {prefixes:>9,} {r['peak'] / 2**20:>9.1f} "
            f"{r['peak'] / r['files']:>7.1f} {r['files'] / r['seconds']:>10,.0f} {r['load']:>5.2f}"
        )
    payload = {"machine": machine(), "load": started_load, "per_prefix": args.per_prefix}
    payload["runs"] = runs
    save("planner", payload)
    return payload


if __name__ == "__main__":
    main()
