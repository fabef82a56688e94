"""Which row-group size serves the query benchmarks best.

Workers write ``keypoints`` a row group of ``--row-group-files`` source files at a
time. This builds the same dataset with several row-group sizes and times the query
benchmark's four polars queries on each, plus the build itself.

Usage: python -m benchmarks.bench_rowgroups [--files 8000] [--groups 32 128 256 512 1024]

With ``--feeding``, instead: the ML readers against the floor, in samples (landmark
files) per second, on one snapshot (row groups of ``--group-files`` files) read from
its local folder and from s3:// (a moto server, its own process) through
:mod:`benchmarks.proxy` at each of ``--delays`` ms per request/response turn:

- **iter_tensors**: ``kpcompile.iter_tensors(url, batch_size=1024, dtype="float32")``;
- **dataset**: ``kpcompile.torch.KeypointDataset(url, batch_size=1024)``, one epoch;
- **the floor**: a plain pyarrow read of the same row groups: ``pq.ParquetFile`` over
  an fsspec file (``fs.open``), ``read_row_group`` of each in order, the columns
  the readers read.

Alternating, best of ``--repeat``, the 1-minute load average printed beside every row.
Usage: python -m benchmarks.bench_rowgroups --feeding [--files 8000] [--group-files 256]
[--delays 0 20] [--repeat 3]. Writes ``benchmarks/results/rowgroups_feeding.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

import kpcompile
from benchmarks.common import DATA, arguments, best_of, dataset, loadavg, save, table
from kpcompile.query.scan import files as table_uris


def _queries(out: Path, target: str, repeat: int) -> dict[str, float]:
    def lazy() -> pl.LazyFrame:
        return kpcompile.scan(out)

    return {
        "visibility": best_of(lambda: kpcompile.visibility_rate(lazy()).collect(), repeat),
        "lips_mean": best_of(
            lambda: (
                kpcompile.filter_region(lazy(), "lips")
                .group_by("camera")
                .agg(pl.col("x3", "y3", "z3").mean())
                .collect()
            ),
            repeat,
        ),
        "lookup": best_of(lambda: lazy().filter(pl.col("datapoint") == target).collect(), repeat),
        "tensors": best_of(lambda: kpcompile.tensors(lazy()), max(1, repeat // 2)),
    }


@functools.cache
def _uris(url: str) -> list[str]:
    """The snapshot's keypoints files (known before the clock starts, for the floor)."""
    from kpcompile.feeding.rowgroups import Parts

    parts = Parts(url)
    return [parts.store().uri(parts.snapshot, rel) for rel in parts.rels]


def _floor(url: str) -> int:
    """Read every keypoints row group in order with plain pyarrow; files read."""
    import fsspec

    from kpcompile.feeding.rowgroups import FLOATS, KEYS

    columns = [*KEYS, "kp_id", *FLOATS, "visible"]
    rows = 0
    for uri in _uris(url):
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "rb") as fh:
            f = pq.ParquetFile(fh, read_dictionary=KEYS)
            for i in range(f.metadata.num_row_groups):
                rows += f.read_row_group(i, columns=columns, use_threads=False).num_rows
    return rows // 468


def _iter_tensors(url: str) -> int:
    return sum(len(t) for t in kpcompile.iter_tensors(url, batch_size=1024, dtype="float32"))


def _dataset(url: str) -> int:
    from kpcompile.torch import KeypointDataset

    return sum(len(b["datapoint"]) for b in KeypointDataset(url, batch_size=1024))


READERS: dict[str, Callable[[str], int]] = {
    "iter_tensors": _iter_tensors,
    "dataset": _dataset,
    "floor": _floor,
}


def _samples_per_s(url: str, files: int, repeat: int) -> dict[str, float]:
    """Best samples/s of each reader on ``url``, the readers alternating."""
    best: dict[str, float] = dict.fromkeys(READERS, 0.0)
    for _ in range(repeat):
        for name, read in READERS.items():
            t = time.perf_counter()
            n = read(url)
            seconds = time.perf_counter() - t
            assert n == files, (name, n, files)
            best[name] = max(best[name], n / seconds)
    return best


@contextlib.contextmanager
def _endpoint(port: int) -> Iterator[None]:
    """s3:// clients of this process talk to 127.0.0.1:``port`` (fresh connections)."""
    import fsspec

    from benchmarks.bench_s3 import CREDENTIALS

    before = os.environ.get("AWS_ENDPOINT_URL")
    os.environ.update(CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    fsspec.filesystem("s3").clear_instance_cache()
    try:
        yield
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
        if before is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = before


def feeding(args: argparse.Namespace) -> None:
    """The ML readers against a plain pyarrow read, local and on s3:// (see the docstring)."""
    import fsspec

    from benchmarks.bench_s3 import BUCKET, moto_server, proxy

    src = dataset(args.files)
    out = DATA / f"rowgroups-feeding-{args.group_files}"
    shutil.rmtree(out, ignore_errors=True)
    kpcompile.build(src, out, shard_files=1024, row_group_files=args.group_files, workers=2)
    files = kpcompile.info(out).rows // 468
    results: list[dict[str, Any]] = []
    try:
        _uris(str(out))
        load = loadavg()
        results.append({"where": "local", **_samples_per_s(str(out), files, args.repeat)})
        results[-1]["load"] = [load, loadavg()]
        with moto_server() as port:
            with _endpoint(port):
                fs = fsspec.filesystem("s3", skip_instance_cache=True)
                fs.mkdir(BUCKET)
                fs.put(str(out), f"{BUCKET}/feeding", recursive=True)
            for delay in args.delays:
                with proxy(port, delay) as via, _endpoint(via):
                    load = loadavg()
                    url = f"s3://{BUCKET}/feeding"
                    _uris(url)
                    results.append(
                        {"where": f"s3 {delay:g} ms", **_samples_per_s(url, files, args.repeat)}
                    )
                    results[-1]["load"] = [load, loadavg()]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows = [
        [
            r["where"],
            r["iter_tensors"],
            r["dataset"],
            r["floor"],
            f"{r['iter_tensors'] / r['floor']:.2f}x",
            f"{r['dataset'] / r['floor']:.2f}x",
            f"{r['load'][0]:.1f} -> {r['load'][1]:.1f}",
        ]
        for r in results
    ]
    headers = ["where", "iter_tensors/s", "dataset/s", "floor/s", "iter/floor", "ds/floor"]
    print(table([*headers, "load avg"], rows))
    print(f"{files:,} files in row groups of {args.group_files}; samples/s, best of {args.repeat}")
    save(
        "rowgroups_feeding",
        {
            "files": files,
            "group_files": args.group_files,
            "repeat": args.repeat,
            "results": results,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=8000)
    ap.add_argument("--groups", type=int, nargs="+", default=[32, 128, 256, 512, 1024])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--feeding", action="store_true", help="the ML readers against the floor")
    ap.add_argument("--group-files", type=int, default=256, help="with --feeding")
    ap.add_argument("--delays", type=float, nargs="+", default=[0.0, 20.0], help="with --feeding")
    args = arguments(ap)
    if args.feeding:
        feeding(args)
        return
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
