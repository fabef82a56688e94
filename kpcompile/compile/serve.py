"""A worker process of the pool: receive a shard task, compile it, send the result back.

The coordinator (:mod:`kpcompile.compile.pool`) forks a worker, which then calls
:func:`serve`, or starts a fresh interpreter whose bootstrap calls :func:`main`.
Either way the worker runs nothing but this loop: never the caller's ``__main__``
module, so scripts need no ``if __name__ == "__main__":`` guard.

A worker ignores SIGINT (Ctrl-C reaches the whole process group; the coordinator
alone handles it, and kills its workers) and exits as soon as the coordinator is
gone, SIGKILL included, even in the middle of a shard: a killed build leaves no
process behind, and nothing writes into its staging folder after it died.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import threading
import traceback
from typing import Any, NoReturn

from kpcompile.compile.channel import Channel
from kpcompile.compile.shard import compile_shard
from kpcompile.errors import KpcompileError


def main() -> NoReturn:
    """Entry point of a fresh worker interpreter: ``argv`` is ``[fd, coordinator pid]``."""
    fd, coordinator = int(sys.argv[1]), int(sys.argv[2])
    serve(Channel.from_fd(fd), coordinator)


def serve(channel: Channel, coordinator: int) -> NoReturn:
    """Answer tasks until the channel closes or the coordinator exits; never returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a pending one (blocked at start) is discarded
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    exit_with(coordinator)
    while True:
        try:
            data = channel.recv_bytes()
        except (EOFError, OSError):  # the pool closed the channel, or the coordinator died
            os._exit(0)
        try:
            channel.send_bytes(_answer(data))
        except OSError:
            os._exit(0)


def _answer(data: bytes | bytearray) -> bytes:
    """The pickled reply to one pickled task: ``("ok", result)`` or ``("error", ...)``.

    An exception travels as its pickle with the worker's traceback as text; the
    coordinator re-raises it, or a :class:`KpcompileError` quoting the traceback if
    it cannot be unpickled there.
    """
    try:
        return pickle.dumps(("ok", compile_shard(pickle.loads(data))), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        try:
            pickled = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        except Exception:  # an exception that does not pickle: its text still travels
            pickled = pickle.dumps(KpcompileError(f"{type(exc).__name__}: {exc}"))
        return pickle.dumps(("error", pickled, text), pickle.HIGHEST_PROTOCOL)


def exit_with(coordinator: int) -> None:
    """Exit this process as soon as the coordinating process ``coordinator`` is gone.

    A daemon thread waits on a pidfd of the coordinator (polls its pid on systems
    without pidfd), so a worker busy with a shard stops too, not only an idle one
    (which would also see its channel close).
    """
    try:
        fd = os.pidfd_open(coordinator)
    except OSError:  # already gone, or no pidfd (Linux before 5.3)
        fd = -1
    if os.getppid() != coordinator:  # gone before the pidfd was opened
        os._exit(1)

    def watch() -> None:
        if fd >= 0:
            poll = select.poll()
            poll.register(fd, select.POLLIN)
            while not poll.poll():
                pass
        else:
            while os.getppid() == coordinator:
                threading.Event().wait(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="kpcompile-coordinator-watch", daemon=True).start()


def unpickled_error(payload: Any) -> BaseException:
    """The exception of an ``("error", pickle, traceback)`` reply, for the coordinator."""
    _, pickled, text = payload
    try:
        exc = pickle.loads(pickled)
    except Exception:
        return KpcompileError(f"a shard failed in a worker process:\n{text}")
    if not isinstance(exc, BaseException):
        return KpcompileError(f"a shard failed in a worker process:\n{text}")
    exc.add_note(f"raised in a worker process:\n{text.rstrip()}")
    return exc
