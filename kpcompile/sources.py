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

import datetime as dt
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

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
    entries = []
    for rel, st in _walk(base):
        if st is None:
            entries.append(Entry(rel, -1, 0))
        else:
            entries.append(
                Entry(rel, st.st_size if stat.S_ISREG(st.st_mode) else -1, st.st_mtime_ns)
            )
    return select(entries, base.resolve().name, str(root))


@dataclass(frozen=True, slots=True)
class Entry:
    """A candidate file as a listing sees it: relative path, size (-1: not a file), mtime."""

    path: str
    size: int
    mtime_ns: int


def select(entries: Iterable[Entry], root_name: str, where: str) -> list[SourceFile]:
    """Apply the one-file-per-camera-folder rules to a listing; sorted result.

    Shared by every kind of source (folder, archive, object store), so they name
    datapoints and cameras and mark duplicates identically.

    Raises:
        SourceError: No keypoint file is among ``entries``.
    """
    by_camera: dict[tuple[str, str], list[tuple[int, Entry]]] = {}
    for e in entries:
        name = e.path.rsplit("/", 1)[-1]
        if name not in _RANK:
            continue
        datapoint, camera = _locate(e.path, root_name)
        by_camera.setdefault((datapoint, camera), []).append((_RANK[name], e))
    found: list[SourceFile] = []
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
        msg = f"no keypoint files under {where!r}: looked for " + ", ".join(
            sorted(DENSE_NAMES | {FALLBACK_NAME})
        )
        raise SourceError(msg)
    found.sort()
    return found


def _locate(rel: str, root_name: str) -> tuple[str, str]:
    # string operations: PurePosixPath made this a tenth of an incremental build
    parts = rel.split("/")[:-1]
    if parts and parts[-1] == KEYPOINT_DIR:
        parts.pop()
    if not parts:
        return ".", root_name
    return "/".join(parts[:-1]) or ".", parts[-1]


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


ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz", ".zip")


@dataclass(frozen=True, slots=True)
class ReadFailure:
    """Why the coordinator could not hand a file's bytes to a worker (archives)."""

    too_large: bool
    reason: str


@dataclass(frozen=True, slots=True)
class SpoolRef:
    """Where a file's bytes lie in a spool file on this machine (streamed archives)."""

    spool: str
    offset: int
    length: int

    def read(self) -> bytes:
        """The bytes."""
        with open(self.spool, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(self.length)


Payload = tuple[bytes | SpoolRef | ReadFailure, ...]


class Source:
    """A dataset to compile: its files, and how workers get their bytes.

    A folder, an fsspec URL or a ``.zip`` archive is read by the workers
    themselves (:func:`read_file` on :attr:`root`); a streamed ``.tar`` archive
    hands each shard's bytes (or where they lie in a local spool) over in its
    task (:meth:`payload`).

    Attributes:
        location: Absolute path or URL, recorded in the manifest.
        root: What workers read from, or ``None`` when bytes travel in the tasks.
        files: The discovered keypoint files, sorted.
    """

    def __init__(self, location: str, root: str | None, files: list[SourceFile]) -> None:
        self.location = location
        self.root = root
        self.files = files

    def payload(self, files: Sequence[SourceFile], *, local: bool = True) -> Payload | None:
        """How workers get ``files``' bytes when not from :attr:`root`; ``None`` otherwise.

        ``local``: the workers run on this machine (they may read a local spool);
        otherwise the bytes themselves travel in the task.
        """
        return None

    def close(self) -> None:
        """Release what the source holds (a spool of archive members)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(location: str | os.PathLike[str], max_file_bytes: int) -> Source:
    """Open a folder, an archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``) or a URL.

    Archives and URLs combine: ``s3://bucket/dataset.tar.gz`` is streamed from the
    object store.

    Raises:
        SourceError: Missing, unreadable, not a folder or an archive, or no keypoint file.

    Example:
        >>> with open_source("dataset.tar.gz", 64 << 20) as src:  # doctest: +SKIP
        ...     len(src.files)
        24
    """
    loc = os.fspath(location)
    url = is_url(loc)
    if not url:
        if os.path.isdir(loc) or not os.path.exists(loc):
            files = discover(loc)
            return Source(os.path.abspath(loc), os.path.abspath(loc), files)
        loc = os.path.abspath(loc)
    if loc.endswith(ARCHIVE_SUFFIXES):
        from kpcompile.archive import open_archive

        return open_archive(loc, max_file_bytes)
    if url:
        return Source(loc, loc, list_url(loc))
    msg = f"source {loc!r} is not a folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})"
    raise SourceError(msg)


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an fsspec URL (``s3://bucket/prefix``) rather than a local path."""
    return "://" in os.fspath(location)


def join(base: str, rel: str) -> str:
    """``base/rel`` for a local path or a URL."""
    return base.rstrip("/") + "/" + rel if is_url(base) else os.path.join(base, rel)


def read_file(root: str | os.PathLike[str], rel: str, max_bytes: int) -> bytes:
    """Read one source file; raise ``OSError`` or ``ValueError`` (too large) on failure.

    ``root`` is a folder, an fsspec URL, or a ``.zip`` archive (local path or URL);
    ``.tar`` archives are streamed by the coordinator instead (see
    :mod:`kpcompile.archive`).
    """
    location = os.fspath(root)
    if location.endswith(".zip") and (is_url(location) or not os.path.isdir(location)):
        from kpcompile.archive import read_zip_member

        return read_zip_member(location, rel, max_bytes)
    if is_url(location):
        return _read_url(join(location, rel), max_bytes)
    return _read_local(root, rel, max_bytes)


def _read_url(url: str, max_bytes: int) -> bytes:
    import fsspec

    try:
        with fsspec.open(url, "rb") as fh:
            size = fh.size
            if size is not None and size > max_bytes:
                msg = f"{size} bytes, more than max_file_bytes {max_bytes}"
                raise ValueError(msg)
            data: bytes = fh.read(max_bytes + 1)
    except (ValueError, OSError):
        raise
    except Exception as exc:  # a client library's own error type: report it as I/O
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    return data


def list_url(url: str) -> list[SourceFile]:
    """Discover keypoint files under an fsspec URL (object store prefix or remote folder)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        path = path.rstrip("/")
        if not fs.isdir(path):
            what = "does not exist" if not fs.exists(path) else "is not a folder or an archive"
            msg = f"source {url!r} {what}"
            raise SourceError(msg)
        listing = fs.find(path, detail=True, withdirs=False)
    except SourceError:
        raise
    except Exception as exc:
        msg = f"cannot list source {url!r}: {type(exc).__name__}: {exc}"
        raise SourceError(msg) from None
    entries = []
    for name, meta in listing.items():
        rel = name[len(path) :].lstrip("/")
        size = int(meta.get("size") or 0) if meta.get("type", "file") == "file" else -1
        entries.append(Entry(rel, size, _mtime_ns(meta)))
    return select(entries, PurePosixPath(path).name, url)


def _mtime_ns(meta: dict[str, Any]) -> int:
    """Modification time from an fsspec listing, whatever the backend calls it."""
    for key in ("LastModified", "last_modified", "mtime", "created"):
        value = meta.get(key)
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000
        if isinstance(value, int | float):
            return int(value * 1_000_000_000)
    return 0


def _read_local(root: str | os.PathLike[str], rel: str, max_bytes: int) -> bytes:
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
