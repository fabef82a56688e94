"""Compile straight from ``.tar``, ``.tar.gz``, ``.tgz`` and ``.zip`` archives.

Nothing is extracted. Member paths inside the archive play the part of paths
relative to SOURCE, so a build from ``dataset.tar.gz`` equals a build from the
folder the archive extracts into (``tar -xf dataset.tar.gz -C folder``): same
datapoints, same rows, same Parquet bytes (member mtimes are the extracted files'
mtimes).

* ``.zip`` has a central directory: it is listed without reading any member, and
  the workers open the archive themselves and read the members of their shard.
* ``.tar`` and ``.tar.gz`` are read as a stream, once, in archive order (a gzip
  stream cannot seek). Shards must hold files in sorted order (so that the result
  equals the folder build) and archive order is whatever the archiver chose, so the
  keypoint members' bytes are appended to a temporary *spool file* while streaming
  (other members, such as images, are skipped without being stored); the spool
  takes as much temporary disk space as the keypoint members and is deleted after
  the build. Local workers read their shard's bytes from the spool by offset, so
  memory does not grow with the archive; Dask workers, which may run on other
  machines, receive the bytes inside their task, at most ``2 x threads`` tasks in
  flight (memory: about ``4 x shard_files x`` file size).

Links inside archives are not followed: a member named like a keypoint file that
is a symbolic or hard link is rejected as ``unreadable``.
"""

from __future__ import annotations

import calendar
import functools
import math
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import IO

from kpcompile.errors import SourceError
from kpcompile.sources import (
    ARCHIVE_SUFFIXES,
    Entry,
    Payload,
    ReadFailure,
    Source,
    SourceFile,
    SpoolRef,
    is_url,
    select,
)

_NAMES = frozenset({"face_dense_key_points.json", "dense_keypoints.json", "all_key_points.json"})
_LINK_REASON = "a link inside an archive; links are not followed, extract the archive instead"


def open_archive(location: str, max_file_bytes: int) -> Source:
    """List (``.zip``) or stream (``.tar``, ``.tar.gz``, ``.tgz``) an archive.

    Raises:
        SourceError: The archive is missing, corrupt or truncated, or holds no keypoint file.
    """
    if location.endswith(".zip"):
        return _open_zip(location)
    return TarSource(location, max_file_bytes)


def _open_binary(location: str) -> IO[bytes]:
    if is_url(location):
        import fsspec

        fh: IO[bytes] = fsspec.open(location, "rb").open()
        return fh
    return open(location, "rb")


def _root_name(location: str) -> str:
    name = PurePosixPath(location.rstrip("/")).name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _member_path(name: str) -> str:
    """Member name as a path relative to the extraction folder."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _fail(location: str, exc: BaseException) -> SourceError:
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"source {location!r} does not exist")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return SourceError(f"cannot read archive {location!r}: {reason}")


# --- zip: listed from the central directory, members read by the workers -------------


def _open_zip(location: str) -> Source:
    try:
        members = _zip(location, _stamp(location))[1]
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _fail(location, exc) from None
    entries = []
    for rel, info in members.items():
        if PurePosixPath(rel).name not in _NAMES:
            continue
        size = -1 if info.is_dir() else info.file_size
        mtime = calendar.timegm((*info.date_time, 0, 0, 0)) * 1_000_000_000
        entries.append(Entry(rel, size, mtime))
    return Source(location, location, select(entries, _root_name(location), location))


def _stamp(location: str) -> tuple[int, int]:
    """Identifies a version of a local archive, so a rewritten one is not served from cache."""
    if is_url(location):
        return (0, 0)
    st = os.stat(location)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _zip(
    location: str, _stamp: tuple[int, int]
) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """An open archive and its members by path, kept open for a worker's next shards."""
    zf = zipfile.ZipFile(_open_binary(location) if is_url(location) else location)
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        members[_member_path(info.filename)] = info  # a later duplicate wins, as extraction
    return zf, members


