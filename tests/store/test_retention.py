"""gc(): keeps the newest N and always the current snapshot; explicit; atomic per snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile import OptionsError, OutputError
from kpcompile.cli import cli
from kpcompile.store import open_store
from kpcompile.store.retention import gc


@pytest.fixture
def four(small_dataset: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    out = tmp_path / "out"
    ids = [kpcompile.build(small_dataset, out, workers=1, full=True).snapshot_id for _ in range(4)]
    # ids sort in build order, even for builds within one second
    assert open_store(out).list_snapshots() == ids
    return out, ids


def test_builds_never_remove_snapshots(four: tuple[Path, list[str]]) -> None:
    out, _ = four
    assert len(open_store(out).list_snapshots()) == 4


def test_keep_the_newest(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    r = gc(out, keep=2)
    assert (r.removed, r.kept, r.current) == (ids[:2], ids[2:], ids[3])
    assert r.bytes_freed > 0
    assert open_store(out).list_snapshots() == ids[2:]
    assert list((out / ".staging").iterdir()) == []
    assert kpcompile.scan(out).collect().height == 8 * 468


def test_the_current_snapshot_is_never_removed(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    (out / "CURRENT").write_text(ids[0] + "\n")  # rolled back to the oldest
    r = gc(out, keep=1)
    assert r.kept == [ids[0], ids[3]] and r.removed == ids[1:3]
    assert gc(out, keep=0).removed == [ids[3]]
    assert open_store(out).list_snapshots() == [ids[0]]
    assert kpcompile.scan(out).collect().height == 8 * 468


def test_dry_run_removes_nothing(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    assert gc(out, keep=1, dry_run=True).removed == ids[:3]
    assert open_store(out).list_snapshots() == ids


def test_refusals(four: tuple[Path, list[str]], tmp_path: Path) -> None:
    out, _ = four
    with pytest.raises(OptionsError, match="keep must be 0 or more"):
        gc(out, keep=-1)
    with open_store(out).lock(), pytest.raises(OutputError, match="another build is writing"):
        gc(out, keep=1)
    with pytest.raises(OutputError, match="holds no snapshot"):
        gc(tmp_path / "nothing", keep=1)
    assert not (tmp_path / "nothing").exists()


def test_cli(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    runner = CliRunner()
    res = runner.invoke(cli, ["gc", str(out), "--keep", "3", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"would remove {ids[0]}\nwould remove 1 snapshot (")
    res = runner.invoke(cli, ["gc", str(out), "--keep", "3"])
    assert res.exit_code == 0 and f"kept 3, current {ids[3]}" in res.output
    assert open_store(out).list_snapshots() == ids[1:]
    assert runner.invoke(cli, ["gc", str(out)]).exit_code == 2  # --keep is required


@pytest.mark.parametrize("keep", [4, 5, 100])
def test_keeping_as_many_as_there_are_or_more_removes_nothing(
    four: tuple[Path, list[str]], keep: int
) -> None:
    """gc --keep 5 over 4 snapshots once removed the oldest (a negative slice start)."""
    out, ids = four
    r = gc(out, keep=keep)
    assert (r.removed, r.kept, r.bytes_freed) == ([], ids, 0)
    assert open_store(out).list_snapshots() == ids


def test_bytes_freed_counts_only_files_whose_last_link_goes(
    small_dataset: Path, tmp_path: Path
) -> None:
    """An unchanged shard is hard-linked into the next snapshot: removing the older
    snapshot frees none of its bytes, and gc must not say it does."""
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1, shard_files=2)
    changed = small_dataset / "datapoint_00001/camera_00/key_points/face_dense_key_points.json"
    changed.write_bytes(changed.read_bytes() + b"\n")
    b = kpcompile.build(small_dataset, out, workers=1, shard_files=2)
    assert b.base == a.snapshot_id and b.reused_shards > 0
    old = Path(a.path)
    files = [p for p in old.rglob("*") if p.is_file()]
    alone = sum(p.stat().st_size for p in files if p.stat().st_nlink == 1)
    shared = sum(p.stat().st_size for p in files if p.stat().st_nlink > 1)
    assert alone > 0 and shared > 0
    assert gc(out, keep=1, dry_run=True).bytes_freed == alone
    before = _disk_usage(out)
    r = gc(out, keep=1)
    assert r.removed == [a.snapshot_id] and r.bytes_freed == alone
    assert before - _disk_usage(out) == alone


def _disk_usage(root: Path) -> int:
    """Bytes of distinct files under ``root`` (hard links counted once), as du does."""
    seen: dict[tuple[int, int], int] = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def test_a_file_shared_by_two_removed_snapshots_is_freed_once(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ids = []
    for i in range(3):
        changed = (
            small_dataset / f"datapoint_0000{i + 1}/camera_00/key_points/face_dense_key_points.json"
        )
        changed.write_bytes(changed.read_bytes() + b"\n")
        ids.append(kpcompile.build(small_dataset, out, workers=1, shard_files=2).snapshot_id)
    before = _disk_usage(out)
    dry = gc(out, keep=1, dry_run=True)
    r = gc(out, keep=1)
    assert r.removed == ids[:2] and dry.bytes_freed == r.bytes_freed
    assert before - _disk_usage(out) == r.bytes_freed > 0


def test_staging_left_by_a_killed_build_is_removed_and_reported(
    four: tuple[Path, list[str]],
) -> None:
    """Holding the lock, no build is writing: every staging folder is a leftover,
    whatever its age (object storage waits for --stale-after: test_objstore_races.py)."""
    out, ids = four
    dead = out / ".staging" / "20200101T000000Z-0000dead"
    (dead / "files").mkdir(parents=True)
    (dead / "files" / "part-00000.parquet").write_bytes(b"x")
    assert gc(out, keep=4, dry_run=True).abandoned == [dead.name] and dead.exists()
    r = gc(out, keep=4)
    assert (r.removed, r.abandoned) == ([], [dead.name])
    assert list((out / ".staging").iterdir()) == []
    assert open_store(out).list_snapshots() == ids
    res = CliRunner().invoke(cli, ["gc", str(out), "--keep", "4"])
    assert res.exit_code == 0 and "abandoned" not in res.output
