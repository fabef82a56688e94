"""Where every folder of a listing sits, computed on the listing's bytes with numpy.

For each folder path (``scene_7/frames/cam/key_points/``) discovery needs its
datapoint and camera (:func:`~kpcompile.ingest.paths.locate`), why its name is
unsafe (:func:`~kpcompile.ingest.paths.unsafe_reason`) and its unit (top-level
prefix, :func:`~kpcompile.ingest.units.unit_of`). One Python call per folder costs
about 5 µs, seconds a million folders; :func:`locate_all` finds the slashes of a
block of folders at once and cuts the answers out of the same bytes.

Only the plain folders are done so: ASCII, at least a datapoint and a camera
folder deep, no empty, ``.`` or ``..`` component, not absolute. Every other
folder (a name that is not ASCII, a camera folder at the top, the root's own
folder, an unsafe name) goes through the same Python functions as before, one at a
time, so both ways give the same answers (tests/ingest/test_folders.py compares
them on random listings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kpcompile.ingest.listing import decode, encode
from kpcompile.ingest.paths import KEYPOINT_DIR, UNSAFE_REASONS, locate, unsafe_reason

BLOCK = 1 << 12
"""Folders handled at once (their bytes and per-byte arrays: a few MB)."""
_SLASH, _DOT = ord("/"), ord(".")
_KP = np.frombuffer(KEYPOINT_DIR.encode(), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Located:
    """Per folder: datapoint, camera and unit as ``large_binary`` arrays (encoded as
    the listing encodes paths), and the index of why its name is unsafe in
    :data:`~kpcompile.ingest.paths.UNSAFE_REASONS` (-1: safe)."""

    datapoint: pa.ChunkedArray
    camera: pa.ChunkedArray
    unit: pa.ChunkedArray
    unsafe: npt.NDArray[np.int8]


def locate_all(folders: pa.ChunkedArray, root_name: str) -> Located:
    """:func:`~kpcompile.ingest.paths.locate` (and the unit, and the unsafe reason) of
    every folder of a listing (paths ending with ``/``, ``""`` for the root)."""
    parts: list[tuple[pa.Array, pa.Array, pa.Array, npt.NDArray[np.int8]]] = []
    for chunk in folders.chunks:
        for lo in range(0, len(chunk), BLOCK):
            parts.append(_block(chunk.slice(lo, BLOCK), root_name))
    if not parts:
        empty = pa.chunked_array([], type=pa.large_binary())
        return Located(empty, empty, empty, np.zeros(0, dtype=np.int8))
    return Located(
        pa.chunked_array([p[0] for p in parts], type=pa.large_binary()),
        pa.chunked_array([p[1] for p in parts], type=pa.large_binary()),
        pa.chunked_array([p[2] for p in parts], type=pa.large_binary()),
        np.concatenate([p[3] for p in parts]),
    )


def _block(
    chunk: pa.Array, root_name: str
) -> tuple[pa.Array, pa.Array, pa.Array, npt.NDArray[np.int8]]:
    n = len(chunk)
    bufs = chunk.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[chunk.offset : chunk.offset + n + 1]
    base = int(offsets[0])
    raw = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else _NONE
    data = raw[base : int(offsets[-1])] if n else _NONE
    start = (offsets[:-1] - base).astype(np.int32)
    end = (offsets[1:] - base).astype(np.int32)
    odd, dp_end, cam_end, unit_end = _plain(data, start, end)
    rare = np.flatnonzero(odd)
    found = [_python(chunk[int(i)].as_py(), root_name) for i in rare.tolist()]
    unsafe = np.full(n, -1, dtype=np.int8)
    unsafe[rare] = [u for _, _, _, u in found]
    return (
        _cut(data, start, dp_end, rare, [f[0] for f in found]),
        _cut(data, dp_end + 1, cam_end, rare, [f[1] for f in found]),
        _cut(data, start, unit_end, rare, [f[2] for f in found]),
        unsafe,
    )


_NONE = np.zeros(0, dtype=np.uint8)
Ints = npt.NDArray[np.integer[Any]]


def _plain(
    data: npt.NDArray[np.uint8], start: Ints, end: Ints
) -> tuple[npt.NDArray[np.bool_], Ints, Ints, Ints]:
    """Which rows are odd (left to Python), and for the others where the datapoint,
    the camera and the unit end (each ends before a slash)."""
    slashes = np.flatnonzero(data == _SLASH).astype(np.int32)  # a block's bytes: < 2**31
    if not len(slashes):  # only the root's own folder ("")
        return np.ones(len(start), dtype=bool), start, start, start
    first = np.searchsorted(slashes, start)  # each row's slashes: slashes[first:past]
    past = np.searchsorted(slashes, end)
    odd = _odd_rows(data, slashes, start, end, first, past)
    # drop a last component "key_points": the camera folder is the one above
    last_start = np.where(past - first >= 2, slashes[np.maximum(past - 2, 0)] + 1, start)
    top = past - _is_keypoint_dir(data, last_start, end - 1)  # past the camera's slash
    odd |= top - first < 2  # a camera folder at the top, or the root's own
    top = np.where(odd, first + 2, top)  # any index for odd rows: ignored
    last = len(slashes) - 1
    cam_end = slashes[np.clip(top - 1, 0, last)]
    dp_end = slashes[np.clip(top - 2, 0, last)]
    unit_end = slashes[np.minimum(first, last)]
    return odd, dp_end, cam_end, unit_end


def _odd_rows(
    data: npt.NDArray[np.uint8],
    slashes: Ints,
    start: Ints,
    end: Ints,
    first: Ints,
    past: Ints,
) -> npt.NDArray[np.bool_]:
    """Rows left to Python: not ASCII, absolute, or with an empty, ``.`` or ``..``
    component."""
    n = len(start)
    odd = np.zeros(n, dtype=bool)
    wide = np.flatnonzero(data >= 0x80)
    if len(wide):
        odd[np.searchsorted(end, wide, side="right")] = True
    if not len(slashes):
        return odd
    row = np.repeat(np.arange(n, dtype=np.int32), past - first)  # the row of each slash
    prev = np.empty_like(slashes)
    prev[0] = -1
    prev[1:] = slashes[:-1]
    head = np.concatenate(([True], row[1:] != row[:-1]))
    begin = np.where(head, start[row], prev + 1)  # each component: [begin, its slash)
    length = slashes - begin
    bad = length == 0  # empty (or absolute, for a row's first component)
    dot1 = data[np.maximum(slashes - 1, 0)] == _DOT
    dot2 = data[np.maximum(slashes - 2, 0)] == _DOT
    bad |= ((length == 1) & dot1) | ((length == 2) & dot1 & dot2)  # "." and ".."
    odd[row[bad]] = True
    return odd


def _is_keypoint_dir(data: npt.NDArray[np.uint8], begin: Ints, stop: Ints) -> npt.NDArray[np.bool_]:
    """Whether ``data[begin:stop]`` is ``key_points``, per row."""
    out: npt.NDArray[np.bool_] = (stop - begin) == len(_KP)
    at = np.flatnonzero(out)
    if len(at):
        window = data[begin[at, None] + np.arange(len(_KP))]
        out[at] = (window == _KP).all(axis=1)
    return out


def _cut(
    data: npt.NDArray[np.uint8],
    begin: Ints,
    stop: Ints,
    rare: Ints,
    rare_values: list[bytes],
) -> pa.Array:
    """A ``large_binary`` array of ``data[begin[i]:stop[i]]``, but ``rare_values`` at
    the rows ``rare``."""
    begin, stop = begin.copy(), stop.copy()
    source = data
    if len(rare):
        extra = b"".join(rare_values)
        lengths = np.fromiter(map(len, rare_values), np.int64, len(rare_values))
        begin[rare] = len(data) + np.concatenate(([0], np.cumsum(lengths)[:-1]))
        stop[rare] = begin[rare] + lengths
        source = np.concatenate((data, np.frombuffer(extra, dtype=np.uint8)))
    lengths = stop - begin
    offsets = np.zeros(len(begin) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.int32 if len(source) < 2**31 else np.int64  # a block's bytes: int32 do
    gather = np.repeat((begin - offsets[:-1]).astype(index), lengths)
    gather += np.arange(offsets[-1], dtype=index)
    out = source[gather]
    del gather
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(out)]
    return pa.Array.from_buffers(pa.large_binary(), len(begin), buffers)


def _python(folder: bytes, root_name: str) -> tuple[bytes, bytes, bytes, int]:
    """One folder the slow way: datapoint, camera, unit (encoded) and unsafe index."""
    path = decode(folder) + "x"
    reason = unsafe_reason(path)
    datapoint, camera = locate(path, root_name)
    unit = datapoint.split("/", 1)[0] if datapoint != "." else camera
    why = UNSAFE_REASONS.index(reason) if reason is not None else -1
    return encode(datapoint), encode(camera), encode(unit), why
