"""The fast path of :func:`kpcompile.parse`: the compiled scanner, then typed decoding
with msgspec.

The compiled scanner (``kpcompile/parsing/_scan.c``, built by ``pip install`` where
it can be) reads a file of a known layout straight into column buffers, without a
Python object per landmark and without the GIL; it accepts exactly what the msgspec
path below accepts, with the same values, and returns ``None`` for anything else,
which then takes the msgspec path. Without the extension, or with
``KPCOMPILE_PURE_PYTHON=1``, only the msgspec path runs (the same results, slower).

msgspec decodes straight into typed structs, checking types as it parses (a
coordinate must be a JSON number, ``is_visible`` a string, boolean or absent), and
is faster than ``orjson.loads`` on these files because it builds no dicts for the
landmark objects. :func:`parse_fast` returns ``None`` whenever a file is anything but
plainly valid (unknown version, wrong ids, an integer float64 cannot hold, a repeated
key, unknown extra fields); :func:`kpcompile.parse` then takes the careful orjson path,
which either accepts the file too or names exactly what is wrong with it. So the fast
path decides nothing on its own: it only skips work for files that are plainly valid.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Literal

import msgspec
import numpy as np

from kpcompile.parsing.model import NUM_LANDMARKS, SUPPORTED_VERSIONS, BoolArray, Landmarks

_KEYS = [str(i) for i in range(NUM_LANDMARKS)]
_VIS: dict[Any, bool] = {"true": True, "false": False, True: True, False: False, None: False}
_MAX_EXACT = float(2**53)
_COLON = ord(":")
_LANDMARK_KEYS = 1 + 2 + 3 + 2  # id, global_3d, pixel_2d, x/y/z, x/y (is_visible counted apart)


class _P3(msgspec.Struct, gc=False):
    x: float
    y: float
    z: float


class _P2(msgspec.Struct, gc=False):
    x: float
    y: float


class _Landmark(msgspec.Struct, gc=False):
    global_3d: _P3
    pixel_2d: _P2
    # a Literal is matched without creating a str per landmark
    is_visible: Literal["true", "false"] | bool | None = None


class _Face(msgspec.Struct, gc=False):
    dense: dict[str, _Landmark] | None = None
    standard: dict[str, _Landmark] | None = None


class _ObjectDoc(msgspec.Struct, gc=False):
    face: _Face
    version: str | msgspec.UnsetType = msgspec.UNSET


class _LegacyDoc(msgspec.Struct, gc=False):
    keypoints_3d_coordinates: dict[str, tuple[float, float, float]]
    keypoints_2d_coordinates: dict[str, tuple[float, float]]
    is_visible: dict[str, bool] | None = None
    version: str | msgspec.UnsetType = msgspec.UNSET


_OBJECT = msgspec.json.Decoder(_ObjectDoc)
_LEGACY = msgspec.json.Decoder(_LegacyDoc)
# msgspec raises UnicodeDecodeError for invalid UTF-8 in a dict key and RecursionError
# for deep nesting (both found by fuzzing): any failure defers to the careful path,
# which names it.
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError)


def powers_of_ten() -> bytes:
    """The 128-bit mantissas of 10**-348 .. 10**347, rounded down, big-endian (hi, lo):
    the table of the Eisel-Lemire float conversion, computed with exact integers."""
    out = bytearray()
    for e in range(-348, 348):
        if e >= 0:
            v = 10**e
            m = (
                v << (128 - v.bit_length())
                if v.bit_length() <= 128
                else v >> (v.bit_length() - 128)
            )
        else:
            d = 10**-e
            m = (1 << (d.bit_length() + 127)) // d
        out += m.to_bytes(16, "big")
    return bytes(out)


def _load_scanner() -> ModuleType | None:
    try:  # by name: a C module, and importing it through the package would be a cycle
        _scan = importlib.import_module("kpcompile.parsing._scan")
    except ImportError:  # not built (another platform, no compiler): msgspec alone
        return None
    _scan.configure(powers_of_ten(), SUPPORTED_VERSIONS)
    return _scan


_SCANNER = _load_scanner()
_FLOATS = 5 * NUM_LANDMARKS
_VISIBLE_AT = _FLOATS * 8


def scanner() -> ModuleType | None:
    """The compiled scanner, or ``None`` (not built, or ``KPCOMPILE_PURE_PYTHON=1``)."""
    if _SCANNER is None or os.environ.get("KPCOMPILE_PURE_PYTHON", "") not in ("", "0"):
        return None
    return _SCANNER


def parse_fast(data: bytes) -> Landmarks | None:
    """Landmarks of a plainly valid file, or ``None`` to let the careful parser decide."""
    scan = scanner()
    if scan is not None:
        found = scan.scan(data)
        if found is not None:
            return _scanned(*found)
    return parse_msgspec(data)


def _scanned(layout: str, version: str | None, buf: bytearray, absent: int) -> Landmarks:
    """Landmarks from the scanner's buffer (views of it: no copy)."""
    x3, y3, z3, px, py = np.frombuffer(buf, np.float64, _FLOATS).reshape(5, NUM_LANDMARKS)
    visible: BoolArray | None = None
    missing: BoolArray | None = None
    if 0 <= absent < NUM_LANDMARKS:
        visible = np.frombuffer(buf, np.bool_, NUM_LANDMARKS, _VISIBLE_AT)
        if absent:
            missing = np.frombuffer(buf, np.bool_, NUM_LANDMARKS, _VISIBLE_AT + NUM_LANDMARKS)
    return Landmarks(layout, version, x3, y3, z3, px, py, visible, missing)


