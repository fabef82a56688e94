"""Which row-group size serves the query benchmarks best.

A snapshot has one row group per Parquet file: ``--shard-files`` source files per
shard, split by camera partition. This builds the same dataset with several shard
sizes and times the query benchmark's four polars queries on each.

Usage: python -m benchmarks.bench_rowgroups [--files 8000] [--shards 64 256 1024 4096]
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

import kpcompile
from benchmarks.common import DATA, dataset, save, table
from kpcompile import snapshot as snap


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _queries(out: Path, target: str, repeat: int) -> dict[str, float]:
    def lazy() -> pl.LazyFrame:
        return kpcompile.scan(out)

    return {
        "visibility": _best(lambda: kpcompile.visibility_rate(lazy()).collect(), repeat),
        "lips_mean": _best(
            lambda: (
                kpcompile.filter_region(lazy(), "lips")
                .group_by("camera")
                .agg(pl.col("x3", "y3", "z3").mean())
                .collect()
            ),
            repeat,
        ),
        "lookup": _best(lambda: lazy().filter(pl.col("datapoint") == target).collect(), repeat),
        "tensors": _best(lambda: kpcompile.tensors(lazy()), max(1, repeat // 2)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=8000)
    ap.add_argument("--shards", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    src = dataset(args.files)
    rows = []
    for shard_files in args.shards:
        out = DATA / f"rowgroups-{shard_files}"
        shutil.rmtree(out, ignore_errors=True)
        kpcompile.build(src, out, shard_files=shard_files, workers=2)
        paths = snap.table_files(out, "keypoints")
        groups = sum(pq.ParquetFile(p).metadata.num_row_groups for p in paths)
        n_rows = kpcompile.info(out)["rows"]
        target = kpcompile.read(out, "files")["datapoint"][args.files // 3]
        timings = _queries(out, target, args.repeat)
        rows.append([shard_files, n_rows // groups, groups, *timings.values()])
        shutil.rmtree(out, ignore_errors=True)
    print(
        table(
            [
                "shard files",
                "rows/group",
                "groups",
                "visibility s",
                "lips mean s",
                "lookup s",
                "tensors s",
            ],
            rows,
        )
    )
    save(
        "rowgroups",
        {
            "files": args.files,
            "rows": [
                dict(
                    zip(
                        [
                            "shard_files",
                            "rows_per_group",
                            "groups",
                            "visibility_s",
                            "lips_mean_s",
                            "lookup_s",
                            "tensors_s",
                        ],
                        r,
                        strict=True,
                    )
                )
                for r in rows
            ],
        },
    )


if __name__ == "__main__":
    main()
