"""Other keypoint sets and camera metadata, compiled into their own tables (``--sets``).

Beside the 468 dense landmarks, a camera folder of a Datagen export may hold:

=================  ==========================================================  ============
table              source (first one found)                                    ``part``
=================  ==========================================================  ============
``face_standard``  ``key_points/face_standard_key_points.json`` (``face.standard``,  null
                   68 points, ids ``"01".."68"`` or ``"1".."68"``), else the
                   early export's ``standard_keypoints.json`` (three maps), else
                   ``key_points/all_key_points.json`` (``face.standard``)
``head``           ``key_points/head_key_points.json`` (``head.<part>["1"..]``),  ``top``,
                   else ``all_key_points.json`` (``head``)                      ``left``, ...
``ears``           ``key_points/ears_key_points.json`` (``ears.<part>["0"..]``),  ``left``,
                   else ``all_key_points.json`` (``ear``)                       ``right``
``cameras``        ``camera_metadata.json`` beside ``key_points/``               --
=================  ==========================================================  ============

Ids are kept exactly as written (``kp_id`` is a string). Only camera folders that
hold a dense landmark file (see :mod:`kpcompile.sources`) are looked at. A set
file that cannot be read or does not have the shape above is recorded in the
``errors`` table (its path names the file, its code says why) and counts against
``max_errors`` like a rejected landmark file; a missing set file is not an error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa

from kpcompile.errors import ErrorCode, FormatError
from kpcompile.parse import SUPPORTED_VERSIONS, load_json
from kpcompile.sources import KEYPOINT_DIR, SourceFile, read_file
from kpcompile.writer import (
    CAMERAS_SCHEMA,
    SET_SCHEMA,
    SET_TABLES,
    ParquetSettings,
    WrittenFile,
    write_table,
)

ALL_KEY_POINTS = "all_key_points.json"
CAMERA_METADATA = "camera_metadata.json"
# table -> (file in key_points/, key of its document, key of the same set in all_key_points.json)
_SET_FILES: dict[str, tuple[str, str, str]] = {
    "face_standard": ("face_standard_key_points.json", "face.standard", "face.standard"),
    "head": ("head_key_points.json", "head", "head"),
    "ears": ("ears_key_points.json", "ears", "ear"),
}
_LEGACY_STANDARD = "standard_keypoints.json"
_VIS: dict[object, bool] = {"true": True, "false": False, True: True, False: False}
_MAX_EXACT_INT = 2**53

ErrorRow = tuple[str, str, str]
SetRow = tuple[str | None, str, float, float, float, float, float, bool | None]


@dataclass(slots=True)
class SetsResult:
    """What :func:`compile_sets` wrote: files per table, rows, rejected set files."""

    written: dict[str, list[WrittenFile]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[ErrorRow] = field(default_factory=list)
    source_bytes: int = 0


@dataclass(frozen=True, slots=True)
class SetSource:
    """Where one table's rows for one camera folder come from."""

    table: str
    datapoint: str
    camera: str
    path: str
    key: str


def discover_sets(root: str, files: Sequence[SourceFile]) -> list[SetSource]:
    """The set files of every camera folder that holds a dense landmark file, sorted.

    Example:
        >>> [s.table for s in discover_sets("dataset", discover("dataset"))][:4]  # doctest: +SKIP
        ['cameras', 'ears', 'face_standard', 'head']
    """
    found: list[SetSource] = []
    seen: set[str] = set()
    for sf in files:
        folder = _camera_folder(sf.path)
        if folder in seen:
            continue
        seen.add(folder)

        def exists(rel: str) -> bool:
            return os.path.isfile(os.path.join(root, rel))

        kp = _join(folder, KEYPOINT_DIR)
        all_kp = _join(kp, ALL_KEY_POINTS)
        for table, (name, key, all_key) in _SET_FILES.items():
            candidates = [(_join(kp, name), key)]
            if table == "face_standard":
                candidates.append((_join(folder, _LEGACY_STANDARD), "legacy"))
            candidates.append((all_kp, all_key))
            for rel, k in candidates:
                if exists(rel):
                    found.append(SetSource(table, sf.datapoint, sf.camera, rel, k))
                    break
        meta = _join(folder, CAMERA_METADATA)
        if exists(meta):
            found.append(SetSource("cameras", sf.datapoint, sf.camera, meta, ""))
    found.sort(key=lambda s: (s.table, s.datapoint, s.camera, s.path))
    return found


def _camera_folder(path: str) -> str:
    parent = PurePosixPath(path).parent
    if parent.name == KEYPOINT_DIR:
        parent = parent.parent
    return str(parent)


def _join(folder: str, name: str) -> str:
    return name if folder in ("", ".") else f"{folder}/{name}"


