"""--sets: face_standard, head, ears and cameras tables equal their JSON; bad set files are errors."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import kpcompile
from kpcompile.synth import synth

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
    assert errors["message"][0] and rel not in errors["message"][0]  # path: its own column
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


# --- sets through the shard pipeline (issue 11, item 4) --------------------------------

SET_TABLES = ("face_standard", "head", "ears", "cameras")


def _parquet_bytes(snapshot: Path) -> dict[str, bytes]:
    return {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*.parquet")}


def _set_tables(out: Path) -> dict[str, pl.DataFrame]:
    return {t: kpcompile.read(out, t) for t in SET_TABLES}


@pytest.mark.parametrize("partition_by", ["camera", "none"])
def test_sets_in_parallel_equal_one_worker_byte_for_byte(
    mixed_dataset: Path, tmp_path: Path, partition_by: str
) -> None:
    opts: dict[str, Any] = {"sets": True, "shard_files": 5, "partition_by": partition_by}
    one = kpcompile.build(mixed_dataset, tmp_path / "one", workers=1, **opts)
    two = kpcompile.build(mixed_dataset, tmp_path / "two", workers=2, **opts)
    a, b = _parquet_bytes(Path(one.path)), _parquet_bytes(Path(two.path))
    assert a == b
    # the set tables are written by the shards: one part per shard, not one file at the end
    assert one.shards > 1
    assert sum(k.startswith("head/") for k in a) == one.shards


def test_sets_rows_are_the_same_as_one_file_per_table(
    mixed_dataset: Path, compiled_sets: Path, tmp_path: Path
) -> None:
    """Sharding the set tables changes files, not data: every table holds the rows the
    set files hold (checked against json.load above) and, in datapoint order, the same
    rows in the same order as the partition-free build."""
    out = tmp_path / "none"
    kpcompile.build(mixed_dataset, out, workers=2, sets=True, shard_files=5, partition_by="none")
    for table, got in _set_tables(compiled_sets).items():
        ordered = _set_tables(out)[table]
        keys = ["datapoint", "camera"] + (["part"] if "part" in got.columns else [])
        assert got.sort(keys, maintain_order=True).equals(ordered.sort(keys, maintain_order=True))
        assert ordered.equals(ordered.sort(["datapoint", "camera"], maintain_order=True))


def test_unchanged_files_reuse_the_set_shards(mixed_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(mixed_dataset, src)
    out = tmp_path / "out"
    opts: dict[str, Any] = {"workers": 1, "sets": True, "shard_files": 5}
    a = kpcompile.build(src, out, **opts)
    # nothing changed but the error budget: a new snapshot, every shard (sets included) linked
    b = kpcompile.build(src, out, max_errors=1, **opts)
    assert (b.base, b.parsed, b.reused_shards) == (a.snapshot_id, 0, b.shards)
    pa_, pb = Path(a.path), Path(b.path)
    for rel in _parquet_bytes(pa_):
        if rel.split("/")[0] in SET_TABLES:
            assert (pa_ / rel).stat().st_ino == (pb / rel).stat().st_ino, rel
    # one set file changed: only its shard is compiled again; equal to a full rebuild
    meta = src / "faces" / "datapoint_00003" / "camera_01" / "camera_metadata.json"
    doc = json.loads(meta.read_text())
    doc["focal_length"] = 99.5
    meta.write_text(json.dumps(doc))
    c = kpcompile.build(src, out, **opts)
    assert c.base == b.snapshot_id and c.reused_shards == c.shards - 1
    full = kpcompile.build(src, tmp_path / "full", **opts)
    assert _parquet_bytes(Path(c.path)) == _parquet_bytes(Path(full.path))
    cams = kpcompile.read(out, "cameras")
    row = cams.filter(
        pl.col("datapoint") == "faces/datapoint_00003", pl.col("camera") == "camera_01"
    )
    assert row["focal_length"].to_list() == [99.5]


def test_a_rejected_set_file_stays_rejected_in_a_reused_shard(
    small_dataset: Path, tmp_path: Path
) -> None:
    bad = small_dataset / "datapoint_00002" / "camera_01" / "key_points" / "head_key_points.json"
    bad.write_bytes(b"{")
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1, sets=True, shard_files=2, max_errors=1)
    b = kpcompile.build(small_dataset, out, workers=1, sets=True, shard_files=2, max_errors=2)
    assert b.reused_shards == b.shards and a.errors == b.errors
    assert [e[1] for e in b.errors] == ["invalid_json"]
    info = kpcompile.info(out)
    assert (info.rejected, info.sets_rejected) == (0, 1)
    assert kpcompile.read(out, "errors")["path"].to_list() == [a.errors[0][0]]


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_sets_from_an_archive_equal_sets_from_the_folder(
    mixed_dataset: Path, compiled_sets: Path, tmp_path: Path, kind: str
) -> None:
    archive = tmp_path / f"dataset.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for p in sorted(mixed_dataset.rglob("*")):
                z.write(p, p.relative_to(mixed_dataset).as_posix())
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as t:
            t.add(mixed_dataset, arcname=".")
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        r = kpcompile.build(archive, out, workers=workers, sets=True, shard_files=5)
        assert r.errors == []
        for table, want in _set_tables(compiled_sets).items():
            assert _set_tables(out)[table].equals(want), (table, workers)


def test_sets_from_object_storage(s3: Any, mixed_dataset: Path, compiled_sets: Path) -> None:
    s3.put(str(mixed_dataset), "bucket/sets/dataset", recursive=True)
    out = "s3://bucket/sets/compiled"
    r = kpcompile.build("s3://bucket/sets/dataset", out, workers=2, sets=True, shard_files=5)
    assert r.errors == []
    for table in SET_TABLES:
        assert kpcompile.read(out, table).equals(kpcompile.read(compiled_sets, table)), table


def test_progress_counts_set_files(
    small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 8 landmark files; per camera folder face_standard, head, ears and camera_metadata
    kpcompile.build(small_dataset, tmp_path / "out", workers=1, sets=True, progress=True)
    bar = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert "40/40" in bar, bar


# --- source bytes (issue 17, item 7) -----------------------------------------------------


def _files_read(src: Path, out: Path) -> set[Path]:
    """Every distinct file a --sets build reads: the landmark files, and per camera folder
    the first existing file of each set (as docs/sets.md lists them) and its metadata."""
    read = {src / f["path"] for f in kpcompile.read(out, "files").iter_rows(named=True)}
    for lm in list(read):
        folder = lm.parent.parent if lm.parent.name == "key_points" else lm.parent
        kp, fallback = folder / "key_points", folder / "key_points" / "all_key_points.json"
        firsts = [
            [kp / SET_FILES["face_standard"], folder / "standard_keypoints.json", fallback],
            [kp / SET_FILES["head"], fallback],
            [kp / SET_FILES["ears"], fallback],
            [folder / "camera_metadata.json"],
        ]
        read |= {next(p for p in c if p.is_file()) for c in firsts if any(p.is_file() for p in c)}
    return read


@pytest.mark.parametrize("layout", ["in_cabin", "mixed"])
def test_source_bytes_count_every_file_read_once(tmp_path: Path, layout: str) -> None:
    """In-cabin exports hold their head and ears sets in all_key_points.json (and real
    ones their landmarks too): its bytes count once, not once per table it feeds."""
    src = tmp_path / "src"
    synth(src, layout=layout, datapoints=10, cameras=2)
    r = kpcompile.build(src, tmp_path / "out", workers=1, sets=True, shard_files=4)
    assert r.errors == []
    read = _files_read(src, tmp_path / "out")
    assert any(p.name == "all_key_points.json" for p in read)
    m = json.loads((Path(r.path) / "manifest.json").read_text())
    assert m["source"]["bytes"] == sum(p.stat().st_size for p in read)
