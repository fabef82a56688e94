"""Find the keypoint files of a dataset and read them.

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
the order the filesystem returns them in.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kpcompile.errors import SourceError

DENSE_NAMES: frozenset[str] = frozenset({"face_dense_key_points.json", "dense_keypoints.json"})
FALLBACK_NAME = "all_key_points.json"
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
    """

    datapoint: str
    camera: str
    path: str
    size: int = -1
    mtime_ns: int = 0
    duplicate_of: str | None = None


def discover(root: str | os.PathLike[str]) -> list[SourceFile]:
    """List every keypoint file under ``root``, sorted by (datapoint, camera, path).

    Raises:
        SourceError: ``root`` is missing or unreadable, a folder under it cannot be
            listed, or no keypoint file was found.

    Example:
        >>> [f.path for f in discover("dataset")][:1]  # doctest: +SKIP
        ['datapoint_00001/camera/key_points/face_dense_key_points.json']
    """
    base = Path(root)
    if not base.exists():
        msg = f"source {str(root)!r} does not exist"
        raise SourceError(msg)
    if not base.is_dir():
        msg = f"source {str(root)!r} is not a folder"
        raise SourceError(msg)
    by_camera: dict[tuple[str, str], list[tuple[int, str, os.stat_result | None]]] = {}
    for rel, st in _walk(base):
        name = PurePosixPath(rel).name
        rank = _RANK.get(name, len(_RANK))
        datapoint, camera = _locate(rel, base)
        by_camera.setdefault((datapoint, camera), []).append((rank, rel, st))
    found: list[SourceFile] = []
    for (datapoint, camera), candidates in by_camera.items():
        candidates.sort(key=lambda c: (c[0], c[1]))
        best_rank = candidates[0][0]
        first: str | None = None
        for rank, rel, st in candidates:
            if rank == _RANK[FALLBACK_NAME] and best_rank != rank:
                continue  # all_key_points.json only stands in for a missing dense file
            size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else -1
            mtime = st.st_mtime_ns if st is not None else 0
            found.append(SourceFile(datapoint, camera, rel, size, mtime, first))
            first = first or rel
    if not found:
        msg = f"no keypoint files under {str(root)!r}: looked for " + ", ".join(
            sorted(DENSE_NAMES | {FALLBACK_NAME})
        )
        raise SourceError(msg)
    found.sort()
    return found


def _locate(rel: str, base: Path) -> tuple[str, str]:
    parent = PurePosixPath(rel).parent
    if parent.name == KEYPOINT_DIR:
        parent = parent.parent
    if str(parent) == ".":
        return ".", base.resolve().name
    datapoint = str(parent.parent)
    return datapoint, parent.name


def _walk(base: Path) -> list[tuple[str, os.stat_result | None]]:
    """Return (relative path, stat) of candidate files; follows symlinks, not loops."""
    names = DENSE_NAMES | {FALLBACK_NAME}
    out: list[tuple[str, os.stat_result | None]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, str]] = [(str(base), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue  # a symlink loop or a second link to a folder already listed
            seen.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            where = prefix.rstrip("/") or str(base)
            msg = f"cannot list folder {where!r}: {exc.strerror or exc}"
            raise SourceError(msg) from None
        for entry in entries:
            rel = prefix + entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if entry.name in names:
                try:
                    est: os.stat_result | None = entry.stat(follow_symlinks=True)
                except OSError:
                    est = None
                out.append((rel, est))
            elif is_dir:
                stack.append((entry.path, rel + "/"))
    return out


def read_file(root: str | os.PathLike[str], rel: str, max_bytes: int) -> bytes:
    """Read one source file; raise ``OSError`` or ``ValueError`` (too large) on failure."""
    full = os.path.join(os.fspath(root), rel)
    # O_NONBLOCK: opening a FIFO named like a keypoint file must not wait for a writer.
    fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            msg = "is a folder"
            raise IsADirectoryError(msg)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            msg = f"not a regular file but {kind}"
            raise OSError(msg)
        if st.st_size > max_bytes:
            msg = f"{st.st_size} bytes, more than max_file_bytes {max_bytes}"
            raise ValueError(msg)
        data = os.read(fd, st.st_size + 1)
        if len(data) != st.st_size:  # the file changed while we read it, or a short read
            parts = [data]
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
                if sum(map(len, parts)) > max_bytes:
                    msg = f"more than max_file_bytes {max_bytes} (the file is growing)"
                    raise ValueError(msg)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)
