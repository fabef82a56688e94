"""Incremental builds: reuse what did not change, and equal a full rebuild byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from kpcompile.ingest import SourceFile
from kpcompile.synth import synth
from tests.helpers import manifest_dict
from tests.oracles import chunk

FILE = "key_points/face_dense_key_points.json"


def tables(r: kpcompile.BuildResult) -> dict[str, Any]:
    m = manifest_dict(Path(r.path).parent.parent, r.snapshot_id)
    return {"tables": m["tables"], "shards": m["shards"], "counts": m["counts"]}


@pytest.fixture
def grown(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset (40 datapoints x 2 cameras) and a bigger one to copy new datapoints from."""
    ds = tmp_path / "dataset"
    synth(ds, datapoints=40, cameras=2, layout="faces", seed=5, extras=False)
    more = tmp_path / "more"
    synth(more, datapoints=44, cameras=2, layout="faces", seed=6, extras=False)
    return ds, more


def grow(ds: Path, more: Path) -> None:
    """Add 4 datapoints, change one file, touch one (same bytes), delete one camera folder."""
    for i in range(41, 45):
        shutil.copytree(more / f"datapoint_{i:05d}", ds / f"datapoint_{i:05d}")
    shutil.copyfile(
        more / "datapoint_00007/camera_01" / FILE, ds / "datapoint_00007/camera_01" / FILE
    )
    touched = ds / "datapoint_00020/camera_00" / FILE
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    shutil.rmtree(ds / "datapoint_00030/camera_01")


def test_incremental_build_equals_a_full_rebuild(grown: tuple[Path, Path], tmp_path: Path) -> None:
    ds, more = grown
    out = tmp_path / "out"
    first = kpcompile.build(ds, out, workers=2, shard_files=8)
    assert first.base is None and first.parsed == 80
    grow(ds, more)
    inc = kpcompile.build(ds, out, workers=2, shard_files=8)
    full = kpcompile.build(ds, tmp_path / "full", workers=2, shard_files=8)
    assert inc.base == first.snapshot_id
    assert tables(inc) == tables(full)  # same Parquet bytes (SHA-256), same shards, same counts
    assert kpcompile.read(out).equals(kpcompile.read(tmp_path / "full"))
    # only the 8 new files and the changed one were parsed; the touched one was read, not parsed
    assert inc.parsed == 9
    # five edited places (two camera tails, changed, touched, deleted): the rest is linked
    assert inc.reused_shards >= 1 and inc.shards - inc.reused_shards <= 6
    assert inc.discovered == 87 and inc.parsed + inc.reused_files == 87


def test_unchanged_source_reuses_every_shard_and_full_parses_all(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1, shard_files=2)
    assert kpcompile.build(small_dataset, out, workers=1, shard_files=2).up_to_date
    # another error budget: the same files and bytes, but a new snapshot to publish
    b = kpcompile.build(small_dataset, out, workers=1, shard_files=2, max_errors=1)
    assert (b.base, b.parsed, b.reused_shards) == (a.snapshot_id, 0, b.shards)
    c = kpcompile.build(small_dataset, out, workers=1, shard_files=2, full=True)
    assert (c.base, c.parsed, c.reused_shards) == (None, 8, 0)
    assert tables(a) == tables(b) == tables(c)
    d = kpcompile.build(small_dataset, out, workers=1, shard_files=2, compression="snappy")
    assert (d.base, d.parsed) == (None, 8)  # other options: nothing to reuse


def test_removing_an_old_snapshot_never_breaks_a_newer_one(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1)
    b = kpcompile.build(small_dataset, out, workers=1, max_errors=1)
    assert b.reused_shards == b.shards
    shutil.rmtree(a.path)
    assert kpcompile.read(out).height == 8 * 468
    m = manifest_dict(out, b.snapshot_id)
    for t in m["tables"].values():
        for f in t["files"]:
            assert (
                hashlib.sha256((Path(b.path) / f["path"]).read_bytes()).hexdigest() == f["sha256"]
            )


def test_chunk_boundaries_are_local_to_an_insertion() -> None:
    files = [SourceFile(f"dp{i:05d}", "cam", f"dp{i:05d}/cam/x.json") for i in range(0, 4000, 2)]
    before = chunk(files, 64)
    sizes = [len(s) for s in before]
    assert sum(sizes) == 2000 and max(sizes) <= 128 and 20 <= len(before) <= 60
    for at in ("dp01001", "dp03999", "dp00001"):  # middle, end, start
        inserted = sorted([*files, SourceFile(at, "cam", f"{at}/cam/x.json")])
        after = chunk(inserted, 64)
        same = {tuple(s) for s in before} & {tuple(s) for s in after}
        assert len(same) >= len(before) - 2  # only the shard around the insertion differs


