"""Promise 2, I/O faults: a full disk, a failing write, rename or fsync, an unreadable
source file or folder, a symlink loop, a folder (or FIFO) named like a keypoint file:
a clear error, and the previous snapshot stays current and intact.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import kpcompile
from kpcompile import ErrorCode, OutputError, RejectedFilesError, SourceError
from kpcompile.compile import shard as shard_mod
from kpcompile.ingest import folder
from kpcompile.store import local, open_store
from kpcompile.store.verify import verify
from kpcompile.synth import synth

DENSE = "key_points/face_dense_key_points.json"


@pytest.fixture
def prior(small_dataset: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    out = tmp_path / "out"
    return small_dataset, out, kpcompile.build(small_dataset, out, workers=1).snapshot_id


def _intact(out: Path, sid: str) -> None:
    """The previous snapshot is current and sound, and nothing else is visible."""
    assert open_store(out).current_id() == sid
    assert open_store(out).list_snapshots() == [sid]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [sid]
    assert verify(out, check_source=False).ok
    assert list((out / ".staging").iterdir()) == []
    assert kpcompile.scan(out).collect().height == 8 * 468


def _enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _failing_when(real: Callable[..., Any], test: Callable[..., bool], err: int) -> Any:
    def f(*args: Any, **kwargs: Any) -> Any:
        if test(*args):
            raise OSError(err, os.strerror(err), str(args[0]))
        return real(*args, **kwargs)

    return f


FAULTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "parquet write, disk full": lambda m: m.setattr(pq.ParquetWriter, "write_table", _enospc),
    "manifest write, disk full": lambda m: m.setattr(local, "_write_staged", _enospc),
    "fsync fails": lambda m: m.setattr(
        os, "fsync", _failing_when(os.fsync, lambda *a: True, errno.EIO)
    ),
    "rename of the snapshot folder fails": lambda m: m.setattr(
        os, "rename", _failing_when(os.rename, lambda *a: True, errno.EXDEV)
    ),
    "replace of a part file fails": lambda m: m.setattr(
        os,
        "replace",
        _failing_when(os.replace, lambda src, *a: str(src).endswith(".tmp"), errno.EACCES),
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_write_faults_keep_the_previous_snapshot(
    prior: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    source, out, sid = prior
    with monkeypatch.context() as m:
        FAULTS[fault](m)
        with pytest.raises(
            OutputError, match=r"cannot write the snapshot in .*; nothing was published"
        ):
            kpcompile.build(source, out, workers=1, full=True)
    _intact(out, sid)
    kpcompile.build(source, out, workers=1, full=True)  # and a rerun succeeds


def test_replacing_current_fails(
    prior: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out, sid = prior
    real = os.replace
    monkeypatch.setattr(
        os, "replace", _failing_when(real, lambda s, d: Path(d).name == "CURRENT", errno.EIO)
    )
    with pytest.raises(OutputError, match="Input/output error"):
        kpcompile.build(source, out, workers=1, full=True)
    assert open_store(out).current_id() == sid
    # the complete new snapshot was renamed into place but never became current:
    # it is listed (and sound) but readers following CURRENT never see it
    assert len(open_store(out).list_snapshots()) == 2
    assert all(verify(out, snapshot=s).ok for s in open_store(out).list_snapshots())
    monkeypatch.setattr(os, "replace", real)
    kpcompile.build(source, out, workers=1, full=True)
    assert not list(out.glob(".CURRENT.*"))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 400 KiB tmpfs (needs mount privileges; skipped otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + res.stderr.decode().strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_really_full_disk(
    tiny_disk: Path, small_dataset: Path, tmp_path: Path, workers: int
) -> None:
    big = tmp_path / "big"
    synth(big, datapoints=40, cameras=2, layout="faces", seed=1, extras=False)
    sid = kpcompile.build(small_dataset, tiny_disk, workers=1).snapshot_id
    with pytest.raises(OutputError, match="No space left on device"):
        kpcompile.build(big, tiny_disk, workers=workers, shard_files=10)
    _intact(tiny_disk, sid)


def test_unreadable_source_files_are_rejected_by_name(
    prior: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out, sid = prior
    denied = f"datapoint_00001/camera_00/{DENSE}"
    broken = f"datapoint_00002/camera_01/{DENSE}"
    real = folder.read_local

    def read_local(full: str, rel: str, max_bytes: int) -> bytes:
        if rel == denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        if rel == broken:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(full, rel, max_bytes)

    monkeypatch.setattr(folder, "read_local", read_local)
    # nothing in the page cache: every read goes through read_local (in a thread)
    monkeypatch.setattr(folder.FolderSource, "read_cached", lambda *a: None)
    with pytest.raises(RejectedFilesError) as info:
        kpcompile.build(source, out, workers=1, full=True)  # full: no reuse of the prior snapshot
    assert info.value.errors == [
        (denied, "unreadable", "cannot read: Permission denied"),
        (broken, "unreadable", "cannot read: Input/output error"),
    ]
    _intact(out, sid)
    r = kpcompile.build(source, out, workers=1, max_errors=2, full=True)
    assert (r.compiled, r.rejected, r.rows) == (6, 2, 6 * 468)


def test_a_file_deleted_after_discovery(
    prior: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out, _ = prior
    victim = f"datapoint_00003/camera_00/{DENSE}"
    real = shard_mod.compile_shard

    def compile_shard(task: shard_mod.ShardTask) -> shard_mod.ShardResult:
        (source / victim).unlink(missing_ok=True)
        return real(task)

    monkeypatch.setattr("kpcompile.compile.executor.compile_shard", compile_shard)
    r = kpcompile.build(source, out, workers=1, max_errors=1, full=True)
    assert r.errors == [(victim, "unreadable", "cannot read: No such file or directory")]


def test_an_unreadable_folder_fails_the_build_by_name(
    prior: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out, sid = prior
    real = os.scandir
    bad = str(source / "datapoint_00002")

    def scandir(path: Any = ".") -> Any:
        if str(path) == bad:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), bad)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    # the Python walk, whose os.scandir fails as told (as root nothing else is unlistable;
    # test_listing makes a folder the native walk cannot list either)
    monkeypatch.setenv("KPCOMPILE_PURE_PYTHON", "1")
    with pytest.raises(
        SourceError, match="cannot list folder 'datapoint_00002': Permission denied"
    ):
        kpcompile.build(source, out, workers=1)
    _intact(out, sid)


def test_symlink_loops_folders_and_fifos_named_like_keypoint_files(
    prior: tuple[Path, Path, str],
) -> None:
    source, out, sid = prior
    (source / "datapoint_00001" / "loop").symlink_to(source)
    (source / "datapoint_00002" / "self").symlink_to("self")
    folder = source / "datapoint_00009" / "camera_00" / "key_points" / "face_dense_key_points.json"
    folder.mkdir(parents=True)
    fifo = source / "datapoint_00010" / "camera_00" / "key_points" / "face_dense_key_points.json"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(kpcompile.build(source, out, workers=1))
        except Exception as exc:
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the build hangs"
    exc = result[0]
    assert isinstance(exc, RejectedFilesError)
    assert [(p, c) for p, c, _ in exc.errors] == [
        (folder.relative_to(source).as_posix(), ErrorCode.UNREADABLE),
        (fifo.relative_to(source).as_posix(), ErrorCode.UNREADABLE),
    ]
    assert exc.errors[0][2].endswith("cannot read: is a folder, not a file")
    assert exc.errors[1][2].endswith("cannot read: not a regular file but a FIFO")
    _intact(out, sid)
    r = kpcompile.build(source, out, workers=1, max_errors=2)
    assert (r.discovered, r.compiled, r.rejected) == (10, 8, 2)  # nothing counted twice


def test_a_file_nested_2000_levels_deep_is_rejected_not_a_crash(
    small_dataset: Path, tmp_path: Path
) -> None:
    deep = small_dataset / f"datapoint_00002/camera_00/{DENSE}"
    deep.write_text('{"version": "2.0.0", "face": ' + '{"a": ' * 2000 + "1" + "}" * 2000 + "}")
    with pytest.raises(RejectedFilesError) as info:
        kpcompile.build(small_dataset, tmp_path / "out", workers=2)
    rel = f"datapoint_00002/camera_00/{DENSE}"
    assert [(e.path, e.code) for e in info.value.errors] == [(rel, "too_deep")]
    r = kpcompile.build(small_dataset, tmp_path / "out", workers=2, max_errors=1)
    assert (r.compiled, r.rejected) == (7, 1)


def test_any_failure_on_one_file_is_that_files_rejection(
    prior: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while reading or parsing one file (a bug) becomes an
    ``internal_error`` row naming the exception; every other file is still checked, and
    by default nothing is published."""
    source, out, sid = prior
    victim = f"datapoint_00003/camera_01/{DENSE}"
    real = shard_mod.parse

    def parse(data: bytes, path: str) -> Any:
        if path == victim:
            raise ZeroDivisionError("division by zero")
        return real(data, path)

    monkeypatch.setattr(shard_mod, "parse", parse)
    with pytest.raises(RejectedFilesError) as info:
        kpcompile.build(source, out, workers=1, full=True)
    assert info.value.errors == [
        (
            victim,
            "internal_error",
            "internal error while compiling this file: ZeroDivisionError: "
            "division by zero; please report it with the file",
        )
    ]
    _intact(out, sid)
    r = kpcompile.build(source, out, workers=1, full=True, max_errors=1)
    assert (r.compiled, r.rejected) == (7, 1)
    errors = kpcompile.read(out, "errors")
    assert errors["code"].to_list() == ["internal_error"]


