"""The native and the parallel listing find exactly what a serial walk finds, and keep
it in columnar form."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from kpcompile import SourceError
from kpcompile.ingest import folder as folder_mod
from kpcompile.ingest import url as url_mod
from kpcompile.ingest.base import Entry
from kpcompile.ingest.discover import LANDMARK_NAMES
from kpcompile.ingest.folder import FolderSource, native, walk_native, walk_parallel
from kpcompile.ingest.listing import Listing, decode, encode
from kpcompile.ingest.url import UrlSource
from kpcompile.synth import synth

DENSE = "key_points/face_dense_key_points.json"
ODD_NAMES = ["with space", "new\nline", "ünïcödé", "back\\slash", "-dash", "x" * 200]


def _tree(root: Path) -> Path:
    """A dataset with the cases a walk can get wrong (no link to a folder besides a loop)."""
    synth(root, datapoints=5, cameras=2, layout="mixed", seed=4)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    (first / "loop_up").symlink_to("..")
    for i, name in enumerate(ODD_NAMES):
        (root / name / "cam").mkdir(parents=True)
        (root / name / "cam" / "dense_keypoints.json").write_text(str(i))
    (root / "empty" / "deeper" / "still_empty").mkdir(parents=True)
    (root / f"folder_named_like_a_file/cam/{DENSE}").mkdir(parents=True)
    (root / "fifo/cam").mkdir(parents=True)
    os.mkfifo(root / "fifo/cam/dense_keypoints.json")
    (root / "broken/cam").mkdir(parents=True)
    (root / "broken/cam/dense_keypoints.json").symlink_to(root / "nowhere")
    (root / "linked_file/cam").mkdir(parents=True)
    (root / "linked_file/cam/dense_keypoints.json").symlink_to(root / "0/cam/dense_keypoints.json")
    (root / "0/cam").mkdir(parents=True)
    (root / "0/cam/dense_keypoints.json").write_text("{}")
    (root / "loop").symlink_to(".")
    undecodable = os.fsencode(str(root)) + b"/bad\xff\xfename/cam"
    os.makedirs(undecodable)
    with open(undecodable + b"/dense_keypoints.json", "wb") as fh:
        fh.write(b"{}")
    deep = root / "/".join(f"d{i}" for i in range(30)) / "cam"
    deep.mkdir(parents=True)
    (deep / "dense_keypoints.json").write_text("{}")
    return root


def _sorted(entries: Any) -> list[Entry]:
    return sorted(entries, key=lambda e: e.path)


needs_native = pytest.mark.skipif(native() is None, reason="the C walk is not built")


@pytest.fixture(params=["native", "python"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each walk: the C one (where built) and the Python one (KPCOMPILE_PURE_PYTHON)."""
    if request.param == "native":
        if native() is None:
            pytest.skip("the C walk is not built")
        return walk_native
    monkeypatch.setenv("KPCOMPILE_PURE_PYTHON", "1")
    return walk_parallel


@pytest.mark.parametrize("threads", [1, 2, 16])
def test_parallel_listing_equals_the_serial_walk(tmp_path: Path, threads: int, walk: Any) -> None:
    root = _tree(tmp_path / "dataset")
    src = FolderSource(root)
    serial = _sorted(src.list_serial(LANDMARK_NAMES))
    # the walk itself, not the fallback: this tree needs no serial walk
    parallel = _sorted(walk(str(root), LANDMARK_NAMES, threads).entries())
    assert parallel == serial
    assert _sorted(src.listing(LANDMARK_NAMES, threads).entries()) == serial
    paths = {e.path for e in serial}
    assert "bad\udcff\udcfename/cam/dense_keypoints.json" in paths
    assert f"folder_named_like_a_file/cam/{DENSE}" in paths
    assert not any("loop" in p for p in paths)
    by_path = {e.path: e for e in serial}
    assert by_path["fifo/cam/dense_keypoints.json"].size == -1
    assert by_path["broken/cam/dense_keypoints.json"] == Entry(
        "broken/cam/dense_keypoints.json", -1, 0
    )
    assert by_path["linked_file/cam/dense_keypoints.json"].size == 2


def test_parallel_listing_ignores_the_order_folders_come_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "dataset")
    src = FolderSource(root)
    expected = _sorted(src.list_serial(LANDMARK_NAMES))
    real = os.scandir
    rng = random.Random(5)

    class Shuffled:
        def __init__(self, path: Any) -> None:
            with real(path) as it:
                self.entries = list(it)
            rng.shuffle(self.entries)

        def __enter__(self) -> list[os.DirEntry[str]]:
            return self.entries

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(os, "scandir", Shuffled)
    for threads in (1, 3, 16):
        assert _sorted(walk_parallel(str(root), LANDMARK_NAMES, threads).entries()) == expected


