"""A dataset in a local folder (or a mounted network filesystem).

Listing is parallel: :data:`LIST_THREADS` threads list folders (``os.scandir``) and
``stat`` the named files at once, which is what a cold disk or a network
filesystem needs (each call waits on the device; the GIL is released meanwhile).
The coordinating thread only collects their results into a columnar
:class:`~kpcompile.ingest.listing.Listing`.

The parallel walk finds exactly the files the serial walk (:func:`_walk`) finds.
Where the serial walk's *order* decides the outcome, the serial walk decides:
a symbolic link to a folder that is not one of its own ancestors (a loop, which
both walks skip) names a folder that may also be reached by another path, and
the path listed first wins; a folder that cannot be listed is reported as the
serial walk reports the first one it meets. In those cases the folder is listed
again one folder at a time.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry, Source, too_large, unreadable
from kpcompile.ingest.listing import Listing, ListingBuilder

LIST_THREADS = 16
"""Folders listed at once (threads); 16 is where a cold 20,000-file tree stops gaining."""


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
        return self.listing(names).entries()

    def listing(self, names: frozenset[str], threads: int = LIST_THREADS) -> Listing:
        try:
            return walk_parallel(str(Path(self.root)), names, threads)
        except _Serial:
            return Listing.of(self.list_serial(names))

    def list_serial(self, names: frozenset[str]) -> Iterator[Entry]:
        """The files one folder at a time: the reference the parallel walk must equal."""
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


class _Serial(Exception):
    """The parallel walk met a case where the serial walk's order decides."""


Key = tuple[int, int]
Files = list[tuple[str, int, int]]


class _Walk:
    """The shared state of a parallel walk: folders to list, and who is listing."""

    def __init__(self, root: str, names: frozenset[str]) -> None:
        self.root, self.names = root, names
        self.todo: list[tuple[str, tuple[Key, ...]]] = [("", ())]
        self.busy = 0
        self.failed = False
        self.cond = threading.Condition()

    def take(self) -> tuple[str, tuple[Key, ...]] | None:
        """A folder to list, or ``None`` when every folder has been listed."""
        with self.cond:
            while not self.todo and self.busy and not self.failed:
                self.cond.wait()
            if self.failed or not self.todo:
                self.cond.notify_all()
                return None
            self.busy += 1
            return self.todo.pop()

    def done(self, found: list[tuple[str, tuple[Key, ...]]] | None) -> None:
        """A folder was listed (``found``: the folders under it), or failed (``None``)."""
        with self.cond:
            self.busy -= 1
            if found is None:
                self.failed = True
            else:
                self.todo.extend(found)
            self.cond.notify_all()

    def work(self, builder: ListingBuilder) -> None:
        """One thread's share: list folders until none is left."""
        while (item := self.take()) is not None:
            prefix, above = item
            try:
                listed = _list_one(self.root, prefix, above, self.names)
            except BaseException:
                self.done(None)
                raise
            if listed is None:
                self.done([])
                continue
            files, subdirs, chain = listed
            if files:
                builder.add_folder(prefix, files)
            self.done([(prefix + name + "/", chain) for name in subdirs])


def walk_parallel(root: str, names: frozenset[str], threads: int = LIST_THREADS) -> Listing:
    """Every named file under ``root``, listed by ``threads`` threads.

    Raises :class:`_Serial` where the serial walk's order decides (see the module's
    docstring).
    """
    state = _Walk(root, names)
    builders = [ListingBuilder(chunk=4096) for _ in range(max(1, threads))]
    with ThreadPoolExecutor(len(builders), thread_name_prefix="kpcompile-list") as pool:
        futures = [pool.submit(state.work, b) for b in builders]
    for fut in futures:
        fut.result()  # _Serial or another error of a thread
    return ListingBuilder.merge(builders)


def _list_one(
    root: str, prefix: str, above: tuple[Key, ...], names: frozenset[str]
) -> tuple[Files, list[str], tuple[Key, ...]] | None:
    """List one folder: its named files with their stat, and the folders to descend into."""
    folder = os.path.join(root, prefix[:-1]) if prefix else root
    try:
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        if key in above:
            return None  # a link (or a mount) back to a folder above: skipped, as serially
        files: Files = []
        subdirs: list[str] = []
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name in names:
                    files.append(_stat_entry(entry))
                elif _is_dir(entry):
                    if entry.is_symlink() and _links_above(entry.path, (*above, key)):
                        continue  # a loop: the serial walk skips it too
                    subdirs.append(entry.name)
    except OSError:
        raise _Serial from None
    return files, subdirs, (*above, key)


def _stat_entry(entry: os.DirEntry[str]) -> tuple[str, int, int]:
    try:
        st = entry.stat(follow_symlinks=True)
    except OSError:
        return entry.name, -1, 0
    return entry.name, st.st_size if stat.S_ISREG(st.st_mode) else -1, st.st_mtime_ns


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _links_above(path: str, chain: tuple[Key, ...]) -> bool:
    """Whether a link names its own folder or one above it (a loop).

    Raises :class:`_Serial` for a link to any other folder: that folder may be
    reached by another path too, and which path names it depends on the order.
    """
    try:
        st = os.stat(path)
    except OSError:
        raise _Serial from None
    if (st.st_dev, st.st_ino) in chain:
        return True
    raise _Serial


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
