"""parse(): every layout accepted, everything else rejected with a specific code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kpcompile import ErrorCode, FormatError, parse
from kpcompile.synth import synth
from tests.conftest import landmarks_from_json

LAYOUT_FILES = {
    "faces": "datapoint_00001/camera/key_points/face_dense_key_points.json",
    "in_cabin": "scene_00001/frames/001/media_dashboard_camera/key_points/face_dense_key_points.json",
    "legacy": "environment_00001/camera/dense_keypoints.json",
    "documented": "datapoint_00001/camera/key_points/face_dense_key_points.json",
}


def _synth_file(tmp_path: Path, layout: str, **kw: Any) -> Path:
    synth(tmp_path, datapoints=1, cameras=1, layout=layout, extras=False, **kw)
    return tmp_path / LAYOUT_FILES[layout]


@pytest.mark.parametrize("layout", sorted(LAYOUT_FILES))
def test_each_layout_parses_to_the_json_values(tmp_path: Path, layout: str) -> None:
    path = _synth_file(tmp_path, layout)
    lm = parse(path.read_bytes(), str(path))
    assert lm.layout == layout
    assert lm.version == (None if layout == "legacy" else "2.0.0")
    ref = landmarks_from_json(path)
    got = list(zip(range(468), lm.x3, lm.y3, lm.z3, lm.px, lm.py, lm.visible_list(), strict=True))
    assert [r[:6] for r in got] == [r[:6] for r in ref]
    assert [r[6] for r in got] == [r[6] for r in ref]
    # bit-exact, not merely equal
    assert np.array_equal(lm.x3.view(np.int64), np.array([r[1] for r in ref]).view(np.int64))


def test_version_2_0_1_is_accepted(tmp_path: Path) -> None:
    path = _synth_file(tmp_path, "faces", version="2.0.1")
    assert parse(path.read_bytes(), "f.json").version == "2.0.1"


def test_visible_count_and_absent_visibility(tmp_path: Path) -> None:
    path = _synth_file(tmp_path, "in_cabin")
    lm = parse(path.read_bytes(), "f.json")
    assert lm.visible is None and lm.visible_count is None
    path = _synth_file(tmp_path / "f", "faces")
    lm = parse(path.read_bytes(), "f.json")
    ref = landmarks_from_json(path)
    assert lm.visible_count == sum(1 for r in ref if r[6])


def _doc(n: int = 468, **landmark: Any) -> dict[str, Any]:
    base = {
        "global_3d": {"x": 0.1, "y": 0.2, "z": 0.3},
        "pixel_2d": {"x": 1, "y": 2},
        "is_visible": "true",
    }
    base.update(landmark)
    return {"version": "2.0.0", "face": {"dense": {str(i): dict(base) for i in range(n)}}}


def _with(mutate: Any) -> bytes:
    doc = _doc()
    mutate(doc)
    return json.dumps(doc).encode()


def _set(path: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        keys = path.split(".")
        target = doc["face"]["dense"]["7"]
        for k in keys[:-1]:
            target[k] = dict(target[k])
            target = target[k]
        target[keys[-1]] = value

    return mutate


def _dense(fn: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        fn(doc["face"]["dense"])

    return mutate


BAD: list[tuple[str, bytes, ErrorCode, str]] = [
    ("empty", b"", ErrorCode.EMPTY, "empty file"),
    ("whitespace", b"  \n", ErrorCode.EMPTY, "only whitespace"),
    (
        "bom",
        b"\xef\xbb\xbf" + json.dumps(_doc()).encode(),
        ErrorCode.INVALID_ENCODING,
        "byte-order mark",
    ),
    (
        "latin1",
        b'{"version": "2.0.0", "x": "\xe9"}',
        ErrorCode.INVALID_ENCODING,
        "not valid UTF-8 at byte 27",
    ),
    (
        "bad utf-8 in a key",
        json.dumps(_doc()).encode().replace(b'"2": {', b'"\xb2": {', 1),
        ErrorCode.INVALID_ENCODING,
        "not valid UTF-8",
    ),
    ("truncated", json.dumps(_doc()).encode()[:5000], ErrorCode.INVALID_JSON, "invalid JSON"),
    ("syntax", b'{"version": "2.0.0",}', ErrorCode.INVALID_JSON, "invalid JSON"),
    (
        "nan",
        json.dumps(_doc()).encode().replace(b"0.2", b"NaN", 1),
        ErrorCode.NON_FINITE,
        "NaN or Infinity",
    ),
    (
        "infinity",
        json.dumps(_doc()).encode().replace(b"0.2", b"-Infinity", 1),
        ErrorCode.NON_FINITE,
        "NaN or Infinity",
    ),
    (
        "huge float",
        json.dumps(_doc()).encode().replace(b"0.2", b"1e400", 1),
        ErrorCode.NON_FINITE,
        "beyond the float64 range",
    ),
    (
        "big int",
        json.dumps(_doc()).encode().replace(b"0.2", b"123456789012345678901234567890", 1),
        ErrorCode.OUT_OF_RANGE,
        "beyond 64 bits",
    ),
    (
        "int beyond 2**53",
        _with(_set("pixel_2d.x", 2**53 + 1)),
        ErrorCode.OUT_OF_RANGE,
        '["7"] pixel_2d.x is the integer 9007199254740993',
    ),
    ("deep", b"[" * 2000 + b"]" * 2000, ErrorCode.TOO_DEEP, "nested too deeply"),
    ("array top", b"[1, 2]", ErrorCode.UNKNOWN_LAYOUT, "top level is a JSON array"),
    ("other keys", b'{"body": {}}', ErrorCode.UNKNOWN_LAYOUT, "top-level keys: body"),
    (
        "unknown version",
        _with(lambda d: d.update(version="3.0.0")),
        ErrorCode.UNSUPPORTED_VERSION,
        'version "3.0.0" is not supported; supported versions: 2.0.0, 2.0.1',
    ),
    (
        "numeric version",
        _with(lambda d: d.update(version=2.0)),
        ErrorCode.UNSUPPORTED_VERSION,
        "version 2.0 is not supported",
    ),
    (
        "467",
        json.dumps(_doc(467)).encode(),
        ErrorCode.LANDMARK_COUNT,
        "467 landmarks under face.dense, expected 468 (ids 0-467); missing id 467",
    ),
    (
        "469",
        _with(_dense(lambda m: m.update({"468": m["0"]}))),
        ErrorCode.LANDMARK_COUNT,
        "469 landmarks under face.dense, expected 468 (ids 0-467); unexpected id '468'",
    ),
    (
        "id outside",
        _with(_dense(lambda m: m.update({"500": m.pop("233")}))),
        ErrorCode.LANDMARK_IDS,
        "missing id 233; unexpected id '500'",
    ),
    (
        "string coordinate",
        _with(_set("global_3d.y", "0.5")),
        ErrorCode.NON_NUMERIC,
        'face.dense["7"] global_3d.y is "0.5", expected a number',
    ),
    (
        "bool coordinate",
        _with(_set("pixel_2d.y", True)),
        ErrorCode.NON_NUMERIC,
        'face.dense["7"] pixel_2d.y is true, expected a number',
    ),
    (
        "null coordinate",
        _with(_set("global_3d.z", None)),
        ErrorCode.NON_NUMERIC,
        "global_3d.z is null",
    ),
    (
        "missing axis",
        _with(
            lambda d: d["face"]["dense"].update(
                {"7": {"global_3d": {"x": 1, "y": 2}, "pixel_2d": {"x": 1, "y": 2}}}
            )
        ),
        ErrorCode.BAD_STRUCTURE,
        'face.dense["7"].global_3d.z is missing',
    ),
    (
        "landmark is list",
        _with(_dense(lambda m: m.update({"3": [1, 2, 3]}))),
        ErrorCode.BAD_STRUCTURE,
        'face.dense["3"] is [1, 2, 3], expected an object',
    ),
    (
        "dense is list",
        _with(lambda d: d["face"].update(dense=[1])),
        ErrorCode.BAD_STRUCTURE,
        "face.dense is a JSON array",
    ),
    (
        "bad visibility",
        _with(_set("is_visible", "yes")),
        ErrorCode.BAD_VISIBILITY,
        'face.dense["7"] is_visible is "yes"',
    ),
    ("int visibility", _with(_set("is_visible", 1)), ErrorCode.BAD_VISIBILITY, "is_visible is 1"),
    (
        "duplicate id",
        json.dumps(_doc(467)).encode().replace(b'"466": {', b'"5": {', 1),
        ErrorCode.DUPLICATE_KEY,
        'landmark id "5" appears twice',
    ),
    (
        "duplicate axis",
        json.dumps(_doc()).encode().replace(b'"y": 0.2', b'"x": 0.9, "y": 0.2', 1),
        ErrorCode.DUPLICATE_KEY,
        'key "x" appears twice',
    ),
    (
        "legacy short row",
        json.dumps(
            {
                "keypoints_3d_coordinates": {str(i): [1, 2] for i in range(468)},
                "keypoints_2d_coordinates": {str(i): [1, 2] for i in range(468)},
            }
        ).encode(),
        ErrorCode.BAD_STRUCTURE,
        'keypoints_3d_coordinates["0"] is [1, 2], expected an array of 3 numbers',
    ),
    (
        "documented without version",
        json.dumps({"face": {"standard": _doc()["face"]["dense"]}}).encode(),
        ErrorCode.UNSUPPORTED_VERSION,
        "face.standard without a version field",
    ),
    (
        "68-point standard",
        json.dumps({"version": "2.0.0", "face": {"standard": _doc(68)["face"]["dense"]}}).encode(),
        ErrorCode.LANDMARK_COUNT,
        "68 landmarks under face.standard",
    ),
]


@pytest.mark.parametrize(("data", "code", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_code_and_reason(
    data: bytes, code: ErrorCode, message: str
) -> None:
    with pytest.raises(FormatError) as info:
        parse(data, "dp/cam/key_points/face_dense_key_points.json")
    assert info.value.code == code, str(info.value)
    assert str(info.value).startswith("dp/cam/key_points/face_dense_key_points.json: ")
    assert message in str(info.value)


def test_every_error_code_has_a_case() -> None:
    file_level = {ErrorCode.UNREADABLE, ErrorCode.TOO_LARGE, ErrorCode.DUPLICATE_CAMERA}
    file_level |= {ErrorCode.INTERNAL_ERROR}  # tests/compile/test_faults.py
    file_level |= {ErrorCode.UNSAFE_PATH}  # tests/ingest/test_archive.py
    covered = {b[2] for b in BAD}
    assert covered | file_level == set(ErrorCode)


def test_partial_visibility_is_null_per_landmark() -> None:
    doc = _doc()
    del doc["face"]["dense"]["3"]["is_visible"]
    lm = parse(json.dumps(doc).encode(), "f.json")
    assert lm.visible_list()[3] is None and lm.visible_list()[2] is True
    assert lm.visible_count == 467


def test_extra_fields_are_tolerated() -> None:
    doc = _doc()
    doc["face"]["dense"]["3"]["confidence"] = 0.9
    doc["meta"] = {"a": 1}
    assert parse(json.dumps(doc).encode(), "f.json").layout == "faces"


def _careful(data: bytes) -> Any:
    from kpcompile.parsing.parse import load_json, recognise

    doc = load_json(data, "f.json")
    return recognise(doc, "f.json")(doc, data, "f.json")


def _same(a: Any, b: Any) -> bool:
    return (
        (a.layout, a.version) == (b.layout, b.version)
        and all(
            np.array_equal(getattr(a, c).view(np.int64), getattr(b, c).view(np.int64))
            for c in ("x3", "y3", "z3", "px", "py")
        )
        and a.visible_list() == b.visible_list()
    )


@pytest.mark.parametrize("layout", sorted(LAYOUT_FILES))
def test_fast_path_takes_valid_files_and_agrees_with_the_careful_path(
    tmp_path: Path, layout: str
) -> None:
    from kpcompile.parsing.fast import parse_fast

    data = _synth_file(tmp_path, layout).read_bytes()
    fast = parse_fast(data)
    assert fast is not None
    assert _same(fast, _careful(data))


def test_fast_path_agrees_on_the_real_samples(samples: Path) -> None:
    from kpcompile.parsing.fast import parse_fast

    paths = sorted(samples.rglob("*dense*.json"))
    assert len(paths) == 13
    for path in paths:
        data = path.read_bytes()
        fast = parse_fast(data)
        assert fast is not None, path
        assert _same(fast, _careful(data)), path


@pytest.mark.parametrize("data", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_fast_path_never_accepts_a_bad_file(data: bytes) -> None:
    from kpcompile.parsing.fast import parse_fast

    assert parse_fast(data) is None


def test_fast_path_defers_on_unknown_fields_and_the_careful_path_accepts() -> None:
    from kpcompile.parsing.fast import parse_fast

    doc = _doc()
    doc["face"]["dense"]["3"]["confidence"] = 0.9
    data = json.dumps(doc).encode()
    assert parse_fast(data) is None
    assert parse(data, "f.json").layout == "faces"


IN_CABIN = "scene_00002/frames/007/rear_camera/key_points/face_dense_key_points.json"


@pytest.mark.parametrize("version", ["2.0.0", None])
def test_a_real_in_cabin_export_is_labelled_in_cabin(tmp_path: Path, version: str | None) -> None:
    """Real human-in-cabin exports carry "version": "2.0.0" (newer) or none (older), integer
    pixels and no is_visible: the folder structure, not the version, says in_cabin."""
    doc = json.loads(_synth_file(tmp_path, "faces").read_text())
    for lm in doc["face"]["dense"].values():
        lm["pixel_2d"] = {a: round(v) for a, v in lm["pixel_2d"].items()}
        del lm["is_visible"]
    if version is None:
        del doc["version"]
    else:
        doc["version"] = version
    data = json.dumps(doc, indent=3).encode()
    for path in (IN_CABIN, "cabin/" + IN_CABIN, "frames/001/cam/face_dense_key_points.json"):
        lm = parse(data, path)
        assert (lm.layout, lm.version) == ("in_cabin", version), path
    assert parse(data, LAYOUT_FILES["faces"]).layout == "faces"


def test_labels_without_a_known_folder_structure_come_from_the_document(tmp_path: Path) -> None:
    faces = _synth_file(tmp_path, "faces").read_bytes()
    assert parse(faces, "face_dense_key_points.json").layout == "faces"
    doc = json.loads(faces)
    del doc["version"]
    assert parse(json.dumps(doc).encode(), "x/y/face_dense_key_points.json").layout == "in_cabin"
