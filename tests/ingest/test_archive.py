"""Archives: a build from .tar.gz/.tar/.zip equals a build from the extracted folder."""

from __future__ import annotations

import calendar
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile import SourceError
from kpcompile.ingest import discover, open_source
from kpcompile.ingest.archive import MemorySource, SpoolSource
from tests.helpers import manifest_dict


def tables(r: kpcompile.BuildResult) -> dict[str, Any]:
    """What must be identical: every table's files with their SHA-256, and the shard plan."""
    m = manifest_dict(Path(r.path).parent.parent, r.snapshot_id)
    return {"tables": m["tables"], "shards": m["shards"], "counts": m["counts"]}


def make_tar(src: Path, dest: Path, mode: str, *, reverse: bool = False) -> None:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if reverse:  # archive order unrelated to sorted order
        files.reverse()
    with tarfile.open(dest, mode) as tf:
        for p in files:
            tf.add(p, arcname=str(p.relative_to(src.parent)))


@pytest.mark.parametrize(
    ("suffix", "mode", "reverse"),
    [(".tar.gz", "w:gz", False), (".tgz", "w:gz", True), (".tar", "w", True)],
)
def test_tar_build_equals_extracted_folder_build(
    mixed_dataset: Path, tmp_path: Path, suffix: str, mode: str, reverse: bool
) -> None:
    archive = tmp_path / f"dataset{suffix}"
    make_tar(mixed_dataset, archive, mode, reverse=reverse)
    folder = tmp_path / "extracted"
    with tarfile.open(archive) as tf:
        tf.extractall(folder, filter="data")
    a = kpcompile.build(folder, tmp_path / "a", workers=2, shard_files=5)
    b = kpcompile.build(archive, tmp_path / "b", workers=2, shard_files=5)
    assert b.compiled == 24 and b.rejected == 0
    assert tables(a) == tables(b)
    assert kpcompile.read(tmp_path / "b").equals(kpcompile.read(tmp_path / "a"))
    manifest = json.loads((Path(b.path) / "manifest.json").read_text())
    assert manifest["source"]["path"] == str(archive)
    assert kpcompile.read(tmp_path / "b", "files")["path"][0].startswith("dataset/")


def test_zip_build_equals_extracted_folder_build(mixed_dataset: Path, tmp_path: Path) -> None:
    archive = tmp_path / "dataset.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(mixed_dataset.rglob("*")):
            zf.write(p, str(p.relative_to(mixed_dataset.parent)))
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
        for info in zf.infolist():
            # zip stores 2-second local times; kpcompile reads them as UTC, so give the
            # extracted files the same times (zipfile.extractall does not set them)
            t = float(calendar.timegm((*info.date_time, 0, 0, 0)))
            os.utime(folder / info.filename, (t, t))
    a = kpcompile.build(folder, tmp_path / "a", workers=2, shard_files=5)
    b = kpcompile.build(archive, tmp_path / "b", workers=2, shard_files=5)
    assert b.compiled == 24
    assert tables(a) == tables(b)


def test_rejected_members_get_the_same_codes_as_files(small_dataset: Path, tmp_path: Path) -> None:
    bad = small_dataset / "datapoint_00002/camera_00/key_points/face_dense_key_points.json"
    bad.write_text('{"version": "2.0.0", "face": {"dense": {"0": {}}}}')
    big = small_dataset / "datapoint_00003/camera_01/key_points/face_dense_key_points.json"
    archive = tmp_path / "dataset.tar.gz"
    make_tar(small_dataset, archive, "w:gz")
    limit = big.stat().st_size - 1
    folder = tmp_path / "extracted"
    with tarfile.open(archive) as tf:
        tf.extractall(folder, filter="data")
    a = kpcompile.build(folder, tmp_path / "a", workers=1, max_errors=5, max_file_bytes=limit)
    b = kpcompile.build(archive, tmp_path / "b", workers=1, max_errors=5, max_file_bytes=limit)
    assert {e[1] for e in b.errors} >= {"landmark_count", "too_large"}
    assert a.errors == b.errors
    assert tables(a) == tables(b)


