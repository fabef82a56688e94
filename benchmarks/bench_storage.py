"""What each storage choice buys: the query benchmark on the same rows stored other ways.

Builds the query benchmark's snapshot once, then rewrites its ``keypoints`` files
with one writer setting changed at a time (everything else as kpcompile writes it),
and runs the seven queries of ``bench_query`` with kpcompile and DuckDB on each, in
the same run, best of N. Results: ``benchmarks/results/storage.json``.

Then, because a shared machine's load moves wall times, it measures what decides the
float columns' encoding in CPU time, one thread per engine: the cost of decoding the
five float columns of 4,000 files with each encoding and codec, by polars, DuckDB and
pyarrow (``--decode-only`` runs just that).

Run: ``python -m benchmarks.bench_storage [--files 20000] [--repeat 5] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import kpcompile
from benchmarks.bench_query import connect, measure, queries
from benchmarks.common import DATA, RESULTS, arguments, dataset, save

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


_DECODE = """
import sys, time, duckdb, polars as pl, pyarrow.parquet as pq
path, floats = sys.argv[1], ["x3", "y3", "z3", "px", "py"]
con = duckdb.connect(); con.execute("SET threads = 1")
con.execute("SET enable_progress_bar = false")
sql = "SELECT " + ", ".join(f"sum({c})" for c in floats) + f" FROM read_parquet('{path}')"
def cpu(fn):
    best = float("inf")
    for _ in range(7):
        t = time.process_time(); fn(); best = min(best, time.process_time() - t)
    return best
print(cpu(lambda: pl.read_parquet(path, columns=floats)),
      cpu(lambda: con.execute(sql).fetchall()),
      cpu(lambda: pq.ParquetFile(path).read(columns=floats, use_threads=False)))
"""


def decode_costs(base: Path, files: int = 4000) -> list[dict[str, Any]]:
    """CPU seconds to decode the float columns, one thread, per encoding and codec."""
    parts = [pq.ParquetFile(p).read() for p in kpcompile.files(base)]
    table = pa.concat_tables(parts).slice(0, files * 468)
    rows = []
    for encoding in ("BYTE_STREAM_SPLIT", "PLAIN"):
        for codec in ("zstd", "gzip", "lz4", "snappy", "none"):
            path = DATA / f"decode-{encoding}-{codec}.parquet"
            options = {**BASE, "compression": codec}
            options["column_encoding"] = dict.fromkeys(FLOATS, encoding)
            pq.write_table(table, path, row_group_size=256 * 468, **options)
            meta = pq.ParquetFile(path).metadata
            size = sum(
                meta.row_group(g).column(c).total_compressed_size
                for g in range(meta.num_row_groups)
                for c in range(3, 8)
            )
            env = {**os.environ, "POLARS_MAX_THREADS": "1"}
            out = subprocess.run(
                [sys.executable, "-c", _DECODE, str(path)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-3:]
            polars_s, duckdb_s, pyarrow_s = map(float, out)
            rows.append(
                {
                    "encoding": encoding,
                    "codec": codec,
                    "float_bytes": size,
                    "polars_cpu_s": round(polars_s, 4),
                    "duckdb_cpu_s": round(duckdb_s, 4),
                    "pyarrow_cpu_s": round(pyarrow_s, 4),
                }
            )
            print(
                f"{encoding:17} {codec:4} floats {size / 1e6:6.1f} MB  CPU s: polars "
                f"{polars_s:.3f}  DuckDB {duckdb_s:.3f}  pyarrow {pyarrow_s:.3f}"
            )
            path.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--decode-only", action="store_true", help="only the CPU decode costs")
    args = arguments(ap)
    base = DATA / "storage-base"
    shutil.rmtree(base, ignore_errors=True)
    kpcompile.build(dataset(args.files), base)
    rows: dict[str, Any] = {}
    decode = decode_costs(base)
    for name in [] if args.decode_only else args.only:
        what, overrides, group_files = VARIANTS[name]
        out = DATA / f"storage-{name}"
        size = rewrite(base, out, overrides, group_files)
        print(f"{name}: {what}; keypoints {size / 1e6:.1f} MB")
        results = measure(queries(out, connect(out)), args.repeat)
        rows[name] = {"change": what, "keypoints_bytes": size, "queries": results}
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    payload: dict[str, Any] = {"files": args.files, "repeat": args.repeat, "decode_cpu": decode}
    if not rows and (RESULTS / "storage.json").exists():  # --decode-only keeps the variants
        rows = json.loads((RESULTS / "storage.json").read_text()).get("variants", {})
    payload["variants"] = rows
    save("storage", payload)


if __name__ == "__main__":
    main()
