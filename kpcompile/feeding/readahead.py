"""Read-ahead for row groups of Parquet files on object storage.

A reader that decodes row group k, then asks for row group k+1, waits one round
trip per column chunk on a remote store. Here the readers say beforehand which
row groups they will read (:meth:`ReadAhead.plan`), and the bytes of those row
groups' column chunks (their ranges come from the Parquet footer) are fetched in
the background, in that order: at most ``max_requests`` requests at once and
``max_bytes`` fetched or being fetched but not yet read (at least one row group,
however large). pyarrow then decodes a row group from the fetched bytes through
:class:`HeldFile`, so the result is the one a plain read of the file gives.

A row group read that is not planned, or not fetched in time, is read from the
store directly, as before.

On a local store the bytes are a page-cache copy away and the cost is decoding:
:class:`DecodeAhead` decodes the planned row groups on background threads, two
ahead of the reader (pyarrow releases the GIL while it decodes), so decoding
overlaps what the reader does with the previous one.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import pyarrow.parquet as pq

MAX_BYTES = 64 << 20
"""Bytes fetched ahead and not yet read, at most (one row group always goes)."""
MAX_REQUESTS = 4
"""Ranges being fetched at once."""
GAP = 1 << 20
"""Column chunks closer than this are fetched as one range."""

Span = tuple[int, int]
Held = list[tuple[int, bytes]]
Key = tuple[str, int, tuple[str, ...]]
"""A row group read: the file (relative path), the row group, the columns."""
T = TypeVar("T")
DEPTH = 2
"""Row groups :class:`DecodeAhead` decodes ahead of the reader, at most."""


def spans(meta: pq.FileMetaData, index: int, columns: Sequence[str]) -> list[Span]:
    """Byte ranges (start, stop) of row group ``index``'s chunks of ``columns``, merged
    where they are less than :data:`GAP` apart."""
    group = meta.row_group(index)
    want = set(columns)
    ranges = []
    for c in range(group.num_columns):
        col = group.column(c)
        if col.path_in_schema not in want:
            continue
        start = col.data_page_offset
        if col.has_dictionary_page and col.dictionary_page_offset:
            start = min(start, col.dictionary_page_offset)
        ranges.append((start, start + col.total_compressed_size))
    merged: list[Span] = []
    for start, stop in sorted(ranges):
        if merged and start - merged[-1][1] < GAP:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


class HeldFile(io.RawIOBase):
    """A remote file that answers reads within held byte ranges from memory.

    Other reads (the footer, a row group that was not fetched ahead) go to ``raw``.
    One reader at a time, as for any file object pyarrow reads.
    """

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._size = int(raw.size)
        self._pos = 0
        self.held: Held = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        pos = self._pos
        n = self._size - pos if size is None or size < 0 else min(size, self._size - pos)
        n = max(n, 0)
        for start, data in self.held:
            if start <= pos and pos + n <= start + len(data):
                self._pos += n
                return data[pos - start : pos - start + n]
        self._raw.seek(pos)
        out: bytes = self._raw.read(n)
        self._pos += len(out)
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


class ReadAhead:
    """Fetches the byte ranges of planned row groups in the background, in plan order.

    ``fetch(rel, spans)`` returns the bytes of ``spans`` of file ``rel`` (called on
    pool threads).
    Thread-safe: several threads may :meth:`take` at once.
    """

    def __init__(
        self,
        fetch: Callable[[str, Sequence[Span]], list[bytes]],
        *,
        max_bytes: int | None = None,
        max_requests: int | None = None,
    ) -> None:
        self._fetch = fetch
        self._max_bytes = MAX_BYTES if max_bytes is None else max_bytes
        threads = MAX_REQUESTS if max_requests is None else max_requests
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kpcompile-readahead")
        self._lock = threading.Lock()
        self._planned: OrderedDict[Key, list[Span]] = OrderedDict()
        self._started: dict[Key, tuple[int, Future[Held]]] = {}
        self._bytes = 0

    def plan(self, items: Sequence[tuple[Key, list[Span]]]) -> None:
        """Read these next, in this order (replaces the previous plan)."""
        with self._lock:
            for _, future in self._started.values():
                future.cancel()
            self._started.clear()
            self._bytes = 0
            self._planned = OrderedDict(items)
            self._start()

    def take(self, key: Key) -> Held | None:
        """The fetched ranges of ``key`` as (start, bytes), waiting for them if they are
        on their way; ``None`` if they are not (read the file directly)."""
        with self._lock:
            found = self._started.pop(key, None)
            if found is None:
                self._planned.pop(key, None)
                return None
        size, future = found
        try:
            return future.result()
        finally:
            with self._lock:
                self._bytes -= size
                self._start()

    def close(self) -> None:
        """Drop the plan; stop fetching."""
        self.plan([])
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self) -> None:
        """Start fetching planned row groups while the byte budget allows (lock held)."""
        while self._planned:
            key, ranges = next(iter(self._planned.items()))
            size = sum(stop - start for start, stop in ranges)
            if self._started and self._bytes + size > self._max_bytes:
                return
            del self._planned[key]
            self._started[key] = (size, self._pool.submit(self._get, key, ranges))
            self._bytes += size

    def _get(self, key: Key, ranges: list[Span]) -> Held:
        data = self._fetch(key[0], ranges)
        return [(start, blob) for (start, _), blob in zip(ranges, data, strict=True)]


class DecodeAhead(Generic[T]):
    """Decodes planned row groups on background threads, ``depth`` ahead of the reader.

    ``decode(key, files)`` runs on a pool thread (``depth`` of them: two row groups
    decode at once, as the next ones are needed); ``files`` is that thread's own dict
    of open files (a ``pyarrow.parquet.ParquetFile`` is never shared between threads).
    A row group taken out of plan order, or not planned, is ``None`` from
    :meth:`take` (the caller reads it itself); planned row groups the reader passed
    over are dropped, so they never hold the read-ahead up.
    """

    def __init__(self, decode: Callable[[Key, dict[str, Any]], T], depth: int = DEPTH) -> None:
        self._decode, self._depth = decode, depth
        self._pool = ThreadPoolExecutor(depth, thread_name_prefix="kpcompile-decode")
        self._local = threading.local()  # each pool thread's open files
        self._lock = threading.Lock()
        self._planned: OrderedDict[Key, None] = OrderedDict()
        self._started: OrderedDict[Key, Future[T]] = OrderedDict()

    def plan(self, keys: Sequence[Key]) -> None:
        """Decode these next, in this order (replaces the previous plan)."""
        with self._lock:
            for future in self._started.values():
                future.cancel()
            self._started.clear()
            self._planned = OrderedDict.fromkeys(keys)
            self._start()

    def take(self, key: Key) -> T | None:
        """``key`` decoded, waiting for it if it is on its way; ``None`` if it is not."""
        with self._lock:
            if key not in self._started:
                if key in self._planned:  # the reader is ahead of the decoding
                    for future in self._started.values():
                        future.cancel()  # passed over
                    self._started.clear()
                    while self._planned.popitem(last=False)[0] != key:
                        pass
                    self._start()
                return None
            while True:  # those started before ``key`` were passed over: drop them
                first, future = self._started.popitem(last=False)
                if first == key:
                    break
                future.cancel()
            self._start()
        return future.result()

    def close(self) -> None:
        """Drop the plan; stop decoding."""
        self.plan([])
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self) -> None:
        """Start decoding planned row groups while fewer than ``depth`` are (lock held)."""
        while self._planned and len(self._started) < self._depth:
            key, _ = self._planned.popitem(last=False)
            self._started[key] = self._pool.submit(self._run, key)

    def _run(self, key: Key) -> T:
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        return self._decode(key, files)