def read_zip_member(location: str, rel: str, max_bytes: int) -> bytes:
    """Read one member of a ``.zip`` archive; ``OSError`` or ``ValueError`` (too large)."""
    try:
        zf, members = _zip(location, _stamp(location))
    except (zipfile.BadZipFile, EOFError) as exc:
        raise OSError(f"cannot open archive: {exc}") from None
    info = members.get(rel)
    if info is None:
        raise FileNotFoundError(f"no member {rel!r} in the archive")
    if info.is_dir():
        raise IsADirectoryError("not a regular file")
    if info.file_size > max_bytes:
        msg = f"{info.file_size} bytes, more than max_file_bytes {max_bytes}"
        raise ValueError(msg)
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError) as exc:
        raise OSError(str(exc)) from None


def _mtime_ns(mtime: float) -> int:
    """A member's mtime in ns, as extraction sets it (``os.utime`` floors fractions)."""
    if isinstance(mtime, int):
        return mtime * 1_000_000_000
    frac, whole = math.modf(mtime)
    return int(whole) * 1_000_000_000 + math.floor(frac * 1e9)


# --- tar: streamed once, keypoint members spooled ---------------------------------------


class TarSource(Source):
    """A ``.tar``/``.tar.gz`` archive streamed once; shards' bytes travel in their tasks."""

    def __init__(self, location: str, max_file_bytes: int) -> None:
        self._spool: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by close()
            prefix="kpcompile-spool-", suffix=".bin"
        )
        self._where: dict[str, tuple[int, int] | ReadFailure] = {}
        try:
            entries = self._stream(location, max_file_bytes)
            files = select(entries, _root_name(location), location)
        except BaseException:
            self.close()
            raise
        super().__init__(location, None, files)

    def _stream(self, location: str, max_file_bytes: int) -> list[Entry]:
        entries: dict[str, Entry] = {}
        try:
            with _open_binary(location) as fh, tarfile.open(fileobj=fh, mode="r|*") as tf:
                for member in tf:
                    rel = _member_path(member.name)
                    if PurePosixPath(rel).name not in _NAMES:
                        continue
                    entries[rel] = self._keep(tf, member, rel, max_file_bytes)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise _fail(location, exc) from None
        except Exception as exc:  # zlib.error and client libraries' errors
            raise _fail(location, exc) from None
        return list(entries.values())

    def _keep(self, tf: tarfile.TarFile, member: tarfile.TarInfo, rel: str, limit: int) -> Entry:
        mtime_ns = _mtime_ns(member.mtime)
        if member.isdir():
            self._where[rel] = ReadFailure(False, "is a folder, not a file")
            return Entry(rel, -1, mtime_ns)
        if not member.isreg():
            self._where[rel] = ReadFailure(False, _LINK_REASON)
            return Entry(rel, -1, mtime_ns)
        if member.size > limit:
            self._where[rel] = ReadFailure(
                True, f"{member.size} bytes, more than max_file_bytes {limit}"
            )
        else:
            stream = tf.extractfile(member)
            data = stream.read() if stream is not None else b""
            offset = self._spool.seek(0, os.SEEK_END)
            self._spool.write(data)
            self._where[rel] = (offset, len(data))
        return Entry(rel, member.size, mtime_ns)

    def payload(self, files: Sequence[SourceFile], *, local: bool = True) -> Payload:
        self._spool.flush()
        out: list[bytes | SpoolRef | ReadFailure] = []
        for sf in files:
            where = self._where[sf.path]
            if isinstance(where, ReadFailure):
                out.append(where)
            elif local:
                out.append(SpoolRef(self._spool.name, where[0], where[1]))
            else:
                self._spool.seek(where[0])
                out.append(self._spool.read(where[1]))
        return tuple(out)

    def close(self) -> None:
        self._spool.close()

    @property
    def spooled_bytes(self) -> int:
        """Bytes of keypoint members held in the spool."""
        return sum(w[1] for w in self._where.values() if isinstance(w, tuple))