def parse_set(data: bytes, path: str, key: str, *, optional: bool = False) -> list[SetRow]:
    """Rows ``(part, kp_id, x3, y3, z3, px, py, visible)`` of one set in a document.

    Args:
        data: The file's bytes.
        path: The file, for messages.
        key: ``face.standard``, ``head``, ``ears``, ``ear`` (dotted path in the
            document) or ``legacy`` (the early export's three maps).

    Raises:
        FormatError: The set is missing or not shaped as expected.

    Example:
        >>> parse_set(open("head_key_points.json", "rb").read(), "head_key_points.json",
        ...           "head")[0][:2]  # doctest: +SKIP
        ('back', '1')
    """
    doc = load_json(data, path)
    if not isinstance(doc, dict):
        raise FormatError(ErrorCode.UNKNOWN_LAYOUT, path, "expected a JSON object")
    if "version" in doc and (
        not isinstance(doc["version"], str) or doc["version"] not in SUPPORTED_VERSIONS
    ):
        raise FormatError(
            ErrorCode.UNSUPPORTED_VERSION,
            path,
            f"version {doc['version']!r} is not supported; supported versions: "
            + ", ".join(SUPPORTED_VERSIONS),
        )
    if key == "legacy":
        return _legacy_rows(doc, path)
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if optional and isinstance(node, dict):
                return []
            raise FormatError(ErrorCode.UNKNOWN_LAYOUT, path, f"no {key!r} object")
        node = node[part]
    if not isinstance(node, dict) or not node:
        raise FormatError(ErrorCode.BAD_STRUCTURE, path, f"{key} is not a non-empty object")
    if key == "face.standard":
        return [_object_row(None, k, v, path, f"{key}[{k!r}]") for k, v in node.items()]
    rows: list[SetRow] = []
    for part, group in node.items():
        if not isinstance(group, dict):
            raise FormatError(ErrorCode.BAD_STRUCTURE, path, f"{key}.{part} is not an object")
        for k, v in group.items():
            rows.append(_object_row(part, k, v, path, f"{key}.{part}[{k!r}]"))
    return rows


def _object_row(part: str | None, kp_id: str, v: Any, path: str, where: str) -> SetRow:
    try:
        g, p = v["global_3d"], v["pixel_2d"]
        values = (g["x"], g["y"], g["z"], p["x"], p["y"])
    except (KeyError, TypeError):
        msg = f"{where} needs global_3d.x/y/z and pixel_2d.x/y"
        raise FormatError(ErrorCode.BAD_STRUCTURE, path, msg) from None
    x3, y3, z3, px, py = (_number(x, path, where) for x in values)
    return (part, kp_id, x3, y3, z3, px, py, _visible(v.get("is_visible"), path, where))


def _legacy_rows(doc: dict[str, Any], path: str) -> list[SetRow]:
    try:
        m3, m2 = doc["keypoints_3d_coordinates"], doc["keypoints_2d_coordinates"]
        mv = doc.get("is_visible", {})
        rows: list[SetRow] = []
        for k, xyz in m3.items():
            where = f"keypoints_3d_coordinates[{k!r}]"
            x3, y3, z3 = (_number(x, path, where) for x in xyz)
            px, py = (_number(x, path, where) for x in m2[k])
            rows.append((None, k, x3, y3, z3, px, py, _visible(mv.get(k), path, where)))
    except (KeyError, TypeError, AttributeError, ValueError):
        msg = "expected maps keypoints_3d_coordinates ([x, y, z]) and keypoints_2d_coordinates"
        raise FormatError(ErrorCode.BAD_STRUCTURE, path, msg) from None
    return rows


def _number(v: Any, path: str, where: str) -> float:
    if type(v) not in (int, float):
        raise FormatError(ErrorCode.NON_NUMERIC, path, f"{where}: {v!r} is not a number")
    if type(v) is int and abs(v) > _MAX_EXACT_INT:
        raise FormatError(ErrorCode.OUT_OF_RANGE, path, f"{where}: integer {v} beyond 2**53")
    f = float(v)
    if not math.isfinite(f):
        raise FormatError(ErrorCode.NON_FINITE, path, f"{where}: {v!r}")
    return f


def _visible(v: Any, path: str, where: str) -> bool | None:
    if v is None:
        return None
    if type(v) in (bool, str) and v in _VIS:
        return _VIS[v]
    msg = f'{where}: is_visible is {v!r}, expected true, false, "true" or "false"'
    raise FormatError(ErrorCode.BAD_VISIBILITY, path, msg)


