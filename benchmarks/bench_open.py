"""Opening a snapshot of 1M and 100M source files: ``kpcompile.scan(out)`` to a LazyFrame.

Run: ``python -m benchmarks.bench_open [--files 1000000 100000000] [--shard-files 2048]``.

Building 100 million files is not what is measured here, so the snapshots are
synthetic: :func:`synthetic_snapshot` writes the manifest a build of
``virtual://N/P`` would publish (its head and both Parquet lists: one shard per
``--shard-files`` files, each with a ``keypoints`` and a ``files`` Parquet file,
record counts, keys and outputs as a build writes them) but **no data file**:
only the manifest is real. Opening must not touch a data file, and that is checked
too: with none on disk, reading any of them would fail. The manifest's checksums
are of placeholder bytes; ``verify`` of such a snapshot fails, by design.

Each number is taken in a fresh interpreter:

* *open, imports done*: ``import kpcompile, polars`` and the modules ``scan``
  needs first, then the first ``scan(out)`` (reads CURRENT, the head and the
  ``keypoints`` part of the file list; makes the LazyFrame);
* *open again*: the same call repeated in that process (the list's bytes cached);
* *first call in a fresh process*: ``import kpcompile`` and ``scan(out)`` from
  nothing (interpreter start not counted), and the same after ``import polars``.

Writes ``benchmarks/results/open.json`` and prints a table with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.common import arguments, loadavg, save
from kpcompile import manifest as mf
from kpcompile._version import __version__
from kpcompile.compile.shard import part_name
from kpcompile.ingest.virtual import VirtualSource
from kpcompile.options import BuildOptions, recorded
from kpcompile.pipeline import _table  # the manifest's table entries, as a build makes them
from kpcompile.store.base import CURRENT, SNAPSHOTS

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "open"
ROWS = 468

_OPEN = r"""
import json, sys, time
out, mode = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if mode == "warm":
    import polars, pyarrow.parquet, kpcompile, kpcompile.query.scan, kpcompile.store.local
elif mode == "after_polars":
    import polars
t1 = time.perf_counter()
import kpcompile
lf = kpcompile.scan(out)
t2 = time.perf_counter()
again = []
for _ in range(5):
    t = time.perf_counter()
    kpcompile.scan(out)
    again.append(time.perf_counter() - t)
print(json.dumps({
    "first": t2 - t1, "again": sorted(again)[2], "width": len(lf.collect_schema()),
    "pandas": "pandas" in sys.modules, "pyarrow_dataset": "pyarrow.dataset" in sys.modules,
}))
"""


def synthetic_snapshot(out: Path, files: int, shard_files: int, prefixes: int) -> dict[str, Any]:
    """Write the manifest (head and lists) of a ``virtual://files/prefixes`` build, no data."""
    src = VirtualSource(files, prefixes, template=b"{}")
    opts = BuildOptions(shard_files=shard_files, workers=1)
    shards: list[mf.ShardRecord] = []
    written: dict[str, list[mf.FileEntry]] = {"keypoints": [], "files": [], "errors": []}
    fake_sha = "0" * 64
    for i, lo in enumerate(range(0, files, shard_files)):
        hi = min(lo + shard_files, files) - 1
        n = hi - lo + 1
        first, last = src.path(lo), src.path(hi)
        key_first = ["camera", first.rsplit("/", 3)[0], first]
        key_last = ["camera", last.rsplit("/", 3)[0], last]
        outputs = {
            "files": [f"files/{part_name(i)}"],
            "keypoints": [f"keypoints/camera=camera/{part_name(i)}"],
        }
        written["files"].append(mf.FileEntry(outputs["files"][0], n, 60 * n, fake_sha))
        written["keypoints"].append(
            mf.FileEntry(outputs["keypoints"][0], n * ROWS, 9000 * n, fake_sha)
        )
        shards.append(
            mf.ShardRecord(
                index=i, digest=f"{i:064x}", first=key_first, last=key_last, files=n,
                compiled=n, rows=n * ROWS, visible=n * 400, source_bytes=n * 162_654,
                layouts={"faces": n}, versions={"2.0.0": n}, errors=[], outputs=outputs,
            )
        )  # fmt: skip
    written["errors"].append(mf.FileEntry("errors/part-00000.parquet", 0, 500, fake_sha))
    tables = {name: _table(name, items, opts) for name, items in written.items()}
    sid = "20260101T000000Z-00000000"
    manifest = mf.Manifest(
        format=mf.FORMAT, snapshot=sid, created_at="2026-01-01T00:00:00Z",
        tool=mf.Tool("kpcompile", __version__),
        source=mf.SourceInfo(src.location, files, files * 162_654),
        options=recorded(opts),
        counts=mf.Counts(files, files, 0, files * ROWS, files * 400, 0, files, 1),
        layouts={"faces": files}, versions={"2.0.0": files},
        output_bytes=sum(t.bytes for t in tables.values()), tables=tables, shards=shards,
        inputs="0" * 64,
    )  # fmt: skip
    folder = out / SNAPSHOTS / sid
    sizes = {}
    for rel, data in mf.encode_snapshot(manifest):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        sizes[rel] = len(data)
    (out / CURRENT).write_text(sid + "\n")
    return {"shards": len(shards), "data_files": sum(len(v) for v in written.values()), **sizes}


