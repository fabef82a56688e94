"""A dataset in a local folder (or a mounted network filesystem)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry, Source, too_large, unreadable


class FolderSource(Source):
    """Files under a local folder; symbolic links are followed, loops are not."""

    kind = "folder"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        base = Path(path)
        if not base.exists():
            msg = f"source {os.fspath(path)!r} does not exist"
            raise SourceError(msg)
        if not base.is_dir():
            msg = f"source {os.fspath(path)!r} is not a folder"
            raise SourceError(msg)
        super().__init__(os.path.abspath(path), base.resolve().name, os.path.realpath(path))
        self.root = os.fspath(path)

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        for rel, st in _walk(Path(self.root), names):
            if st is None:
                yield Entry(rel, -1, 0)
            else:
                yield Entry(rel, st.st_size if stat.S_ISREG(st.st_mode) else -1, st.st_mtime_ns)

    def read(self, rel: str, max_bytes: int) -> bytes:
        try:
            return read_local(os.path.join(self.root, rel), rel, max_bytes)
        except IsADirectoryError:
            raise unreadable(rel, "is a folder, not a file") from None
        except OSError as exc:
            raise unreadable(rel, exc.strerror or str(exc)) from None


def _walk(base: Path, names: frozenset[str]) -> list[tuple[str, os.stat_result | None]]:
    """Return (relative path, stat) of the named files; follows symlinks, not loops."""
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


def read_local(full: str, rel: str, max_bytes: int) -> bytes:
    """Read a local file; ``OSError`` on failure, :class:`FormatError` when too large."""
    # O_NONBLOCK: opening a FIFO named like a keypoint file must not wait for a writer.
    fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(full)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            raise OSError(f"not a regular file but {kind}")
        if st.st_size > max_bytes:
            raise too_large(rel, st.st_size, max_bytes)
        data = os.read(fd, st.st_size + 1)
        if len(data) != st.st_size:  # the file changed while we read it, or a short read
            data = _read_rest(fd, data, rel, max_bytes)
        return data
    finally:
        os.close(fd)


def _read_rest(fd: int, first: bytes, rel: str, max_bytes: int) -> bytes:
    parts, total = [first], len(first)
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise too_large(rel, None, max_bytes)
    return b"".join(parts)
