"""A dataset in a local folder (or a mounted network filesystem).

Listing runs in C where the extension :mod:`kpcompile.ingest._native` is built (it is
by ``pip install``): threads each walk a share of the tree with the GIL released
(``readdir``'s entry types, a ``stat`` only for the named files and for links), so
a warm tree lists at the speed of the system calls, and up to :data:`LIST_THREADS`
of them keep many requests in flight on a cold disk or network filesystem. Where the extension
is missing (or ``KPCOMPILE_PURE_PYTHON=1``), folders are walked in Python by one
thread: more threads only pass the GIL back and forth between every ``stat``
(measured: 16 threads 3.7x slower than one on a warm 20,000-file tree).

Either walk finds exactly the files the serial walk (:func:`_walk`) finds.
Where the serial walk's *order* decides the outcome, the serial walk decides:
a symbolic link to a folder that is not one of its own ancestors (a loop, which
both walks skip) names a folder that may also be reached by another path, and
the path listed first wins; a folder that cannot be listed is reported as the
serial walk reports the first one it meets. In those cases the folder is listed
again one folder at a time.
"""

from __future__ import annotations

import importlib
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry, Source, too_large, unreadable
from kpcompile.ingest.listing import Listing, ListingBuilder, encode

LIST_THREADS = 16
"""Most threads of a native walk (each walks a share of the tree without the GIL)."""
NATIVE_DEPTH = 8
"""Folder levels one native call lists before it hands the rest back as a share."""


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

    def listing(self, names: frozenset[str], threads: int | None = None) -> Listing:
        root = str(Path(self.root))
        try:
            if native() is not None:
                return walk_native(root, names, LIST_THREADS if threads is None else threads)
            return walk_parallel(root, names, 1 if threads is None else threads)
        except _Serial:
            return Listing.of(self.list_serial(names))

    def prefixes(self, names: frozenset[str]) -> tuple[str, ...]:
        """The root's folders (links to folders too), and ``""`` if named files lie in it."""
        found: set[str] = set()
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    if entry.name in names:
                        found.add("")
                    elif _is_dir(entry):
                        found.add(entry.name)
        except OSError as exc:
            msg = f"cannot list folder {str(self.root)!r}: {exc.strerror or exc}"
            raise SourceError(msg) from None
        return tuple(sorted(found, key=encode))

    def prefix_listing(
        self, prefixes: Sequence[str], names: frozenset[str], threads: int | None = None
    ) -> Listing:
        """Each prefix walked as :meth:`listing` walks the whole tree, its root's
        (device, inode) counted as an ancestor (a link back to it is a loop).

        Where the serial walk's order decides (see the module), the prefix's files are
        those the serial walk of the whole tree finds under it."""
        root = str(Path(self.root))
        parts = []
        if "" in prefixes:
            parts.append(Listing.of(e for e in self.list_serial_top(names)))
        heads = [p + "/" for p in prefixes if p]
        if heads:  # one walk for the batch: a walk's threads cost more than a small prefix
            try:
                top = os.stat(root)
                starts = [(head, (top.st_dev, top.st_ino)) for head in heads]
                if native() is not None:
                    n = LIST_THREADS if threads is None else threads
                    parts.append(walk_native(root, names, n, starts=starts))
                else:
                    parts.append(walk_parallel(root, names, threads or 1, starts=starts))
            except (_Serial, OSError):
                wanted = tuple(heads)
                parts.append(
                    Listing.of(e for e in self.list_serial(names) if e.path.startswith(wanted))
                )
        return parts[0] if len(parts) == 1 else Listing.concat(parts)

    def list_serial_top(self, names: frozenset[str]) -> Iterator[Entry]:
        """The named files lying in the root itself, sorted."""
        try:
            with os.scandir(self.root) as it:
                found = sorted(_stat_entry(e) for e in it if e.name in names)
        except OSError as exc:
            msg = f"cannot list folder {str(self.root)!r}: {exc.strerror or exc}"
            raise SourceError(msg) from None
        for name, size, mtime in found:
            yield Entry(name, size, mtime)

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

    def read_cached(self, rel: str, max_bytes: int) -> bytes | None:
        full = os.path.join(self.root, rel)
        c = native()
        if c is not None:  # the same, without zeroing and copying the bytes once more
            data: bytes | None = c.read_cached(os.fsencode(full), max_bytes)
            return data
        return read_local_cached(full, max_bytes)


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

    def __init__(
        self, root: str, names: frozenset[str], starts: list[tuple[str, Key]] | None = None
    ) -> None:
        self.root, self.names = root, names
        self.todo: list[tuple[str, tuple[Key, ...]]] = [("", ())]
        if starts is not None:
            self.todo = [(p, (key,)) for p, key in starts]
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


