"""Which files of a source hold landmarks, and which datapoint and camera each one is.

A camera folder contributes its 468 landmarks once. The file that holds them is,
by preference:

1. ``<camera>/key_points/face_dense_key_points.json`` (Faces, human-in-cabin), then
   ``<camera>/dense_keypoints.json`` (early exports): if a folder holds both, the
   second is rejected as ``duplicate_camera``, so nothing is counted twice;
2. ``<camera>/key_points/all_key_points.json``, which repeats every keypoint set,
   only where the folder has no file of (1).

``datapoint`` is the path of the folder above the camera folder, relative to the
source root (``datapoint_00001``, ``scene_00001/frames/001``); ``camera`` is the
camera folder's name. Files are listed in a stable order that does not depend on
the order the source returns them in. The same rules apply to every kind of
source (folder, archive, object store), so they all name files identically.

Names that archives and object stores allow but a folder never holds are
rejected as ``unsafe_path`` instead of compiled: an absolute name, a ``..``, ``.``
or empty component (``../../x/dp/camera/...``). Their datapoint would name a
folder outside the dataset, and code joining a dataset root with a datapoint
(the usual way to find a datapoint's images) would leave it. Python's tarfile
``data`` extraction filter refuses the same names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kpcompile.errors import SourceError
from kpcompile.ingest.base import Source
from kpcompile.ingest.folders import locate_all
from kpcompile.ingest.listing import (
    CHUNK,
    Int32s,
    Listing,
    binary_array,
    binary_take,
    decode,
    encode,
)
from kpcompile.ingest.paths import UNSAFE_REASONS, locate, printable, unsafe_reason

DENSE_NAMES: frozenset[str] = frozenset({"face_dense_key_points.json", "dense_keypoints.json"})
FALLBACK_NAME = "all_key_points.json"
LANDMARK_NAMES: frozenset[str] = DENSE_NAMES | {FALLBACK_NAME}
# Which file a camera folder's landmarks are taken from when it holds several.
_RANK = {"face_dense_key_points.json": 0, "dense_keypoints.json": 1, FALLBACK_NAME: 2}


@dataclass(frozen=True, slots=True, order=True)
class SourceFile:
    """One discovered keypoint file.

    Attributes:
        datapoint: Folder above the camera folder, relative to the source root.
        camera: Name of the camera folder.
        path: The file, relative to the source root, with ``/`` separators.
        size: Size in bytes when discovered (``-1`` if it is not a regular file).
        mtime_ns: Modification time when discovered.
        duplicate_of: Set when another file already provides this camera folder.
        unsafe: Why the file's name is unsafe (then it is rejected, never read).
    """

    datapoint: str
    camera: str
    path: str
    size: int = -1
    mtime_ns: int = 0
    duplicate_of: str | None = None
    unsafe: str | None = None


@dataclass(frozen=True, slots=True)
class Names:
    """The names behind :class:`Discovered`'s ids: ``datapoints[datapoint_id]`` (encoded,
    one per datapoint) and ``cameras[camera_id]``."""

    datapoints: pa.ChunkedArray
    cameras: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Discovered:
    """The discovered files in columnar form; :class:`SourceFile` objects a chunk at a time.

    Per folder of the listing: its camera folder's group (a group is one
    (datapoint, camera) pair; groups are numbered in (datapoint, camera) order),
    ids of its datapoint and camera, why its name is unsafe. ``order`` holds the
    listing indices of the discovered files, sorted by (datapoint, camera, path) as
    a sorted ``list[SourceFile]`` would be. About 130 bytes per file, against a
    kilobyte as objects.
    """

    listing: Listing
    root_name: str
    group: Int32s
    datapoint_id: Int32s
    camera_id: Int32s
    unsafe: npt.NDArray[np.int8]
    """Index into :data:`UNSAFE_REASONS`, or -1."""
    camera_rank: Int32s
    """Per group, its place in (camera, datapoint) order."""
    duplicate_of: dict[int, int]
    """Listing index of a duplicate -> listing index of the file providing its camera folder."""
    order: npt.NDArray[np.int64]
    unit: Int32s
    """Per folder, its unit (top-level prefix, see :mod:`kpcompile.ingest.units`):
    an index into ``units``."""
    units: tuple[str, ...]
    """The units of the listing's folders, sorted as UTF-8 bytes."""
    names: Names | None = None
    """The names of the datapoint and camera ids (large listings only)."""

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[SourceFile]:
        return self.ordered("none")

    def ordered(self, partition_by: str = "none") -> Iterator[SourceFile]:
        """The files in output order: by (camera, datapoint, path) with ``"camera"``."""
        order = self.output_order(partition_by)
        for lo in range(0, len(order), CHUNK // 8):
            yield from self.take(order[lo : lo + CHUNK // 8])

    def output_order(self, partition_by: str = "none") -> npt.NDArray[np.int64]:
        """Listing indices of the files in output order (see :meth:`ordered`)."""
        order = self.order
        if partition_by == "camera":
            groups = self.group[self.listing.folder[order]]
            order = order[np.argsort(self.camera_rank[groups], kind="stable")]
        return order

    def take(self, idx: npt.NDArray[np.int64]) -> list[SourceFile]:
        """The files at these listing indices, as objects."""
        lst = self.listing
        paths = lst.paths(idx)
        sizes, mtimes = lst.sizes[idx].tolist(), lst.mtimes[idx].tolist()
        unsafe = self.unsafe[lst.folder[idx]].tolist()
        datapoints, cameras = self._names(lst.folder[idx], paths)
        dups = self.duplicate_of
        out = []
        for k, i in enumerate(idx.tolist()):
            dup = dups.get(i) if dups else None
            first = lst.paths(np.array([dup]))[0] if dup is not None else None
            why = UNSAFE_REASONS[unsafe[k]] if unsafe[k] >= 0 else None
            out.append(
                SourceFile(datapoints[k], cameras[k], paths[k], sizes[k], mtimes[k], first, why)
            )
        return out

    def _names(
        self, folders: npt.NDArray[np.int32], paths: list[str]
    ) -> tuple[list[str], list[str]]:
        """The datapoint and camera of files in these folders, at these paths."""
        if self.names is None:
            pairs = [locate(p, self.root_name) for p in paths]
            return [d for d, _ in pairs], [c for _, c in pairs]
        return (
            [decode(d) for d in binary_take(self.names.datapoints, self.datapoint_id[folders])],
            [self.names.cameras[c] for c in self.camera_id[folders].tolist()],
        )

    def counts(self, idx: npt.NDArray[np.int64]) -> tuple[Counter[str], Counter[str]]:
        """How many of the files at these listing indices each datapoint holds, and each
        camera name (printable names): one name decoded per datapoint and camera name,
        not per file or folder."""
        folders = self.listing.folder[idx]
        out: list[Counter[str]] = []
        for k, ids in enumerate((self.datapoint_id[folders], self.camera_id[folders])):
            _, first, counts = np.unique(ids, return_index=True, return_counts=True)
            at = idx[first]
            names = self._names(self.listing.folder[at], self.listing.paths(at))[k]
            found: Counter[str] = Counter()
            for name, n in zip(names, counts.tolist(), strict=True):
                found[printable(name)] += n  # two raw names may print alike
            out.append(found)
        return out[0], out[1]

    def distinct(self, excluded: set[str]) -> tuple[int, int]:
        """Distinct datapoints and camera names among the files not in ``excluded``."""
        lst = self.listing
        folders = lst.folder[self.order]
        keep = np.ones(len(self.order), dtype=bool)
        if excluded:
            # ``excluded`` names files as the tables do (printable); the listing keeps
            # the raw names, which differ when a name is not valid UTF-8
            suspects = {p[: p.rfind("/") + 1] for p in excluded}
            flagged = np.zeros(len(lst.folders), dtype=bool)
            for lo in range(0, len(flagged), CHUNK):
                idx = np.arange(lo, min(lo + CHUNK, len(flagged)))
                flagged[idx] = [
                    printable(decode(f)) in suspects for f in binary_take(lst.folders, idx)
                ]
            at = np.nonzero(flagged[folders])[0]
            for k, path in zip(at.tolist(), lst.paths(self.order[at]), strict=True):
                keep[k] = printable(path) not in excluded
        folders = folders[keep]
        return (
            len(np.unique(self.datapoint_id[folders])),
            len(np.unique(self.camera_id[folders])),
        )


SORT_IN_PYTHON = 1 << 10
"""Folders up to which a listing is discovered one folder at a time in Python; above,
in columns with Arrow's sorts (:func:`_folders_columnar`). Per folder the columns cost
3-5 µs against 13 µs, but importing ``pyarrow.compute`` costs about 30 ms once: a
2,000-file build stays in Python. Builds discover a batch of prefixes at a time, so
this is per batch: at 16,384 the batches of a 20,000-file build all took the Python
path, and its incremental build was 10% slower than before batches."""


def _sort(keys: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Indices of ``keys`` in sorted order (stable)."""
    if len(keys) <= SORT_IN_PYTHON:
        values = binary_take(keys, np.arange(len(keys)))
        return np.array(sorted(range(len(values)), key=values.__getitem__), dtype=np.int64)
    import pyarrow.compute as pc

    table = pa.Table.from_arrays([keys], names=["k"])  # sorts chunked keys without a copy
    return _indices(pc.sort_indices(table, sort_keys=[("k", "ascending")]))  # stable


def discover_files(
    source: Source, names: frozenset[str] | None = None
) -> tuple[Discovered, Listing]:
    """The landmark files of ``source`` in columnar form, and its listing of ``names``.

    Raises:
        SourceError: The source cannot be listed, or holds no keypoint file.
    """
    listing = source.listing(names or LANDMARK_NAMES)
    return select_listing(listing, source.name, source.location), listing


@dataclass(slots=True)
class _Folders:
    """Per folder of a listing: what :func:`select_listing` sorts and groups by."""

    group: Int32s
    rank: Int32s  # place in (datapoint, camera, folder) order
    datapoint_id: Int32s
    camera_id: Int32s
    unsafe: npt.NDArray[np.int8]
    camera_rank: Int32s
    unit: Int32s  # index into units
    units: tuple[str, ...]  # the top-level prefixes, sorted as bytes
    names: Names | None = None


def _folders(listing: Listing, root_name: str) -> _Folders:
    """Locate every folder's camera folder, then number folders and groups in order."""
    if len(listing.folders) > SORT_IN_PYTHON:
        return _folders_columnar(listing, root_name)
    n = len(listing.folders)
    # one sort key per folder, b"datapoint\0camera": NUL sorts before any character a
    # path holds, so the bytes sort as the (datapoint, camera) pairs do
    keys, unsafe, first_seen, units = _keys(listing, root_name)
    by_dp = _sort(keys)
    group, datapoint_id = _runs(by_dp, keys)
    rank = np.empty(n, dtype=np.int32)
    rank[by_dp] = np.arange(n, dtype=np.int32)
    del by_dp
    keys = _swapped(keys)
    by_cam = _sort(keys)
    camera_id = _runs(by_cam, keys)[1]
    del keys
    names = sorted(units, key=encode)
    at = {u: i for i, u in enumerate(names)}
    unit = np.array([at[u] for u in units] or [0], dtype=np.int32)[first_seen]
    return _Folders(
        group, rank, datapoint_id, camera_id, unsafe, _camera_rank(group, by_cam), unit,
        tuple(names),
    )  # fmt: skip


def _camera_rank(group: Int32s, by_cam: npt.NDArray[np.int64]) -> Int32s:
    """Per group, its place in (camera, datapoint) order: the order of its first folder."""
    groups = int(group.max()) + 1 if len(group) else 0
    camera_rank = np.full(groups, -1, dtype=np.int32)
    seen = group[by_cam]
    first = np.unique(seen, return_index=True)[1]
    camera_rank[seen[np.sort(first)]] = np.arange(len(first), dtype=np.int32)
    return camera_rank


def _folders_columnar(listing: Listing, root_name: str) -> _Folders:
    """:func:`_folders` of a large listing, with Arrow's sorts and no object per folder."""
    import pyarrow.compute as pc

    n = len(listing.folders)
    loc = locate_all(listing.folders, root_name)
    table = pa.Table.from_arrays([loc.datapoint, loc.camera], names=["d", "c"])
    by_dp = _indices(pc.sort_indices(table, sort_keys=[("d", "ascending"), ("c", "ascending")]))
    new_dp = _changes(loc.datapoint.take(_arrow(by_dp)))
    new_group = new_dp | _changes(loc.camera.take(_arrow(by_dp)))
    group = np.empty(n, dtype=np.int32)
    group[by_dp] = np.cumsum(new_group, dtype=np.int32) - 1
    datapoint_id = np.empty(n, dtype=np.int32)
    datapoint_id[by_dp] = np.cumsum(new_dp, dtype=np.int32) - 1
    rank = np.empty(n, dtype=np.int32)
    rank[by_dp] = np.arange(n, dtype=np.int32)
    datapoints = loc.datapoint.take(_arrow(by_dp[new_dp]))
    del by_dp, new_dp, new_group
    by_cam = _indices(pc.sort_indices(table, sort_keys=[("c", "ascending"), ("d", "ascending")]))
    new_cam = _changes(loc.camera.take(_arrow(by_cam)))
    camera_id = np.empty(n, dtype=np.int32)
    camera_id[by_cam] = np.cumsum(new_cam, dtype=np.int32) - 1
    firsts = by_cam[new_cam]
    cameras = tuple(decode(c) for c in binary_take(loc.camera, firsts))
    del table, new_cam, firsts
    names = pc.unique(loc.unit)
    names = names.take(pc.sort_indices(names))
    unit = np.concatenate(
        [_ints(pc.index_in(c, value_set=names)) for c in loc.unit.chunks] or [np.zeros(0, np.int64)]
    ).astype(np.int32)
    units = tuple(decode(u) for u in binary_take(pa.chunked_array([names]), np.arange(len(names))))
    return _Folders(
        group, rank, datapoint_id, camera_id, loc.unsafe, _camera_rank(group, by_cam), unit, units,
        Names(datapoints, cameras),
    )  # fmt: skip


def _arrow(idx: npt.NDArray[np.int64]) -> pa.Array:
    """Indices as an Arrow array, from their buffer (``pa.array`` imports pandas)."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(idx), [None, pa.py_buffer(idx)])


def _indices(idx: pa.Array) -> npt.NDArray[np.int64]:
    """An Arrow array of indices as numpy, from its buffer (``to_numpy()`` imports pandas)."""
    raw = np.frombuffer(idx.buffers()[1], dtype=np.uint64)[idx.offset : idx.offset + len(idx)]
    out: npt.NDArray[np.int64] = raw.astype(np.int64)
    return out


def _ints(values: pa.Array) -> npt.NDArray[np.int64]:
    """An Arrow int32 array without nulls as numpy."""
    raw = np.frombuffer(values.buffers()[1], dtype=np.int32)
    return raw[values.offset : values.offset + len(values)].astype(np.int64)


def _changes(values: pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    """Per position, whether the value differs from the one before (the first does)."""
    import pyarrow.compute as pc

    n = len(values)
    out = np.ones(n, dtype=bool)
    if n > 1:
        differs = pc.not_equal(values.slice(1), values.slice(0, n - 1))
        at = 1
        for chunk in differs.chunks:
            raw = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
            bits = np.unpackbits(raw, bitorder="little")
            out[at : at + len(chunk)] = bits[chunk.offset : chunk.offset + len(chunk)]
            at += len(chunk)
    return out


def _keys(
    listing: Listing, root_name: str
) -> tuple[pa.ChunkedArray, npt.NDArray[np.int8], Int32s, list[str]]:
    """Per folder, ``datapoint\0camera`` as bytes, why its name is unsafe (see
    :data:`UNSAFE_REASONS`; -1: safe) and its unit (top-level prefix) as an index into
    the unit names, in the order first seen."""
    n = len(listing.folders)
    unsafe = np.full(n, -1, dtype=np.int8)
    unit = np.empty(n, dtype=np.int32)
    seen: dict[str, int] = {}
    chunks = []
    for lo in range(0, n, CHUNK):
        keys = []
        for k, folder in enumerate(listing.folder_paths(np.arange(lo, min(lo + CHUNK, n)))):
            reason = unsafe_reason(folder + "x")
            if reason is not None:
                unsafe[lo + k] = UNSAFE_REASONS.index(reason)
            d, c = locate(folder + "x", root_name)
            keys.append(encode(f"{d}\0{c}"))
            u = d.split("/", 1)[0] if d != "." else c
            unit[lo + k] = seen.setdefault(u, len(seen))
        chunks.append(binary_array(keys))
    return pa.chunked_array(chunks, type=pa.large_binary()), unsafe, unit, list(seen)


def _swapped(keys: pa.ChunkedArray) -> pa.ChunkedArray:
    """``camera\0datapoint`` from ``datapoint\0camera`` keys (the last NUL splits them:
    a camera folder's name holds none)."""
    chunks = []
    for chunk in keys.chunks:
        values = binary_take(pa.chunked_array([chunk]), np.arange(len(chunk)))
        swapped = []
        for key in values:
            d, _, c = key.rpartition(b"\0")
            swapped.append(c + b"\0" + d)
        chunks.append(binary_array(swapped))
    return pa.chunked_array(chunks, type=pa.large_binary())


def _runs(order: npt.NDArray[np.int64], keys: pa.ChunkedArray) -> tuple[Int32s, Int32s]:
    """Per folder, the number of its run of equal keys in ``order``, and of its run of
    equal first parts (the part before the NUL: datapoint, or camera)."""
    both = np.empty(len(order), dtype=np.int32)
    first = np.empty(len(order), dtype=np.int32)
    last: bytes | None = None
    last_head: bytes | None = None
    nb = na = -1
    for lo in range(0, len(order), CHUNK):
        idx = order[lo : lo + CHUNK]
        values = binary_take(keys, idx)
        for i, key in zip(idx.tolist(), values, strict=True):
            head = key[: key.index(b"\0")]
            if head != last_head:
                na += 1
            if key != last:
                nb += 1
            last, last_head = key, head
            both[i], first[i] = nb, na
    return both, first


def select_listing(
    listing: Listing, root_name: str, where: str, *, required: bool = True
) -> Discovered:
    """:func:`select` on a columnar listing, without one object per file.

    ``required=False``: a listing without a keypoint file gives an empty result
    (a top-level prefix of a larger source may hold none).

    Raises:
        SourceError: No keypoint file is in the listing (``required``).
    """
    folders = _folders(listing, root_name)
    rank_of_name = np.array([_RANK.get(n, -1) for n in listing.names] or [-1], dtype=np.int8)
    ranks = rank_of_name[listing.name]
    candidates = np.nonzero(ranks >= 0)[0]
    # by (datapoint, camera, folder, name): a camera folder's files are consecutive
    name_order = np.argsort(np.argsort(np.array(listing.names or [""], dtype=object)))
    by_group = candidates[
        np.lexsort((name_order[listing.name[candidates]], folders.rank[listing.folder[candidates]]))
    ]
    del candidates
    order, dups = _one_per_camera(by_group, listing, folders, ranks)
    if not len(order) and required:
        raise no_keypoint_files(where)
    return Discovered(
        listing, root_name, folders.group, folders.datapoint_id, folders.camera_id,
        folders.unsafe, folders.camera_rank, dups, order, folders.unit, folders.units,
        folders.names,
    )  # fmt: skip


def no_keypoint_files(where: str) -> SourceError:
    """The error of a source holding no keypoint file."""
    msg = f"no keypoint files under {where!r}: looked for " + ", ".join(sorted(LANDMARK_NAMES))
    return SourceError(msg)


def _one_per_camera(
    by_group: npt.NDArray[np.int64],
    listing: Listing,
    folders: _Folders,
    ranks: npt.NDArray[np.int8],
) -> tuple[npt.NDArray[np.int64], dict[int, int]]:
    """The discovered files in (datapoint, camera, path) order, and the duplicates.

    Each camera folder's candidates are ranked as :func:`select` ranks them; the
    path decides only between files of equal rank, so paths are built only then.
    """
    dups: dict[int, int] = {}
    n = len(by_group)
    if not n:
        return by_group.astype(np.int64), dups
    groups = folders.group[listing.folder[by_group]]
    unsafe = folders.unsafe[listing.folder[by_group]]
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1]))).astype(np.int32)
    del groups
    sizes = np.diff(np.append(starts, np.int32(n)))
    # a camera folder with one candidate keeps it (safe or not): only the others are
    # decided one by one, in Python
    order = np.empty(n, dtype=np.int64)
    count = done = 0
    multi = sizes > 1
    for start, size in zip(starts[multi].tolist(), sizes[multi].tolist(), strict=True):
        order[count : count + start - done] = by_group[done:start]
        count += start - done
        members = by_group[start : start + size].tolist()
        flags = unsafe[start : start + size].tolist()
        kept = [i for i, u in zip(members, flags, strict=True) if u >= 0]
        safe = [i for i, u in zip(members, flags, strict=True) if u < 0]
        kept += _decide(safe, listing, ranks, dups)
        if len(kept) > 1:
            paths = listing.paths(np.array(kept, dtype=np.int64))
            kept = [i for _, i in sorted(zip(paths, kept, strict=True))]
        order[count : count + len(kept)] = kept
        count += len(kept)
        done = start + size
    order[count : count + n - done] = by_group[done:]
    return order[: count + n - done], dups


def _decide(
    group: list[int], listing: Listing, ranks: npt.NDArray[np.int8], dups: dict[int, int]
) -> list[int]:
    """The files a camera folder keeps, as :func:`select` keeps them; records duplicates."""
    if len(group) <= 1:
        return group
    ranked = [(int(ranks[i]), i) for i in group]
    if len({r for r, _ in ranked}) < len(ranked):  # equal ranks: the path decides
        paths = listing.paths(np.array(group, dtype=np.int64))
        ranked = [(r, p, i) for (r, i), p in zip(ranked, paths, strict=True)]  # type: ignore[misc]
    ranked.sort()
    best = ranked[0][0]
    kept: list[int] = []
    for item in ranked:
        rank, i = item[0], item[-1]
        if rank == _RANK[FALLBACK_NAME] and best != rank:
            continue
        if kept:
            dups[i] = kept[0]
        kept.append(i)
    return kept


def discover(source: Source) -> list[SourceFile]:
    """Every landmark file of ``source``, sorted by (datapoint, camera, path).

    Raises:
        SourceError: The source cannot be listed, or holds no keypoint file.

    Example:
        >>> from kpcompile.ingest import open_source
        >>> with open_source("dataset") as src:  # doctest: +SKIP
        ...     [f.path for f in discover(src)][:1]
        ['datapoint_00001/camera/key_points/face_dense_key_points.json']
    """
    return list(discover_files(source)[0])