def test_a_folder_reached_by_two_paths_is_named_as_the_serial_walk_names_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "dataset"
    synth(root, datapoints=3, cameras=1, layout="faces", seed=1)
    (root / "zz_alias").symlink_to(root / "datapoint_00001")
    (root / "aa_alias").symlink_to(root / "datapoint_00002")
    src = FolderSource(root)
    with pytest.raises(folder_mod._Serial):
        walk_parallel(str(root), LANDMARK_NAMES, 4)
    if native() is not None:
        for threads in (1, 4):
            with pytest.raises(folder_mod._Serial):
                walk_native(str(root), LANDMARK_NAMES, threads)
    serial = _sorted(src.list_serial(LANDMARK_NAMES))
    assert _sorted(src.listing(LANDMARK_NAMES).entries()) == serial
    # the serial walk pops the last name first: zz_alias names datapoint_00001, and
    # datapoint_00002 is listed before aa_alias reaches it
    tops = sorted({e.path.split("/")[0] for e in serial})
    assert tops == ["datapoint_00002", "datapoint_00003", "zz_alias"]


def test_unreadable_folder_deep_down_raises_as_serially(
    small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPCOMPILE_PURE_PYTHON", "1")  # os.scandir fails where told
    real = os.scandir
    denied = {str(small_dataset / "datapoint_00003" / "camera_01"), str(small_dataset / "x")}
    (small_dataset / "x").mkdir()

    def scandir(path: Any) -> Any:
        if str(path) in denied:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match="cannot list folder 'x': Permission denied"):
        FolderSource(small_dataset).listing(LANDMARK_NAMES, threads=8)


def _too_deep(base: Path, levels: int) -> str:
    """Folders nested past PATH_MAX (made relative to each other): listing them fails for
    every user, root included. Returns the relative path of the first one that fails."""
    fd = os.open(base, os.O_RDONLY)
    rel = [base.name]
    try:
        for _ in range(levels):
            name = "n" * 250
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
            rel.append(name)
    finally:
        os.close(fd)
    return "/".join(rel)


@needs_native
@pytest.mark.parametrize("threads", [1, 8])
def test_native_walk_reports_an_unlistable_folder_as_serially(
    small_dataset: Path, threads: int
) -> None:
    deep = small_dataset / "datapoint_00002" / "deep"
    deep.mkdir()
    _too_deep(deep, 20)
    src = FolderSource(small_dataset)
    with pytest.raises(SourceError, match="File name too long") as serial:
        list(src.list_serial(LANDMARK_NAMES))
    with pytest.raises(folder_mod._Serial):
        walk_native(str(small_dataset), LANDMARK_NAMES, threads)
    with pytest.raises(SourceError) as native_error:
        src.listing(LANDMARK_NAMES, threads=threads)
    assert str(native_error.value) == str(serial.value)


def test_listing_keeps_undecodable_names_and_python_order() -> None:
    names = ["b", "a/\udcff", "a/\udc80x", "a/z", "é", "\U0001f600", "a", "a/\ud7ff", "a/\ue000"]
    listing = Listing.of(Entry(n, i, -i) for i, n in enumerate(names))
    assert [e.path for e in listing.entries()] == names
    assert [decode(encode(n)) for n in names] == names
    assert sorted(encode(n) for n in names) == [encode(n) for n in sorted(names)]
    assert listing.sizes.tolist() == list(range(len(names)))
    assert [e.mtime_ns for e in listing.entries(2, 4)] == [-2, -3]


@pytest.mark.parametrize("client", ["pyarrow", "fsspec"])
def test_object_store_listing_is_concurrent_and_equals_one_recursive_listing(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    """Per first-level folder, by pyarrow's S3 client (the default) or s3fs: the same
    entries, sizes and modification times as one recursive listing by s3fs."""
    root = tmp_path / "dataset"
    synth(root, datapoints=6, cameras=2, layout="mixed", seed=2)
    (root / "cam_at_top").mkdir()
    (root / "cam_at_top" / "dense_keypoints.json").write_text("{}")
    (root / "dense_keypoints.json").write_text("{}")
    (root / "faces" / "empty_key_points").mkdir()
    (root / "faces" / "empty_key_points" / "dense_keypoints.json").write_text("")
    s3.put(str(root), f"bucket/listing-{client}/dataset", recursive=True)
    src = UrlSource(f"s3://bucket/listing-{client}/dataset")
    serial = _sorted(src.list_serial(LANDMARK_NAMES))
    assert len(serial) > 12 and "dense_keypoints.json" in {e.path for e in serial}
    assert all(e.mtime_ns > 0 for e in serial) and 0 in {e.size for e in serial}
    if client == "fsspec":
        monkeypatch.setenv("KPCOMPILE_S3_LISTING", "fsspec")
    maker = "_arrow_find" if client == "pyarrow" else "_fsspec_find"
    real = getattr(url_mod, maker)
    calls: list[str] = []

    def counting(*args: Any) -> Any:
        find = real(*args)
        assert find is not None, f"{maker} gave no listing"

        def listed(folder: str) -> Any:
            calls.append(folder)
            return find(folder)

        return listed

    monkeypatch.setattr(url_mod, maker, counting)
    assert _sorted(src.list(LANDMARK_NAMES)) == serial
    folders = [m for m in s3.ls(f"bucket/listing-{client}/dataset", detail=True)]
    folders = [m for m in folders if m["type"] == "directory"]
    assert sorted(calls) == sorted(m["name"] for m in folders) and len(calls) > 3
    calls.clear()
    monkeypatch.setattr(url_mod, "MAX_SPLIT", 2)
    assert _sorted(src.list(LANDMARK_NAMES)) == serial
    assert calls == [f"bucket/listing-{client}/dataset"]
