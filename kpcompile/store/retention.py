"""Retention: remove old snapshots, explicitly, never the current one.

Builds never delete published snapshots (a training run or an analysis may be
pinned to one). :func:`gc` is the only thing that does, and only when asked: it
keeps the ``keep`` newest snapshots plus the current one, whatever its age. It
holds the store's lock, so it never runs while a build publishes. In a local
folder a snapshot is first renamed out of ``snapshots/`` (one atomic step), so
readers never see it half-deleted; on object storage its manifest goes first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kpcompile.errors import OptionsError
from kpcompile.store import open_store
from kpcompile.store.base import Store


@dataclass(slots=True)
class GcResult:
    """What :func:`gc` removed (or would remove, with ``dry_run``).

    Attributes:
        current: Id of the current snapshot (always kept).
        kept: Ids kept, oldest first.
        removed: Ids removed, oldest first.
        bytes_freed: Bytes freed: files of the removed snapshots that no kept
            snapshot shares (hard links count once).
        dry_run: Nothing was removed.
    """

    current: str
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    dry_run: bool = False


def gc(out: str | os.PathLike[str] | Store, *, keep: int, dry_run: bool = False) -> GcResult:
    """Remove all but the ``keep`` newest snapshots of ``out``; never the current one.

    Args:
        out: Output folder or URL of ``kpcompile build``.
        keep: How many of the newest snapshots (by id, i.e. build time) to keep;
            the current snapshot is kept in addition when it is not among them.
            ``0`` keeps only the current one.
        dry_run: Only report what would be removed.

    Raises:
        OptionsError: ``keep`` is negative.
        OutputError: ``out`` holds no snapshot, or another build holds its lock.

    Example:
        >>> gc("compiled", keep=3).removed  # doctest: +SKIP
        ['20240101T000000Z-1a2b3c4d']
    """
    if keep < 0:
        msg = f"keep must be 0 or more, got {keep}"
        raise OptionsError(msg)
    store = open_store(out)
    current = store.current_id()  # fails, naming the store, when it holds no snapshot
    with store.lock():
        current = store.current_id()
        ids = store.list_snapshots()
        newest = set(ids[-keep:]) if keep else set()  # keep > len(ids) keeps them all
        result = GcResult(current, dry_run=dry_run)
        for sid in ids:
            (result.kept if sid == current or sid in newest else result.removed).append(sid)
        result.bytes_freed = store.freed_by(result.removed)
        if not dry_run:
            for sid in result.removed:
                store.remove(sid)
    return result