def walk_parallel(
    root: str,
    names: frozenset[str],
    threads: int = LIST_THREADS,
    *,
    starts: list[tuple[str, Key]] | None = None,
) -> Listing:
    """Every named file under ``root``, listed by ``threads`` threads.

    ``starts``: only these folders ``root/<prefix>`` (each ``(prefix ending with "/",
    (device, inode) of root)``), named relative to ``root``.

    Raises :class:`_Serial` where the serial walk's order decides (see the module's
    docstring).
    """
    state = _Walk(root, names, starts)
    builders = [ListingBuilder(chunk=4096) for _ in range(max(1, threads))]
    with ThreadPoolExecutor(len(builders), thread_name_prefix="kpcompile-list") as pool:
        futures = [pool.submit(state.work, b) for b in builders]
    for fut in futures:
        fut.result()  # _Serial or another error of a thread
    return ListingBuilder.merge(builders)


def native() -> Any:
    """The C walk module, or ``None`` (not built, or ``KPCOMPILE_PURE_PYTHON=1``)."""
    if os.environ.get("KPCOMPILE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("kpcompile.ingest._native")
    except ImportError:
        return None


def walk_native(
    root: str,
    names: frozenset[str],
    threads: int = LIST_THREADS,
    *,
    starts: list[tuple[str, Key]] | None = None,
) -> Listing:
    """Every named file under ``root``, walked in C by up to ``threads`` threads.

    The root is listed alone first; its folders are shared out, a subtree of up to
    :data:`NATIVE_DEPTH` levels per call (one level while there are fewer shares
    than threads, so that a tree with one top folder still splits). Two threads
    start; more (up to ``threads``) join while the walk waits on the device rather
    than on the CPU, as a cold disk or a network filesystem makes it (warm, two
    threads are the fastest on two cores; cold, sixteen are 3x faster than two).

    Raises :class:`_Serial` where the serial walk's order decides: a folder that
    cannot be listed, or one reached by two paths (seen as a repeated (dev, ino)).
    ``starts``: as :func:`walk_parallel`'s.
    """
    walk = native()
    if walk is None:
        msg = "the native walk is not built"
        raise RuntimeError(msg)
    state = _NativeWalk(walk, os.fsencode(root), tuple(sorted(os.fsencode(n) for n in names)))
    if starts is not None:
        state.todo = deque(
            (os.fsencode(p), np.array(key, dtype=np.uint64).tobytes()) for p, key in starts
        )
    if threads <= 1:
        state.work()
    else:
        state.supervise(threads)
    if state.errors:
        raise state.errors[0]
    if state.failed:
        raise _Serial
    seen = np.frombuffer(b"".join(state.keys), dtype=np.uint64).reshape(-1, 2)
    if len(np.unique(seen, axis=0)) != len(seen):
        raise _Serial  # a folder reached by two paths: which one names it is the order's
    return ListingBuilder.merge(state.builders)


START_THREADS = 2
"""Threads a native walk starts with (see :func:`walk_native`)."""
IO_BOUND = 0.5
"""CPU used per walking thread below which a native walk adds threads."""


class _NativeWalk:
    """The shared state of a native walk: folders to list, who lists, what was found."""

    def __init__(self, walk: Any, base: bytes, wanted: tuple[bytes, ...]) -> None:
        self.walk, self.base, self.wanted = walk, base, wanted
        self.todo: deque[tuple[bytes, bytes]] = deque([(b"", b"")])
        self.cond = threading.Condition()
        self.busy = 0
        self.threads = 1
        self.failed = False
        self.errors: list[BaseException] = []
        self.builders: list[ListingBuilder] = []
        self.keys: list[bytes] = []
        self.decoded: dict[bytes, str] = {}

    def finished(self) -> bool:
        return self.failed or (not self.todo and not self.busy)

    def supervise(self, most: int) -> None:
        """Walk in threads, adding threads while the walk waits on I/O."""
        pool: list[threading.Thread] = []

        def add(n: int) -> None:
            for _ in range(n):
                t = threading.Thread(target=self.work, name="kpcompile-list", daemon=True)
                t.start()
                pool.append(t)
            with self.cond:
                self.threads = len(pool)

        add(min(START_THREADS, most))
        cpu, wall = time.process_time(), time.monotonic()
        while True:
            with self.cond:
                if self.cond.wait_for(self.finished, timeout=0.02):
                    break
            now_cpu, now = time.process_time(), time.monotonic()
            used = (now_cpu - cpu) / max(now - wall, 1e-6)
            cpu, wall = now_cpu, now
            if len(pool) < most and used < IO_BOUND * len(pool):
                add(min(len(pool), most - len(pool)))
        for t in pool:
            t.join()

    def work(self) -> None:
        """One thread's share: list subtrees until none is left."""
        builder = ListingBuilder(chunk=4096)
        with self.cond:
            self.builders.append(builder)
        while True:
            with self.cond:
                while not self.todo and self.busy and not self.failed:
                    self.cond.wait()
                if self.failed or not self.todo:
                    self.cond.notify_all()
                    return
                prefix, chain = self.todo.popleft()
                depth = NATIVE_DEPTH if len(self.todo) + self.busy >= self.threads else 1
                self.busy += 1
            got = None
            try:
                got = self.walk.walk(self.base, prefix, chain, self.wanted, depth)
                if got is not None:
                    _collect(builder, got[0], got[1], self.decoded)
            except BaseException as exc:  # handed to the caller (memory, a bug)
                got = None
                self.errors.append(exc)
            finally:
                with self.cond:
                    self.busy -= 1
                    if got is None:
                        self.failed = True
                    else:
                        self.todo.extend(got[2])
                        self.keys.append(got[3])
                    self.cond.notify_all()


def _collect(
    builder: ListingBuilder,
    folders: list[bytes],
    files: list[tuple[int, bytes, int, int]],
    decoded: dict[bytes, str],
) -> None:
    """Add one native call's files (paths as bytes) to a builder, as ``os.fsdecode`` names them."""
    last = -1
    prefix = ""
    for folder, raw, size, mtime in files:
        if folder != last:
            prefix, last = os.fsdecode(folders[folder]), folder
        name = decoded.get(raw)
        if name is None:
            name = decoded.setdefault(raw, os.fsdecode(raw))
        builder.add_folder(prefix, ((name, size, mtime),))


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


_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def read_local_cached(full: str, max_bytes: int) -> bytes | None:
    """A regular file's bytes when they are in the page cache, else ``None``.

    ``preadv2(RWF_NOWAIT)`` (Linux) returns what is in memory without waiting on
    the device; anything else (nothing cached, not a regular file, an error, a
    filesystem without ``RWF_NOWAIT``) is ``None``, and :func:`read_local` in a
    read-ahead thread decides. When only the start is returned (the kernel stops a
    ``RWF_NOWAIT`` read at a page marked for read-ahead: seen on 9% of the files of
    a warm tree) the rest is read here: the file is on a device that answers.
    """
    if _NOWAIT is None:
        return None
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        buf = bytearray(st.st_size + 1)  # one more: a file that grew is not taken here
        view = memoryview(buf)
        got = os.preadv(fd, [view], 0, _NOWAIT)
        while 0 < got < st.st_size and (more := os.preadv(fd, [view[got:]], got)) > 0:
            got += more
        return bytes(view[:got]) if got == st.st_size else None
    except OSError:
        return None
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
