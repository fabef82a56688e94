"""The coordinator at scale: peak RSS and planning rate of a plan-only build of virtual files.

Run: ``python -m benchmarks.bench_planner [--files 1000000 10000000 100000000]
[--prefixes 10000] [--workers 2]``.

Each size is built in a fresh interpreter with ``kpcompile.build("virtual://N/P", out,
plan_only=True)`` (``--plan-only``): the virtual source (:mod:`kpcompile.ingest.virtual`)
lists ``N`` Faces files in ``P`` top-level prefixes without the disk; the coordinator
lists the prefixes a batch at a time, discovers, plans and hands out every shard to
``--workers`` worker processes as a real build does, and the workers read, parse and
write nothing. Nothing is published. Reported: the coordinator's own peak RSS
(``VmHWM``, its workers not counted) above its RSS just before the build, per file,
and files planned per second (the build's wall time), beside the load average.
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
import json, sys, tempfile, time
import kpcompile
import kpcompile.pipeline  # imported before measuring: it is not the dataset's memory

FILES, PREFIXES, WORKERS = (int(a) for a in sys.argv[1:4])

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # VmHWM from here
before = status("VmRSS")
started = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    r = kpcompile.build(
        f"virtual://{FILES}/{PREFIXES}", tmp + "/out", plan_only=True, workers=WORKERS,
        progress=False,
    )
seconds = time.perf_counter() - started
print(json.dumps({"files": r.discovered, "shards": r.shards, "seconds": seconds,
                  "peak": status("VmHWM") - before, "before": before}))
"""


def plan(files: int, prefixes: int, workers: int) -> dict[str, Any]:
    """A plan-only build of ``virtual://files/prefixes`` in a fresh interpreter; what it
    reports."""
    load = loadavg()
    done = subprocess.run(
        [sys.executable, "-c", _PLAN, str(files), str(prefixes), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    got: dict[str, Any] = json.loads(done.stdout)
    got["load"] = load
    return got


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--prefixes", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    args = arguments(ap, argv)
    started_load = load_guard(args.loaded)
    head = ("files", 12), ("prefixes", 9), ("peak MiB", 9), ("B/file", 7), ("files/s", 10)
    print(" ".join(f"{name:>{width}}" for name, width in head), f"{'load':>5}", flush=True)
    runs = []
    for n in args.files:
        r = plan(n, min(args.prefixes, n), args.workers)
        runs.append(r)
        print(
            f"{r['files']:>12,} {min(args.prefixes, n):>9,} {r['peak'] / 2**20:>9.1f} "
            f"{r['peak'] / r['files']:>7.1f} {r['files'] / r['seconds']:>10,.0f} {r['load']:>5.2f}",
            flush=True,
        )
    payload = {"machine": machine(), "load": started_load, "prefixes": args.prefixes}
    payload["runs"] = runs
    save("planner", payload)
    return payload


if __name__ == "__main__":
    main()
