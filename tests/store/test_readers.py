"""Promise 5, readers during rebuilds: while snapshots are published repeatedly, polars
(kpcompile.scan) and DuckDB (the README's recipe) readers never see an error, a mix of
two snapshots, or a partial one.

Each build compiles a different dataset (a different number of datapoints and values),
so every read's signature (rows, datapoints, min and max of x3) names exactly one
snapshot; a mix or a partial snapshot would match none.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import kpcompile
from kpcompile.synth import synth

Signature = tuple[int, int, float, float]


def _polars_read(out: Path) -> Signature:
    row = (
        kpcompile.scan(out)
        .select(
            pl.len(),
            pl.col("datapoint").n_unique(),
            pl.col("x3").min().alias("lo"),
            pl.col("x3").max().alias("hi"),
        )
        .collect()
        .row(0)
    )
    return (int(row[0]), int(row[1]), float(row[2]), float(row[3]))


def _duckdb_read(con: Any, out: Path) -> Signature:
    con.execute(
        f"SET VARIABLE snap = (SELECT rtrim(content, chr(10)) FROM read_text('{out}/CURRENT'))"
    )
    row = con.execute(
        f"SELECT count(*), count(DISTINCT datapoint), min(x3), max(x3) "
        f"FROM read_parquet('{out}/snapshots/' || getvariable('snap') || '/keypoints/**/*.parquet', "
        f"hive_partitioning = false)"
    ).fetchone()
    return (int(row[0]), int(row[1]), float(row[2]), float(row[3]))


def _readers_during_rebuilds(tmp_path: Path, builds: int) -> dict[str, Any]:
    datasets = []
    for i in range(4):
        ds = tmp_path / f"dataset{i}"
        synth(ds, datapoints=3 + i, cameras=2, layout="mixed", seed=100 + i, extras=False)
        datasets.append(ds)
    out = tmp_path / "out"
    expected: set[Signature] = set()
    for i, ds in enumerate(datasets):  # each dataset's signature, from its own output
        ref = tmp_path / f"ref{i}"
        kpcompile.build(ds, ref, workers=1)
        expected.add(_polars_read(ref))
    assert len(expected) == len(datasets)
    kpcompile.build(datasets[0], out, workers=1)

    done = threading.Event()
    seen: dict[str, Counter[Signature]] = {"polars": Counter(), "duckdb": Counter()}
    failures: list[str] = []

    def polars_reader() -> None:
        try:
            while not done.is_set():
                seen["polars"][_polars_read(out)] += 1
        except Exception as exc:
            failures.append(f"polars: {exc!r}")

    def duckdb_reader() -> None:
        con = duckdb.connect()
        try:
            while not done.is_set():
                seen["duckdb"][_duckdb_read(con, out)] += 1
        except Exception as exc:
            failures.append(f"duckdb: {exc!r}")
        finally:
            con.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (polars_reader, duckdb_reader)]
    for t in threads:
        t.start()
    try:
        for i in range(builds):
            kpcompile.build(datasets[(i + 1) % len(datasets)], out, workers=1)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    for reader, sigs in seen.items():
        assert set(sigs) <= expected, (
            f"{reader} saw a mix or a partial snapshot: {set(sigs) - expected}"
        )
        assert len(sigs) >= 2, f"{reader} read while only one snapshot was current: {sigs}"
    return {r: sum(c.values()) for r, c in seen.items()} | {"publishes": builds}


def test_readers_never_see_a_mix(tmp_path: Path, trials: Any) -> None:
    counts = _readers_during_rebuilds(tmp_path, builds=12)
    trials(counts["polars"] + counts["duckdb"], f"reads during publishes {counts}")


@pytest.mark.slow
def test_readers_never_see_a_mix_long(tmp_path: Path, trials: Any) -> None:
    counts = _readers_during_rebuilds(tmp_path, builds=150)
    trials(counts["polars"] + counts["duckdb"], f"reads during publishes {counts}")
