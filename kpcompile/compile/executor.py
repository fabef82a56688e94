"""Run shard tasks: in this process, in a pool of worker processes, or on a Dask cluster.

The local executor runs tasks in this process (one worker) or in a
:class:`~kpcompile.compile.pool.WorkerPool`, which retries the shard of a worker that
died and needs no ``__main__`` guard in the calling script. Both executors take
tasks lazily from an iterator, at most ``2 x workers`` in flight, so memory stays
bounded however many shards a build has (tasks of a streamed archive carry their
files' bytes).

With the Dask executor the cluster also lists the source, when any machine can
list it (:attr:`~kpcompile.ingest.base.Source.listable_anywhere`: an object store,
a virtual dataset). The coordinator lists the top level once
(:meth:`~kpcompile.ingest.base.Source.prefixes`) and
:func:`~kpcompile.ingest.units.discover_units` cuts the prefixes into chunks;
:func:`dask_lister` submits each chunk's
:meth:`~kpcompile.ingest.base.Source.prefix_listing` as a task (the source pickled
with it: a URL, its credentials read from each worker's environment), at most
``2 x threads`` chunks in flight, and hands the listings back in prefix order,
whichever finishes first. So the coordinator holds at most that many listings and
the result is the local listing exactly: the same files, in the same order, the
same snapshot bytes. A chunk's width is decided from the listings handed back so
far, which with ``k`` chunks in flight are all but the last ``k``: the widths
depend on the cluster's size, never on timing (and never change a unit or a shard).

A worker that dies listing is the cluster's to handle: the scheduler runs its task
again elsewhere (``distributed.scheduler.allowed-failures`` times, 3 by default).
Beyond that (:class:`distributed.KilledWorker`), or when the cluster is lost, the
build stops with a :class:`~kpcompile.errors.SourceError` naming the source and
the prefixes. A folder or an archive is listed by the coordinator, as before: a
folder's native listing is fast and only the coordinator surely sees it, an
archive's members are in its hands. One client (:class:`DaskConnection`) serves
listing and compiling.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

from kpcompile.compile.pool import MAX_ATTEMPTS, OnDone, WorkerPool
from kpcompile.compile.shard import ShardResult, ShardTask, compile_shard
from kpcompile.errors import KpcompileError, OptionsError, SourceError
from kpcompile.options import EXECUTORS

if TYPE_CHECKING:
    from kpcompile.ingest import Source
    from kpcompile.ingest.listing import Listing
    from kpcompile.ingest.units import Lister

__all__ = [
    "MAX_ATTEMPTS",
    "DaskConnection",
    "OnDone",
    "dask_lister",
    "list_prefixes",
    "run",
    "run_dask",
    "run_local",
]

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
    connection: DaskConnection | None = None,
) -> list[ShardResult]:
    """Run tasks with the named executor; results sorted by shard index.

    ``pool``: the local executor's workers, started (and stopped) by the caller;
    without it, the local executor starts its own when ``workers > 1``.
    ``connection``: the Dask executor's, opened (and closed) by the caller.
    """
    if executor == "local":
        return run_local(tasks, workers, on_done, pool=pool)
    if executor == "dask":
        return run_dask(tasks, on_done, scheduler=scheduler, workers=workers, connection=connection)
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
    connection: DaskConnection | None = None,
) -> list[ShardResult]:
    """Run :func:`~kpcompile.compile.shard.compile_shard` as Dask tasks.

    Args:
        tasks: Shard tasks; taken lazily, at most twice the cluster's threads in flight.
        on_done: Called with each result and its file count, in completion order.
        scheduler: Address of a running scheduler (``tcp://host:8786``); ``None``
            starts a local cluster of ``workers`` processes for this build.
        workers: Worker processes of the local cluster.
        connection: The build's connection (its listing used it); ``scheduler``
            and ``workers`` are then not used and the caller closes it.

    Raises:
        OptionsError: ``dask.distributed`` is not installed (``pip install kpcompile[dask]``).
        KpcompileError: The scheduler cannot be reached, or a worker died.

    Example:
        >>> run_dask(tasks, lambda r, n: None, scheduler="tcp://10.0.0.5:8786")  # doctest: +SKIP
    """
    if connection is not None:
        return _submit_all(connection.client(), tasks, on_done)
    with DaskConnection(scheduler, workers) as own:
        return _submit_all(own.client(), tasks, on_done)


class DaskConnection:
    """A build's one client of a Dask cluster, connected when first needed (a build with
    nothing to list or compile there connects to nothing).

    ``scheduler``: address of a running scheduler; ``None`` starts a local cluster
    of ``workers`` processes, closed with the connection.
    """

    def __init__(self, scheduler: str | None, workers: int) -> None:
        self.scheduler, self.workers = scheduler, workers
        self._client: Any = None
        self._cluster: Any = None

    def client(self) -> Any:
        """The ``distributed.Client``.

        Raises:
            OptionsError: ``dask.distributed`` is not installed.
            KpcompileError: The scheduler cannot be reached.
        """
        if self._client is None:
            self._client, self._cluster = _connect(self.scheduler, self.workers)
        return self._client

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    """A client, and the local cluster it was started with (``None`` for a scheduler)."""
    try:
        from distributed import Client, LocalCluster
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
            return Client(cluster), cluster  # type: ignore[no-untyped-call]
        return Client(scheduler, timeout=CONNECT_TIMEOUT), None  # type: ignore[no-untyped-call]
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        msg = f"cannot reach the Dask scheduler {scheduler!r}: {exc}"
        raise KpcompileError(msg) from None


def _threads(client: Any) -> int:
    return sum(client.nthreads().values()) or 1


def dask_lister(connection: DaskConnection) -> Lister:
    """A :class:`~kpcompile.ingest.units.Lister` running each chunk's
    :meth:`~kpcompile.ingest.base.Source.prefix_listing` as a Dask task (see the module).

    At most twice the cluster's threads of chunks are in flight; listings are handed
    back in the chunks' order, whichever finishes first.
    """

    def lister(
        source: Source, names: frozenset[str], chunks: Iterator[list[str]]
    ) -> Iterator[Listing]:
        client = connection.client()
        window = 2 * _threads(client)
        pending: deque[tuple[Any, list[str]]] = deque()
        try:
            for chunk in chunks:
                future = client.submit(list_prefixes, source, chunk, names, pure=False)
                pending.append((future, chunk))
                if len(pending) >= window:
                    yield _listed(source, *pending.popleft())
            while pending:
                yield _listed(source, *pending.popleft())
        finally:
            for future, _ in pending:
                future.cancel()

    return lister


def list_prefixes(source: Source, prefixes: list[str], names: frozenset[str]) -> Listing:
    """What a Dask worker runs: the listing of some top-level prefixes of ``source``."""
    return source.prefix_listing(prefixes, names)


def _listed(source: Source, future: Any, chunk: list[str]) -> Listing:
    """A listing task's result; a worker's failure is a :class:`SourceError`."""
    from distributed import KilledWorker

    where = f"prefixes {chunk[0]!r} to {chunk[-1]!r}" if chunk else "no prefix"
    try:
        listing: Listing = future.result()
    except KpcompileError:
        raise
    except KilledWorker as exc:
        why = f"Dask workers died listing {where} ({exc})"
    except (CancelledError, OSError) as exc:
        why = f"lost the Dask cluster listing {where} ({type(exc).__name__}: {exc})"
    except Exception as exc:
        why = f"a Dask worker failed listing {where}: {type(exc).__name__}: {exc}"
    else:
        return listing
    msg = f"cannot list source {source.location!r}: {why}; nothing was published"
    raise SourceError(msg) from None


def _submit_all(client: Any, tasks: Iterable[ShardTask], on_done: OnDone) -> list[ShardResult]:
    from distributed import KilledWorker, as_completed

    window = 2 * _threads(client)
    sizes: dict[int, int] = {}
    results: list[ShardResult] = []
    running: Any = as_completed()  # type: ignore[no-untyped-call]

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
