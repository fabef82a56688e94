"""--sets: face_standard, head, ears and cameras tables equal their JSON; bad set files are errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import kpcompile

SET_FILES = {
    "face_standard": "face_standard_key_points.json",
    "head": "head_key_points.json",
    "ears": "ears_key_points.json",
}


def _vis(v: Any) -> bool | None:
    return {"true": True, "false": False, True: True, False: False}.get(v)


def set_rows_from_json(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Independent reader: (part, kp_id, x3, y3, z3, px, py, visible) with json.load."""
    doc = json.loads(path.read_text())
    if "keypoints_3d_coordinates" in doc:  # legacy standard_keypoints.json
        m3, m2, mv = (
            doc["keypoints_3d_coordinates"],
            doc["keypoints_2d_coordinates"],
            doc["is_visible"],
        )
        return [(None, k, *m3[k], *m2[k], mv[k]) for k in m3]
    if table == "face_standard":
        groups = {None: doc["face"]["standard"]}
    else:
        groups = doc["head"] if table == "head" else doc.get("ears", doc.get("ear"))
    out = []
    for part, lms in groups.items():
        for k, v in lms.items():
            g, p = v["global_3d"], v["pixel_2d"]
            out.append((part, k, g["x"], g["y"], g["z"], p["x"], p["y"], _vis(v.get("is_visible"))))
    return out


def _check_tables(source: Path, out: Path) -> dict[str, int]:
    files = kpcompile.read(out, "files")
    checked = dict.fromkeys(SET_FILES, 0)
    for table in SET_FILES:
        got = kpcompile.read(out, table)
        for f in files.iter_rows(named=True):
            folder = (source / f["path"]).parent
            if folder.name == "key_points":
                folder = folder.parent
            candidates = [folder / "key_points" / SET_FILES[table]]
            if table == "face_standard":
                candidates.append(folder / "standard_keypoints.json")
            src = next((c for c in candidates if c.is_file()), None)
            rows = got.filter(
                pl.col("datapoint") == f["datapoint"], pl.col("camera") == f["camera"]
            )
            if src is None:
                assert rows.height == 0
                continue
            want = set_rows_from_json(src, table)
            assert rows.drop("datapoint", "camera").rows() == [
                tuple(float(x) if i in range(2, 7) else x for i, x in enumerate(r)) for r in want
            ], src
            checked[table] += 1
    return checked


def test_set_tables_equal_the_json(mixed_dataset: Path, compiled_sets: Path) -> None:
    checked = _check_tables(mixed_dataset, compiled_sets)
    # faces (3 datapoints x 2 cameras) have all three; in-cabin and legacy a 68-point set
    assert checked == {"face_standard": 20, "head": 6, "ears": 6}  # 20: all but documented
    assert kpcompile.read(compiled_sets, "errors").height == 0
    head = kpcompile.read(compiled_sets, "head")
    assert head.group_by("part").len().sort("part").rows() == [
        ("back", 6 * 21),
        ("left", 6 * 24),
        ("right", 6 * 24),
        ("top", 6 * 12),
    ]


def test_cameras_table_equals_camera_metadata(mixed_dataset: Path, compiled_sets: Path) -> None:
    cams = kpcompile.read(compiled_sets, "cameras")
    metas = sorted(mixed_dataset.rglob("camera_metadata.json"))
    assert cams.height == len(metas) == 16  # faces and in-cabin folders
    for row in cams.iter_rows(named=True):
        meta = json.loads(
            (mixed_dataset / row["datapoint"] / row["camera"] / "camera_metadata.json").read_text()
        )
        assert row["intrinsic"] == [v for r in meta["intrinsic_matrix"] for v in r]
        assert row["extrinsic"] == [v for r in meta["extrinsic_matrix"] for v in r]
        assert (row["width"], row["height"]) == (
            meta["resolution_px"]["x"],
            meta["resolution_px"]["y"],
        )
        assert row["location_x"] == meta["location"]["x"]
        assert row["camera_name"] == meta["camera_name"]


