"""The one interface every kind of source implements: list, read one, read many.

A :class:`Source` is a dataset somewhere: a folder, an archive, a prefix of an
object store. The rest of kpcompile holds a ``Source`` and never asks what kind it
is. Reading failures are per file: :meth:`Source.read` raises
:class:`~kpcompile.errors.FormatError` with code ``unreadable`` or ``too_large``
naming the file, which the build records as that file's rejection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from kpcompile.errors import ErrorCode, FormatError
from kpcompile.ingest.entry import Entry

if TYPE_CHECKING:
    from kpcompile.ingest.listing import Listing

__all__ = ["Entry", "Source", "too_large", "unreadable"]


class Source(ABC):
    """A dataset to compile.

    Attributes:
        location: Absolute path or URL, recorded in the manifest.
        name: The name of the dataset's root folder (the camera name of files
            lying directly in it).
        kind: ``folder``, ``archive`` or ``url``.
    """

    kind: ClassVar[str]

    def __init__(self, location: str, name: str, canonical: str | None = None) -> None:
        self.location = location
        self.name = name
        self.canonical = canonical or location
        """The real absolute path or the URL, to compare with other locations."""

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

    @abstractmethod
    def read(self, rel: str, max_bytes: int) -> bytes:
        """The bytes of one file.

        Raises:
            FormatError: ``unreadable`` (missing, not a regular file, I/O error) or
                ``too_large`` (more than ``max_bytes``), naming ``rel``.
        """

    def read_many(
        self, rels: Sequence[str], max_bytes: int
    ) -> Iterator[tuple[str, bytes | FormatError]]:
        """The bytes of several files, in the order given; a failure is that file's item."""
        for rel in rels:
            try:
                yield rel, self.read(rel, max_bytes)
            except FormatError as exc:
                yield rel, exc

    def portable(self, rels: Sequence[str], *, local: bool) -> Source:
        """A picklable source that can read ``rels`` in a worker process.

        ``local``: the worker runs on this machine (it may read local temporary
        files); otherwise it may run anywhere. Most sources are themselves portable.
        """
        return self

    def close(self) -> None:  # noqa: B027 - optional: most sources hold nothing
        """Release what the source holds (temporary files, connections)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unreadable(rel: str, reason: str) -> FormatError:
    """The rejection of a file that cannot be read."""
    return FormatError(ErrorCode.UNREADABLE, rel, f"cannot read: {reason}")


def too_large(rel: str, size: int | None, max_bytes: int) -> FormatError:
    """The rejection of a file beyond ``max_file_bytes`` (``size`` None: still growing)."""
    what = f"{size} bytes, more than" if size is not None else "growing beyond"
    return FormatError(
        ErrorCode.TOO_LARGE, rel, f"file too large: {what} max_file_bytes {max_bytes}"
    )
