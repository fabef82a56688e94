"""Read ahead: a bounded window of reads in flight while the caller parses.

On a cold disk, a network filesystem or object storage every read waits (on the
device, on a round trip). A worker that reads one file, parses it, then reads the
next leaves the device idle while it parses and its core idle while it waits.
:class:`ReadAhead` keeps reads in flight ahead of the file being parsed and hands
their bytes over *in the order asked for*, so what is compiled never depends on
which read finished first.

Two bounds hold whatever the source:

* **bytes**: the bytes of the reads in flight and of the file the caller is
  parsing (the last one handed over, until it asks for the next) stay within
  ``window``; each file counts at the size the listing gave, or ``max_bytes`` when
  it gave none. When nothing is held one read is always allowed, so a file larger
  than the window is read alone. With ``window=0`` nothing is read ahead: a file's
  read starts when the caller asks for it (and is still timed).
* **time**: a read still unfinished ``timeout`` seconds after it started is that
  file's rejection (``unreadable``), and the caller moves on to the next file. A
  thread stuck in such a read is abandoned (a daemon thread: it never holds the
  process up; its bytes, if they ever come, are dropped) and replaced.

Reads run in threads for files on this machine (``read`` of a local file, a zip
member, a spool; the GIL is released while the kernel reads) or as coroutines on
fsspec's event loop for asynchronous object stores (:mod:`kpcompile.ingest.url`).
A local file whose bytes are all in the page cache is read in the caller's thread
instead (``cached``): a thread per read costs more than such a read, the GIL passed
to and fro around every file (measured: a 2,000-file warm build 15% slower). From
the first file that is not in memory on, every read goes ahead in threads.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from kpcompile.errors import FormatError
from kpcompile.ingest.rejections import internal_error, unreadable

READ_THREADS = 8
"""Threads reading local files at once per reader (per worker)."""
ASYNC_REQUESTS = 64
"""Object-store requests in flight at once per reader (per worker)."""
READ_TIMEOUT_NEVER = float("inf")
CACHED_MISSES = 4
"""Files not in memory after which a reader may stop reading in its thread (see
:meth:`ReadAhead._take_cached`)."""

Item = tuple[str, "bytes | FormatError"]


class _Job:
    """One read: its file, the bytes it reserves in the window, and its outcome."""

    __slots__ = ("_lock", "abandoned", "done", "rel", "reserved", "result", "started")

    def __init__(self, rel: str, reserved: int) -> None:
        self.rel = rel
        self.reserved = reserved
        self.started: float | None = None
        self.result: bytes | BaseException | None = None
        self.done = threading.Event()
        self.abandoned = False
        self._lock = threading.Lock()

    def finish(self, result: bytes | BaseException) -> bool:
        """Record the outcome; False if the reader gave up on this read already."""
        with self._lock:
            if self.abandoned:
                return False
            self.result = result
            self.done.set()
            return True

    def abandon(self) -> bool:
        """Give up on the read; False if it finished meanwhile (then use its result)."""
        with self._lock:
            if self.done.is_set():
                return False
            self.abandoned = True
            return True


class ReadAhead(Iterator[Item]):
    """``(rel, bytes or FormatError)`` for each file, in order, reads running ahead.

    Attributes:
        peak: The most bytes that were in flight at once (reserved sizes).
    """

    def __init__(
        self,
        rels: Sequence[str],
        sizes: Sequence[int] | None,
        max_bytes: int,
        *,
        window: int,
        timeout: float,
        runner: _Runner,
        cached: Callable[[str], bytes | None] | None = None,
    ) -> None:
        sizes = sizes if sizes is not None else [-1] * len(rels)
        reserve = [max(1, s) if 0 <= s <= max_bytes else max_bytes for s in sizes]
        self._todo: Iterator[tuple[str, int]] = iter(zip(rels, reserve, strict=True))
        self._next: tuple[str, int] | None = next(self._todo, None)
        self._pending: deque[_Job] = deque()
        self._window, self._timeout, self._runner = window, timeout, runner
        self.in_flight = 0
        """Bytes reserved now: reads in flight and the file last handed over."""
        self.peak = 0
        self.closed = False
        self._handed = 0
        self._cached = cached
        self._misses = self._hits = 0

    def __next__(self) -> Item:
        self.in_flight -= self._handed  # the caller is done with the last file
        self._handed = 0
        if self._cached is not None and not self._pending and self._next is not None:
            item = self._take_cached(self._cached)
            if item is not None:
                return item
            if self._cached is not None:  # one miss: this file alone goes to a thread
                self._admit(one=True)
                return self._hand(self._pending.popleft())
        self._admit()
        if not self._pending:
            self.close()
            raise StopIteration
        item = self._hand(self._pending.popleft())
        if self._window > 0:
            self._admit()  # start the next reads before the caller parses this file
        return item

    def _hand(self, job: _Job) -> Item:
        result = self._wait(job)
        self._handed = job.reserved  # held by the caller while it parses
        return job.rel, result

    def _take_cached(self, cached: Callable[[str], bytes | None]) -> Item | None:
        """The next file read in this thread, if its bytes are in memory; else ``None``.
        Once :data:`CACHED_MISSES` files were not, and they are more than a fifth of
        those asked, every later file is read ahead in threads (a source that is
        mostly not in memory is read as if none of it were; a warm one has a few
        misses, which go to a thread one by one)."""
        rel, reserved = self._next  # type: ignore[misc]
        try:
            data = cached(rel)
        except Exception:
            data = None
        if data is None:
            self._misses += 1
            if self._misses >= CACHED_MISSES and self._misses * 4 > self._hits:
                self._cached = None
            return None
        self._hits += 1
        self._next = next(self._todo, None)
        self._handed = reserved
        self.in_flight += reserved
        self.peak = max(self.peak, self.in_flight)
        return rel, data

    def _admit(self, *, one: bool = False) -> None:
        while self._next is not None and (
            self.in_flight == 0 or self.in_flight + self._next[1] <= self._window
        ):
            job = _Job(*self._next)
            self._next = next(self._todo, None)
            self._pending.append(job)
            self.in_flight += job.reserved
            self.peak = max(self.peak, self.in_flight)
            self._runner.start(job)
            if one:
                return

    def _wait(self, job: _Job) -> bytes | FormatError:
        while not job.done.wait(self._remaining(job)):
            started = job.started
            late = started is not None and time.monotonic() - started >= self._timeout
            if late and job.abandon():
                self._runner.abandoned(job)
                what = f"no answer within {self._timeout:g} s (read_timeout)"
                return unreadable(job.rel, what)
        result = job.result
        if isinstance(result, bytes | FormatError):
            return result
        assert isinstance(result, BaseException)
        if not isinstance(result, Exception):
            raise result  # KeyboardInterrupt, SystemExit: not a file's problem
        return internal_error(job.rel, result)

    def _remaining(self, job: _Job) -> float:
        started = job.started
        if started is None:  # queued behind other reads: look again soon
            return min(self._timeout, 0.5)
        return min(60.0, max(0.0, started + self._timeout - time.monotonic()))

    def close(self) -> None:
        """Stop the reads not yet handed over (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._next = None
        for job in self._pending:
            if job.abandon():
                self._runner.abandoned(job)
        self._pending.clear()
        self.in_flight = self._handed = 0
        self._runner.close()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Runner:
    """Runs jobs somewhere (threads, an event loop) and calls ``job.finish``."""

    def start(self, job: _Job) -> None:
        raise NotImplementedError

    def abandoned(self, job: _Job) -> None:
        """``job`` ran too long and was given up."""

    def close(self) -> None:
        """No more jobs will come."""


class _Threads(_Runner):
    """Daemon threads, started as jobs come (at most ``size`` busy at once)."""

    def __init__(self, read: Callable[[str], bytes], size: int) -> None:
        self._read, self._size = read, size
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stuck = 0

    def start(self, job: _Job) -> None:
        if len(self._threads) - self._stuck < self._size:
            self._spawn()
        self._jobs.put(job)

    def _spawn(self) -> None:
        t = threading.Thread(target=self._serve, name="kpcompile-read", daemon=True)
        t.start()
        self._threads.append(t)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.abandoned:
                continue
            job.started = time.monotonic()
            try:
                result: bytes | BaseException = self._read(job.rel)
            except BaseException as exc:  # handed to the caller, which decides
                result = exc
            if not job.finish(result):
                return  # given up on and replaced: this thread is one too many now

    def abandoned(self, job: _Job) -> None:
        if job.started is None:
            return  # not started: the thread that takes it skips it
        self._stuck += 1
        self._spawn()

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        live, self._threads = self._threads, []
        deadline = time.monotonic() + 0.1
        for t in live:  # idle ones exit at once; one stuck in a read is left behind
            t.join(max(0.0, deadline - time.monotonic()))


class _Coroutines(_Runner):
    """Coroutines on a running event loop (fsspec's), at most ``size`` at once."""

    def __init__(
        self, fetch: Callable[[str], Awaitable[bytes]], loop: Any, size: int, timeout: float
    ) -> None:
        self._fetch, self._loop, self._timeout = fetch, loop, timeout
        self._size = size
        self._sem: asyncio.Semaphore | None = None
        self._futures: dict[_Job, Any] = {}

    def start(self, job: _Job) -> None:
        future = asyncio.run_coroutine_threadsafe(self._run(job), self._loop)
        self._futures[job] = future
        future.add_done_callback(lambda _f: self._futures.pop(job, None))

    def abandoned(self, job: _Job) -> None:
        future = self._futures.pop(job, None)
        if future is not None:
            future.cancel()  # cancels the request on the loop

    async def _run(self, job: _Job) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._size)
        async with self._sem:
            if job.abandoned:
                return
            job.started = time.monotonic()
            try:
                result: bytes | BaseException = await asyncio.wait_for(
                    self._fetch(job.rel), self._timeout
                )
            except TimeoutError:
                what = f"no answer within {self._timeout:g} s (read_timeout)"
                result = unreadable(job.rel, what)
            except Exception as exc:
                result = exc
            job.finish(result)

    def close(self) -> None:
        for f in list(self._futures.values()):
            f.cancel()
        self._futures.clear()


