"""The one interface every kind of source implements: list, read one, read many.

A :class:`Source` is a dataset somewhere: a folder, an archive, a prefix of an
object store. The rest of kpcompile holds a ``Source`` and never asks what kind it
is. Reading failures are per file: :meth:`Source.read` raises
:class:`~kpcompile.errors.FormatError` with code ``unreadable`` or ``too_large``
naming the file, which the build records as that file's rejection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kpcompile.ingest.entry import Entry
from kpcompile.ingest.rejections import internal_error, too_large, unreadable
from kpcompile.options import READ_AHEAD_MIB, READ_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from kpcompile.ingest.listing import Int32s, Listing
    from kpcompile.ingest.readahead import ReadAhead

__all__ = [
    "READ_AHEAD",
    "READ_TIMEOUT",
    "Entry",
    "Source",
    "internal_error",
    "too_large",
    "unreadable",
]

READ_AHEAD = READ_AHEAD_MIB << 20
"""Bytes each reader keeps in flight by default (``--read-ahead`` is in MiB)."""
READ_TIMEOUT = float(READ_TIMEOUT_SECONDS)
"""Seconds a read may take by default before its file is rejected as ``unreadable``."""


class Source(ABC):
    """A dataset to compile.

    Attributes:
        location: Absolute path or URL, recorded in the manifest.
        name: The name of the dataset's root folder (the camera name of files
            lying directly in it).
        kind: ``folder``, ``archive`` or ``url``.
    """

    kind: ClassVar[str]
    listable_anywhere: ClassVar[bool] = False
    """Whether any machine can list it by :meth:`prefix_listing` once it is pickled (an
    object store, a virtual dataset): the Dask executor then lists it on its workers."""

    def __init__(self, location: str, name: str, canonical: str | None = None) -> None:
        self.location = location
        self.name = name
        self.canonical = canonical or location
        """The real absolute path or the URL, to compare with other locations."""
        self._split: Any = None

    @abstractmethod
    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        """Every file whose base name is in ``names``, anywhere under the source."""

    def listing(self, names: frozenset[str]) -> Listing:
        """What :meth:`list` returns, in columnar form (one array per field).

        Sources that can list concurrently (folders, object stores) override this
        and :meth:`list` reads it.
        """
        from kpcompile.ingest.listing import Listing

        return Listing.of(self.list(names))

    def prefixes(self, names: frozenset[str]) -> tuple[str, ...]:
        """The top-level prefixes holding files named ``names``, sorted as UTF-8 bytes;
        ``""`` stands for the files lying in the root itself (and names starting with
        ``/``, which archives may hold).

        A build lists one prefix (or a batch of them) at a time with
        :meth:`prefix_listing`, so that it never holds the whole listing. This default
        lists everything once and keeps it until the source is closed (archives hold
        their members anyway); folders and object stores list each prefix natively.
        A prefix listed here may turn out to hold no named file.
        """
        return self._whole(names)[0]

    def prefix_listing(self, prefixes: Sequence[str], names: frozenset[str]) -> Listing:
        """The files named ``names`` under these top-level prefixes (of :meth:`prefixes`;
        ``""``: the root's own files), paths relative to the source's root, as
        :meth:`listing` gives them."""
        whole, of_file, lst = self._whole(names)
        wanted = np.isin(of_file, [whole.index(p) for p in prefixes if p in whole])
        return lst.take(np.flatnonzero(wanted))

    def _whole(self, names: frozenset[str]) -> tuple[tuple[str, ...], Int32s, Listing]:
        cached = getattr(self, "_split", None)
        if cached is None or cached[0] != names:
            lst = self.listing(names)
            top, of_file = lst.top_level()
            cached = (names, tuple(top), of_file, lst)
            self._split = cached
        return cached[1], cached[2], cached[3]

    @abstractmethod
    def read(self, rel: str, max_bytes: int) -> bytes:
        """The bytes of one file.

        Raises:
            FormatError: ``unreadable`` (missing, not a regular file, I/O error) or
                ``too_large`` (more than ``max_bytes``), naming ``rel``.
        """

    def read_many(
        self,
        rels: Sequence[str],
        max_bytes: int,
        *,
        window: int = READ_AHEAD,
        timeout: float = READ_TIMEOUT,
        sizes: Sequence[int] | None = None,
    ) -> ReadAhead:
        """The bytes of several files, in the order given; a failure is that file's item.

        Reads run ahead of the caller, at most ``window`` bytes in flight (``sizes``:
        the files' sizes as listed, to count them; see
        :mod:`kpcompile.ingest.readahead`). A read unfinished after ``timeout``
        seconds, and any unexpected exception, is that file's :class:`FormatError`:
        iterating never raises for one file and never hangs. Close the result (or
        use it as a context manager) to stop reads not yet consumed.
        """
        from kpcompile.ingest.readahead import thread_reads

        def read(rel: str) -> bytes:
            return self.read(rel, max_bytes)

        def cached(rel: str) -> bytes | None:
            return self.read_cached(rel, max_bytes)

        return thread_reads(
            read, rels, max_bytes, window=window, timeout=timeout, sizes=sizes, cached=cached
        )

    def read_cached(self, rel: str, max_bytes: int) -> bytes | None:
        """The bytes of one file if they can be had at once (in memory), else ``None``.

        :meth:`read_many` reads in the caller's thread while this answers, and hands
        reads to threads (read ahead, timed) from the first file it does not: on a
        warm page cache a thread per read costs more than the read (the GIL passed
        to and fro for every file). ``None`` is always a correct answer (the default).
        """
        return None

    def portable(self, rels: Sequence[str], *, local: bool) -> Source:
        """A picklable source that can read ``rels`` in a worker process.

        ``local``: the worker runs on this machine (it may read local temporary
        files); otherwise it may run anywhere. Most sources are themselves portable.
        """
        return self

    def __getstate__(self) -> dict[str, Any]:
        """What a worker receives: not the listing :meth:`prefixes` may have cached."""
        state = dict(self.__dict__)
        state["_split"] = None
        return state

    def close(self) -> None:  # noqa: B027 - optional: most sources hold nothing
        """Release what the source holds (temporary files, connections)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
