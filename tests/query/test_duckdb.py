"""The README's DuckDB recipe reads the same snapshot polars reads."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

import kpcompile


@pytest.mark.parametrize("partition_by", ["camera", "none"])
def test_readme_recipe_matches_polars(
    mixed_dataset: Path, tmp_path: Path, partition_by: str
) -> None:
    out = tmp_path / "compiled"
    kpcompile.build(mixed_dataset, out, workers=1, partition_by=partition_by, shard_files=7)
    con = duckdb.connect()
    con.execute(
        f"SET VARIABLE snap = (SELECT rtrim(content, chr(10)) FROM read_text('{out}/CURRENT'))"
    )
    got = con.execute(
        f"SELECT camera, count(*) AS n, avg(visible::INT) AS rate, sum(x3) AS sx "
        f"FROM read_parquet('{out}/snapshots/' || getvariable('snap') || '/keypoints/**/*.parquet', "
        f"hive_partitioning = false) GROUP BY camera ORDER BY camera"
    ).fetchall()
    want = (
        kpcompile.scan(out)
        .group_by("camera")
        .agg(
            pl.len().alias("n"),
            pl.col("visible").cast(pl.Int32).mean().alias("rate"),
            pl.col("x3").sum().alias("sx"),
        )
        .sort("camera")
        .collect()
        .rows()
    )
    assert [r[:3] for r in got] == [r[:3] for r in want]
    assert all(abs(a[3] - b[3]) < 1e-9 for a, b in zip(got, want, strict=True))
