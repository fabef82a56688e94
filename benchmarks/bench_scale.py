"""Scale: coordinator memory per file in a 200,000-file build; a one-million-entry listing.

Run: ``python -m benchmarks.bench_scale [--files 200000] [--entries 1000000] [--workers 2]
[--sets-files 100000]``.

1. *Build*: a dataset of ``--files`` landmark files that are hard links to a few
   generated Faces files (``synth --no-extras``): every file is a real file to list,
   stat, read and parse, and the dataset takes the disk of a few. It is built in a
   fresh interpreter; the coordinator (not its workers) reports its peak RSS
   (``VmHWM``) against its RSS just before the build, and the peak of Python's
   (tracemalloc) and Arrow's allocations during the build. Per file, beside the
   object form's 1,100 bytes and the target of 200.
   Then a ``--sets`` build of ``--sets-files`` landmark files whose camera folders
   also hold the five set files of a Faces export (hard links too), measured the same
   way (RSS in one run, Python's and Arrow's peaks under tracemalloc in another), per
   file read (landmark and set files) and per landmark file.
2. *Listing*: ``--entries`` entries, half of them landmark files, listed from a
   synthetic source (no disk: this measures the coordinator, not the filesystem)
   and discovered into the columnar form: time, and memory per entry (peaks of
   Python's and Arrow's allocations, in a separate run), beside the floor of
   holding the same paths as a plain Python list of strings (the least any
   one-object-per-file coordinator holds) and the time to build that list.

Writes ``benchmarks/results/scale.json`` and prints a table. The data folder is
deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import arguments, save
from kpcompile.synth import synth

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "scale"

_BUILD = r"""
import json, sys, time, tracemalloc
import pyarrow as pa
import kpcompile

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

import kpcompile.pipeline, kpcompile.compile.pool, pyarrow.compute, pyarrow.parquet  # imports
trace = sys.argv[4] == "trace"
pool = pa.default_memory_pool()
arrow_before = pool.max_memory()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5\n")  # reset VmHWM: the peak from here on
if trace:
    tracemalloc.start()
t = time.perf_counter()
sets = len(sys.argv) > 5 and sys.argv[5] == "sets"
r = kpcompile.build(
    sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), progress=False, sets=sets
)
seconds = time.perf_counter() - t
py_peak = tracemalloc.get_traced_memory()[1] if trace else 0
print(json.dumps({
    "files": r.discovered, "compiled": r.compiled, "seconds": seconds,
    "rss_before": before, "rss_peak": status("VmHWM"),
    "python_peak": py_peak, "arrow_peak": pool.max_memory() - arrow_before,
}))
"""

_LISTING = r"""
import json, sys, time, tracemalloc
import pyarrow as pa
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.discover import discover_files

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

N = int(sys.argv[1])

