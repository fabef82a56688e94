"""A pool of worker processes, owned by one object that starts, feeds, watches and stops them.

Workers are forked from the coordinator when that is safe: fork is available, polars
is not loaded (its thread pool does not survive a fork) and no other thread runs (a
fork copies whatever locks those threads hold). A fork costs about a millisecond and
the worker starts with every module already imported. Otherwise a worker is a fresh
interpreter running only :mod:`kpcompile.compile.serve` (a few tenths of a second to
import kpcompile and pyarrow). Neither runs the caller's ``__main__`` module again,
so no script needs an ``if __name__ == "__main__":`` guard.

Each worker has its own channel and holds at most one task; the pool keeps at most
one more task per worker ready, so at most ``2 x workers`` tasks exist at once
whatever the number of shards, and tasks are taken from the iterator as needed.

A worker that dies (killed, out of memory) loses only the task it held: that task's
partial outputs are removed and it runs again on a new worker. A shard is a pure
function of its task and writes only its own file names, so the retry writes exactly
what the first attempt would have. A shard lost :data:`MAX_ATTEMPTS` times fails the
build. An exception raised in a worker is raised again by :meth:`WorkerPool.run`,
which kills every worker before it raises anything: when the caller discards the
staging folder, no worker is still writing to it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn

from kpcompile.compile.channel import Channel
from kpcompile.compile.serve import serve, unpickled_error
from kpcompile.compile.shard import ShardResult, ShardTask, remove_outputs
from kpcompile.errors import KpcompileError

MAX_ATTEMPTS = 3
"""How many times a shard runs at most when worker processes die under it."""

GRACE_SECONDS = 5.0
"""How long :meth:`WorkerPool.close` waits for idle workers to exit before killing them."""

log = logging.getLogger("kpcompile")
OnDone = Callable[[ShardResult, int], None]

# A fresh worker starts with SIGINT blocked (see _sigint_blocked), ignores it before
# importing anything, and finds modules where the coordinator finds them (its
# sys.path follows on the command line).
_BOOT = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "sys.path[:] = sys.argv[3:]; from kpcompile.compile.serve import main; main()"
)


@dataclass(eq=False)
class _Worker:
    """One worker process, the coordinator's end of its channel, and the task it holds."""

    pid: int
    channel: Channel
    popen: subprocess.Popen[bytes] | None  # None: forked by the pool itself
    task: ShardTask | None = None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def reap(self, timeout: float | None = None) -> bool:
        """Wait for the process to exit and reap it; False if it still runs after ``timeout``."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                pid, _ = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            except ChildProcessError:  # reaped already (SIGCHLD ignored by the application)
                return True
            if pid or (deadline is not None and time.monotonic() >= deadline):
                return bool(pid)
            time.sleep(0.002)


@dataclass
class _Work:
    """The tasks of one :meth:`WorkerPool.run`: those ready to send, and what came back."""

    tasks: Iterator[ShardTask]
    window: int
    ready: deque[ShardTask] = field(default_factory=deque)
    exhausted: bool = False
    attempts: Counter[int] = field(default_factory=Counter)
    results: list[ShardResult] = field(default_factory=list)

    def wants_more(self) -> bool:
        return not self.exhausted and len(self.ready) < self.window

    def pull(self) -> None:
        """Take the next task from the iterator (lazily: it may link reused shards as it goes)."""
        task = next(self.tasks, None)
        if task is None:
            self.exhausted = True
        else:
            self.ready.append(task)

    def has_task(self) -> bool:
        if not self.ready and not self.exhausted:
            self.pull()
        return bool(self.ready)

    def lost(self, task: ShardTask) -> None:
        """Count a lost attempt of ``task``; fail the build at :data:`MAX_ATTEMPTS`."""
        self.attempts[task.index] += 1
        n = self.attempts[task.index]
        if n >= MAX_ATTEMPTS:
            msg = (
                f"worker processes died {n} times while compiling shard {task.index} "
                "(killed, out of memory, or could not be started); nothing was published"
            )
            raise KpcompileError(msg)


class WorkerPool:
    """Worker processes compiling shard tasks; a context manager that stops them on exit.

    Args:
        size: How many workers run at once.

    Example:
        >>> with WorkerPool.start(2) as pool:  # doctest: +SKIP
        ...     results = pool.run(tasks, lambda result, n_files: None)
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"a worker pool needs at least one worker; got {size}"
            raise ValueError(msg)
        self.size = size
        self._workers: list[_Worker] = []

    @classmethod
    def start(cls, size: int) -> WorkerPool:
        """A pool whose workers start now, not at the first task.

        :func:`kpcompile.build` starts its pool before it lists the source files:
        forked workers share the coordinator's memory pages and copy those they
        write to, so started first they never carry the file lists. A worker that
        cannot be started now is started (or its failure counted) by :meth:`run`.
        """
        pool = cls(size)
        try:
            for _ in range(size):
                pool._spawn()
        except OSError as exc:  # out of processes or memory, for now
            log.debug("could not start a worker process: %s", exc)
        except BaseException:
            pool.kill()
            raise
        return pool

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [w.pid for w in self._workers]

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()

    def run(self, tasks: Iterable[ShardTask], on_done: OnDone) -> list[ShardResult]:
        """Compile every task in the workers; results sorted by shard index.

        ``on_done(result, n_files)`` is called for each result as it arrives. A
        worker that dies loses only its task, which runs again on a new worker.

        Raises:
            KpcompileError: Worker processes died under the same shard
                :data:`MAX_ATTEMPTS` times.
            Exception: Whatever ``compile_shard`` raised in a worker, or the tasks
                iterator raised here. Every worker is killed first.
        """
        work = _Work(iter(tasks), self.size)
        try:
            while self._dispatch(work):
                timeout = None
                if work.wants_more():
                    work.pull()  # prepare the next task while the workers compile
                    timeout = 0
                for worker in self._ready(timeout):
                    self._receive(worker, work, on_done)
        except BaseException:
            self.kill()
            raise
        return sorted(work.results, key=lambda r: r.index)

    def _dispatch(self, work: _Work) -> bool:
        """Give a task to every idle worker, starting workers as needed; True if any is busy."""
        while work.has_task():
            worker = next((w for w in self._workers if w.task is None), None)
            if worker is None and len(self._workers) < self.size:
                worker = self._spawn_for(work)
                if worker is None:
                    continue
            if worker is None:
                break
            worker.task = work.ready.popleft()
            try:
                worker.channel.send(worker.task)
            except OSError:  # it died before this task reached it
                self._lost(worker, work)
        return any(w.task is not None for w in self._workers)

    def _spawn_for(self, work: _Work) -> _Worker | None:
        """A new worker for the next task; ``None`` (and an attempt counted) if none starts."""
        try:
            return self._spawn()
        except OSError as exc:
            task = work.ready[0]
            work.lost(task)
            log.warning("could not start a worker process (%s); retrying shard %d", exc, task.index)
            time.sleep(0.1 * work.attempts[task.index])  # out of processes: let some exit
            return None

    def _ready(self, timeout: float | None) -> list[_Worker]:
        """Workers with a reply, or whose process ended (idle ones too): its channel's
        end-of-file is readable."""
        poll = select.poll()
        by_fd = {w.channel.fileno(): w for w in self._workers}
        for fd in by_fd:
            poll.register(fd, select.POLLIN)
        return [by_fd[fd] for fd, _ in poll.poll(None if timeout is None else timeout * 1000)]

    def _receive(self, worker: _Worker, work: _Work, on_done: OnDone) -> None:
        try:
            reply = worker.channel.recv()
        except (EOFError, OSError):
            self._lost(worker, work)
            return
        task, worker.task = worker.task, None
        assert task is not None, "a reply from a worker that holds no task"
        if reply[0] == "error":
            raise unpickled_error(reply)
        work.results.append(reply[1])
        on_done(reply[1], task.size)

    def _lost(self, worker: _Worker, work: _Work) -> None:
        """A worker died: reap it, and put the task it held (if any) back in front."""
        self._workers.remove(worker)
        worker.channel.close()
        worker.kill()  # it closed its channel without exiting, or is exiting already
        worker.reap()
        task = worker.task
        if task is None:
            log.warning("a worker process died while idle; nothing was lost")
            return
        work.lost(task)
        log.warning("a worker process died; retrying shard %d", task.index)
        remove_outputs(task)  # whatever the lost attempt wrote, complete or partial
        work.ready.appendleft(task)

    def close(self) -> None:
        """Stop every worker: idle ones exit when their channel closes; stragglers are killed."""
        workers, self._workers = self._workers, []
        for w in workers:
            w.channel.close()
        deadline = time.monotonic() + GRACE_SECONDS
        for w in workers:
            if not w.reap(max(0.0, deadline - time.monotonic())):
                w.kill()
                w.reap()

    def kill(self) -> None:
        """Kill every worker at once (whatever it is doing) and reap it."""
        workers, self._workers = self._workers, []
        for w in workers:
            w.kill()
            w.channel.close()
        for w in workers:
            w.reap()

    def _spawn(self) -> _Worker:
        ours, theirs = Channel.pair()
        try:
            with _sigint_blocked():
                worker = self._fork(ours, theirs) if _forkable() else _launch(ours, theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._workers.append(worker)
        return worker

    def _fork(self, ours: Channel, theirs: Channel) -> _Worker:
        coordinator = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # or the child could write their buffers again
            with contextlib.suppress(Exception):
                stream.flush()
        # The garbage collector writes to every object it visits, which would make the
        # child copy the pages holding them: frozen objects are never visited.
        gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            raise
        if pid == 0:
            self._child(ours, theirs, coordinator)
        gc.unfreeze()
        return _Worker(pid, ours, None)

    def _child(self, ours: Channel, theirs: Channel, coordinator: int) -> NoReturn:
        """Become a worker (in the forked child); never returns to the caller's code."""
        try:
            # Holding the coordinator's ends would keep the other workers (and this
            # one) from seeing end-of-file when the coordinator dies.
            for w in self._workers:
                w.channel.close()
            ours.close()
            serve(theirs, coordinator)
        finally:
            os._exit(1)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while a worker starts.

    The mask is inherited through fork and exec, so a Ctrl-C that reaches the new
    worker before it ignores SIGINT (a fresh interpreter takes a while to get
    there) stays pending until :func:`~kpcompile.compile.serve.serve` ignores it,
    which discards it. The coordinator gets its own Ctrl-C as soon as this ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals go to the main thread; this one's mask does not matter
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _forkable() -> bool:
    """Whether a forked worker is safe (see the module docstring)."""
    return hasattr(os, "fork") and "polars" not in sys.modules and threading.active_count() == 1


def _launch(ours: Channel, theirs: Channel) -> _Worker:
    """Start a fresh interpreter that serves tasks on ``theirs`` (inherited by fd)."""
    fd = theirs.fileno()
    paths = [p for p in sys.path if isinstance(p, str)]
    popen = subprocess.Popen(
        [sys.executable, "-c", _BOOT, str(fd), str(os.getpid()), *paths],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
    )
    return _Worker(popen.pid, ours, popen)