def parse_msgspec(data: bytes) -> Landmarks | None:
    """The msgspec fast path alone (what :func:`parse_fast` does without the scanner)."""
    if b'"keypoints_3d_coordinates"' in data[:256]:
        try:
            legacy = _LEGACY.decode(data)
        except _DECODE_ERRORS:
            return None
        return _legacy(legacy, data)
    try:
        doc = _OBJECT.decode(data)
    except _DECODE_ERRORS:
        return None
    return _objects(doc, data)


def _objects(doc: _ObjectDoc, data: bytes) -> Landmarks | None:
    face = doc.face
    versioned = doc.version is not msgspec.UNSET
    if versioned and doc.version not in SUPPORTED_VERSIONS:
        return None
    if face.dense is not None:
        lms, layout = face.dense, ("faces" if versioned else "in_cabin")
    elif face.standard is not None and versioned:
        lms, layout = face.standard, "documented"
    else:
        return None
    items = _ordered(lms)
    if items is None:
        return None
    # list comprehensions then one copy per row: the cheapest way measured to move
    # 2,340 Python floats into an array (fromiter over attrgetters is ~30% slower)
    g = [it.global_3d for it in items]
    p = [it.pixel_2d for it in items]
    cols = np.empty((5, NUM_LANDMARKS), dtype=np.float64)
    cols[0] = [q.x for q in g]
    cols[1] = [q.y for q in g]
    cols[2] = [q.z for q in g]
    cols[3] = [q.x for q in p]
    cols[4] = [q.y for q in p]
    vis = [it.is_visible for it in items]
    absent = vis.count(None)
    keys = versioned + 1 + (face.dense is not None) + (face.standard is not None)
    keys += NUM_LANDMARKS * _LANDMARK_KEYS + (NUM_LANDMARKS - absent)
    if not _plain(cols, data, keys):
        return None
    visible, missing = _visibility(vis, absent)
    if visible is None and absent != NUM_LANDMARKS:
        return None
    version = doc.version if isinstance(doc.version, str) else None
    x3, y3, z3, px, py = cols
    return Landmarks(layout, version, x3, y3, z3, px, py, visible, missing)


def _legacy(doc: _LegacyDoc, data: bytes) -> Landmarks | None:
    versioned = doc.version is not msgspec.UNSET
    if versioned and doc.version not in SUPPORTED_VERSIONS:
        return None
    l3 = _ordered(doc.keypoints_3d_coordinates)
    l2 = _ordered(doc.keypoints_2d_coordinates)
    if l3 is None or l2 is None:
        return None
    cols = np.concatenate([np.array(l3, dtype=np.float64).T, np.array(l2, dtype=np.float64).T])
    keys = 2 + versioned + 2 * NUM_LANDMARKS
    visible: BoolArray | None = None
    if doc.is_visible is not None:
        flags = _ordered(doc.is_visible)
        if flags is None:
            return None
        visible = np.array(flags, dtype=np.bool_)
        keys += 1 + NUM_LANDMARKS
    if not _plain(cols, data, keys):
        return None
    version = doc.version if isinstance(doc.version, str) else None
    x3, y3, z3, px, py = cols
    return Landmarks("legacy", version, x3, y3, z3, px, py, visible, None)


def _ordered(lms: dict[str, Any]) -> list[Any] | None:
    if len(lms) != NUM_LANDMARKS:
        return None
    if list(lms) == _KEYS:
        return list(lms.values())
    try:
        return [lms[k] for k in _KEYS]
    except KeyError:
        return None


def _plain(cols: np.ndarray[Any, Any], data: bytes, keys: int) -> bool:
    """No integer beyond 2**53 (msgspec would round it) and no repeated key.

    Every key of the expected structure is present, so the colon count equals the
    key count exactly when no key is repeated, no unknown field is present and no
    string holds a colon; anything else goes to the careful path.
    """
    if not np.abs(cols).max() < _MAX_EXACT:
        return False
    return count_colons(data) == keys


def count_colons(data: bytes) -> int:
    """Number of ``:`` bytes (vectorised; ``bytes.count`` is several times slower)."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == _COLON))


def _visibility(vis: list[Any], absent: int) -> tuple[BoolArray | None, BoolArray | None]:
    if absent == NUM_LANDMARKS:
        return None, None
    try:
        visible = np.fromiter(map(_VIS.__getitem__, vis), np.bool_, NUM_LANDMARKS)
    except KeyError:
        return None, None
    missing = np.fromiter((v is None for v in vis), np.bool_, NUM_LANDMARKS) if absent else None
    return visible, missing
