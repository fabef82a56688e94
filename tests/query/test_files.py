"""kpcompile.files: a snapshot's Parquet files for other engines, and the tested recipes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pytest

import kpcompile
from kpcompile.store import open_store


def test_files_are_the_manifests(compiled_sets: Path) -> None:
    store = open_store(compiled_sets)
    manifest = store.manifest()
    for table in ("keypoints", "files", "cameras"):
        want = [store.uri(manifest.snapshot, f.path) for f in manifest.table(table).files]
        assert kpcompile.files(compiled_sets, table) == want
    assert kpcompile.files(compiled_sets, snapshot=manifest.snapshot) == kpcompile.files(
        compiled_sets
    )
    assert all(Path(p).is_file() and p.endswith(".parquet") for p in kpcompile.files(compiled_sets))
    with pytest.raises(kpcompile.SnapshotError, match="unknown table 'faces'"):
        kpcompile.files(compiled_sets, "faces")


def test_duckdb_recipe(compiled_sets: Path) -> None:
    files = kpcompile.files(compiled_sets)
    got = duckdb.sql(
        f"SELECT camera, count(*) AS n, sum(x3) AS sx FROM read_parquet({files!r}, "
        "hive_partitioning = false) GROUP BY camera ORDER BY camera"
    ).fetchall()
    want = (
        kpcompile.scan(compiled_sets)
        .group_by("camera")
        .agg(pl.len().alias("n"), pl.col("x3").sum().alias("sx"))
        .sort("camera")
        .collect()
        .rows()
    )
    assert [r[:2] for r in got] == [r[:2] for r in want]
    assert all(abs(a[2] - b[2]) < 1e-9 for a, b in zip(got, want, strict=True))


# Run as its own process: `datasets` reads its settings (offline, cache folder) on import.
_HF_RECIPE = """
import os, sys, datasets, kpcompile
files = kpcompile.files(sys.argv[1])
ds = datasets.load_dataset("parquet", data_files=files, streaming=True, split="train")
rows = 0
for row in ds:
    rows += 1
print(rows, sorted(ds.features), row["datapoint"], row["kp_id"])
"""


def test_hugging_face_recipe_streams_without_a_copy(compiled_sets: Path, tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    cache = tmp_path / "hf-cache"
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(cache),
        "HF_DATASETS_CACHE": str(cache / "datasets"),
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_HF_RECIPE), str(compiled_sets)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows, *rest = done.stdout.split(" ", 1)
    last = kpcompile.read(compiled_sets).tail(1)
    assert int(rows) == kpcompile.info(compiled_sets).rows
    columns = sorted(kpcompile.scan(compiled_sets).collect_schema())
    assert rest[0].strip() == f"{columns} {last['datapoint'][0]} {last['kp_id'][0]}"
    copied = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert copied == []  # streamed from the snapshot's files: nothing written to the cache
