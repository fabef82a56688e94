"""`kpcompile query`: formats, output files, exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli

Q = "SELECT camera, count(*) AS n FROM keypoints GROUP BY camera ORDER BY camera"


def test_query_csv_and_json(compiled_sets: Path) -> None:
    want = kpcompile.sql(compiled_sets, Q)
    r = CliRunner().invoke(cli, ["query", str(compiled_sets), Q, "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert r.output == want.write_csv()
    r = CliRunner().invoke(cli, ["query", str(compiled_sets), Q, "--format", "json"])
    assert json.loads(r.output) == want.to_dicts()
    r = CliRunner().invoke(
        cli, ["query", str(compiled_sets), "SELECT count(*) AS files FROM files"]
    )
    assert r.exit_code == 0 and "files" in r.output and "24" in r.output


def test_query_to_parquet_file(compiled_sets: Path, tmp_path: Path) -> None:
    dest = tmp_path / "r.parquet"
    r = CliRunner().invoke(
        cli, ["query", str(compiled_sets), Q, "--format", "parquet", "-o", str(dest)]
    )
    assert r.exit_code == 0 and r.output == ""
    assert pl.read_parquet(dest).equals(kpcompile.sql(compiled_sets, Q))


def test_query_errors(compiled_sets: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["query", str(compiled_sets), "SELECT nope FROM keypoints"])
    assert r.exit_code == 2 and r.output.startswith("error: ")
    r = CliRunner().invoke(cli, ["query", str(compiled_sets), Q, "--format", "parquet"])
    assert r.exit_code == 2
    assert r.output == "error: the parquet format needs an output file (-o FILE)\n"
    r = CliRunner().invoke(cli, ["query", str(tmp_path / "none"), Q])
    assert r.exit_code == 5 and "holds no snapshot" in r.output


def _query(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["query", *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("suffix", [".csv", ".json", ".ndjson", ".jsonl", ".parquet", ".CSV"])
def test_query_format_from_the_suffix(compiled_sets: Path, tmp_path: Path, suffix: str) -> None:
    dest = tmp_path / f"r{suffix}"
    code, out, err = _query(str(compiled_sets), Q, "-o", str(dest))
    assert (code, out, err) == (0, "", "")
    readers = {
        ".csv": pl.read_csv,
        ".json": lambda p: pl.DataFrame(json.loads(p.read_text())),
        ".ndjson": pl.read_ndjson,
        ".jsonl": pl.read_ndjson,
        ".parquet": pl.read_parquet,
        ".CSV": pl.read_csv,
    }
    got = readers[suffix](dest)
    assert got.to_dicts() == kpcompile.sql(compiled_sets, Q).to_dicts()


def test_query_ndjson_to_stdout(compiled_sets: Path) -> None:
    code, out, _ = _query(str(compiled_sets), Q, "--format", "ndjson")
    assert code == 0
    lines = out.splitlines()
    assert [json.loads(line) for line in lines] == kpcompile.sql(compiled_sets, Q).to_dicts()


def test_query_suffix_that_contradicts_the_format(compiled_sets: Path, tmp_path: Path) -> None:
    dest = tmp_path / "q.json"
    code, out, err = _query(str(compiled_sets), Q, "--format", "csv", "-o", str(dest))
    assert (code, out) == (2, "")
    assert err == (
        f"error: --format csv does not match the file name '{dest}' (.json means json); "
        "drop --format or rename the file\n"
    )
    assert not dest.exists()
    code, _, err = _query(str(compiled_sets), Q, "--format", "table", "-o", str(tmp_path / "q.csv"))
    assert code == 2 and "--format table does not match the file name" in err
    # a suffix that means nothing is the user's to choose
    code, _, _ = _query(str(compiled_sets), Q, "--format", "csv", "-o", str(tmp_path / "q.txt"))
    assert code == 0 and (tmp_path / "q.txt").read_text().startswith("camera,n\n")


@pytest.mark.parametrize("name", ["q.txt", "q"])
def test_query_unknown_suffix_without_format(
    compiled_sets: Path, tmp_path: Path, name: str
) -> None:
    dest = tmp_path / name
    code, out, err = _query(str(compiled_sets), Q, "-o", str(dest))
    assert (code, out) == (2, "")
    what = "suffix '.txt'" if name == "q.txt" else "no suffix"
    assert err == (
        f"error: cannot tell the format of '{dest}' from its name ({what}); give --format, "
        "or use one of the suffixes .csv, .json, .jsonl, .ndjson, .parquet\n"
    )
    assert not dest.exists()


def test_build_sets_flag(small_dataset: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli, ["build", str(small_dataset), str(tmp_path / "o"), "--sets", "-j", "1"]
    )
    assert r.exit_code == 0, r.output
    assert "cameras" in kpcompile.tables(tmp_path / "o")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("DROP TABLE keypoints", "queries are read-only: DROP is not allowed"),
        ("CREATE TABLE t AS SELECT 1", "queries are read-only: CREATE is not allowed"),
        ("  -- a comment\n/* another */ insert into files values (1)", "INSERT is not allowed"),
        ("", "empty query: give one SELECT statement"),
        ("  ;  ", "empty query: give one SELECT statement"),
    ],
)
def test_queries_are_read_only(compiled_sets: Path, query: str, expected: str) -> None:
    """Issue 17.12: a statement that is not a read exits 2 with a clear message."""
    code, out, err = _query(str(compiled_sets), query)
    assert code == 2 and out == "" and expected in err, (code, out, err)
    with pytest.raises(kpcompile.QueryError, match=expected.split(":")[0]):
        kpcompile.sql(compiled_sets, query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1 AS one",
        "WITH t AS (SELECT camera FROM keypoints) SELECT count(*) FROM t",
        "  (SELECT count(*) FROM files)",
        " -- lips\nselect count(*) from errors",
    ],
)
def test_reads_run(compiled_sets: Path, query: str) -> None:
    code, out, err = _query(str(compiled_sets), query)
    assert code == 0 and err == "" and out, err


def test_a_set_table_missing_without_sets_is_explained(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "compiled"
    kpcompile.build(small_dataset, out, workers=1)
    code, _, err = _query(str(out), "SELECT * FROM face_standard")
    assert code == 2
    assert "has no table 'face_standard': it exists only in snapshots built with --sets" in err
    assert "tables: errors, files, keypoints" in err
    ok = "WITH face_standard AS (SELECT 1 AS one) SELECT * FROM face_standard"
    assert _query(str(out), ok)[0] == 0  # a name of its own is not the missing table
