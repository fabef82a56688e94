"""Incremental build after 1% new files vs a full build; archive build memory.

Run: ``python -m benchmarks.bench_incremental [--datapoints 10000] [--workers 2] [--archive]``.

1. Synthesize a Faces dataset (``--no-extras``, 2 cameras: 20,000 files by default)
   into ``benchmarks/data/incremental``.
2. Full build (timed).
3. Add 1% new datapoints (new folders after the last one, as a new batch arrives).
4. Incremental build of the grown dataset into the same OUT (timed), and a full
   rebuild of it into another OUT (timed) to check both snapshots are identical.
   The floor beside it: listing the grown dataset (every file stat-ed, in parallel,
   as the build lists it) in the same run; an incremental build cannot do less.
5. Peak memory (max RSS) of the coordinating process building from the folder and
   (``--archive``) from a ``.tar.gz`` of it, each in a fresh interpreter.

Writes ``benchmarks/results/incremental.json`` and prints a table. The data folder
is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import kpcompile
from benchmarks.common import arguments, save
from kpcompile.ingest.discover import LANDMARK_NAMES
from kpcompile.ingest.folder import FolderSource
from kpcompile.synth import synth

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "incremental"

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
_RSS = """
import sys, kpcompile
kpcompile.build(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), progress=False)
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]))
"""


def _tables(r: kpcompile.BuildResult) -> dict[str, Any]:
    m = json.loads((Path(r.path) / "manifest.json").read_text())
    return {"tables": m["tables"], "shards": m["shards"], "counts": m["counts"]}


def _peak_rss_mib(source: Path, out: Path, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", _RSS, str(source), str(out), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.split()[-1]) / 1024


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datapoints", type=int, default=10000)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/data/incremental")
    ap.add_argument("--archive", action="store_true", help="also a .tar.gz build's memory")
    args = arguments(ap, argv)

    shutil.rmtree(DATA, ignore_errors=True)
    ds, out, full_out = DATA / "dataset", DATA / "out", DATA / "out-full"
    try:
        synth(ds, datapoints=args.datapoints, cameras=args.cameras, layout="faces", extras=False)
        t = time.perf_counter()
        first = kpcompile.build(ds, out, workers=args.workers, progress=False)
        full_s = time.perf_counter() - t

        new_dp = max(1, args.datapoints // 100)
        batch = DATA / "batch"
        synth(batch, datapoints=new_dp, cameras=args.cameras, layout="faces", seed=99, extras=False)
        for i in range(1, new_dp + 1):
            shutil.move(batch / f"datapoint_{i:05d}", ds / f"datapoint_{args.datapoints + i:05d}")

        t = time.perf_counter()
        inc = kpcompile.build(ds, out, workers=args.workers, progress=False)
        inc_s = time.perf_counter() - t
        t = time.perf_counter()
        listed = len(FolderSource(ds).listing(LANDMARK_NAMES))
        listing_s = time.perf_counter() - t
        t = time.perf_counter()
        rebuilt = kpcompile.build(ds, full_out, workers=args.workers, progress=False)
        rebuild_s = time.perf_counter() - t

        rss_folder = _peak_rss_mib(ds, DATA / "rss-folder", args.workers)
        archive = DATA / "dataset.tar.gz"
        rss_tar = None
        if args.archive:
            with tarfile.open(archive, "w:gz") as tf:
                tf.add(ds, arcname="dataset")
            rss_tar = _peak_rss_mib(archive, DATA / "rss-tar", args.workers)

        result = {
            "benchmark": "incremental",
            "machine": f"{platform.machine()}, {platform.python_version()}",
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "workers": args.workers,
            "files_before": first.discovered,
            "files_added": inc.discovered - first.discovered,
            "full_build_s": round(full_s, 3),
            "incremental_build_s": round(inc_s, 3),
            "full_rebuild_s": round(rebuild_s, 3),
            "incremental_vs_full": round(inc_s / full_s, 4),
            "incremental_vs_rebuild": round(inc_s / rebuild_s, 4),
            "target": "< 0.10",
            "floor_listing_s": round(listing_s, 3),
            "floor_listing_vs_full": round(listing_s / full_s, 4),
            "floor_listed_files": listed,
            "shards": inc.shards,
            "reused_shards": inc.reused_shards,
            "parsed": inc.parsed,
            "reused_files": inc.reused_files,
            "identical_to_full_rebuild": _tables(inc) == _tables(rebuilt),
            "archive_bytes": archive.stat().st_size if rss_tar is not None else None,
            "peak_rss_mib_folder_build": round(rss_folder, 1),
            "peak_rss_mib_tar_gz_build": round(rss_tar, 1) if rss_tar is not None else None,
        }
    finally:
        if not args.keep:
            shutil.rmtree(DATA, ignore_errors=True)
    save("incremental", result)
    rows = [
        ("files before / added", f"{result['files_before']:,} / {result['files_added']:,}"),
        ("full build", f"{full_s:.2f} s"),
        ("incremental build (+1%)", f"{inc_s:.2f} s"),
        ("full rebuild (+1%)", f"{rebuild_s:.2f} s"),
        ("incremental / full", f"{result['incremental_vs_full']:.3f}  (target < 0.10)"),
        (
            "floor: listing / full",
            f"{result['floor_listing_vs_full']:.3f}  ({listing_s:.2f} s, {listed:,} files)",
        ),
        ("shards reused", f"{inc.reused_shards} of {inc.shards}; {inc.parsed} files parsed"),
        ("identical to full rebuild", str(result["identical_to_full_rebuild"])),
        ("peak RSS folder / tar.gz", f"{rss_folder:.0f} / {rss_tar or 0:.0f} MiB (coordinator)"),
    ]
    for name, value in rows:
        print(f"{name:<28} {value}")
    return result


if __name__ == "__main__":
    main()
