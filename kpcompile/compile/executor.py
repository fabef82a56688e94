"""Run shard tasks: in this process, in a pool of worker processes, or on a Dask cluster.

Workers are forked from the coordinating process when that is safe (no polars
loaded: its thread pool does not survive a fork), so they start at once with every
module already imported; otherwise they come from a ``forkserver``, which then
re-imports the caller's ``__main__`` module: scripts calling :func:`kpcompile.build`
with several workers need the usual ``if __name__ == "__main__":`` guard. At most
``2 x workers`` tasks are in flight, so memory stays bounded however many shards a
build has. The Dask executor takes tasks lazily from an iterator with the same
bound (tasks of a streamed archive carry their files' bytes there).

A worker that dies (killed, out of memory) breaks the pool: every shard that was
in flight is then retried in a new pool, after its partial outputs are removed.
A shard is a pure function of its task and writes only its own file names, so a
retry writes exactly what the first attempt would have: no row is lost or
duplicated. A shard in flight during :data:`MAX_ATTEMPTS` worker deaths fails the
build, which then publishes nothing. Workers exit by themselves when the
coordinating process dies (SIGKILL included), so a killed build leaves no
process behind.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.context
import os
import select
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from kpcompile.compile.worker import ShardResult, ShardTask, compile_shard, remove_outputs
from kpcompile.errors import KpcompileError, OptionsError
from kpcompile.options import EXECUTORS

MAX_ATTEMPTS = 3
"""How many times a shard runs at most when worker processes die under it."""

log = logging.getLogger("kpcompile")
OnDone = Callable[[ShardResult, int], None]
CONNECT_TIMEOUT = "30s"
"""How long to keep trying to reach a Dask scheduler."""


def run(
    tasks: Iterable[ShardTask],
    on_done: OnDone,
    *,
    executor: str = "local",
    workers: int = 1,
    scheduler: str | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> list[ShardResult]:
    """Run tasks with the named executor; results sorted by shard index.

    ``pool``: workers started by :func:`prestart`, used (and shut down) by the local executor.
    """
    if executor == "local":
        return run_local(list(tasks), workers, on_done, pool=pool)
    release(pool)
    if executor == "dask":
        return run_dask(tasks, on_done, scheduler=scheduler, workers=workers)
    msg = f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}"
    raise OptionsError(msg)


def release(pool: ProcessPoolExecutor | None) -> None:
    """Shut a pool down (see :func:`_shutdown`); ``None`` is fine."""
    if pool is not None:
        _shutdown(pool)


def _shutdown(pool: ProcessPoolExecutor) -> None:
    """Shut a pool down and wait for it, killing its workers if it breaks meanwhile.

    A broken pool joins its remaining workers, which wait forever if the dead one
    held the task queue's lock; the wait is polled instead, and the workers killed.
    """
    thread = getattr(pool, "_executor_manager_thread", None)  # private: defensive
    _remember(pool)
    pool.shutdown(wait=False, cancel_futures=True)
    waited = 0.0
    while thread is not None and thread.is_alive():
        thread.join(0.2)
        waited += 0.2
        # A worker killed during shutdown does not mark the pool broken, but can
        # leave the others blocked on the queue's lock all the same.
        died = any((p.exitcode or 0) < 0 for p in pool.__dict__.get("_kp_workers", ()))
        if died or waited > 30 or getattr(pool, "_broken", False):
            _kill_workers(pool)


def prestart(workers: int) -> ProcessPoolExecutor | None:
    """Fork the worker processes now, before the build lists its files.

    Forked workers share the coordinator's memory pages and copy those they write
    to; forked before discovery, they do not inherit the file lists at all, so their
    memory does not grow with the dataset. ``None`` when workers are not forked
    (one worker, or polars loaded: see the module docstring).
    """
    if workers < 2 or _context().get_start_method() != "fork":
        return None
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_context(),
        initializer=_exit_with,
        initargs=(os.getpid(),),
    )
    try:
        future = pool.submit(int)  # with fork, the first submit starts every worker
        _remember(pool)
        future.result()
    except (BrokenProcessPool, OSError):
        # a worker died already (killed, out of memory): the build starts its own pool later
        log.warning("a worker process died before any shard was sent; starting new workers")
        _kill_workers(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        return None
    return pool


def run_local(
    tasks: Sequence[ShardTask],
    workers: int,
    on_done: Callable[[ShardResult, int], None],
    *,
    pool: ProcessPoolExecutor | None = None,
) -> list[ShardResult]:
    """Run tasks in this process (``workers == 1``) or a process pool, in bounded memory.

    Returns:
        One result per task, in task order.

    Raises:
        KpcompileError: Worker processes died under the same shard
            :data:`MAX_ATTEMPTS` times.
    """
    sizes = {t.index: len(t.files) for t in tasks}

    def done(r: ShardResult) -> None:
        on_done(r, sizes[r.index])
        results.append(r)

    results: list[ShardResult] = []
    if workers == 1 or len(tasks) <= 1:
        release(pool)
        for t in tasks:
            done(compile_shard(t))
        return results
    attempts: Counter[int] = Counter()
    todo = list(tasks)
    while todo:
        lost = _run_pool(todo, workers, done, pool)
        pool = None  # a retry starts a new pool
        finished = {r.index for r in results}
        todo = [t for t in tasks if t.index not in finished]
        if not todo:
            break
        # A pool can break before it took any task (a worker killed while idle):
        # nothing was lost then, but the rest must still run; count it against the
        # first task left so repeated deaths still end the build.
        blamed = lost or todo[:1]
        attempts.update(t.index for t in blamed)
        worst = max(blamed, key=lambda t: (attempts[t.index], -t.index))
        if attempts[worst.index] >= MAX_ATTEMPTS:
            msg = (
                f"worker processes died {attempts[worst.index]} times while compiling shard "
                f"{worst.index} (killed, out of memory, or could not be started); "
                "nothing was published"
            )
            raise KpcompileError(msg)
        log.warning(
            "a worker process died; retrying shard%s %s",
            "s" if len(blamed) > 1 else "",
            ", ".join(str(t.index) for t in sorted(blamed, key=lambda t: t.index)),
        )
        for t in todo:  # whatever an unfinished attempt may have written
            remove_outputs(t)
    return sorted(results, key=lambda r: r.index)


def _run_pool(
    tasks: Sequence[ShardTask],
    workers: int,
    done: Callable[[ShardResult], None],
    pool: ProcessPoolExecutor | None = None,
) -> list[ShardTask]:
    """Run ``tasks`` in one pool; return the tasks in flight when a worker died.

    A task whose worker could not be started is returned too; tasks never
    submitted are not (the caller retries whatever has no result). When this
    returns, every worker of the pool has exited, so no attempt is still writing.
    """
    ctx = _context()
    # Forked workers share the coordinator's pages until they write to them, and the
    # garbage collector writes to every object it visits: freezing what exists now
    # keeps the workers from copying the coordinator's file lists (measured: -40 MiB
    # at 20,000 files, 2 workers).
    gc.freeze()
    try:
        return _run_pool_frozen(tasks, workers, done, ctx, pool)
    finally:
        gc.unfreeze()


def _run_pool_frozen(
    tasks: Sequence[ShardTask],
    workers: int,
    done: Callable[[ShardResult], None],
    ctx: multiprocessing.context.BaseContext,
    started: ProcessPoolExecutor | None,
) -> list[ShardTask]:
    pending: dict[Future[ShardResult], ShardTask] = {}
    lost: list[ShardTask] = []
    window = workers * 2

    def collect(futures: set[Future[ShardResult]]) -> None:
        for f in futures:
            task = pending.pop(f)
            if not f.done():  # orphaned by a broken pool, see _settle
                lost.append(task)
                continue
            exc = f.exception()
            if isinstance(exc, BrokenProcessPool):
                lost.append(task)
            elif exc is not None:
                raise exc
            else:
                done(f.result())

    pool = started or ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=ctx,
        initializer=_exit_with,
        initargs=(os.getpid(),),
    )
    try:
        queue: Iterator[ShardTask] = iter(tasks)
        submit_error: Exception | None = None  # kept for the debug log
        broken = False
        for t in queue:
            try:
                pending[pool.submit(compile_shard, t)] = t
                _remember(pool)
            except BrokenProcessPool:
                broken = True  # a worker died before this submit, maybe while idle
                break
            except (OSError, ValueError) as exc:
                # Starting a worker for this task failed: it raced with the pool
                # breaking (queues closed, forkserver gone). Retried like a death.
                submit_error = exc
                lost.append(t)
                break
            if len(pending) >= window:
                collect(_settle(pool, pending))
                if lost:
                    break
        while pending:
            collect(_settle(pool, pending))
        if lost or broken or getattr(pool, "_broken", False):
            _kill_workers(pool)
    finally:
        _shutdown(pool)
    if submit_error is not None:
        log.debug("could not start a worker process: %s", submit_error)
    return sorted(lost, key=lambda t: t.index)


def _context() -> multiprocessing.context.BaseContext:
    if "polars" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kpcompile.compile.worker"])
    return ctx


def _settle(
    pool: ProcessPoolExecutor, pending: dict[Future[ShardResult], ShardTask]
) -> set[Future[ShardResult]]:
    """Wait until a future finishes, or return every pending one if the pool broke.

    In CPython 3.11 a submit racing with the pool breaking can leave a future
    that nothing will ever complete; once the pool is broken (``_broken``, private,
    hence the defensive access) every pending future is lost anyway.
    """
    while True:
        finished, _ = wait(set(pending), timeout=0.5, return_when=FIRST_COMPLETED)
        if finished:
            return finished
        if getattr(pool, "_broken", False):
            return set(pending)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill every worker of a broken pool before it is shut down.

    CPython 3.11's pool may start a worker for a submit racing with the pool
    breaking, after it terminated the others; it then waits for that idle worker
    forever. No submit follows this call, so killing the workers it knows ends
    the wait (``_processes`` is private, hence the defensive access).
    """
    _remember(pool)
    for proc in list(pool.__dict__.get("_kp_workers", ())):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            proc.kill()


