"""Parse one keypoint file: bytes in, 468 landmarks out, or a :class:`FormatError`.

:func:`parse` is pure (no I/O, no global state) and picklable, so any executor
(a process pool, Dask) can call it. Each Datagen layout has its own small reader;
:func:`recognise` picks one from the document's shape:

=============  ==========================================================  =========
layout         shape                                                       version
=============  ==========================================================  =========
``faces``      ``face.dense["0".."467"]`` objects (Faces platform: float    optional
               pixels, ``is_visible`` "true"/"false")
``in_cabin``   ``face.dense`` objects (human-in-cabin: int pixels, no        optional
               ``is_visible``)
``legacy``     maps ``keypoints_3d_coordinates`` / ``keypoints_2d_...`` /   absent
               ``is_visible`` of ``"i": [...]``
``documented`` ``face.standard["0".."467"]`` objects (the format's          required
               documentation example)
=============  ==========================================================  =========

The two products that write ``face.dense`` are told apart by where the file lies
(:func:`dense_layout`): human-in-cabin exports put a frame's cameras under
``scene_N/frames/NNN/<camera>/``, the Faces platform a datapoint's under
``datapoint_N/<camera>/``. Only a path with neither shape falls back on the
document: a ``version`` field says Faces (older in-cabin exports have none; newer
ones carry "2.0.0", which is why the version alone cannot decide).

The fast path assumes a well-formed file and walks it with list comprehensions;
when anything does not fit, a slower diagnosis finds the first offending landmark
and field so the message can name it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from kpcompile.errors import ErrorCode, FormatError
from kpcompile.parsing import fast as fastparse
from kpcompile.parsing.model import (
    LAYOUTS,
    NUM_LANDMARKS,
    SUPPORTED_VERSIONS,
    BoolArray,
    FloatArray,
    Landmarks,
)

__all__ = ["LAYOUTS", "NUM_LANDMARKS", "SUPPORTED_VERSIONS", "Landmarks", "parse", "recognise"]


_KEYS: tuple[str, ...] = tuple(str(i) for i in range(NUM_LANDMARKS))
_KEY_SET = frozenset(_KEYS)
_VIS: dict[object, bool | None] = {"true": True, "false": False, True: True, False: False}
_NUMBER_TYPES = frozenset({float, int})
_VIS_TYPES = frozenset({bool, str, type(None)})
_MAX_EXACT_INT = 2**53
_BIG = float(2**63)
_BIG_INT_LITERAL = re.compile(rb"(?<![\d.eE+-])-?\d{19,}(?![\d.eE])")
_BOM = b"\xef\xbb\xbf"


def parse(data: bytes, path: str) -> Landmarks:
    """Parse the bytes of one keypoint file.

    Args:
        data: The file's content.
        path: Where it came from; used only in error messages.

    Returns:
        The file's 468 landmarks.

    Raises:
        FormatError: The file is not a supported keypoint file; ``code`` says why.

    Example:
        >>> import kpcompile
        >>> lm = kpcompile.parse(open("face_dense_key_points.json", "rb").read(),
        ...                      "face_dense_key_points.json")  # doctest: +SKIP
        >>> lm.layout, lm.x3.shape
        ('faces', (468,))
    """
    lm = fastparse.parse_fast(data)
    if lm is None:
        doc = load_json(data, path)
        lm = recognise(doc, path)(doc, data, path)
    if lm.layout in _DENSE_LAYOUTS:
        layout = dense_layout(path, lm.version is not None)
        if layout != lm.layout:
            lm = dataclasses.replace(lm, layout=layout)
    return lm


_DENSE_LAYOUTS = frozenset({"faces", "in_cabin"})


def dense_layout(path: str, versioned: bool) -> str:
    """``faces`` or ``in_cabin`` for a ``face.dense`` file, by its folders, else its version.

    Example:
        >>> dense_layout("scene_00001/frames/001/cam/key_points/face_dense_key_points.json", True)
        'in_cabin'
        >>> dense_layout("datapoint_00001/camera/key_points/face_dense_key_points.json", False)
        'faces'
    """
    folders = path.split("/")[:-1]
    if folders and folders[-1] == "key_points":
        folders.pop()
    if len(folders) >= 3 and folders[-3] == "frames":
        return "in_cabin"  # .../frames/<frame>/<camera>/
    if len(folders) >= 2 and folders[-2].startswith("datapoint_"):
        return "faces"  # datapoint_N/<camera>/
    return "faces" if versioned else "in_cabin"


# --------------------------------------------------------------------------- JSON


def load_json(data: bytes, path: str) -> Any:
    """Decode JSON with orjson, turning every failure into a specific :class:`FormatError`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _classify_json_error(data, path, str(exc)) from None
    except RecursionError:
        raise FormatError(ErrorCode.TOO_DEEP, path, "JSON nested too deeply") from None