@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_a_name_that_is_not_utf8_is_rejected_by_name(tmp_path: Path, kind: str) -> None:
    """A folder named with bytes that are not UTF-8 (possible on Linux and in tar
    archives): its files are rejected as unsafe_path, named with \\x escapes, and
    every other file is compiled; no traceback."""
    root = tmp_path / "ds"
    synth(root, datapoints=3, cameras=1, layout="faces", seed=1, extras=False)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    os.rename(os.fsencode(first), os.fsencode(root) + b"/dp_\xff\xfe")
    source = root
    if kind == "tar":
        source = tmp_path / "ds.tar"
        with tarfile.open(source, "w") as tf:
            tf.add(root, arcname="ds")
    out = tmp_path / "out"
    result = kpcompile.build(source, out, max_errors=10, progress=False)
    assert result.compiled == 2
    errors = kpcompile.read(out, "errors")
    assert set(errors["code"]) == {"unsafe_path"}
    for path, message in zip(errors["path"], errors["message"], strict=True):
        assert "dp_\\xff\\xfe/" in path and "not valid UTF-8" in message
    files = kpcompile.read(out, "files")
    assert files.height == 3 and errors.height == 1
    assert (files["status"] == "ok").sum() == 2
    info = kpcompile.info(out)  # issue 17.6: the rejected folder is not counted
    assert (info.datapoints, info.cameras) == (2, 1)
    report = verify(out)  # against the recorded source: the escaped names match it
    assert report.ok and report.source_files_checked == 3, report.problems
    assert kpcompile.build(source, out, max_errors=10, progress=False).up_to_date


