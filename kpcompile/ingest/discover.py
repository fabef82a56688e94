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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.listing import CHUNK, Listing, decode, encode

DENSE_NAMES: frozenset[str] = frozenset({"face_dense_key_points.json", "dense_keypoints.json"})
FALLBACK_NAME = "all_key_points.json"
LANDMARK_NAMES: frozenset[str] = DENSE_NAMES | {FALLBACK_NAME}
KEYPOINT_DIR = "key_points"
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


UNSAFE_REASONS: tuple[str, ...] = (
    "an absolute name",
    "a '..' component would leave the dataset",
    "an empty component ('//')",
    "a '.' component",
)


@dataclass(frozen=True, slots=True)
class Files:
    """The discovered files in columnar form; :class:`SourceFile` objects a chunk at a time.

    Arrays are aligned with ``listing`` (one item per listed entry); ``order`` holds
    the listing indices of the discovered files, sorted by (datapoint, camera,
    path) as a sorted ``list[SourceFile]`` would be. About 140 bytes per file for
    paths of 60 characters, against a kilobyte as objects.
    """

    listing: Listing
    datapoints: pa.ChunkedArray
    cameras: pa.ChunkedArray
    duplicate_of: npt.NDArray[np.int32]
    """Listing index of the file already providing the camera folder, or -1."""
    unsafe: npt.NDArray[np.int8]
    """Index into :data:`UNSAFE_REASONS`, or -1."""
    order: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[SourceFile]:
        return self.ordered("none")

    def ordered(self, partition_by: str = "none") -> Iterator[SourceFile]:
        """The files in output order: by (camera, datapoint, path) with ``"camera"``."""
        order = self.order if partition_by != "camera" else self._by_camera()
        for lo in range(0, len(order), CHUNK // 4):
            yield from self.take(order[lo : lo + CHUNK // 4])

    def take(self, idx: npt.NDArray[np.int64]) -> list[SourceFile]:
        """The files at these listing indices, as objects."""
        at = pa.array(idx, type=pa.int64())
        paths = self.listing.paths.take(at).to_pylist()
        dps = self.datapoints.take(at).to_pylist()
        cams = self.cameras.take(at).to_pylist()
        sizes, mtimes = self.listing.sizes[idx].tolist(), self.listing.mtimes[idx].tolist()
        dups, unsafe = self.duplicate_of[idx].tolist(), self.unsafe[idx].tolist()
        out = []
        for k, raw in enumerate(paths):
            dup = decode(self.listing.paths[dups[k]].as_py()) if dups[k] >= 0 else None
            why = UNSAFE_REASONS[unsafe[k]] if unsafe[k] >= 0 else None
            out.append(
                SourceFile(
                    decode(dps[k]), decode(cams[k]), decode(raw), sizes[k], mtimes[k], dup, why
                )
            )
        return out

    def distinct(self, excluded: set[str]) -> tuple[int, int]:
        """Distinct datapoints and camera names among the files not in ``excluded``."""
        skip = {encode(p) for p in excluded}
        datapoints, last, cameras = 0, None, set()
        for lo in range(0, len(self.order), CHUNK):
            at = pa.array(self.order[lo : lo + CHUNK], type=pa.int64())
            paths = self.listing.paths.take(at).to_pylist()
            dps, cams = self.datapoints.take(at).to_pylist(), self.cameras.take(at).to_pylist()
            for path, dp, cam in zip(paths, dps, cams, strict=True):
                if path in skip:
                    continue
                if dp != last:  # sorted by datapoint: each one's files are consecutive
                    datapoints, last = datapoints + 1, dp
                cameras.add(cam)
        return datapoints, len(cameras)

    def _by_camera(self) -> npt.NDArray[np.int64]:
        keys = pa.table({"c": self.cameras, "d": self.datapoints, "p": self.listing.paths})
        every = _sort(keys)
        kept = np.zeros(len(self.listing), dtype=bool)
        kept[self.order] = True
        return every[kept[every]]


def _sort(keys: pa.Table) -> npt.NDArray[np.int64]:
    """Row indices of ``keys`` sorted by its columns, in order."""
    import pyarrow.compute as pc

    idx = pc.sort_indices(keys, sort_keys=[(n, "ascending") for n in keys.column_names])
    out: npt.NDArray[np.int64] = idx.to_numpy().astype(np.int64, copy=False)
    return out


def discover_files(source: Source, names: frozenset[str] | None = None) -> tuple[Files, Listing]:
    """The landmark files of ``source`` in columnar form, and its listing of ``names``.

    Raises:
        SourceError: The source cannot be listed, or holds no keypoint file.
    """
    listing = source.listing(names or LANDMARK_NAMES)
    return select_listing(listing, source.name, source.location), listing


def select_listing(listing: Listing, root_name: str, where: str) -> Files:
    """:func:`select` on a columnar listing, without one object per file.

    Raises:
        SourceError: No keypoint file is in the listing.
    """
    dps: list[pa.Array] = []
    cams: list[pa.Array] = []
    ranks = np.full(len(listing), -1, dtype=np.int8)
    unsafe = np.full(len(listing), -1, dtype=np.int8)
    for lo in range(0, len(listing), CHUNK):
        d, c = [], []
        for k, e in enumerate(listing.entries(lo, min(lo + CHUNK, len(listing)))):
            rank = _RANK.get(e.path.rsplit("/", 1)[-1])
            datapoint, camera = locate(e.path, root_name) if rank is not None else ("", "")
            d.append(encode(datapoint))
            c.append(encode(camera))
            if rank is not None:
                ranks[lo + k] = rank
                reason = unsafe_reason(e.path)
                unsafe[lo + k] = -1 if reason is None else UNSAFE_REASONS.index(reason)
        dps.append(pa.array(d, type=pa.large_binary()))
        cams.append(pa.array(c, type=pa.large_binary()))
    datapoints = pa.chunked_array(dps, type=pa.large_binary())
    cameras = pa.chunked_array(cams, type=pa.large_binary())
    every = _sort(pa.table({"d": datapoints, "c": cameras, "p": listing.paths}))
    keep, dup = _one_per_camera(every, ranks, unsafe, datapoints, cameras)
    order = every[keep[every]]
    if not len(order):
        msg = f"no keypoint files under {where!r}: looked for " + ", ".join(sorted(LANDMARK_NAMES))
        raise SourceError(msg)
    return Files(listing, datapoints, cameras, dup, unsafe, order)


def _one_per_camera(
    every: npt.NDArray[np.int64],
    ranks: npt.NDArray[np.int8],
    unsafe: npt.NDArray[np.int8],
    datapoints: pa.ChunkedArray,
    cameras: pa.ChunkedArray,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
    """Which entries are discovered files, and which of them duplicate another (listing index).

    ``every`` lists the entries by (datapoint, camera, path): a camera folder's
    candidates are consecutive, and are ranked as :func:`select` ranks them.
    """
    keep = np.zeros(len(ranks), dtype=bool)
    dup = np.full(len(ranks), -1, dtype=np.int32)
    group: list[tuple[int, int]] = []  # (rank, listing index) of the current camera folder
    current: tuple[bytes, bytes] | None = None
    for lo in range(0, len(every), CHUNK):
        idx = every[lo : lo + CHUNK]
        at = pa.array(idx, type=pa.int64())
        d, c = datapoints.take(at).to_pylist(), cameras.take(at).to_pylist()
        for k, i in enumerate(idx.tolist()):
            if ranks[i] < 0:
                continue
            if unsafe[i] >= 0:
                keep[i] = True  # rejected later, never grouped with safe names
                continue
            if (d[k], c[k]) != current:
                _decide(group, keep, dup)
                group, current = [], (d[k], c[k])
            group.append((int(ranks[i]), i))
    _decide(group, keep, dup)
    return keep, dup


def _decide(
    group: list[tuple[int, int]], keep: npt.NDArray[np.bool_], dup: npt.NDArray[np.int32]
) -> None:
    """Keep a camera folder's files as :func:`select` does (``group`` is in path order)."""
    if not group:
        return
    group.sort(key=lambda g: g[0])  # stable: by rank, then path
    best = group[0][0]
    first = -1
    for rank, i in group:
        if rank == _RANK[FALLBACK_NAME] and best != rank:
            continue
        keep[i] = True
        dup[i] = first
        first = i if first < 0 else first


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


def select(entries: Iterable[Entry], root_name: str, where: str) -> list[SourceFile]:
    """Apply the one-file-per-camera-folder rules to a listing; sorted result.

    Raises:
        SourceError: No keypoint file is among ``entries``.
    """
    by_camera: dict[tuple[str, str], list[tuple[int, Entry]]] = {}
    found: list[SourceFile] = []
    for e in entries:
        name = e.path.rsplit("/", 1)[-1]
        if name not in _RANK:
            continue
        datapoint, camera = locate(e.path, root_name)
        reason = unsafe_reason(e.path)
        if reason is not None:
            found.append(SourceFile(datapoint, camera, e.path, e.size, e.mtime_ns, None, reason))
        else:
            by_camera.setdefault((datapoint, camera), []).append((_RANK[name], e))
    for (datapoint, camera), candidates in by_camera.items():
        candidates.sort(key=lambda c: (c[0], c[1].path))
        best_rank = candidates[0][0]
        first: str | None = None
        for rank, e in candidates:
            if rank == _RANK[FALLBACK_NAME] and best_rank != rank:
                continue  # all_key_points.json only stands in for a missing dense file
            found.append(SourceFile(datapoint, camera, e.path, e.size, e.mtime_ns, first))
            first = first or e.path
    if not found:
        msg = f"no keypoint files under {where!r}: looked for " + ", ".join(sorted(LANDMARK_NAMES))
        raise SourceError(msg)
    found.sort()
    return found


def unsafe_reason(rel: str) -> str | None:
    """Why a relative name may not be used as a path inside the dataset, or ``None``.

    Example:
        >>> unsafe_reason("../x/dp/cam/key_points/face_dense_key_points.json")
        "a '..' component would leave the dataset"
    """
    if rel.startswith("/"):
        return "an absolute name"
    parts = rel.split("/")
    if ".." in parts:
        return "a '..' component would leave the dataset"
    if "" in parts:
        return "an empty component ('//')"
    if "." in parts:
        return "a '.' component"
    return None


def locate(rel: str, root_name: str) -> tuple[str, str]:
    """``(datapoint, camera)`` of a file from its path relative to the source root."""
    # string operations: PurePosixPath made this a tenth of an incremental build
    parts = rel.split("/")[:-1]
    if parts and parts[-1] == KEYPOINT_DIR:
        parts.pop()
    if not parts:
        return ".", root_name
    return "/".join(parts[:-1]) or ".", parts[-1]


def camera_folder(path: str) -> str:
    """The camera folder of a landmark file (``""`` for the source root)."""
    parts = path.split("/")[:-1]
    if parts and parts[-1] == KEYPOINT_DIR:
        parts.pop()
    return "/".join(parts)