def _classify_json_error(data: bytes, path: str, msg: str) -> FormatError:
    if not data.strip():
        what = "empty file" if not data else "file holds only whitespace"
        return FormatError(ErrorCode.EMPTY, path, what)
    if data.startswith(_BOM):
        return FormatError(
            ErrorCode.INVALID_ENCODING,
            path,
            "starts with a UTF-8 byte-order mark, which JSON does not allow; "
            "re-save the file without BOM",
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return FormatError(
            ErrorCode.INVALID_ENCODING, path, f"not valid UTF-8 at byte {exc.start}: {exc.reason}"
        )
    if "recursion" in msg or "depth limit" in msg:
        return FormatError(ErrorCode.TOO_DEEP, path, "JSON nested too deeply")
    if "infinity" in msg:
        return FormatError(
            ErrorCode.NON_FINITE, path, f"number beyond the float64 range ({_loc(msg)})"
        )
    pos = _char_pos(msg)
    if pos is not None:
        head = data[pos : pos + 9].lstrip(b"-")
        if head.startswith((b"NaN", b"Infinity", b"inf", b"nan")):
            return FormatError(
                ErrorCode.NON_FINITE, path, f"NaN or Infinity is not a JSON number ({_loc(msg)})"
            )
    return FormatError(ErrorCode.INVALID_JSON, path, f"invalid JSON: {msg}")


def _char_pos(msg: str) -> int | None:
    m = re.search(r"\(char (\d+)\)", msg)
    return int(m.group(1)) if m else None


def _loc(msg: str) -> str:
    m = re.search(r"line \d+ column \d+", msg)
    return m.group(0) if m else msg


def _has_duplicate_keys(data: bytes) -> str | None:
    """Return a description of the first repeated key, or ``None`` (slow; error path)."""
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if not found:
            seen: set[str] = set()
            for k, _ in pairs:
                if k in seen:
                    found.append(k)
                    break
                seen.add(k)
        return dict(pairs)

    try:
        json.loads(data, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return None
    return found[0] if found else None


def _check_duplicates(data: bytes, path: str, expected_keys: int) -> None:
    # A cheap guard: the number of colons equals the number of object keys when no
    # string holds one. Only a mismatch pays for the exact check.
    if fastparse.count_colons(data) == expected_keys:
        return
    dup = _has_duplicate_keys(data)
    if dup is not None:
        raise FormatError(
            ErrorCode.DUPLICATE_KEY,
            path,
            f'key "{dup}" appears twice in one object; JSON readers disagree on which '
            "value wins, so the file is ambiguous",
        )


# ------------------------------------------------------------------------- layouts

Reader = Callable[[Any, bytes, str], Landmarks]


def recognise(doc: Any, path: str) -> Reader:
    """Return the reader for the document's layout, or raise ``unknown_layout``."""
    if not isinstance(doc, dict):
        kind = type(doc).__name__
        raise FormatError(
            ErrorCode.UNKNOWN_LAYOUT,
            path,
            f"top level is a JSON {_json_kind(kind)}, expected an object",
        )
    if "keypoints_3d_coordinates" in doc:
        return _read_legacy
    face = doc.get("face")
    if isinstance(face, dict):
        if "dense" in face:
            return _read_faces if "version" in doc else _read_in_cabin
        if "standard" in face:
            return _read_documented
    keys = ", ".join(sorted(doc)[:8]) or "none"
    raise FormatError(
        ErrorCode.UNKNOWN_LAYOUT,
        path,
        "no face-mesh landmarks: expected face.dense, face.standard or "
        f"keypoints_3d_coordinates; top-level keys: {keys}",
    )


def _json_kind(pytype: str) -> str:
    return {"list": "array", "str": "string", "int": "number", "float": "number"}.get(
        pytype, "null" if pytype == "NoneType" else pytype
    )


def _read_faces(doc: dict[str, Any], data: bytes, path: str) -> Landmarks:
    """Faces platform export: ``face.dense``, versioned."""
    version = _version(doc, path)
    return _read_objects(doc, data, path, "faces", version, "dense")


def _read_in_cabin(doc: dict[str, Any], data: bytes, path: str) -> Landmarks:
    """Human-in-cabin export: ``face.dense``, no version field."""
    return _read_objects(doc, data, path, "in_cabin", None, "dense")


def _read_documented(doc: dict[str, Any], data: bytes, path: str) -> Landmarks:
    """The documentation's example: 468 landmarks under ``face.standard``, versioned."""
    if "version" not in doc:
        raise FormatError(
            ErrorCode.UNSUPPORTED_VERSION,
            path,
            "face.standard without a version field; the documented layout carries one of "
            + ", ".join(SUPPORTED_VERSIONS),
        )
    version = _version(doc, path)
    return _read_objects(doc, data, path, "documented", version, "standard")


def _version(doc: dict[str, Any], path: str) -> str:
    version = doc["version"]
    if version not in SUPPORTED_VERSIONS or not isinstance(version, str):
        raise FormatError(
            ErrorCode.UNSUPPORTED_VERSION,
            path,
            f"version {json.dumps(version)} is not supported; supported versions: "
            + ", ".join(SUPPORTED_VERSIONS),
        )
    return version


def _read_objects(
    doc: dict[str, Any], data: bytes, path: str, layout: str, version: str | None, key: str
) -> Landmarks:
    where = f"face.{key}"
    lms = doc["face"][key]
    items = _ordered(lms, data, path, where)
    try:
        g = [it["global_3d"] for it in items]
        p = [it["pixel_2d"] for it in items]
        cols = (
            [q["x"] for q in g],
            [q["y"] for q in g],
            [q["z"] for q in g],
            [q["x"] for q in p],
            [q["y"] for q in p],
        )
        vis_raw = [it.get("is_visible") for it in items]
    except (KeyError, TypeError, AttributeError):
        raise _diagnose_objects(items, path, where) from None
    expected = (
        len(doc)
        + len(doc["face"])
        + NUM_LANDMARKS
        + sum(map(len, items))
        + sum(map(len, g))
        + sum(map(len, p))
    )
    _check_duplicates(data, path, expected)
    names = ("global_3d.x", "global_3d.y", "global_3d.z", "pixel_2d.x", "pixel_2d.y")
    x3, y3, z3, px, py = (
        _numbers(c, data, path, where, n) for c, n in zip(cols, names, strict=True)
    )
    visible, missing = _visibility(vis_raw, path, where)
    return Landmarks(layout, version, x3, y3, z3, px, py, visible, missing)


def _read_legacy(doc: dict[str, Any], data: bytes, path: str) -> Landmarks:
    """Early export: three maps from landmark id to ``[x, y, z]``, ``[px, py]``, bool."""
    version = _version(doc, path) if "version" in doc else None
    maps: list[Any] = []
    for name in ("keypoints_3d_coordinates", "keypoints_2d_coordinates"):
        if name not in doc:
            raise FormatError(ErrorCode.BAD_STRUCTURE, path, f"{name} is missing")
        maps.append(_ordered(doc[name], data, path, name))
    l3, l2 = maps
    for rows, name, width in (
        (l3, "keypoints_3d_coordinates", 3),
        (l2, "keypoints_2d_coordinates", 2),
    ):
        if set(map(type, rows)) != {list} or set(map(len, rows)) != {width}:
            bad = next(i for i, r in enumerate(rows) if not (type(r) is list and len(r) == width))
            raise FormatError(
                ErrorCode.BAD_STRUCTURE,
                path,
                f'{name}["{bad}"] is {_show(rows[bad])}, expected an array of {width} numbers',
            )
    vis_map = doc.get("is_visible")
    vis_raw: list[Any]
    expected = len(doc) + 2 * NUM_LANDMARKS
    if vis_map is None:
        vis_raw = [None] * NUM_LANDMARKS
    else:
        vis_raw = _ordered(vis_map, data, path, "is_visible")
        expected += NUM_LANDMARKS
    _check_duplicates(data, path, expected)
    x3, y3, z3 = (list(c) for c in zip(*l3, strict=True))
    px, py = (list(c) for c in zip(*l2, strict=True))
    names = ("x", "y", "z", "px", "py")
    cols = (x3, y3, z3, px, py)
    where = "keypoints_3d_coordinates/keypoints_2d_coordinates"
    a3, b3, c3, a2, b2 = (
        _numbers(c, data, path, where, n) for c, n in zip(cols, names, strict=True)
    )
    visible, missing = _visibility(vis_raw, path, "is_visible")
    return Landmarks("legacy", version, a3, b3, c3, a2, b2, visible, missing)


# -------------------------------------------------------------------------- checks


def _ordered(lms: Any, data: bytes, path: str, where: str) -> list[Any]:
    """Return the landmark values in id order, or raise a count/ids error."""
    if not isinstance(lms, dict):
        raise FormatError(
            ErrorCode.BAD_STRUCTURE,
            path,
            f"{where} is a JSON {_json_kind(type(lms).__name__)}, expected an object of "
            f'landmarks keyed "0" to "{NUM_LANDMARKS - 1}"',
        )
    try:
        if len(lms) == NUM_LANDMARKS:
            return [lms[k] for k in _KEYS]
    except KeyError:
        pass
    dup = _has_duplicate_keys(data) if len(lms) < NUM_LANDMARKS else None
    if dup is not None:
        raise FormatError(
            ErrorCode.DUPLICATE_KEY, path, f'{where}: landmark id "{dup}" appears twice'
        )
    missing = [int(k) for k in _KEYS if k not in lms]
    extra = sorted(k for k in lms if k not in _KEY_SET)
    if len(lms) != NUM_LANDMARKS:
        detail = _id_detail(missing, extra)
        raise FormatError(
            ErrorCode.LANDMARK_COUNT,
            path,
            f"{len(lms)} landmarks under {where}, expected {NUM_LANDMARKS} "
            f"(ids 0-{NUM_LANDMARKS - 1}){detail}",
        )
    raise FormatError(
        ErrorCode.LANDMARK_IDS,
        path,
        f"{where} has {NUM_LANDMARKS} landmarks but not the ids 0-{NUM_LANDMARKS - 1}"
        + _id_detail(missing, extra),
    )


def _id_detail(missing: Sequence[int], extra: Sequence[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing id{'s' if len(missing) > 1 else ''} {_few(missing)}")
    if extra:
        parts.append(
            f"unexpected id{'s' if len(extra) > 1 else ''} {_few([repr(e) for e in extra])}"
        )
    return "; " + "; ".join(parts) if parts else ""


def _few(values: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _diagnose_objects(items: list[Any], path: str, where: str) -> FormatError:
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            return FormatError(
                ErrorCode.BAD_STRUCTURE,
                path,
                f'{where}["{i}"] is {_show(it)}, expected an object with global_3d and pixel_2d',
            )
        for field, axes in (("global_3d", "xyz"), ("pixel_2d", "xy")):
            sub = it.get(field)
            if not isinstance(sub, dict):
                what = "missing" if sub is None else f"{_show(sub)}, expected an object"
                return FormatError(
                    ErrorCode.BAD_STRUCTURE, path, f'{where}["{i}"].{field} is {what}'
                )
            for axis in axes:
                if axis not in sub:
                    return FormatError(
                        ErrorCode.BAD_STRUCTURE, path, f'{where}["{i}"].{field}.{axis} is missing'
                    )
    return FormatError(ErrorCode.BAD_STRUCTURE, path, f"{where} has an unexpected shape")


def _numbers(values: list[Any], data: bytes, path: str, where: str, name: str) -> FloatArray:
    types = set(map(type, values))
    if not types <= _NUMBER_TYPES:
        i, v = next((i, v) for i, v in enumerate(values) if type(v) not in _NUMBER_TYPES)
        code = ErrorCode.NON_NUMERIC
        raise FormatError(code, path, f'{where}["{i}"] {name} is {_show(v)}, expected a number')
    if int in types:
        for i, v in enumerate(values):
            if type(v) is int and abs(v) > _MAX_EXACT_INT:
                raise FormatError(
                    ErrorCode.OUT_OF_RANGE,
                    path,
                    f'{where}["{i}"] {name} is the integer {v}, beyond the 2**53 that float64 '
                    "holds exactly",
                )
    arr = np.array(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise FormatError(ErrorCode.NON_FINITE, path, f'{where}["{i}"] {name} is {values[i]!r}')
    if np.abs(arr).max() >= _BIG:
        # orjson turns integer literals beyond 64 bits into floats silently; such a
        # value would not be the number written in the file, so look at the bytes.
        m = _BIG_INT_LITERAL.search(data)
        if m is not None:
            literal = m.group(0).decode()
            raise FormatError(
                ErrorCode.OUT_OF_RANGE,
                path,
                f"integer {literal[:40]} is beyond 64 bits; float64 cannot hold it exactly",
            )
    return arr


def _visibility(
    values: list[Any], path: str, where: str
) -> tuple[BoolArray | None, BoolArray | None]:
    types = set(map(type, values))
    if types == {type(None)}:
        return None, None
    if types <= _VIS_TYPES:
        try:
            flags = [False if v is None else _VIS[v] for v in values]
        except KeyError:
            pass
        else:
            missing = np.array([v is None for v in values]) if type(None) in types else None
            return np.array(flags, dtype=np.bool_), missing
    i, v = next(
        (i, v)
        for i, v in enumerate(values)
        if not (v is None or (type(v) in (bool, str) and v in _VIS))
    )
    return _raise_visibility(path, where, i, v)


def _raise_visibility(path: str, where: str, i: int, v: Any) -> tuple[BoolArray, BoolArray]:
    raise FormatError(
        ErrorCode.BAD_VISIBILITY,
        path,
        f'{where}["{i}"] is_visible is {_show(v)}, expected true, false, "true" or "false"',
    )
