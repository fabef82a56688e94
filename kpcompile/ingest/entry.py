"""One file as a source's listing sees it (kept apart so that importing it is cheap)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """A file as a listing sees it: path relative to the source, size (-1: not a file), mtime."""

    path: str
    size: int
    mtime_ns: int