def _run(out: Path, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _OPEN, str(out), mode], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[1_000_000, 100_000_000])
    ap.add_argument("--shard-files", type=int, default=2048)
    ap.add_argument("--prefixes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5, help="fresh interpreters per number")
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/data/open")
    args = arguments(ap, argv)
    results = []
    try:
        for n in args.files:
            out = DATA / f"{n}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            made = synthetic_snapshot(out, n, args.shard_files, args.prefixes)
            made["written_s"] = round(time.perf_counter() - t, 1)
            runs = {
                m: [_run(out, m) for _ in range(args.runs)]
                for m in ("warm", "cold", "after_polars")
            }
            results.append(
                {
                    "files": n,
                    "synthetic": made,
                    "open_imports_done_s": round(median(r["first"] for r in runs["warm"]), 4),
                    "open_again_s": round(median(r["again"] for r in runs["warm"]), 4),
                    "fresh_process_s": round(median(r["first"] for r in runs["cold"]), 4),
                    "fresh_after_polars_s": round(
                        median(r["first"] for r in runs["after_polars"]), 4
                    ),
                    "imports_pandas": runs["cold"][0]["pandas"],
                    "imports_pyarrow_dataset": runs["cold"][0]["pyarrow_dataset"],
                    "load_average_after": round(loadavg(), 2),
                }
            )
    finally:
        if not args.keep:
            shutil.rmtree(DATA, ignore_errors=True)
    payload = {
        "benchmark": "open",
        "note": "synthetic snapshots: a real manifest (head + Parquet lists) and no data file",
        "shard_files": args.shard_files,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    save("open", payload)
    print(f"{'files':>12} {'shards':>7} {'lists KB':>9} {'open':>8} {'again':>8} "
          f"{'fresh':>8} {'fresh, polars first':>20}")  # fmt: skip
    for r in results:
        s = r["synthetic"]
        kb = (s[mf.FILES_LIST] + s[mf.SHARDS_LIST] + s[mf.FILE_NAME]) / 1024
        print(
            f"{r['files']:>12,} {s['shards']:>7,} {kb:>9,.0f} {r['open_imports_done_s']:>7.3f}s "
            f"{r['open_again_s']:>7.3f}s {r['fresh_process_s']:>7.3f}s "
            f"{r['fresh_after_polars_s']:>19.3f}s"
        )
    print("load average", " ".join(str(x) for x in payload["load_average"]))
    return payload


if __name__ == "__main__":
    main()
