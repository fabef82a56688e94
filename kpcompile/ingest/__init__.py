"""Ingest, the first stage: find a dataset's files and read their bytes.

:func:`open_source` is the one place that looks at what SOURCE is (a folder, an
archive, a URL) and returns the matching :class:`Source`; everything after it
holds a ``Source`` and asks no more.
"""

from __future__ import annotations

import os

from kpcompile.errors import SourceError
from kpcompile.ingest.archive import SUFFIXES as ARCHIVE_SUFFIXES
from kpcompile.ingest.archive import open_archive
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.discover import LANDMARK_NAMES, SourceFile, discover
from kpcompile.ingest.folder import FolderSource
from kpcompile.ingest.url import UrlSource

__all__ = [
    "ARCHIVE_SUFFIXES",
    "Entry",
    "Source",
    "SourceFile",
    "discover",
    "is_url",
    "open_source",
]


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL (``s3://bucket/prefix``) rather than a local path."""
    return "://" in os.fspath(location)


def open_source(
    location: str | os.PathLike[str],
    *,
    max_file_bytes: int = 64 << 20,
    names: frozenset[str] = LANDMARK_NAMES,
) -> Source:
    """Open a folder, an archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``) or a URL.

    Archives and URLs combine: ``s3://bucket/dataset.tar.gz`` is streamed from the
    object store. ``names`` and ``max_file_bytes`` tell a streamed archive which
    members to keep.

    Raises:
        SourceError: Missing, unreadable, not a folder or an archive.

    Example:
        >>> with open_source("dataset.tar.gz") as src:  # doctest: +SKIP
        ...     len(discover(src))
        24
    """
    loc = os.fspath(location)
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