class _Inline(_Runner):
    """Reads in the caller's thread as they are started (bytes already in memory)."""

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self._read = read

    def start(self, job: _Job) -> None:
        job.started = time.monotonic()
        try:
            result: bytes | BaseException = self._read(job.rel)
        except Exception as exc:
            result = exc
        job.finish(result)


def thread_reads(
    read: Callable[[str], bytes],
    rels: Sequence[str],
    max_bytes: int,
    *,
    window: int,
    timeout: float,
    sizes: Sequence[int] | None = None,
    threads: int = READ_THREADS,
    cached: Callable[[str], bytes | None] | None = None,
) -> ReadAhead:
    """Read ``rels`` with ``read(rel)`` in threads, ``window`` bytes ahead.

    ``cached(rel)``: the bytes when they can be had at once (see
    :meth:`~kpcompile.ingest.base.Source.read_cached`): files are read in the caller's
    thread while it answers, in threads from the first ``None`` on.
    """
    size = max(1, min(threads, len(rels)))
    runner = _Threads(read, size)
    return ReadAhead(
        rels, sizes, max_bytes, window=window, timeout=timeout, runner=runner, cached=cached
    )


def async_reads(
    fetch: Callable[[str], Awaitable[bytes]],
    loop: Any,
    rels: Sequence[str],
    max_bytes: int,
    *,
    window: int,
    timeout: float,
    sizes: Sequence[int] | None = None,
    requests: int = ASYNC_REQUESTS,
) -> ReadAhead:
    """Read ``rels`` with coroutines ``fetch(rel)`` on ``loop``, ``window`` bytes ahead."""
    runner = _Coroutines(fetch, loop, max(1, requests), timeout)
    return ReadAhead(rels, sizes, max_bytes, window=window, timeout=timeout, runner=runner)


def inline_reads(read: Callable[[str], bytes], rels: Sequence[str], max_bytes: int) -> ReadAhead:
    """Read ``rels`` with ``read(rel)`` in the caller's thread, for bytes already in memory."""
    runner = _Inline(read)
    return ReadAhead(rels, None, max_bytes, window=0, timeout=READ_TIMEOUT_NEVER, runner=runner)
