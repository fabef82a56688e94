"""`kpcompile query`: formats, output files, exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
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


def test_build_sets_flag(small_dataset: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli, ["build", str(small_dataset), str(tmp_path / "o"), "--sets", "-j", "1"]
    )
    assert r.exit_code == 0, r.output
    assert "cameras" in kpcompile.tables(tmp_path / "o")
