"""Run shard tasks: in this process, in a pool of worker processes, or on a Dask cluster.

The local executor runs tasks in this process (one worker) or in a
:class:`~kpcompile.compile.pool.WorkerPool`, which retries the shard of a worker that
died and needs no ``__main__`` guard in the calling script. Both executors take
tasks lazily from an iterator, at most ``2 x workers`` in flight, so memory stays
bounded however many shards a build has (tasks of a streamed archive carry their
files' bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kpcompile.compile.pool import MAX_ATTEMPTS, OnDone, WorkerPool
from kpcompile.compile.shard import ShardResult, ShardTask, compile_shard
from kpcompile.errors import KpcompileError, OptionsError
from kpcompile.options import EXECUTORS

__all__ = ["MAX_ATTEMPTS", "OnDone", "run", "run_dask", "run_local"]

CONNECT_TIMEOUT = "30s"
"""How long to keep trying to reach a Dask scheduler."""


def run(
    tasks: Iterable[ShardTask],
    on_done: OnDone,
    *,
    executor: str = "local",
    workers: int = 1,
    scheduler: str | None = None,
    pool: WorkerPool | None = None,
) -> list[ShardResult]:
    """Run tasks with the named executor; results sorted by shard index.

    ``pool``: the local executor's workers, started (and stopped) by the caller;
    without it, the local executor starts its own when ``workers > 1``.
    """
    if executor == "local":
        return run_local(tasks, workers, on_done, pool=pool)
    if executor == "dask":
        return run_dask(tasks, on_done, scheduler=scheduler, workers=workers)
    msg = f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}"
    raise OptionsError(msg)


def run_local(
    tasks: Iterable[ShardTask],
    workers: int,
    on_done: OnDone,
    *,
    pool: WorkerPool | None = None,
) -> list[ShardResult]:
    """Run tasks in this process (``workers == 1``) or in worker processes.

    Returns:
        One result per task, sorted by shard index.

    Raises:
        KpcompileError: Worker processes died under the same shard
            :data:`MAX_ATTEMPTS` times.
    """
    if workers == 1:
        results = []
        for t in tasks:
            r = compile_shard(t)
            on_done(r, t.size)
            results.append(r)
        return sorted(results, key=lambda r: r.index)
    if pool is not None:
        return pool.run(tasks, on_done)
    with WorkerPool.start(workers) as own:
        return own.run(tasks, on_done)


def run_dask(
    tasks: Iterable[ShardTask],
    on_done: OnDone,
    *,
    scheduler: str | None = None,
    workers: int = 1,
) -> list[ShardResult]:
    """Run :func:`~kpcompile.compile.shard.compile_shard` as Dask tasks.

    Args:
        tasks: Shard tasks; taken lazily, at most twice the cluster's threads in flight.
        on_done: Called with each result and its file count, in completion order.
        scheduler: Address of a running scheduler (``tcp://host:8786``); ``None``
            starts a local cluster of ``workers`` processes for this build.
        workers: Worker processes of the local cluster.

    Raises:
        OptionsError: ``dask.distributed`` is not installed (``pip install kpcompile[dask]``).
        KpcompileError: The scheduler cannot be reached, or a worker died.

    Example:
        >>> run_dask(tasks, lambda r, n: None, scheduler="tcp://10.0.0.5:8786")  # doctest: +SKIP
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        msg = "executor 'dask' needs dask.distributed: pip install 'kpcompile[dask]'"
        raise OptionsError(msg) from None
    cluster: Any = None
    try:
        if scheduler is None:
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            client = Client(cluster)  # type: ignore[no-untyped-call]
        else:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        msg = f"cannot reach the Dask scheduler {scheduler!r}: {exc}"
        raise KpcompileError(msg) from None
    try:
        return _submit_all(client, as_completed, tasks, on_done)
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()


def _submit_all(
    client: Any, as_completed: Any, tasks: Iterable[ShardTask], on_done: OnDone
) -> list[ShardResult]:
    from distributed import KilledWorker

    threads = sum(client.nthreads().values()) or 1
    window = 2 * threads
    sizes: dict[int, int] = {}
    results: list[ShardResult] = []
    running = as_completed()

    def finish(future: Any) -> None:
        try:
            r: ShardResult = future.result()
        except KilledWorker as exc:
            msg = f"a Dask worker died running a shard ({exc}); nothing was published"
            raise KpcompileError(msg) from None
        on_done(r, sizes.pop(r.index))
        results.append(r)

    for t in tasks:
        sizes[t.index] = t.size
        running.add(client.submit(compile_shard, t, pure=False))
        while running.count() >= window:
            finish(next(running))
    for future in running:
        finish(future)
    return sorted(results, key=lambda r: r.index)