def test_links_inside_an_archive_are_rejected_not_followed(
    tmp_path: Path, small_dataset: Path
) -> None:
    archive = tmp_path / "links.tar"
    make_tar(small_dataset, archive, "w")
    with tarfile.open(archive, "a") as tf:
        link = tarfile.TarInfo("dataset/datapoint_00009/camera_00/dense_keypoints.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../datapoint_00001/camera_00/key_points/face_dense_key_points.json"
        tf.addfile(link)
    r = kpcompile.build(archive, tmp_path / "out", workers=1, max_errors=1)
    assert r.compiled == 8
    assert [(e[0], e[1]) for e in r.errors] == [
        ("dataset/datapoint_00009/camera_00/dense_keypoints.json", "unreadable")
    ]
    assert "links are not followed" in r.errors[0][2]


def test_truncated_or_corrupt_archives_fail_naming_the_archive(
    small_dataset: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "dataset.tar.gz"
    make_tar(small_dataset, archive, "w:gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(SourceError, match=r"cannot read archive '.*cut\.tar\.gz'"):
        kpcompile.build(cut, tmp_path / "out")
    notzip = tmp_path / "bad.zip"
    notzip.write_bytes(b"not a zip archive")
    with pytest.raises(SourceError, match=r"cannot read archive '.*bad\.zip'"):
        kpcompile.build(notzip, tmp_path / "out")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(SourceError, match=r"is not a folder or an archive \(\.tar, \.tar\.gz"):
        kpcompile.build(other, tmp_path / "out")
    assert not (tmp_path / "out" / "CURRENT").exists()


def test_tar_is_read_once_and_only_keypoint_members_are_kept(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in [
            ("d/dp1/cam/image.png", b"x" * 100_000),
            ("d/dp1/cam/key_points/face_dense_key_points.json", b"{}"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    archive = tmp_path / "d.tar"
    archive.write_bytes(buf.getvalue())
    with open_source(archive, max_file_bytes=1 << 20) as src:
        files = [f.path for f in discover(src)]
        assert files == ["d/dp1/cam/key_points/face_dense_key_points.json"]
        assert src.spooled_bytes == 2  # type: ignore[attr-defined]
        remote = src.portable(files, local=False)  # bytes travel (Dask)
        assert isinstance(remote, MemorySource) and remote.read(files[0], 10) == b"{}"
        spool = src.portable(files, local=True)  # local workers read the spool by offset
        assert isinstance(spool, SpoolSource) and spool.read(files[0], 10) == b"{}"


UNSAFE = [
    "../../x/dp2/camera/key_points/face_dense_key_points.json",
    "/abs/dp3/camera/key_points/face_dense_key_points.json",
    "ok/dp4/../../camera=x/key_points/face_dense_key_points.json",
    "ok//dp5/camera/key_points/face_dense_key_points.json",
    "ok/./dp6/camera/key_points/face_dense_key_points.json",
]


def _member_archive(small_dataset: Path, tmp_path: Path, suffix: str) -> Path:
    data = (
        small_dataset / "datapoint_00001/camera_00/key_points/face_dense_key_points.json"
    ).read_bytes()
    names = ["ok/dp1/camera/key_points/face_dense_key_points.json", *UNSAFE]
    path = tmp_path / f"unsafe{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for n in names:
                zf.writestr(n, data)
    else:
        with tarfile.open(path, "w") as tf:
            for n in names:
                info = tarfile.TarInfo(n)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("suffix", [".tar", ".zip"])
def test_members_with_unsafe_names_are_rejected(
    small_dataset: Path, tmp_path: Path, suffix: str
) -> None:
    """A member named ../../x/dp2/... once became datapoint '../../x/dp2': code joining a
    dataset root with a datapoint then left the dataset."""
    archive = _member_archive(small_dataset, tmp_path, suffix)
    with pytest.raises(kpcompile.RejectedFilesError) as info:
        kpcompile.build(archive, tmp_path / "out", workers=1)
    assert sorted((e.path, e.code) for e in info.value.errors) == sorted(
        (n, "unsafe_path") for n in UNSAFE
    )
    messages = {e.path: e.message for e in info.value.errors}
    assert messages[UNSAFE[0]].endswith(
        "unsafe name: a '..' component would leave the dataset; rejected as Python's "
        "tarfile 'data' filter does"
    )
    assert "absolute" in messages[UNSAFE[1]] and "empty component" in messages[UNSAFE[3]]
    r = kpcompile.build(archive, tmp_path / "out", workers=1, max_errors=len(UNSAFE))
    assert r.compiled == 1
    assert kpcompile.read(tmp_path / "out")["datapoint"].unique().to_list() == ["ok/dp1"]
