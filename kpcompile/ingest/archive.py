"""Datasets in ``.tar``, ``.tar.gz``, ``.tgz`` and ``.zip`` archives, local or under a URL.

Nothing is extracted. Member paths inside the archive play the part of paths
relative to SOURCE, so a build from ``dataset.tar.gz`` equals a build from the
folder the archive extracts into (``tar -xf dataset.tar.gz -C folder``): same
datapoints, same rows, same Parquet bytes (member mtimes are the extracted files'
mtimes).

* ``.zip`` has a central directory: it is listed without reading any member, and
  workers open the archive themselves and read the members of their shard.
* ``.tar`` and ``.tar.gz`` are read as a stream, once, in archive order (a gzip
  stream cannot seek). Shards must hold files in sorted order and archive order is
  whatever the archiver chose, so the wanted members' bytes are appended to a
  temporary *spool file* while streaming (other members, such as images, are
  skipped without being stored); the spool takes as much temporary disk space as
  those members and is deleted after the build. Local workers read their shard's
  bytes from the spool by offset (:class:`SpoolSource`); workers that may run on
  other machines (Dask) receive the bytes inside their task (:class:`MemorySource`).

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
import threading
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING

from kpcompile.errors import FormatError, SourceError
from kpcompile.ingest.base import (
    READ_AHEAD,
    READ_TIMEOUT,
    Entry,
    Source,
    too_large,
    unreadable,
)

if TYPE_CHECKING:
    from kpcompile.ingest.readahead import ReadAhead

SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz", ".zip")
_LINK_REASON = "a link inside an archive; links are not followed, extract the archive instead"


def open_archive(location: str, names: frozenset[str], max_bytes: int, *, remote: bool) -> Source:
    """List (``.zip``) or stream (``.tar``, ``.tar.gz``, ``.tgz``) an archive.

    ``names``: base names of the members a build may read; a tar stream keeps only
    those, and only up to ``max_bytes`` each (larger ones are ``too_large``).

    Raises:
        SourceError: The archive is missing, corrupt or truncated.
    """
    if location.endswith(".zip"):
        return ZipSource(location, remote=remote)
    return TarSource(location, names, max_bytes, remote=remote)


def _open_binary(location: str, remote: bool) -> IO[bytes]:
    if remote:
        import fsspec

        fh: IO[bytes] = fsspec.open(location, "rb").open()
        return fh
    return open(location, "rb")


def _root_name(location: str) -> str:
    name = PurePosixPath(location.rstrip("/")).name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _canonical(location: str, remote: bool) -> str:
    return location if remote else os.path.realpath(location)


def member_path(name: str) -> str:
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


class ZipSource(Source):
    """A ``.zip`` archive; picklable, each process opens it once."""

    kind = "archive"

    def __init__(self, location: str, *, remote: bool) -> None:
        super().__init__(location, _root_name(location), _canonical(location, remote))
        self._remote = remote
        try:
            self._members()
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise _fail(location, exc) from None

    def _open(self) -> _OpenZip:
        stamp = (0, 0) if self._remote else _stamp(self.location)
        # per process: a forked worker must not share the parent's file offset
        return _zip(self.location, self._remote, stamp, os.getpid())

    def _members(self) -> dict[str, zipfile.ZipInfo]:
        return self._open().members

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        for rel, info in self._members().items():
            if PurePosixPath(rel).name not in names:
                continue
            size = -1 if info.is_dir() else info.file_size
            mtime = calendar.timegm((*info.date_time, 0, 0, 0)) * 1_000_000_000
            yield Entry(rel, size, mtime)

    def read(self, rel: str, max_bytes: int) -> bytes:
        try:
            opened = self._open()
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise unreadable(rel, f"cannot open archive: {exc}") from None
        info = opened.members.get(rel)
        if info is None:
            raise unreadable(rel, "no such member in the archive")
        if info.is_dir():
            raise unreadable(rel, "is a folder, not a file")
        if info.file_size > max_bytes:
            raise too_large(rel, info.file_size, max_bytes)
        try:
            return opened.read(info)
        except (OSError, zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError) as exc:
            raise unreadable(rel, str(exc)) from None


def _stamp(location: str) -> tuple[int, int]:
    """Identifies a version of a local archive, so a rewritten one is not served from cache."""
    st = os.stat(location)
    return (st.st_mtime_ns, st.st_size)


class _OpenZip:
    """An open archive and its members by path, shared by a process's reading threads.

    ``ZipFile`` serialises its own reads of the archive, but counts the members open
    on it without a lock: opening and closing a member happen under ``lock`` here.
    """

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.lock = threading.Lock()
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            self.members[member_path(info.filename)] = info  # a later duplicate wins

    def read(self, info: zipfile.ZipInfo) -> bytes:
        with self.lock:
            fh = self.zf.open(info)
        try:
            return fh.read()
        finally:
            with self.lock:
                fh.close()


@functools.lru_cache(maxsize=4)
def _zip(location: str, remote: bool, _stamp: tuple[int, int], _pid: int) -> _OpenZip:
    """An open archive, kept open for a worker's next shards."""
    return _OpenZip(zipfile.ZipFile(_open_binary(location, remote) if remote else location))