def _failing_read(monkeypatch: pytest.MonkeyPatch, failing: str) -> dict[str, bool]:
    """Reading ``failing`` fails with EIO while the returned switch's "on" is True."""
    real = folder.read_local
    broken = {"on": True}

    def read_local(full: str, rel: str, max_bytes: int) -> bytes:
        if broken["on"] and rel == failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(full, rel, max_bytes)

    monkeypatch.setattr(folder, "read_local", read_local)
    monkeypatch.setattr(folder.FolderSource, "read_cached", lambda *a: None)
    return broken


def test_a_read_failure_that_passes_is_retried_not_kept(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17.1: a file rejected as unreadable (a stalled or failed read: nothing in its
    name, size or mtime changes) is read again by the next build. While it still fails,
    the snapshot is up to date; once it reads, the build compiles it, and the shard that
    held the rejection is never reused with it. verify says it reads now."""
    out = tmp_path / "out"
    failing = f"datapoint_00002/camera_01/{DENSE}"
    broken = _failing_read(monkeypatch, failing)
    first = kpcompile.build(small_dataset, out, workers=1, max_errors=1, shard_files=2)
    assert first.rejected == 1 and first.errors[0][:2] == (failing, "unreadable")
    again = kpcompile.build(small_dataset, out, workers=1, max_errors=1, shard_files=2)
    assert again.up_to_date and again.snapshot_id == first.snapshot_id  # still failing
    broken["on"] = False
    report = verify(out)
    assert [p for p in report.problems if failing in p] == [
        f"source: {failing}: rejected as unreadable by the build, reads now: "
        "build again to include it"
    ]
    fixed = kpcompile.build(small_dataset, out, workers=1, max_errors=1, shard_files=2)
    assert not fixed.up_to_date and (fixed.rejected, fixed.compiled) == (0, 8)
    assert kpcompile.read(out, "errors").height == 0
    assert verify(out).ok
    kpcompile.build(small_dataset, tmp_path / "full", workers=1, shard_files=2)
    for table in ("keypoints", "files"):
        assert kpcompile.read(out, table).equals(kpcompile.read(tmp_path / "full", table))


def test_a_shard_holding_a_passing_read_failure_is_recompiled_not_reused(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shard reused when another file is added elsewhere: not the one with the rejection."""
    out = tmp_path / "out"
    failing = f"datapoint_00001/camera_00/{DENSE}"
    broken = _failing_read(monkeypatch, failing)
    kpcompile.build(small_dataset, out, workers=1, max_errors=1, shard_files=2)
    broken["on"] = False
    extra = small_dataset / "datapoint_09999" / "camera_00" / "key_points"
    extra.mkdir(parents=True)
    (extra / "face_dense_key_points.json").write_bytes((small_dataset / failing).read_bytes())
    grown = kpcompile.build(small_dataset, out, workers=1, max_errors=1, shard_files=2)
    assert (grown.rejected, grown.compiled) == (0, 9)
    assert kpcompile.read(out, "errors").height == 0
