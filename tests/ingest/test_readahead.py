"""Read-ahead: order, the bound on bytes in flight, timeouts, errors, closing.

Sources here are real :class:`~kpcompile.ingest.Source` implementations whose ``read``
is instrumented (it records what is in flight, sleeps, blocks or fails on purpose).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from kpcompile.errors import ErrorCode, FormatError
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.readahead import async_reads


class Instrumented(Source):
    """Files ``f000``... of given sizes; ``read`` counts bytes held between its start
    and the moment the caller takes them (:meth:`taken`), and may block or fail."""

    kind = "folder"

    def __init__(self, sizes: list[int], *, delay: float = 0.0, seed: int = 0) -> None:
        super().__init__("/instrumented", "instrumented")
        self.sizes = {f"f{i:03d}": s for i, s in enumerate(sizes)}
        self.delay, self.rng = delay, random.Random(seed)
        self.lock = threading.Lock()
        self.held = 0
        self.peak = 0
        self.started: list[str] = []
        self.block: dict[str, threading.Event] = {}
        self.fail: dict[str, Exception] = {}

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        return [Entry(rel, size, 0) for rel, size in self.sizes.items()]

    def read(self, rel: str, max_bytes: int) -> bytes:
        with self.lock:
            self.started.append(rel)
            self.held += self.sizes[rel]
            self.peak = max(self.peak, self.held)
            delay = self.rng.random() * self.delay
        if rel in self.block:
            self.block[rel].wait()
        time.sleep(delay)
        if rel in self.fail:
            self.taken(rel)
            raise self.fail[rel]
        return rel.encode().ljust(self.sizes[rel], b".")

    def taken(self, rel: str) -> None:
        with self.lock:
            self.held -= self.sizes[rel]

    def consume(self, reads: Iterator[tuple[str, bytes | FormatError]]) -> list[Any]:
        out = []
        for rel, data in reads:
            if not isinstance(data, FormatError) or rel not in self.fail:
                self.taken(rel)
            out.append((rel, data))
        return out


def _rels(src: Instrumented) -> list[str]:
    return list(src.sizes)


@pytest.mark.parametrize("window", [0, 1, 5_000, 50_000, 10**9])
def test_items_come_in_the_order_asked_whatever_finishes_first(window: int) -> None:
    src = Instrumented([1000] * 60, delay=0.01, seed=window % 97)
    rels = _rels(src)
    random.Random(3).shuffle(rels)
    with src.read_many(rels, 1 << 20, window=window, sizes=[1000] * 60) as reads:
        got = src.consume(reads)
    assert [rel for rel, _ in got] == rels
    assert all(data == rel.encode().ljust(1000, b".") for rel, data in got)


@pytest.mark.parametrize("window", [3_000, 10_000, 40_000])
def test_bytes_in_flight_never_exceed_the_window(window: int) -> None:
    sizes = [random.Random(i).randrange(100, 2_500) for i in range(200)]
    src = Instrumented(sizes, delay=0.002)
    with src.read_many(_rels(src), 1 << 20, window=window, sizes=sizes) as reads:
        got = src.consume(reads)
        reserved_peak = reads.peak
    assert len(got) == len(sizes)
    # measured inside read(): bytes between a read's start and the caller taking them
    assert 0 < src.peak <= window
    assert reserved_peak <= window
    # and the window is used: more than one file was in flight at once
    assert src.peak > max(sizes)


def test_a_file_larger_than_the_window_is_read_alone() -> None:
    sizes = [100, 5_000, 100, 100]
    src = Instrumented(sizes)
    with src.read_many(_rels(src), 1 << 20, window=1_000, sizes=sizes) as reads:
        got = src.consume(reads)
    assert [r for r, _ in got] == _rels(src)
    assert src.peak <= 5_000


def test_unknown_sizes_count_as_max_bytes() -> None:
    src = Instrumented([100] * 10)
    with src.read_many(_rels(src), 1_000, window=2_500) as reads:
        src.consume(reads)
        assert reads.peak <= 2_500  # two at a time, counted at 1,000 bytes each


def test_window_zero_starts_a_read_only_when_asked() -> None:
    src = Instrumented([10] * 20)
    with src.read_many(_rels(src), 1 << 20, window=0, sizes=[10] * 20) as reads:
        for n, (rel, _) in enumerate(reads, 1):
            src.taken(rel)
            time.sleep(0.002)  # time for a wrongly started read to show
            assert len(src.started) == n


def test_a_stalled_read_is_that_files_unreadable_and_the_rest_goes_on() -> None:
    src = Instrumented([10] * 12)
    stuck = threading.Event()
    src.block["f004"] = stuck
    try:
        with src.read_many(_rels(src), 1 << 20, window=1_000, timeout=0.3) as reads:
            got = dict(src.consume(reads))
        err = got["f004"]
        assert isinstance(err, FormatError) and err.code == ErrorCode.UNREADABLE
        assert "no answer within 0.3 s (read_timeout)" in str(err)
        assert all(got[r] == r.encode().ljust(10, b".") for r in got if r != "f004")
    finally:
        stuck.set()


def test_several_stalled_reads_do_not_starve_the_others() -> None:
    """More stalled reads than reading threads: each times out, replaced threads read on."""
    src = Instrumented([10] * 40)
    stuck = threading.Event()
    for i in range(0, 40, 3):
        src.block[f"f{i:03d}"] = stuck
    try:
        with src.read_many(_rels(src), 1 << 20, window=10_000, timeout=0.2) as reads:
            got = dict(src.consume(reads))
        bad = {r for r, d in got.items() if isinstance(d, FormatError)}
        assert bad == set(src.block)
    finally:
        stuck.set()


def test_an_exception_is_that_files_error() -> None:
    src = Instrumented([10] * 6)
    src.fail["f001"] = FormatError(ErrorCode.UNREADABLE, "f001", "cannot read: gone")
    src.fail["f003"] = RuntimeError("bug in a client library")
    with src.read_many(_rels(src), 1 << 20, window=1_000) as reads:
        got = dict(src.consume(reads))
    assert got["f001"] is src.fail["f001"]
    err = got["f003"]
    assert isinstance(err, FormatError) and err.code == ErrorCode.INTERNAL_ERROR
    assert "RuntimeError: bug in a client library" in str(err)
    assert got["f005"] == b"f005" + b"." * 6


def test_close_stops_the_reads_not_yet_started() -> None:
    src = Instrumented([10] * 200, delay=0.01)
    reads = src.read_many(_rels(src), 1 << 20, window=100, sizes=[10] * 200)
    next(reads)
    reads.close()
    time.sleep(0.1)
    started = len(src.started)
    time.sleep(0.1)
    assert len(src.started) == started < 30
    assert list(reads) == []


def test_coroutines_on_an_event_loop() -> None:
    """The object-store runner: order, bound, a stalled request's timeout, an error."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    live = {"now": 0, "peak": 0}

    async def fetch(rel: str) -> bytes:
        live["now"] += 1
        live["peak"] = max(live["peak"], live["now"])
        try:
            if rel == "r07":
                await asyncio.sleep(30)
            if rel == "r09":
                msg = "boom"
                raise ValueError(msg)
            await asyncio.sleep(random.random() * 0.02)
            return rel.encode()
        finally:
            live["now"] -= 1

    rels = [f"r{i:02d}" for i in range(40)]
    try:
        with async_reads(
            fetch, loop, rels, 1 << 20, window=1_000, timeout=0.3, sizes=[100] * 40
        ) as reads:
            got = list(reads)
            assert reads.peak <= 1_000
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert [r for r, _ in got] == rels
    assert 1 < live["peak"] <= 10
    by = dict(got)
    assert isinstance(by["r07"], FormatError) and by["r07"].code == ErrorCode.UNREADABLE
    assert isinstance(by["r09"], FormatError) and by["r09"].code == ErrorCode.INTERNAL_ERROR
    assert by["r10"] == b"r10"


