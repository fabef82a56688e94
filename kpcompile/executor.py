"""Run shard tasks: in this process, or in a pool of worker processes.

Workers are started with ``forkserver`` so a parent that has threads (polars,
pyarrow) is never forked. At most ``2 x workers`` tasks are in flight, so memory
stays bounded however many shards a build has.
"""

from __future__ import annotations

import multiprocessing
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
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kpcompile.shard"])
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


def _as_done(pending: set[Future[ShardResult]]) -> Iterator[Future[ShardResult]]:
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done
