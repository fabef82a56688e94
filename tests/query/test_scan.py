"""sql(), tables(), write_result(): SQL over every table, checked against DuckDB and plain Python."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

import kpcompile
from kpcompile.query.results import write_result
from tests.conftest import landmarks_from_json

QUERY = (
    "SELECT f.layout, k.camera, count(*) AS n, avg(CAST(k.visible AS INT)) AS rate, "
    "sum(k.z3) AS sz FROM keypoints k JOIN files f ON k.datapoint = f.datapoint "
    "AND k.camera = f.camera WHERE k.kp_id < 100 GROUP BY f.layout, k.camera "
    "ORDER BY f.layout, k.camera"
)


def test_tables_of_a_sets_snapshot(compiled_sets: Path) -> None:
    assert kpcompile.tables(compiled_sets) == [
        "cameras",
        "ears",
        "errors",
        "face_standard",
        "files",
        "head",
        "keypoints",
    ]


def test_sql_equals_duckdb_readme_recipe(compiled_sets: Path) -> None:
    got = kpcompile.sql(compiled_sets, QUERY).rows()
    con = duckdb.connect()
    con.execute(
        f"SET VARIABLE snap = (SELECT rtrim(content, chr(10)) FROM read_text('{compiled_sets}/CURRENT'))"
    )
    base = f"'{compiled_sets}/snapshots/' || getvariable('snap') || "
    for table in ("keypoints", "files"):
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet({base}'/{table}/**/*.parquet', "
            "hive_partitioning = false)"
        )
    want = con.execute(QUERY).fetchall()
    assert [r[:4] for r in got] == [r[:4] for r in want]
    assert all(abs(a[4] - b[4]) < 1e-9 for a, b in zip(got, want, strict=True))
    assert len(got) == 8  # 4 layouts x 2 cameras


def test_sql_equals_plain_python_over_the_json(mixed_dataset: Path, compiled_sets: Path) -> None:
    got = kpcompile.sql(
        compiled_sets,
        "SELECT datapoint, camera, sum(x3) AS sx, max(py) AS mpy FROM keypoints "
        "WHERE kp_id IN (1, 33, 263) GROUP BY datapoint, camera ORDER BY datapoint, camera",
    )
    files = kpcompile.read(compiled_sets, "files").sort("datapoint", "camera")
    assert got.height == files.height == 24
    for row, f in zip(got.iter_rows(named=True), files.iter_rows(named=True), strict=True):
        ref = [r for r in landmarks_from_json(mixed_dataset / f["path"]) if r[0] in (1, 33, 263)]
        assert (row["datapoint"], row["camera"]) == (f["datapoint"], f["camera"])
        assert row["sx"] == pytest.approx(sum(r[1] for r in ref), abs=1e-12)
        assert row["mpy"] == max(r[5] for r in ref)


def test_sql_lazy_and_named_snapshot(compiled_sets: Path) -> None:
    sid = kpcompile.info(compiled_sets).snapshot
    lf = kpcompile.sql(compiled_sets, "SELECT count(*) AS n FROM head", eager=False, snapshot=sid)
    assert isinstance(lf, pl.LazyFrame)
    assert lf.collect().item() == kpcompile.read(compiled_sets, "head").height > 0


def test_bad_sql_is_a_query_error(compiled_sets: Path) -> None:
    with pytest.raises(kpcompile.QueryError, match=r"invalid query|query failed"):
        kpcompile.sql(compiled_sets, "SELECT nope FROM keypoints")
    with pytest.raises(kpcompile.QueryError):
        kpcompile.sql(compiled_sets, "SELEC 1")


def test_set_table_missing_without_sets(mixed_dataset: Path, tmp_path: Path) -> None:
    kpcompile.build(mixed_dataset, tmp_path / "out", workers=1)
    with pytest.raises(kpcompile.SnapshotError, match="unknown table 'head'"):
        kpcompile.scan(tmp_path / "out", "head")
    with pytest.raises(kpcompile.QueryError):
        kpcompile.sql(tmp_path / "out", "SELECT * FROM head")


@pytest.mark.parametrize("fmt", ["csv", "json", "table", "parquet"])
def test_write_result_formats(compiled_sets: Path, tmp_path: Path, fmt: str) -> None:
    q = "SELECT camera, count(*) AS n FROM keypoints GROUP BY camera ORDER BY camera"
    want = kpcompile.sql(compiled_sets, q)
    dest = tmp_path / f"result.{fmt}"
    assert write_result(compiled_sets, q, fmt=fmt, output=dest) is None
    if fmt == "csv":
        assert pl.read_csv(dest).equals(want.with_columns(pl.col("n").cast(pl.Int64)))
    elif fmt == "json":
        assert json.loads(dest.read_text()) == want.to_dicts()
    elif fmt == "parquet":
        assert pl.read_parquet(dest).equals(want)
    else:
        text = dest.read_text()
        assert "camera_00" in text and str(want["n"][0]) in text


def test_parquet_needs_output(compiled_sets: Path) -> None:
    with pytest.raises(kpcompile.QueryError, match="needs an output file"):
        write_result(compiled_sets, "SELECT 1 AS x", io.BytesIO(), fmt="parquet")


def test_sql_camera_stays_a_string(compiled_sets: Path) -> None:
    # sql() may group keypoints by camera codes internally; users see strings, and the
    # columns in the order scan() gives them
    grouped = kpcompile.sql(
        compiled_sets, "SELECT camera, count(*) AS n FROM keypoints GROUP BY camera ORDER BY camera"
    )
    assert grouped.schema["camera"] == pl.String
    assert grouped["camera"].to_list() == sorted(set(grouped["camera"]))
    every = kpcompile.sql(compiled_sets, "SELECT * FROM keypoints LIMIT 3")
    assert every.schema == kpcompile.scan(compiled_sets).collect_schema()
    lazy = kpcompile.sql(compiled_sets, "SELECT camera FROM keypoints", eager=False)
    assert lazy.collect_schema()["camera"] == pl.String
    assert (
        lazy.collect()
        .sort("camera")
        .equals(kpcompile.sql(compiled_sets, "SELECT camera FROM keypoints").sort("camera"))
    )


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count(*) AS n FROM keypoints WHERE camera LIKE 'cam%'",
        "SELECT upper(camera) AS u, count(*) AS n FROM keypoints GROUP BY u ORDER BY u",
        "SELECT count(*) AS n FROM keypoints WHERE camera = 'no such camera'",
        "SELECT min(camera) AS lo, max(camera) AS hi FROM keypoints",
        "SELECT count(*) AS n FROM keypoints WHERE camera > 'b'",
    ],
)
def test_sql_string_operations_on_camera_equal_duckdb(compiled_sets: Path, query: str) -> None:
    con = duckdb.connect()
    files = kpcompile.files(compiled_sets)
    con.execute(
        f"CREATE VIEW keypoints AS SELECT * FROM read_parquet({files!r}, hive_partitioning = false)"
    )
    assert kpcompile.sql(compiled_sets, query).rows() == con.execute(query).fetchall()
