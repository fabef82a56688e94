"""A source's listing in columnar form: not one Python object per file.

At ten million files, one Python object per file (a path string, a tuple, a
dataclass) costs about a kilobyte each, ten gigabytes in all. A
:class:`Listing` keeps each *folder* once, in one Arrow binary array, and per
file only integers: which folder, which base name (an index into a short table
of names), size and mtime. That is 24 bytes per file plus the folder's path once
(a camera folder's ``key_points/`` holds several listed files). Files become
Python objects again only a shard at a time (:mod:`kpcompile.ingest.discover`).

Folder paths end with ``/`` (``""`` for the source's root) so that ``folder +
name`` is the file's path, whatever it is (``/x``, ``a//b/x``). They are stored
as UTF-8 with ``surrogatepass``: a name the filesystem holds as undecodable
bytes (``os.fsdecode`` gives lone surrogates) survives the round trip exactly,
and the bytes sort in the same order as the Python strings (code point order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kpcompile.ingest.entry import Entry

Ints = npt.NDArray[np.int64]
Int32s = npt.NDArray[np.int32]
CHUNK = 1 << 13
"""Entries handled as Python objects at once (buffered, decoded)."""


def encode(path: str) -> bytes:
    """A path as stored in a listing (UTF-8, lone surrogates kept)."""
    return path.encode("utf-8", "surrogatepass")


def decode(raw: bytes) -> str:
    """The inverse of :func:`encode`."""
    return raw.decode("utf-8", "surrogatepass")


def binary_array(values: list[bytes]) -> pa.Array:
    """A ``large_binary`` array of ``values``, built from buffers.

    Not ``pa.array``: on its first call that imports pandas when it is installed
    (0.4 s of every build's start-up).
    """
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.large_binary(), len(values), buffers)


def binary_take(column: pa.ChunkedArray, idx: npt.NDArray[Any]) -> list[bytes]:
    """``column[i]`` for each ``i`` of ``idx``, read from the buffers of a ``large_binary``
    column (``take`` would import ``pyarrow.compute``, a tenth of a small build)."""
    chunks = column.chunks
    if len(chunks) == 1:
        at = np.zeros(len(idx), dtype=np.int64)
        local = np.asarray(idx, dtype=np.int64)
    else:
        starts = np.cumsum([0] + [len(c) for c in chunks])
        at = np.searchsorted(starts, idx, side="right") - 1
        local = idx - starts[at]
    lo = np.empty(len(idx), dtype=np.int64)
    hi = np.empty(len(idx), dtype=np.int64)
    data: dict[int, memoryview | bytes] = {}
    for c in np.unique(at).tolist():  # only the chunks asked for
        chunk = chunks[c]
        bufs = chunk.buffers()
        raw = np.frombuffer(bufs[1], dtype=np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
        mine = at == c if len(chunks) > 1 else slice(None)
        j = local[mine]
        lo[mine], hi[mine] = raw[j], raw[j + 1]
        data[c] = memoryview(bufs[2]) if bufs[2] is not None else b""
    out: list[bytes] = []
    step = 1024  # bounds as Python ints a step at a time: a few KB, not 72 bytes per value
    for s in range(0, len(idx), step):
        bounds = zip(lo[s : s + step].tolist(), hi[s : s + step].tolist(), strict=True)
        if len(data) == 1:
            view = next(iter(data.values()))
            out.extend(bytes(view[a:b]) for a, b in bounds)
        else:
            chunk_of = at[s : s + step].tolist()
            out.extend(bytes(data[c][a:b]) for c, (a, b) in zip(chunk_of, bounds, strict=True))
    return out


@dataclass(frozen=True, slots=True)
class Listing:
    """Files of a source: file ``i`` is ``folders[folder[i]] + names[name[i]]``.

    ``sizes[i]`` is -1 for what is not a regular file; ``mtimes[i]`` in nanoseconds.
    """

    folders: pa.ChunkedArray
    """Encoded folder paths ending with ``/`` (``large_binary`` chunks, never
    concatenated: that would hold them twice)."""
    folder: Int32s
    name: Int32s
    names: tuple[str, ...]
    sizes: Ints
    mtimes: Ints

    def __len__(self) -> int:
        return len(self.sizes)

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Listing:
        """The listing of some entries (kept in the order given)."""
        builder = ListingBuilder()
        for e in entries:
            builder.add(e.path, e.size, e.mtime_ns)
        return builder.finish()

    def folder_paths(self, folders: npt.NDArray[Any]) -> list[str]:
        """The paths of some folders (by index)."""
        raw = binary_take(self.folders, folders)
        return [decode(r) for r in raw]

    def paths(self, idx: npt.NDArray[Any]) -> list[str]:
        """The paths of some files (by index)."""
        folders = self.folder_paths(self.folder[idx])
        names = self.names
        return [f + names[n] for f, n in zip(folders, self.name[idx].tolist(), strict=True)]

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[Entry]:
        """The entries as objects, ``CHUNK`` at a time."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, CHUNK):
            idx = np.arange(lo, min(lo + CHUNK, stop), dtype=np.int64)
            sizes, mtimes = self.sizes[idx].tolist(), self.mtimes[idx].tolist()
            for path, size, mtime in zip(self.paths(idx), sizes, mtimes, strict=True):
                yield Entry(path, size, mtime)

    def take(self, idx: npt.NDArray[Any]) -> Listing:
        """A listing of the files at ``idx`` (in that order), holding only their folders."""
        idx = np.asarray(idx, dtype=np.int64)
        used, folder = np.unique(self.folder[idx], return_inverse=True)
        names, name = np.unique(self.name[idx], return_inverse=True)
        table = tuple(self.names[n] for n in names.tolist())
        folders = binary_array(binary_take(self.folders, used)) if len(used) else binary_array([])
        return Listing(
            pa.chunked_array([folders], type=pa.large_binary()),
            folder.astype(np.int32).reshape(-1),
            name.astype(np.int32).reshape(-1),
            table,
            self.sizes[idx],
            self.mtimes[idx],
        )

    def under(self, prefix: str) -> Listing:
        """The same files, their folders' paths starting with ``prefix`` (ends with ``/``)."""
        head = encode(prefix)
        chunks = [
            binary_array([head + f for f in binary_take(pa.chunked_array([c]), np.arange(len(c)))])
            for c in self.folders.chunks
        ]
        folders = pa.chunked_array(chunks, type=pa.large_binary())
        return Listing(folders, self.folder, self.name, self.names, self.sizes, self.mtimes)

    @staticmethod
    def concat(listings: Sequence[Listing]) -> Listing:
        """One listing of several, in the order given."""
        names: dict[str, int] = {}
        chunks: list[pa.Array] = []
        folder, name = [], []
        offset = 0
        for lst in listings:
            remap = np.array(
                [names.setdefault(n, len(names)) for n in lst.names] or [0], dtype=np.int32
            )
            folder.append(lst.folder + np.int32(offset))
            name.append(remap[lst.name])
            chunks += lst.folders.chunks
            offset += len(lst.folders)

        def cat(parts: list[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        return Listing(
            pa.chunked_array(chunks, type=pa.large_binary()),
            cat(folder, np.int32),
            cat(name, np.int32),
            tuple(names),
            cat([lst.sizes for lst in listings], np.int64),
            cat([lst.mtimes for lst in listings], np.int64),
        )

    def top_level(self) -> tuple[list[str], npt.NDArray[np.int32]]:
        """The top-level prefixes of the files, sorted (``""``: files lying in the
        root), and per file the index of its prefix."""
        n = len(self.folders)
        heads: list[str] = []
        for lo in range(0, n, CHUNK):
            for f in self.folder_paths(np.arange(lo, min(lo + CHUNK, n))):
                heads.append(f[: f.find("/")] if f else "")
        unique = sorted(set(heads), key=encode)
        at = {h: i for i, h in enumerate(unique)}
        of_folder = np.array([at[h] for h in heads] or [0], dtype=np.int32)
        return unique, of_folder[self.folder] if n else np.zeros(0, dtype=np.int32)

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        arrays = (self.folder, self.name, self.sizes, self.mtimes)
        return int(self.folders.nbytes + sum(a.nbytes for a in arrays))


class ListingBuilder:
    """Collects entries (in any order) into a :class:`Listing`, a chunk at a time.

    A new folder starts whenever an entry's folder differs from the previous
    entry's: a folder walk adds each folder's files together, and sources listing
    keys in sorted order (object stores, most archives) do too.
    """

    def __init__(self, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self._names: dict[str, int] = {}
        self._folders: list[bytes] = []
        self._last: str | None = None
        self._nfolders = 0
        self._rows: list[tuple[int, int, int, int]] = []
        self._chunks: list[pa.Array] = []
        self._arrays: list[tuple[Int32s, Int32s, Ints, Ints]] = []

    def add(self, path: str, size: int, mtime_ns: int) -> None:
        """One entry."""
        cut = path.rfind("/") + 1
        self._add(path[:cut], path[cut:], size, mtime_ns)

    def add_folder(self, prefix: str, files: Iterable[tuple[str, int, int]]) -> None:
        """The ``(name, size, mtime_ns)`` of files in one folder (``prefix`` ends with ``/``)."""
        for name, size, mtime in files:
            self._add(prefix, name, size, mtime)

    def _add(self, folder: str, name: str, size: int, mtime: int) -> None:
        if folder != self._last:
            self._folders.append(encode(folder))
            self._last = folder
            self._nfolders += 1
        n = self._names.setdefault(name, len(self._names))
        self._rows.append((self._nfolders - 1, n, size, mtime))
        if len(self._rows) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if self._folders:
            self._chunks.append(binary_array(self._folders))
            self._folders = []
        if self._rows:
            cols = list(zip(*self._rows, strict=True))
            self._arrays.append(
                (
                    np.array(cols[0], dtype=np.int32),
                    np.array(cols[1], dtype=np.int32),
                    np.array(cols[2], dtype=np.int64),
                    np.array(cols[3], dtype=np.int64),
                )
            )
            self._rows = []

    def finish(self) -> Listing:
        """The listing of everything added."""
        return ListingBuilder.merge([self])

    @staticmethod
    def merge(builders: Iterable[ListingBuilder]) -> Listing:
        """One listing of what several builders collected (threads each fill one)."""
        names: dict[str, int] = {}
        chunks: list[pa.Array] = []
        parts: list[list[npt.NDArray[Any]]] = []
        offset = 0
        for b in builders:
            b._flush()
            remap = np.array(
                [names.setdefault(n, len(names)) for n in b._names] or [0], dtype=np.int32
            )
            for f, n, s, m in b._arrays:
                f += offset  # our own arrays: shifted in place, not copied
                parts.append([f, remap[n], s, m])
            chunks += b._chunks
            offset += b._nfolders
            b._chunks, b._arrays = [], []

        def cat(k: int, dtype: type) -> npt.NDArray[Any]:
            # one column at a time, each part released once copied: the listing is
            # held once and a column twice, never the whole listing twice
            out = np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, dtype)
            for p in parts:
                p[k] = np.zeros(0, dtype)
            return out.astype(dtype, copy=False)

        return Listing(
            pa.chunked_array(chunks, type=pa.large_binary()),
            cat(0, np.int32),
            cat(1, np.int32),
            tuple(names),
            cat(2, np.int64),
            cat(3, np.int64),
        )
