"""Ingest, the first stage: find a dataset's files and read their bytes.

:func:`open_source` is the one place that looks at what SOURCE is (a folder, an
archive, a URL) and returns the matching :class:`Source`; everything after it
holds a ``Source`` and asks no more.
"""

from __future__ import annotations

import contextlib
import os

from kpcompile.errors import SourceError
from kpcompile.ingest.archive import SUFFIXES as ARCHIVE_SUFFIXES
from kpcompile.ingest.archive import open_archive
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.discover import LANDMARK_NAMES, SourceFile, discover
from kpcompile.ingest.folder import FolderSource
from kpcompile.ingest.url import UrlSource
from kpcompile.ingest.virtual import SCHEME as VIRTUAL_SCHEME
from kpcompile.ingest.virtual import VirtualSource

__all__ = [
    "ARCHIVE_SUFFIXES",
    "Entry",
    "Source",
    "SourceFile",
    "VirtualSource",
    "discover",
    "is_url",
    "open_source",
    "preload",
]


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL (``s3://bucket/prefix``) rather than a local path."""
    return "://" in os.fspath(location)


def preload(location: str | os.PathLike[str]) -> None:
    """Import the client library reading ``location`` needs (s3fs for ``s3://``...).

    Called before worker processes are forked, so they start with it imported
    instead of each importing it (about 0.5 s of CPU for s3fs and botocore). Starts
    no thread and opens no connection; an unknown scheme is left to
    :func:`open_source` to report.
    """
    loc = os.fspath(location)
    if is_url(loc) and not loc.startswith(VIRTUAL_SCHEME):
        import fsspec

        # an unknown scheme or a missing extra: open_source reports it, naming the source
        with contextlib.suppress(Exception):
            fsspec.get_filesystem_class(loc.split("://", 1)[0])


def open_source(
    location: str | os.PathLike[str],
    *,
    max_file_bytes: int = 64 << 20,
    names: frozenset[str] = LANDMARK_NAMES,
) -> Source:
    """Open a folder, an archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``) or a URL.

    Archives and URLs combine: ``s3://bucket/dataset.tar.gz`` is streamed from the
    object store. ``names`` and ``max_file_bytes`` tell a streamed archive which
    members to keep. ``virtual://N/P`` is a generated dataset of ``N`` identical files
    in ``P`` top-level folders, for scale tests (:mod:`kpcompile.ingest.virtual`).

    Raises:
        SourceError: Missing, unreadable, not a folder or an archive.

    Example:
        >>> with open_source("dataset.tar.gz") as src:  # doctest: +SKIP
        ...     len(discover(src))
        24
    """
    loc = os.fspath(location)
    if loc.startswith(VIRTUAL_SCHEME):
        return VirtualSource.parse(loc)
    remote = is_url(loc)
    if not remote:
        if os.path.isdir(loc) or not os.path.exists(loc):
            return FolderSource(loc)
        loc = os.path.abspath(loc)
    if loc.endswith(ARCHIVE_SUFFIXES):
        return open_archive(loc, names, max_file_bytes, remote=remote)
    if remote:
        return UrlSource(loc)
    msg = f"source {loc!r} is not a folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})"
    raise SourceError(msg)