# --- tar: streamed once, wanted members spooled ------------------------------------------

Where = tuple[int, int] | FormatError
"""Where a member's bytes lie in the spool (offset, length), or why they cannot be read."""


def _mtime_ns(mtime: float) -> int:
    """A member's mtime in ns, as extraction sets it (``os.utime`` floors fractions)."""
    if isinstance(mtime, int):
        return mtime * 1_000_000_000
    frac, whole = math.modf(mtime)
    return int(whole) * 1_000_000_000 + math.floor(frac * 1e9)


class TarSource(Source):
    """A ``.tar``/``.tar.gz`` archive, streamed once when opened."""

    kind = "archive"

    def __init__(
        self, location: str, names: frozenset[str], max_bytes: int, *, remote: bool
    ) -> None:
        super().__init__(location, _root_name(location), _canonical(location, remote))
        self._max_bytes = max_bytes
        self._spool: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by close()
            prefix="kpcompile-spool-", suffix=".bin"
        )
        self._where: dict[str, Where] = {}
        self._entries: dict[str, Entry] = {}
        try:
            self._stream(location, names, remote)
        except BaseException:
            self.close()
            raise

    def _stream(self, location: str, names: frozenset[str], remote: bool) -> None:
        try:
            with _open_binary(location, remote) as fh, tarfile.open(fileobj=fh, mode="r|*") as tf:
                for member in tf:
                    rel = member_path(member.name)
                    if PurePosixPath(rel).name in names:
                        self._entries[rel] = self._keep(tf, member, rel)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise _fail(location, exc) from None
        except Exception as exc:  # zlib.error and client libraries' errors
            raise _fail(location, exc) from None
        self._spool.flush()

    def _keep(self, tf: tarfile.TarFile, member: tarfile.TarInfo, rel: str) -> Entry:
        mtime_ns = _mtime_ns(member.mtime)
        if member.isdir():
            self._where[rel] = unreadable(rel, "is a folder, not a file")
            return Entry(rel, -1, mtime_ns)
        if not member.isreg():
            self._where[rel] = unreadable(rel, _LINK_REASON)
            return Entry(rel, -1, mtime_ns)
        if member.size > self._max_bytes:
            self._where[rel] = too_large(rel, member.size, self._max_bytes)
            return Entry(rel, member.size, mtime_ns)
        stream = tf.extractfile(member)
        data = stream.read() if stream is not None else b""
        offset = self._spool.seek(0, os.SEEK_END)
        self._spool.write(data)
        self._where[rel] = (offset, len(data))
        return Entry(rel, member.size, mtime_ns)

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        return [e for rel, e in self._entries.items() if PurePosixPath(rel).name in names]

    def read(self, rel: str, max_bytes: int) -> bytes:
        return self.portable([rel], local=True).read(rel, max_bytes)

    def portable(self, rels: Sequence[str], *, local: bool) -> Source:
        where = {rel: self._where.get(rel, unreadable(rel, "not in the archive")) for rel in rels}
        if local:
            return SpoolSource(self.location, self._spool.name, where)
        data: dict[str, bytes | FormatError] = {}
        for rel, w in where.items():
            if isinstance(w, FormatError):
                data[rel] = w
            else:
                self._spool.seek(w[0])
                data[rel] = self._spool.read(w[1])
        return MemorySource(self.location, data)

    def close(self) -> None:
        self._spool.close()

    @property
    def spooled_bytes(self) -> int:
        """Bytes of members held in the spool."""
        return sum(w[1] for w in self._where.values() if isinstance(w, tuple))


class SpoolSource(Source):
    """Some members of a streamed tar archive, read from its spool file on this machine."""

    kind = "archive"

    def __init__(self, location: str, spool: str, where: dict[str, Where]) -> None:
        super().__init__(location, _root_name(location))
        self._spool, self._where = spool, where

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        return []

    def read(self, rel: str, max_bytes: int) -> bytes:
        w = self._where.get(rel) or unreadable(rel, "not in the archive")
        if isinstance(w, FormatError):
            raise w
        if w[1] > max_bytes:
            raise too_large(rel, w[1], max_bytes)
        with open(self._spool, "rb") as fh:
            fh.seek(w[0])
            return fh.read(w[1])


class MemorySource(Source):
    """Some files' bytes carried along (to workers on other machines)."""

    kind = "archive"

    def __init__(self, location: str, data: dict[str, bytes | FormatError]) -> None:
        super().__init__(location, _root_name(location))
        self._data = data

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        return []

    def read(self, rel: str, max_bytes: int) -> bytes:
        item = self._data.get(rel)
        if item is None:
            raise unreadable(rel, "not in the archive")
        if isinstance(item, FormatError):
            raise item
        if len(item) > max_bytes:
            raise too_large(rel, len(item), max_bytes)
        return item

    def read_many(
        self,
        rels: Sequence[str],
        max_bytes: int,
        *,
        window: int = READ_AHEAD,
        timeout: float = READ_TIMEOUT,
        sizes: Sequence[int] | None = None,
    ) -> ReadAhead:
        """The bytes are here already: no threads, nothing to wait for."""
        from kpcompile.ingest.readahead import inline_reads

        return inline_reads(lambda rel: self.read(rel, max_bytes), rels, max_bytes)
