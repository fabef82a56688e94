"""Query results in bounded memory: a bounded table, streamed CSV/JSON/NDJSON/Parquet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli

ALL = "SELECT datapoint, camera, kp_id, px FROM keypoints ORDER BY datapoint, camera, kp_id"
ROWS = 24 * 468


def _query(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["query", *args])
    if r.exit_code == 1:
        raise r.exception  # type: ignore[misc]
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def collected(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Heights of every frame the query stage collects (to prove it never holds them all)."""
    heights: list[int] = []
    collect = pl.LazyFrame.collect

    def spy(self: pl.LazyFrame, *args: Any, **kwargs: Any) -> Any:
        df = collect(self, *args, **kwargs)
        heights.append(df.height)
        return df

    monkeypatch.setattr(pl.LazyFrame, "collect", spy)
    return heights


def test_table_shows_a_bounded_number_of_rows(compiled_sets: Path, collected: list[int]) -> None:
    code, out, err = _query(str(compiled_sets), ALL)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-1] == (
        f"showing the first 50 of {ROWS:,} rows; --limit N shows more, -o FILE writes every row"
    )
    assert sum("documented/datapoint_00001" in line for line in lines) == 50
    assert not out.startswith("shape:")
    assert max(collected) <= 51  # the first rows and a count, never the whole result


def test_limit_changes_the_table(compiled_sets: Path) -> None:
    code, out, _ = _query(str(compiled_sets), ALL, "--limit", "3")
    assert code == 0
    want = kpcompile.sql(compiled_sets, ALL).head(3)
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        table = str(want)
    assert (
        out
        == f"{table}\nshowing the first 3 of {ROWS:,} rows; --limit N shows more, -o FILE writes every row\n"
    )
    # a result that fits is shown whole, with its shape
    code, out, _ = _query(str(compiled_sets), "SELECT count(*) AS n FROM files")
    assert code == 0 and out.startswith("shape: (1, 1)") and "showing" not in out
    code, out, _ = _query(str(compiled_sets), ALL, "--limit", str(ROWS))
    assert code == 0 and out.startswith(f"shape: ({ROWS:_}, 4)") and "showing" not in out
    code, _, err = _query(str(compiled_sets), ALL, "--limit", "0")
    assert code == 2 and "Invalid value for '--limit'" in err


def test_limit_bounds_other_formats_only_when_given(compiled_sets: Path) -> None:
    code, out, _ = _query(str(compiled_sets), ALL, "--format", "csv")
    assert code == 0 and len(out.splitlines()) == ROWS + 1
    code, out, _ = _query(str(compiled_sets), ALL, "--format", "csv", "--limit", "10")
    assert code == 0 and out == kpcompile.sql(compiled_sets, ALL).head(10).write_csv()


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
def test_stdout_streams_every_row(compiled_sets: Path, fmt: str, collected: list[int]) -> None:
    code, out, _ = _query(str(compiled_sets), ALL, "--format", fmt)
    assert code == 0 and max(collected, default=0) <= 51
    want = kpcompile.sql(compiled_sets, ALL)
    if fmt == "csv":
        assert out == want.write_csv()
    elif fmt == "json":
        assert out.startswith("[\n{") and out.endswith("}\n]\n")
        assert json.loads(out) == want.to_dicts()
    else:
        assert [json.loads(line) for line in out.splitlines()] == want.to_dicts()


@pytest.mark.parametrize("suffix", [".csv", ".json", ".ndjson", ".parquet", ".txt"])
def test_files_are_streamed(
    compiled_sets: Path, tmp_path: Path, suffix: str, collected: list[int]
) -> None:
    dest = tmp_path / f"r{suffix}"
    fmt = ["--format", "table"] if suffix == ".txt" else []
    code, out, err = _query(str(compiled_sets), ALL, "-o", str(dest), *fmt)
    assert (code, out, err) == (0, "", "")
    assert max(collected, default=0) <= 51
    want = kpcompile.sql(compiled_sets, ALL)
    if suffix == ".csv":
        assert pl.read_csv(dest).equals(want.with_columns(pl.col("kp_id").cast(pl.Int64)))
    elif suffix == ".json":
        assert json.loads(dest.read_text()) == want.to_dicts()
    elif suffix == ".ndjson":
        assert pl.read_ndjson(dest).to_dicts() == want.to_dicts()
    elif suffix == ".parquet":
        assert pl.read_parquet(dest).equals(want)
    else:
        assert dest.read_text().endswith(
            f"showing the first 50 of {ROWS:,} rows; --limit N shows more, -o FILE writes every row\n"
        )


def test_empty_results(compiled_sets: Path, tmp_path: Path) -> None:
    empty = "SELECT kp_id FROM keypoints WHERE kp_id < 0"
    assert _query(str(compiled_sets), empty, "--format", "json")[1] == "[]\n"
    assert _query(str(compiled_sets), empty, "--format", "ndjson")[1] == ""
    assert _query(str(compiled_sets), empty, "--format", "csv")[1] == "kp_id\n"
    _query(str(compiled_sets), empty, "-o", str(tmp_path / "e.json"))
    assert json.loads((tmp_path / "e.json").read_text()) == []


def test_errors_while_streaming_are_query_errors(compiled_sets: Path, tmp_path: Path) -> None:
    bad = "SELECT CAST(datapoint AS INT) AS x FROM keypoints"
    for args in (["--format", "csv"], ["-o", str(tmp_path / "x.csv")], []):
        code, _, err = _query(str(compiled_sets), bad, *args)
        assert code == 2 and err.startswith("error: query failed: "), (args, err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_reader_that_stops_early_is_not_an_error(compiled_sets: Path, fmt: str) -> None:
    kp = Path(sys.executable).with_name("kpcompile")
    with subprocess.Popen(
        [kp, "query", str(compiled_sets), "SELECT * FROM keypoints", "--format", fmt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()  # like `| head -1`
        err = proc.stderr.read()
    assert (proc.returncode, err) == (0, b"")
