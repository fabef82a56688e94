"""Snapshots: atomic publish, CURRENT, staging leftovers, the lock, readers' view."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kpcompile
from kpcompile import OutputError, SnapshotError
from kpcompile.store import open_store
from kpcompile.store.local import LocalStore


def test_each_build_is_a_new_immutable_snapshot(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1)
    before = {p: p.read_bytes() for p in Path(a.path).rglob("*") if p.is_file()}
    b = kpcompile.build(small_dataset, out, workers=1, full=True)
    assert a.snapshot_id != b.snapshot_id
    assert open_store(out).list_snapshots() == sorted([a.snapshot_id, b.snapshot_id])
    assert (out / "CURRENT").read_text() == b.snapshot_id + "\n"
    assert {p: p.read_bytes() for p in Path(a.path).rglob("*") if p.is_file()} == before
    assert kpcompile.scan(out, snapshot=a.snapshot_id).collect().height == 8 * 468


def test_failed_build_leaves_current_and_no_staging(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalStore, "publish", boom)
    with pytest.raises(OutputError, match="No space left on device; nothing was published"):
        kpcompile.build(small_dataset, out, workers=1, full=True)
    assert open_store(out).current_id() == a.snapshot_id
    assert open_store(out).list_snapshots() == [a.snapshot_id]
    assert list((out / ".staging").iterdir()) == []


def test_staging_leftovers_are_cleaned_by_the_next_build(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / ".staging" / "20200101T000000Z-dead").mkdir(parents=True)
    (out / ".staging" / "20200101T000000Z-dead" / "junk.parquet").write_bytes(b"x")
    r = kpcompile.build(small_dataset, out, workers=1)
    assert list((out / ".staging").iterdir()) == []
    assert open_store(out).list_snapshots() == [r.snapshot_id]


def test_a_second_build_on_the_same_output_is_refused(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open_store(out).lock(), pytest.raises(OutputError, match="another build is writing"):
        kpcompile.build(small_dataset, out, workers=1)


def test_readers_use_the_manifest_not_a_glob(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = kpcompile.build(small_dataset, out, workers=1)
    # a stray file in the snapshot folder is not part of the snapshot
    stray = Path(r.path) / "keypoints" / "camera=camera_00" / "zzz.parquet"
    stray.write_bytes(b"not parquet")
    assert kpcompile.scan(out).collect().height == 8 * 468
    os.remove(stray)


def test_unknown_snapshot_and_table(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = kpcompile.build(small_dataset, out, workers=1)
    with pytest.raises(
        SnapshotError, match=f"no snapshot 'nope' in .*; available: {r.snapshot_id}"
    ):
        kpcompile.scan(out, snapshot="nope")
    with pytest.raises(SnapshotError, match="unknown table 'points'"):
        kpcompile.scan(out, "points")


def test_partition_folder_names_are_escaped() -> None:
    from kpcompile.schema import partition_dir

    assert partition_dir("camera", "cam 1/left") == "camera=cam%201%2Fleft"
    assert partition_dir("camera", "..") == "camera=%2E%2E"
    assert partition_dir("camera", "media_dashboard_camera") == "camera=media_dashboard_camera"