def parse_camera(data: bytes, path: str) -> dict[str, Any]:
    """One ``camera_metadata.json`` as a row of the ``cameras`` table (without datapoint).

    Raises:
        FormatError: The matrices or the resolution are missing or malformed.

    Example:
        >>> parse_camera(open("camera_metadata.json", "rb").read(), "camera_metadata.json")[
        ...     "width"]  # doctest: +SKIP
        1024.0
    """
    doc = load_json(data, path)
    if not isinstance(doc, dict):
        raise FormatError(ErrorCode.UNKNOWN_LAYOUT, path, "expected a JSON object")
    row: dict[str, Any] = {
        "intrinsic": _matrix(doc, "intrinsic_matrix", 3, 3, path),
        "extrinsic": _matrix(doc, "extrinsic_matrix", 3, 4, path),
    }
    res = doc.get("resolution_px")
    if not isinstance(res, dict) or "x" not in res or "y" not in res:
        raise FormatError(ErrorCode.BAD_STRUCTURE, path, "resolution_px needs x and y")
    row["width"] = _number(res["x"], path, "resolution_px.x")
    row["height"] = _number(res["y"], path, "resolution_px.y")
    for name in ("camera_name", "camera_type"):
        row[name] = doc[name] if isinstance(doc.get(name), str) else None
    fl = doc.get("focal_length")
    row["focal_length"] = None if fl is None else _number(fl, path, "focal_length")
    for obj, prefix, axes in (("location", "location", "xyz"), ("aspect_px", "aspect", "xy")):
        d = doc.get(obj)
        for a in axes:
            v = d.get(a) if isinstance(d, dict) else None
            row[f"{prefix}_{a}"] = None if v is None else _number(v, path, f"{obj}.{a}")
    return row


def _matrix(doc: dict[str, Any], key: str, rows: int, cols: int, path: str) -> list[float]:
    m = doc.get(key)
    if not (
        isinstance(m, list)
        and len(m) == rows
        and all(isinstance(r, list) and len(r) == cols for r in m)
    ):
        msg = f"{key} must be a {rows}x{cols} list of rows"
        raise FormatError(ErrorCode.BAD_STRUCTURE, path, msg)
    return [_number(v, path, key) for r in m for v in r]


def compile_sets(
    root: str, files: Sequence[SourceFile], staging: str, settings: ParquetSettings, max_bytes: int
) -> SetsResult:
    """Read every set file of ``files``' camera folders and write one Parquet file per table.

    Every table is written, empty when no folder holds its set, so every snapshot
    built with ``--sets`` has the same tables.

    Example:
        >>> compile_sets("dataset", discover("dataset"), ".staging/x",
        ...              ParquetSettings(), 1 << 26).rows  # doctest: +SKIP
        {'face_standard': 136, 'head': 162, 'ears': 220, 'cameras': 2}
    """
    result = SetsResult()
    set_rows: dict[str, dict[str, list[Any]]] = {
        t: {n: [] for n in SET_SCHEMA.names} for t in SET_TABLES
    }
    cam_rows: list[dict[str, Any]] = []
    for src, data in _read_all(root, discover_sets(root, files), max_bytes, result):
        try:
            if src.table == "cameras":
                cam_rows.append(
                    {
                        "datapoint": src.datapoint,
                        "camera": src.camera,
                        **parse_camera(data, src.path),
                    }
                )
                continue
            optional = src.path.endswith(ALL_KEY_POINTS)
            rows = parse_set(data, src.path, src.key, optional=optional)
        except FormatError as exc:
            result.errors.append((src.path, str(exc.code), str(exc)))
            continue
        cols = set_rows[src.table]
        for row in rows:
            cols["datapoint"].append(src.datapoint)
            cols["camera"].append(src.camera)
            for name, value in zip(SET_SCHEMA.names[2:], row, strict=True):
                cols[name].append(value)
    for table in SET_TABLES:
        t = pa.Table.from_pydict(set_rows[table], schema=SET_SCHEMA)
        _write(result, table, t, staging, settings)
    _write(
        result, "cameras", pa.Table.from_pylist(cam_rows, schema=CAMERAS_SCHEMA), staging, settings
    )
    return result


def _write(
    result: SetsResult, table: str, t: pa.Table, staging: str, settings: ParquetSettings
) -> None:
    result.written[table] = [write_table(t, staging, f"{table}/part-00000.parquet", settings)]
    result.rows[table] = t.num_rows


def _read_all(
    root: str, sources: list[SetSource], max_bytes: int, result: SetsResult
) -> Iterator[tuple[SetSource, bytes]]:
    for src in sources:
        try:
            data = read_file(root, src.path, max_bytes)
        except ValueError as exc:
            result.errors.append((src.path, str(ErrorCode.TOO_LARGE), f"{src.path}: {exc}"))
            continue
        except OSError as exc:
            msg = f"{src.path}: cannot read: {exc.strerror or exc}"
            result.errors.append((src.path, str(ErrorCode.UNREADABLE), msg))
            continue
        result.source_bytes += len(data)
        yield src, data
