"""BuildOptions is the single source: CLI options, recorded options and reuse keys derive from it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from kpcompile.options import COMPRESSION_LEVELS, BuildOptions, option_fields, reuse_keys
from kpcompile.store import open_store
from kpcompile.synth import synth

# A non-default value for every option, to find out whether it changes the output.
# An option without a probe fails test_every_option_has_a_probe: whoever adds an
# option must say here how to try it (or where its effect is tested instead).
PROBES: dict[str, dict[str, Any] | str] = {
    "workers": {"workers": 2},
    "max_errors": {"max_errors": 5},
    "partition_by": {"partition_by": "none"},
    "compression": {"compression": "snappy"},
    "compression_level": {"compression_level": 9},
    "shard_files": {"shard_files": 3},
    "row_group_files": {"row_group_files": 2},
    "max_file_bytes": {"max_file_bytes": "largest - 1"},
    "sets": {"sets": True},
    "progress": {"progress": True},
    "full": {"full": True},
    "executor": "tests/compile/test_dask.py: a Dask build writes the same bytes as a local one",
    "scheduler": "tests/compile/test_dask.py: only used with executor='dask'",
    "read_ahead": {"read_ahead": 0},
    "read_timeout": {"read_timeout": 5},
    "plan_only": "tests/ingest/test_virtual.py: a plan-only build publishes nothing",
}
BASE: dict[str, Any] = {"workers": 1, "max_errors": 1, "progress": False}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("options") / "dataset"
    synth(root, datapoints=4, cameras=2, layout="faces", seed=11)
    # one file larger than the others, so a max_file_bytes between them rejects it
    big = sorted(root.rglob("face_dense_key_points.json"))[0]
    big.write_bytes(big.read_bytes() + b" " * 4096)
    return root


def _tables(out: Path) -> Any:
    return open_store(out).manifest().tables


def test_every_option_has_a_probe() -> None:
    assert set(PROBES) == {f.name for f in fields(BuildOptions)}


def test_an_option_that_changes_the_output_is_a_reuse_key(dataset: Path, tmp_path: Path) -> None:
    """Build with each option changed; if the Parquet bytes differ, the option must be a reuse key.

    A reuse key that is missing lets an incremental build reuse shards written with
    another value, breaking "an incremental build equals a full build, byte for byte".
    """
    largest = max(p.stat().st_size for p in dataset.rglob("face_dense_key_points.json"))
    kpcompile.build(dataset, tmp_path / "base", **BASE)
    base = _tables(tmp_path / "base")
    changes: dict[str, bool] = {}
    for name, probe in PROBES.items():
        if isinstance(probe, str):
            continue
        values = {k: (largest - 1 if v == "largest - 1" else v) for k, v in probe.items()}
        out = tmp_path / name
        kpcompile.build(dataset, out, **{**BASE, **values})
        changes[name] = _tables(out) != base
    assert {n for n, changed in changes.items() if changed} == set(reuse_keys())


def test_reuse_keys_are_the_output_options() -> None:
    assert set(reuse_keys()) == {
        "partition_by",
        "compression",
        "compression_level",
        "shard_files",
        "row_group_files",
        "max_file_bytes",
        "sets",
    }


def test_incremental_build_with_another_row_group_size_does_not_reuse(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    kpcompile.build(dataset, out, **BASE)
    r = kpcompile.build(dataset, out, **{**BASE, "row_group_files": 2})
    assert r.base is None and r.reused_files == 0
    kpcompile.build(dataset, tmp_path / "full", **{**BASE, "row_group_files": 2})
    assert _tables(out) == _tables(tmp_path / "full")


def test_every_option_is_on_the_command_line() -> None:
    command = cli.commands["build"]
    names = {p.name for p in command.params}
    assert {f.name for f in option_fields()} <= names
    flags = {o for p in command.params for o in getattr(p, "opts", [])}
    assert {"--compression-level", "--max-file-bytes", "--row-group-files"} <= flags


def test_recorded_options_are_every_output_and_policy_option(dataset: Path, tmp_path: Path) -> None:
    kpcompile.build(dataset, tmp_path / "out", **BASE)
    recorded = open_store(tmp_path / "out").manifest().options
    want = {f.name for f in option_fields("output")} | {f.name for f in option_fields("policy")}
    assert set(recorded) == want


@pytest.mark.parametrize("codec", sorted(c for c, b in COMPRESSION_LEVELS.items() if b))
def test_codec_levels_match_pyarrow_and_write(codec: str, tmp_path: Path) -> None:
    low, high = COMPRESSION_LEVELS[codec] or (0, 0)
    assert (low, high) == (
        pa.Codec.minimum_compression_level(codec),
        pa.Codec.maximum_compression_level(codec),
    )
    table = pa.table({"x": [1.0, 2.0]})
    for level in (low, high):
        BuildOptions(compression=codec, compression_level=level)
        pq.write_table(table, tmp_path / "t.parquet", compression=codec, compression_level=level)
    for bad in (low - 1, high + 1):
        with pytest.raises(kpcompile.OptionsError, match=f"compression_level for {codec} must be"):
            BuildOptions(compression=codec, compression_level=bad)


@pytest.mark.parametrize("codec", ["snappy", "none"])
def test_codecs_without_levels_refuse_one(codec: str) -> None:
    if codec != "none":
        assert not pa.Codec.supports_compression_level(codec)
    with pytest.raises(kpcompile.OptionsError, match=f"compression '{codec}' takes no"):
        BuildOptions(compression=codec, compression_level=5)


def test_a_bad_level_on_the_command_line_is_a_usage_error(dataset: Path, tmp_path: Path) -> None:
    args = ["build", str(dataset), str(tmp_path / "out"), "--compression", "snappy"]
    res = CliRunner().invoke(cli, [*args, "--compression-level", "5"])
    assert res.exit_code == 2
    assert res.stderr == (
        "error: compression 'snappy' takes no compression_level; leave it unset\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": 0}, "workers must be at least 1, got 0"),
        ({"max_errors": -1}, "max_errors must be at least 0, got -1"),
        ({"partition_by": "day"}, "partition_by must be one of camera, none; got 'day'"),
        ({"shard_files": "8"}, "shard_files must be an integer, got '8'"),
        ({"compression_level": 1.5}, "compression_level must be an integer, got 1.5"),
        ({"executor": "ray"}, "executor must be one of local, dask; got 'ray'"),
    ],
)
def test_invalid_values_are_named(values: dict[str, Any], message: str) -> None:
    with pytest.raises(kpcompile.OptionsError) as info:
        BuildOptions(**values)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)