def test_snapshots_and_diff(grown: tuple[Path, Path], tmp_path: Path) -> None:
    ds, more = grown
    out = tmp_path / "out"
    a = kpcompile.build(ds, out, workers=1, shard_files=16)
    grow(ds, more)
    b = kpcompile.build(ds, out, workers=1, shard_files=16)
    # ids sort by build time to the second: two builds within a second sort randomly
    rows = {r.snapshot: (r.files, r.current) for r in kpcompile.snapshots(out)}
    assert rows == {a.snapshot_id: (80, False), b.snapshot_id: (87, True)}
    d = kpcompile.diff(out, a.snapshot_id, b.snapshot_id)
    assert d.added == [
        (f"datapoint_{i:05d}", f"camera_0{c}") for i in range(41, 45) for c in (0, 1)
    ]
    assert d.removed == [("datapoint_00030", "camera_01")]
    assert d.changed == [("datapoint_00007", "camera_01")]  # touched file: same checksum
    assert d.unchanged == 78
    runner = CliRunner()
    res = runner.invoke(cli, ["snapshots", str(out)])
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["snapshot", "created", "files", "rejected", "rows"]
    assert any(x.startswith(f"  {a.snapshot_id} ") for x in lines) and any(
        x.startswith(f"* {b.snapshot_id} ") for x in lines
    )
    res = runner.invoke(cli, ["diff", str(out), a.snapshot_id, b.snapshot_id])
    assert res.exit_code == 0
    assert "+ datapoint_00041 camera_00" in res.stdout
    assert "- datapoint_00030 camera_01" in res.stdout
    assert "~ datapoint_00007 camera_01" in res.stdout
    assert res.stdout.splitlines()[-1].startswith("8 added, 1 removed, 1 changed, 78 unchanged")
    res = runner.invoke(cli, ["diff", str(out), a.snapshot_id, "nope"])
    assert res.exit_code == 5 and "no snapshot 'nope'" in res.stderr


def test_cli_build_reports_reuse_and_full(small_dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["build", str(small_dataset), str(tmp_path / "out"), "-j", "1"]
    assert runner.invoke(cli, args).exit_code == 0
    res = runner.invoke(cli, [*args, "--max-errors", "1"])
    assert res.exit_code == 0 and "shards reused, 0 files parsed, 8 reused" in res.stdout
    res = runner.invoke(cli, [*args, "--full", "--json"])
    data = json.loads(res.stdout)
    assert (data["base"], data["parsed"]) == (None, 8)


def test_new_commands_have_help_with_an_example() -> None:
    for command in ("snapshots", "diff"):
        res = CliRunner().invoke(cli, [command, "-h"])
        assert res.exit_code == 0 and "Example:" in res.stdout
    res = CliRunner().invoke(cli, ["build", "-h"])
    assert "--executor [local|dask]" in res.stdout and "--full" in res.stdout


def test_snapshots_of_an_empty_output_is_an_output_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["snapshots", str(tmp_path / "nothing")])
    assert res.exit_code == 5 and "holds no snapshot" in res.stderr


def test_incremental_reads_the_previous_records_a_prefix_at_a_time(
    grown: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous snapshot's shard records come through one reader, a few units
    (top-level prefixes, two per listing here) at a time, each once; the coordinator
    holds a window of them, never all; the snapshot equals a full rebuild's."""
    from kpcompile.compile import incremental
    from kpcompile.compile.plan import position

    ds, more = grown
    out = tmp_path / "out"
    first = kpcompile.build(ds, out, workers=1, shard_files=4)
    grow(ds, more)
    reads: list[tuple[str | None, str, list[str]]] = []
    held: list[int] = []
    real = incremental.previous_records
    advance = incremental.Previous.advance

    def spy(manifest: Any, partition_by: str) -> incremental.RecordReader:
        read = real(manifest, partition_by)

        def reading(after: str | None, upto: str) -> list[Any]:
            got = read(after, upto)
            reads.append((after, upto, [position(r.first, partition_by)[1] for r in got]))
            return got

        return reading

    def counting(self: incremental.Previous, unit: str) -> None:
        advance(self, unit)
        held.append(sum(len(w) for w in self.window.values()))

    monkeypatch.setattr(incremental, "previous_records", spy)
    monkeypatch.setattr("kpcompile.ingest.units.MAX_BATCH_PREFIXES", 2)
    monkeypatch.setattr(incremental.Previous, "advance", counting)
    inc = kpcompile.build(ds, out, workers=1, shard_files=4)
    full = kpcompile.build(ds, tmp_path / "full", workers=1, shard_files=4)
    assert tables(inc) == tables(full)
    assert inc.base == first.snapshot_id and inc.reused_shards > 0
    # every record read once, each in the range of units asked for
    units = [u for _, _, got in reads for u in got]
    assert len(units) == first.shards
    for after, upto, got in reads:
        assert all((after is None or u > after) and u <= upto for u in got)
    assert len(reads) > 20
    assert max(held) < first.shards / 4, f"records held after each listing: {held}"
