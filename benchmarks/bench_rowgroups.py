"""Which row-group size serves the query benchmarks best.

Workers write ``keypoints`` a row group of ``--row-group-files`` source files at a
time. This builds the same dataset with several row-group sizes and times the query
benchmark's four polars queries on each, plus the build itself.

Usage: python -m benchmarks.bench_rowgroups [--files 8000] [--groups 32 128 256 512 1024]
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
from benchmarks.common import DATA, arguments, dataset, save, table
from kpcompile.query.scan import files as table_uris


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
    ap.add_argument("--groups", type=int, nargs="+", default=[32, 128, 256, 512, 1024])
    ap.add_argument("--repeat", type=int, default=5)
    args = arguments(ap)
    src = dataset(args.files)
    rows = []
    for group_files in args.groups:
        out = DATA / f"rowgroups-{group_files}"
        shutil.rmtree(out, ignore_errors=True)
        built = kpcompile.build(src, out, shard_files=1024, row_group_files=group_files, workers=2)
        paths = table_uris(out, "keypoints")
        groups = sum(pq.ParquetFile(p).metadata.num_row_groups for p in paths)
        n_rows = kpcompile.info(out).rows
        target = kpcompile.read(out, "files")["datapoint"][args.files // 3]
        timings = _queries(out, target, args.repeat)
        rows.append([group_files, n_rows // groups, groups, built.seconds, *timings.values()])
        shutil.rmtree(out, ignore_errors=True)
    print(
        table(
            [
                "files/group",
                "rows/group",
                "groups",
                "build s",
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
                            "row_group_files",
                            "rows_per_group",
                            "groups",
                            "build_s",
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