def test_real_samples(samples: Path, tmp_path: Path) -> None:
    r = kpcompile.build(samples, tmp_path / "out", workers=2, sets=True)
    assert r.errors == []
    checked = _check_tables(samples, tmp_path / "out")
    assert checked == {"face_standard": 13, "head": 7, "ears": 7}
    std = kpcompile.read(tmp_path / "out", "face_standard")
    assert std.group_by("datapoint").len()["len"].unique().to_list() == [68]
    # source ids kept as written: "01".."68" (Faces), "1".."68" (in-cabin, legacy)
    faces = std.filter(pl.col("datapoint").str.starts_with("faces_1"))
    assert faces["kp_id"].head(2).to_list() == ["01", "02"]
    assert std.filter(pl.col("datapoint").str.starts_with("legacy"))["kp_id"][0] == "1"
    assert kpcompile.read(tmp_path / "out", "cameras").height == 11


def test_all_key_points_stands_in_for_missing_set_files(
    small_dataset: Path, tmp_path: Path
) -> None:
    for p in small_dataset.rglob("head_key_points.json"):
        p.unlink()
    for p in small_dataset.rglob("face_standard_key_points.json"):
        p.unlink()
    kpcompile.build(small_dataset, tmp_path / "out", workers=1, sets=True)
    head = kpcompile.read(tmp_path / "out", "head")
    std = kpcompile.read(tmp_path / "out", "face_standard")
    assert head.height == 8 * 81 and std.height == 8 * 68
    one = small_dataset / "datapoint_00001" / "camera_00" / "key_points" / "all_key_points.json"
    doc = json.loads(one.read_text())
    got = head.filter(pl.col("datapoint") == "datapoint_00001", pl.col("camera") == "camera_00")
    assert got["x3"].to_list() == [
        v["global_3d"]["x"] for g in doc["head"].values() for v in g.values()
    ]


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("head_key_points.json", b"{", "invalid_json"),
        (
            "ears_key_points.json",
            b'{"version": "2.0.0", "ears": {"left": {"0": {"global_3d": {"x": 1}}}}}',
            "bad_structure",
        ),
        (
            "face_standard_key_points.json",
            b'{"version": "9", "face": {"standard": {}}}',
            "unsupported_version",
        ),
        (
            "head_key_points.json",
            b'{"head": {"top": {"1": {"global_3d": {"x": "a", "y": 0, "z": 0}, "pixel_2d": {"x": 0, "y": 0}}}}}',
            "non_numeric",
        ),
    ],
)
def test_bad_set_file_is_an_error_row(
    small_dataset: Path, tmp_path: Path, name: str, content: bytes, code: str
) -> None:
    bad = small_dataset / "datapoint_00002" / "camera_01" / "key_points" / name
    bad.write_bytes(content)
    rel = str(bad.relative_to(small_dataset))
    with pytest.raises(kpcompile.RejectedFilesError) as info:
        kpcompile.build(small_dataset, tmp_path / "out", workers=1, sets=True)
    assert [(e[0], e[1]) for e in info.value.errors] == [(rel, code)]
    r = kpcompile.build(small_dataset, tmp_path / "out", workers=1, sets=True, max_errors=1)
    assert r.rejected == 0 and r.compiled == 8  # the landmark files are all compiled
    errors = kpcompile.read(tmp_path / "out", "errors")
    assert errors["path"].to_list() == [rel] and errors["code"].to_list() == [code]
    assert errors["message"][0].startswith(rel + ": ")
    m = json.loads((Path(r.path) / "manifest.json").read_text())
    assert m["counts"]["sets_rejected"] == 1 and m["counts"]["rejected"] == 0


def test_bad_camera_metadata(small_dataset: Path, tmp_path: Path) -> None:
    meta = small_dataset / "datapoint_00001" / "camera_00" / "camera_metadata.json"
    doc = json.loads(meta.read_text())
    doc["extrinsic_matrix"] = doc["extrinsic_matrix"][:2]
    meta.write_text(json.dumps(doc))
    r = kpcompile.build(small_dataset, tmp_path / "out", workers=1, sets=True, max_errors=1)
    assert [e[1] for e in r.errors] == ["bad_structure"]
    assert "extrinsic_matrix must be a 3x4" in r.errors[0][2]
    assert kpcompile.read(tmp_path / "out", "cameras").height == 7


def test_sets_are_off_by_default(small_dataset: Path, tmp_path: Path) -> None:
    shutil.copytree(small_dataset, tmp_path / "copy")
    r = kpcompile.build(tmp_path / "copy", tmp_path / "out", workers=1)
    assert kpcompile.tables(tmp_path / "out") == ["errors", "files", "keypoints"]
    assert r.rows == 8 * 468
