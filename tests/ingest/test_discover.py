"""discover(): which files, which datapoint and camera, in what order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kpcompile import SourceError
from kpcompile.ingest import SourceFile, open_source
from kpcompile.ingest import discover as discover_in


def discover(root: Path) -> list[SourceFile]:
    with open_source(root) as source:
        return discover_in(source)


def test_each_layout_names_datapoint_and_camera(mixed_dataset: Path) -> None:
    found = discover(mixed_dataset)
    assert len(found) == 24  # 12 datapoints x 2 cameras, all_key_points.json not counted
    by_layout: dict[str, SourceFile] = {}
    for f in found:
        by_layout.setdefault(f.path.split("/")[0], f)
    assert (by_layout["faces"].datapoint, by_layout["faces"].camera) == (
        "faces/datapoint_00001",
        "camera_00",
    )
    assert (by_layout["in_cabin"].datapoint, by_layout["in_cabin"].camera) == (
        "in_cabin/scene_00001/frames/001",
        "media_dashboard_camera",
    )
    assert (by_layout["legacy"].datapoint, by_layout["legacy"].camera) == (
        "legacy/environment_00001",
        "camera_00",
    )
    assert all(not f.path.endswith("all_key_points.json") for f in found)
    assert found == sorted(found)


def test_all_key_points_stands_in_for_a_missing_dense_file(small_dataset: Path) -> None:
    dense = small_dataset / "datapoint_00001/camera_00/key_points/face_dense_key_points.json"
    dense.unlink()
    found = discover(small_dataset)
    paths = [f.path for f in found]
    assert "datapoint_00001/camera_00/key_points/all_key_points.json" in paths
    assert len(found) == 8
    assert sum(f.datapoint == "datapoint_00001" and f.camera == "camera_00" for f in found) == 1


def test_second_file_for_one_camera_is_marked_duplicate(small_dataset: Path) -> None:
    cam = small_dataset / "datapoint_00002/camera_01"
    (cam / "dense_keypoints.json").write_bytes(b"{}")
    found = [
        f for f in discover(small_dataset) if f.camera == "camera_01" and "00002" in f.datapoint
    ]
    dups = {f.path.split("/")[-1]: f.duplicate_of for f in found}
    assert dups == {
        "face_dense_key_points.json": None,
        "dense_keypoints.json": "datapoint_00002/camera_01/key_points/face_dense_key_points.json",
    }


def test_order_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    for name in ["b", "a", "c"]:
        p = tmp_path / name / "cam" / "dense_keypoints.json"
        p.parent.mkdir(parents=True)
        p.write_text("{}")
    assert [f.datapoint for f in discover(tmp_path)] == ["a", "b", "c"]


def test_symlink_loop_is_not_followed_forever(small_dataset: Path) -> None:
    os.symlink(small_dataset, small_dataset / "datapoint_00001" / "loop")
    assert len(discover(small_dataset)) == 8


def test_folder_named_like_a_keypoint_file_is_listed(small_dataset: Path) -> None:
    (small_dataset / "datapoint_00009/cam/key_points/face_dense_key_points.json").mkdir(
        parents=True
    )
    found = [f for f in discover(small_dataset) if f.datapoint == "datapoint_00009"]
    assert len(found) == 1 and found[0].size == -1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is not a folder"),
        (lambda p: p, "no keypoint files under"),
    ],
)
def test_unusable_source_raises(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SourceError, match=message):
        discover(make(tmp_path))


def test_unreadable_folder_raises(small_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.scandir
    denied = str(small_dataset / "datapoint_00001")

    def scandir(path: str):  # type: ignore[no-untyped-def]
        if str(path) == denied:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    # the Python walk, whose os.scandir fails as told (as root nothing else is unlistable;
    # test_listing makes a folder the native walk cannot list either)
    monkeypatch.setenv("KPCOMPILE_PURE_PYTHON", "1")
    with pytest.raises(
        SourceError, match="cannot list folder 'datapoint_00001': Permission denied"
    ):
        discover(small_dataset)
