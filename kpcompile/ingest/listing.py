"""A source's listing in columnar form: not one Python object per file.

At ten million files, one Python object per file (a path string, a tuple, a
dataclass) costs about a kilobyte each, ten gigabytes in all. A
:class:`Listing` keeps the paths in one Arrow binary array and the sizes and
mtimes in two numpy ``int64`` arrays: about 90 bytes per file for a path of 60
characters. Files become Python objects again only a shard at a time
(:mod:`kpcompile.ingest.discover`).

Paths are stored as UTF-8 with ``surrogatepass``: a name the filesystem holds
as undecodable bytes (``os.fsdecode`` gives lone surrogates) survives the round
trip exactly, and the bytes sort in the same order as the Python strings (code
point order), so sorting the array sorts the paths as ``sorted`` would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kpcompile.ingest.base import Entry

Ints = npt.NDArray[np.int64]
CHUNK = 1 << 16
"""Entries buffered as Python objects before they become one Arrow chunk."""


def encode(path: str) -> bytes:
    """A path as stored in a listing (UTF-8, lone surrogates kept)."""
    return path.encode("utf-8", "surrogatepass")


def decode(raw: bytes) -> str:
    """The inverse of :func:`encode`."""
    return raw.decode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Listing:
    """Files of a source: ``paths[i]`` (encoded), ``sizes[i]`` (-1: not a file), ``mtimes[i]``."""

    paths: pa.ChunkedArray
    """``large_binary`` chunks (never concatenated: that would hold them twice)."""
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

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[Entry]:
        """The entries as objects, ``CHUNK`` at a time."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, CHUNK):
            hi = min(lo + CHUNK, stop)
            paths = self.paths.slice(lo, hi - lo).to_pylist()
            sizes, mtimes = self.sizes[lo:hi].tolist(), self.mtimes[lo:hi].tolist()
            for raw, size, mtime in zip(paths, sizes, mtimes, strict=True):
                yield Entry(decode(raw), size, mtime)

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return int(self.paths.nbytes + self.sizes.nbytes + self.mtimes.nbytes)


class ListingBuilder:
    """Collects entries (in any order) into a :class:`Listing`, a chunk at a time."""

    def __init__(self, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self._paths: list[bytes] = []
        self._sizes: list[int] = []
        self._mtimes: list[int] = []
        self._chunks: list[tuple[pa.Array, Ints, Ints]] = []

    def add(self, path: str, size: int, mtime_ns: int) -> None:
        """One entry."""
        self._paths.append(encode(path))
        self._sizes.append(size)
        self._mtimes.append(mtime_ns)
        if len(self._paths) >= self._chunk:
            self._flush()

    def add_folder(self, prefix: str, files: Iterable[tuple[str, int, int]]) -> None:
        """The ``(name, size, mtime_ns)`` of files in one folder (``prefix`` ends with ``/``)."""
        for name, size, mtime in files:
            self.add(prefix + name, size, mtime)

    def _flush(self) -> None:
        if self._paths:
            self._chunks.append(
                (
                    pa.array(self._paths, type=pa.large_binary()),
                    np.array(self._sizes, dtype=np.int64),
                    np.array(self._mtimes, dtype=np.int64),
                )
            )
        self._paths, self._sizes, self._mtimes = [], [], []

    def finish(self) -> Listing:
        """The listing of everything added."""
        return ListingBuilder.merge([self])

    @staticmethod
    def merge(builders: Iterable[ListingBuilder]) -> Listing:
        """One listing of what several builders collected (threads each fill one)."""
        chunks = []
        for b in builders:
            b._flush()
            chunks += b._chunks
            b._chunks = []
        paths = pa.chunked_array([c[0] for c in chunks], type=pa.large_binary())
        sizes = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, np.int64)
        mtimes = np.concatenate([c[2] for c in chunks]) if chunks else np.zeros(0, np.int64)
        return Listing(paths, sizes, mtimes)