def _remember(pool: ProcessPoolExecutor) -> None:
    """Note the pool's worker processes while it still lists them.

    A worker killed while holding the task queue's lock leaves the others blocked
    on it; a broken pool then joins them forever, and by that time it has already
    dropped them from ``_processes``: remembering them lets :func:`_kill_workers`
    end the wait.
    """
    known = pool.__dict__.setdefault("_kp_workers", set())
    processes = getattr(pool, "_processes", None) or {}
    known.update(processes.values())


def _exit_with(coordinator: int) -> None:
    """Worker initializer: exit as soon as the coordinating process is gone.

    A pool's workers hold both ends of their task queue, so they would wait
    forever for work from a coordinator that was killed, and keep the forkserver
    alive. A daemon thread waits on a pidfd of the coordinator and ends the
    worker when it exits.
    """
    try:
        fd = os.pidfd_open(coordinator)
    except OSError:  # already gone, or no pidfd (Linux before 5.3)
        fd = -1
        if not _alive(coordinator):
            os._exit(1)

    def watch() -> None:
        if fd >= 0:
            select.select([fd], [], [])
        else:
            while _alive(coordinator):
                threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="kpcompile-coordinator-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_dask(
    tasks: Iterable[ShardTask],
    on_done: OnDone,
    *,
    scheduler: str | None = None,
    workers: int = 1,
) -> list[ShardResult]:
    """Run :func:`~kpcompile.shard.compile_shard` as Dask tasks.

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
        sizes[t.index] = len(t.files)
        running.add(client.submit(compile_shard, t, pure=False))
        while running.count() >= window:
            finish(next(running))
    for future in running:
        finish(future)
    return sorted(results, key=lambda r: r.index)
