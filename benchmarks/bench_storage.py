"""What each storage choice buys: the query benchmark on the same rows stored other ways.

Builds the query benchmark's snapshot once, then rewrites its ``keypoints`` files
with one writer setting changed at a time (everything else as kpcompile writes it),
and runs the seven queries of ``bench_query`` with kpcompile and DuckDB on each, in
the same run, best of N. Results: ``benchmarks/results/storage.json``.

Run: ``python -m benchmarks.bench_storage [--files 20000] [--repeat 5] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import kpcompile
from benchmarks.bench_query import connect, measure, queries
from benchmarks.common import DATA, dataset, save

FLOATS = ["x3", "y3", "z3", "px", "py"]
BASE: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": ["datapoint", "camera"],
    "column_encoding": dict.fromkeys(FLOATS, "BYTE_STREAM_SPLIT"),
    "write_statistics": True,
    "store_schema": False,
}
# name -> (what changes, writer keyword overrides, files per row group or None)
VARIANTS: dict[str, tuple[str, dict[str, Any], int | None]] = {
    "current": ("as kpcompile writes (256 files per row group)", {}, None),
    "kp_id_dictionary": (
        "kp_id dictionary-encoded",
        {"use_dictionary": ["datapoint", "camera", "kp_id"]},
        None,
    ),
    "kp_id_delta": (
        "kp_id DELTA_BINARY_PACKED",
        {"column_encoding": {**BASE["column_encoding"], "kp_id": "DELTA_BINARY_PACKED"}},
        None,
    ),
    "visible_rle": (
        "visible RLE (data pages v2)",
        {
            "column_encoding": {**BASE["column_encoding"], "visible": "RLE"},
            "data_page_version": "2.0",
        },
        None,
    ),
    "page_index": ("page index written", {"write_page_index": True}, None),
    "sorting_columns": (
        "sorting_columns declared (datapoint, kp_id)",
        {"sorting_columns": [pq.SortingColumn(0), pq.SortingColumn(2)]},
        None,
    ),
    "row_groups_64": ("64 files per row group", {}, 64),
    "row_groups_1024": ("1,024 files per row group", {}, 1024),
    "floats_plain": (
        "floats PLAIN instead of BYTE_STREAM_SPLIT",
        {"column_encoding": dict.fromkeys(FLOATS, "PLAIN")},
        None,
    ),
    "lz4": ("lz4 instead of zstd", {"compression": "lz4"}, None),
}


def rewrite(src: Path, dst: Path, overrides: dict[str, Any], group_files: int | None) -> int:
    """Copy snapshot output ``src`` to ``dst`` with its keypoints files rewritten; their bytes."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    total = 0
    for path in kpcompile.files(dst):
        pf = pq.ParquetFile(path)
        with pq.ParquetWriter(path + ".tmp", pf.schema_arrow, **{**BASE, **overrides}) as w:
            if group_files:
                w.write_table(pf.read(), row_group_size=group_files * 468)
            else:
                for i in range(pf.num_row_groups):
                    t = pf.read_row_group(i)
                    w.write_table(t, row_group_size=t.num_rows)
        os.replace(path + ".tmp", path)
        total += os.path.getsize(path)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    base = DATA / "storage-base"
    shutil.rmtree(base, ignore_errors=True)
    kpcompile.build(dataset(args.files), base)
    rows: dict[str, Any] = {}
    for name in args.only:
        what, overrides, group_files = VARIANTS[name]
        out = DATA / f"storage-{name}"
        size = rewrite(base, out, overrides, group_files)
        print(f"{name}: {what}; keypoints {size / 1e6:.1f} MB")
        results = measure(queries(out, connect(out)), args.repeat)
        rows[name] = {"change": what, "keypoints_bytes": size, "queries": results}
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    path = save("storage", {"files": args.files, "repeat": args.repeat, "variants": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