def paths(n):
    for i in range(n // 4):
        for c in range(2):
            folder = f"datapoint_{i:07d}/camera_{c:02d}/key_points/"
            yield folder + "face_dense_key_points.json"
            yield folder + "all_key_points.json"

class Synthetic(Source):
    kind = "synthetic"
    def list(self, names):
        for i, p in enumerate(paths(N)):
            yield Entry(p, 300_000 + i, 10**18 + i)
    def read(self, rel, max_bytes):
        raise AssertionError

discover_files(Synthetic("/s", "s"))  # imports
pool = pa.default_memory_pool()
arrow_before = pool.max_memory()
trace = sys.argv[3] == "trace"
if trace:
    tracemalloc.start()
t = time.perf_counter()
if sys.argv[2] == "kpcompile":
    files, listing = discover_files(Synthetic("/s", "s"))
    seconds, entries, found = time.perf_counter() - t, len(listing), len(files)
else:  # the floor: the paths alone, as Python strings in a list
    held = list(paths(N))
    seconds, entries, found = time.perf_counter() - t, len(held), len(held) // 2
peak = tracemalloc.get_traced_memory()[1] + pool.max_memory() - arrow_before
print(json.dumps({"entries": entries, "files": found, "seconds": seconds, "peak": peak}))
"""


def _run(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _hardlinked(root: Path, files: int, cameras: int = 2, *, sets: bool = False) -> None:
    """``files`` landmark files, hard links to the few files of a small synthetic dataset;
    with ``sets``, each camera folder also links the seed's set files and metadata."""
    seed = root.parent / ("seed-sets" if sets else "seed")
    synth(seed, datapoints=8, cameras=cameras, layout="faces", extras=sets)
    folders = sorted(p.parent.parent for p in seed.rglob("face_dense_key_points.json"))
    for i in range(files // cameras):
        for c in range(cameras):
            src = folders[(i * cameras + c) % len(folders)]
            dst = root / f"datapoint_{i:07d}" / f"camera_{c:02d}"
            (dst / "key_points").mkdir(parents=True)
            for p in src.rglob("*.json"):
                os.link(p, dst / p.relative_to(src))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/data/scale")
    ap.add_argument("--trace", action="store_true", help="also a build under tracemalloc")
    ap.add_argument(
        "--sets-files", type=int, default=100_000, help="landmark files of the --sets build"
    )
    args = arguments(ap, argv)
    traced: dict[str, Any] = {}
    sets_build: dict[str, Any] = {}
    sets_traced: dict[str, Any] = {}

    shutil.rmtree(DATA, ignore_errors=True)
    ds = DATA / "dataset"
    try:
        t = time.perf_counter()
        _hardlinked(ds, args.files)
        made_s = time.perf_counter() - t
        build = _run(_BUILD, str(ds), str(DATA / "out"), str(args.workers), "rss")
        if args.trace:  # tracemalloc slows the build: a second, separate run
            shutil.rmtree(DATA / "out")
            traced = _run(_BUILD, str(ds), str(DATA / "out"), str(args.workers), "trace")
        shutil.rmtree(ds)
        # --sets: five more files per camera folder (68-point, head, ears, all_key_points,
        # camera_metadata.json); its coordinator, measured the same way
        _hardlinked(ds, args.sets_files, sets=True)
        w = str(args.workers)
        out = DATA / "out-sets"
        sets_build = _run(_BUILD, str(ds), str(out), w, "rss", "sets")
        shutil.rmtree(out)
        sets_traced = _run(_BUILD, str(ds), str(out), w, "trace", "sets")
    finally:
        if not args.keep:
            shutil.rmtree(DATA, ignore_errors=True)
    ours = _run(_LISTING, str(args.entries), "kpcompile", "time")
    floor = _run(_LISTING, str(args.entries), "floor", "time")
    ours_mem = _run(_LISTING, str(args.entries), "kpcompile", "trace")
    floor_mem = _run(_LISTING, str(args.entries), "floor", "trace")
    n = build["files"]
    result = {
        "benchmark": "scale",
        "machine": f"{platform.machine()}, {platform.python_version()}, {os.cpu_count()} cores",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "workers": args.workers,
        "build": {
            "files": n,
            "compiled": build["compiled"],
            "seconds": round(build["seconds"], 2),
            "files_per_s": round(n / build["seconds"]),
            "coordinator_rss_peak_mib": round(build["rss_peak"] / 2**20, 1),
            "coordinator_rss_growth_bytes_per_file": round(
                (build["rss_peak"] - build["rss_before"]) / n
            ),
            "coordinator_traced_bytes_per_file": round(
                (traced["python_peak"] + traced["arrow_peak"]) / n
            )
            if traced
            else None,
            "coordinator_arrow_peak_bytes_per_file": round(build["arrow_peak"] / n),
            "object_form_bytes_per_file": 1100,
            "target_bytes_per_file": 200,
            "dataset_made_s": round(made_s, 1),
        },
        "sets_build": _sets_result(sets_build, sets_traced, args.sets_files),
        "listing": {
            "entries": ours["entries"],
            "files": ours["files"],
            "seconds": round(ours["seconds"], 2),
            "bytes_per_entry": round(ours_mem["peak"] / ours["entries"]),
            "bytes_per_file": round(ours_mem["peak"] / ours["files"]),
            "floor_python_list_seconds": round(floor["seconds"], 2),
            "floor_python_list_bytes_per_entry": round(floor_mem["peak"] / floor["entries"]),
        },
    }
    save("scale", result)
    b, li = result["build"], result["listing"]
    rows = [
        ("build: files", f"{n:,} hard links ({b['compiled']:,} compiled)"),
        ("build: wall time", f"{b['seconds']:.1f} s ({b['files_per_s']:,} files/s)"),
        ("coordinator peak RSS", f"{b['coordinator_rss_peak_mib']:.0f} MiB"),
        (
            "coordinator per file",
            f"RSS growth {b['coordinator_rss_growth_bytes_per_file']} B, traced "
            f"{b['coordinator_traced_bytes_per_file']} B, Arrow "
            f"{b['coordinator_arrow_peak_bytes_per_file']} B (target 200; object form 1,100)",
        ),
        (
            f"listing {li['entries']:,} entries",
            f"{li['seconds']:.2f} s, {li['bytes_per_entry']} B/entry, "
            f"{li['bytes_per_file']} B/landmark file "
            f"(floor, a list of the paths: {li['floor_python_list_seconds']:.2f} s, "
            f"{li['floor_python_list_bytes_per_entry']} B/entry)",
        ),
        (
            "--sets coordinator",
            f"{result['sets_build']['files']:,} landmark + "
            f"{result['sets_build']['set_files']:,} set files: RSS growth "
            f"{result['sets_build']['coordinator_rss_growth_bytes_per_file']} B, traced "
            f"{result['sets_build']['coordinator_traced_bytes_per_file']} B per file read "
            f"({result['sets_build']['coordinator_traced_bytes_per_landmark_file']} B "
            "per landmark file)",
        ),
        ("load average", " ".join(str(x) for x in result["load_average"])),
    ]
    for name, value in rows:
        print(f"{name:<28} {value}")
    return result


def _sets_result(build: dict[str, Any], traced: dict[str, Any], files: int) -> dict[str, Any]:
    """The ``--sets`` build's coordinator per file read (landmark and set files: four set
    tables per camera folder) and per landmark file."""
    n = build["files"]
    read = n + 4 * n  # face_standard, head, ears, cameras: one file each per camera folder
    peak = traced["python_peak"] + traced["arrow_peak"]
    return {
        "files": n,
        "set_files": read - n,
        "seconds": round(build["seconds"], 2),
        "coordinator_rss_peak_mib": round(build["rss_peak"] / 2**20, 1),
        "coordinator_rss_growth_bytes_per_file": round(
            (build["rss_peak"] - build["rss_before"]) / read
        ),
        "coordinator_traced_bytes_per_file": round(peak / read),
        "coordinator_traced_bytes_per_landmark_file": round(peak / n),
        "coordinator_arrow_peak_bytes_per_file": round(build["arrow_peak"] / read),
    }


if __name__ == "__main__":
    main()