class Cached(Instrumented):
    """Files in memory (``read_cached`` answers) but for those named in ``cold``."""

    def __init__(self, sizes: list[int], cold: set[str]) -> None:
        super().__init__(sizes)
        self.cold = cold
        self.asked: list[str] = []
        self.threads: set[str] = set()

    def read_cached(self, rel: str, max_bytes: int) -> bytes | None:
        self.asked.append(rel)
        if rel in self.cold:
            return None
        return rel.encode().ljust(self.sizes[rel], b".")

    def read(self, rel: str, max_bytes: int) -> bytes:
        self.threads.add(threading.current_thread().name)
        return super().read(rel, max_bytes)


def test_files_in_memory_are_read_in_the_callers_thread_a_single_miss_in_a_thread() -> None:
    src = Cached([100] * 12, cold={"f003"})
    with src.read_many(_rels(src), 10**6, window=10**6) as reads:
        got = [(rel, data) for rel, data in reads]
    assert [rel for rel, _ in got] == _rels(src)
    assert all(data == rel.encode().ljust(100, b".") for rel, data in got)
    assert src.started == ["f003"]  # only the file not in memory went to a thread
    assert src.threads == {"kpcompile-read"}
    assert src.asked == _rels(src)


def test_a_source_mostly_not_in_memory_is_read_ahead_from_then_on() -> None:
    src = Cached([100] * 12, cold={"f003", "f004", "f005", "f006"})
    with src.read_many(_rels(src), 10**6, window=10**6) as reads:
        got = [rel for rel, _ in reads]
    assert got == _rels(src)
    assert src.asked == _rels(src)[:7]  # 4 misses, more than a fifth of 7
    assert sorted(src.started) == _rels(src)[3:]


def test_a_few_misses_in_a_warm_source_do_not_stop_reading_in_the_callers_thread() -> None:
    cold = {"f003", "f004", "f005", "f030", "f060"}
    src = Cached([100] * 80, cold=cold)
    with src.read_many(_rels(src), 10**6, window=10**6) as reads:
        got = [rel for rel, _ in reads]
    assert got == _rels(src) and src.asked == _rels(src)
    assert sorted(src.started) == sorted(cold)
