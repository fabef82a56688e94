"""Run shard tasks: in this process, or in a pool of worker processes.

Workers are forked from the coordinating process when that is safe (no polars
loaded: its thread pool does not survive a fork), so they start at once with every
module already imported; otherwise they come from a ``forkserver``, which then
re-imports the caller's ``__main__`` module: scripts calling :func:`kpcompile.build`
with several workers need the usual ``if __name__ == "__main__":`` guard. At most
``2 x workers`` tasks are in flight, so memory stays bounded however many shards a
build has.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from kpcompile.errors import KpcompileError
from kpcompile.shard import ShardResult, ShardTask, compile_shard


def run_local(
    tasks: Sequence[ShardTask], workers: int, on_done: Callable[[ShardResult, int], None]
) -> list[ShardResult]:
    """Run tasks in this process (``workers == 1``) or a process pool, in bounded memory."""
    sizes = {t.index: len(t.files) for t in tasks}
    if workers == 1 or len(tasks) <= 1:
        out = []
        for t in tasks:
            r = compile_shard(t)
            on_done(r, sizes[r.index])
            out.append(r)
        return out
    ctx = _context()
    results: list[ShardResult] = []
    pending: set[Future[ShardResult]] = set()
    queue: Iterator[ShardTask] = iter(tasks)
    window = workers * 2
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
            for t in queue:
                pending.add(pool.submit(compile_shard, t))
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        r = f.result()
                        on_done(r, sizes[r.index])
                        results.append(r)
            for f in _as_done(pending):
                r = f.result()
                on_done(r, sizes[r.index])
                results.append(r)
    except BrokenProcessPool:
        msg = "a worker process died (killed or out of memory); nothing was published"
        raise KpcompileError(msg) from None
    return sorted(results, key=lambda r: r.index)


def _context() -> multiprocessing.context.BaseContext:
    if "polars" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kpcompile.shard"])
    return ctx


def _as_done(pending: set[Future[ShardResult]]) -> Iterator[Future[ShardResult]]:
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done
