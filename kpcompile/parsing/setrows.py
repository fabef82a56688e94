"""Parse the other keypoint sets and camera metadata of a camera folder (``--sets``).

Beside the 468 dense landmarks, a camera folder of a Datagen export may hold the
68-point ``face.standard`` set, ``head`` and ``ears`` sets, and
``camera_metadata.json``. :func:`parse_set` and :func:`parse_camera` turn one such
file into rows, or raise :class:`~kpcompile.errors.FormatError` naming the file
and what is wrong. Ids are kept exactly as written (``"01"``, ``"1"``, ``"0"``).
"""

from __future__ import annotations

import math
from typing import Any

from kpcompile.errors import ErrorCode, FormatError
from kpcompile.parsing.model import SUPPORTED_VERSIONS
from kpcompile.parsing.parse import load_json

_VIS: dict[object, bool] = {"true": True, "false": False, True: True, False: False}
_MAX_EXACT_INT = 2**53

SetRow = tuple[str | None, str, float, float, float, float, float, bool | None]


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
    return set_rows(load_json(data, path), path, key, optional=optional)


def set_rows(doc: Any, path: str, key: str, *, optional: bool = False) -> list[SetRow]:
    """:func:`parse_set` on a loaded document (a file that holds several sets, such as
    ``all_key_points.json``, is loaded once)."""
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
    return camera_row(load_json(data, path), path)


def camera_row(doc: Any, path: str) -> dict[str, Any]:
    """:func:`parse_camera` on a loaded document."""
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
