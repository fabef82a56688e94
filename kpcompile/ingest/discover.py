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

from collections.abc import Iterable
from dataclasses import dataclass

from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry, Source

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
    return select(source.list(LANDMARK_NAMES), source.name, source.location)


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
