"""Retention: remove old snapshots, explicitly, never the current one.

Builds never delete published snapshots (a training run or an analysis may be
pinned to one). :func:`gc` is the only thing that does, and only when asked: it
keeps the ``keep`` newest snapshots plus the current one, whatever its age. In a
local folder a snapshot is first renamed out of ``snapshots/`` (one atomic step),
so readers never see it half-deleted; on object storage its manifest goes first.

gc and builds never race to a wrong ``CURRENT``. In a local folder gc holds the
store's lock, so it never runs while a build publishes. Object storage has no
lock, so gc also keeps every snapshot whose id sorts after the current one's
(:meth:`~kpcompile.store.base.Store.publishing`): a build may be between
uploading its manifest and ``CURRENT``, and such a build's id is always newer
than ``CURRENT``'s (ids begin with the UTC build time; see
:mod:`kpcompile.store.objstore`). They are removed by a later gc, once a newer
snapshot is current.

gc also removes what killed builds left: staging folders in a local folder (all
of them: holding the lock, none is in use), and on object storage
``snapshots/<id>/`` prefixes without a manifest where nothing was written for
``stale_after`` (:data:`STALE_AFTER`, 24 hours, by default).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from kpcompile.errors import OptionsError
from kpcompile.store import open_store
from kpcompile.store.base import Store

STALE_AFTER = dt.timedelta(hours=24)
"""How long a build on object storage may write nothing before gc takes it as dead."""


@dataclass(slots=True)
class GcResult:
    """What :func:`gc` removed (or would remove, with ``dry_run``).

    Attributes:
        current: Id of the current snapshot (always kept).
        kept: Ids kept, oldest first.
        removed: Ids removed, oldest first.
        bytes_freed: Bytes freed: files of the removed snapshots that no kept
            snapshot shares (hard links count once); abandoned builds not counted.
        abandoned: Staging areas of builds that died, removed (local: folder names
            under ``.staging``; object storage: ids of prefixes without a manifest).
        dry_run: Nothing was removed.
    """

    current: str
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    abandoned: list[str] = field(default_factory=list)
    dry_run: bool = False


def gc(
    out: str | os.PathLike[str] | Store,
    *,
    keep: int,
    dry_run: bool = False,
    stale_after: dt.timedelta = STALE_AFTER,
) -> GcResult:
    """Remove all but the ``keep`` newest snapshots of ``out``; never the current one.

    Also removes what builds that died left behind.

    Args:
        out: Output folder or URL of ``kpcompile build``.
        keep: How many of the newest snapshots (by id, i.e. build time) to keep;
            the current snapshot is kept in addition when it is not among them.
            ``0`` keeps only the current one. On object storage, snapshots newer
            than the current one are kept too (a build may be publishing one).
        dry_run: Only report what would be removed.
        stale_after: On object storage, a prefix without a manifest is removed
            when nothing under it was written for this long (local folders: every
            staging folder, as gc holds the lock).

    Raises:
        OptionsError: ``keep`` or ``stale_after`` is negative.
        OutputError: ``out`` holds no snapshot, or another build holds its lock.

    Example:
        >>> gc("compiled", keep=3).removed  # doctest: +SKIP
        ['20240101T000000Z-1a2b3c4d']
    """
    if keep < 0:
        msg = f"keep must be 0 or more, got {keep}"
        raise OptionsError(msg)
    if stale_after < dt.timedelta(0):
        msg = f"stale_after must be 0 or more, got {stale_after}"
        raise OptionsError(msg)
    store = open_store(out)
    current = store.current_id()  # fails, naming the store, when it holds no snapshot
    with store.lock():
        current = store.current_id()
        ids = store.list_snapshots()
        newest = set(ids[-keep:]) if keep else set()  # keep > len(ids) keeps them all
        newest.update(store.publishing(current, ids), [current])
        result = GcResult(current, dry_run=dry_run)
        for sid in ids:
            (result.kept if sid in newest else result.removed).append(sid)
        result.bytes_freed = store.freed_by(result.removed)
        result.abandoned = store.abandoned(stale_after)
        if not dry_run:
            for name in result.abandoned:
                store.remove_abandoned(name)
            for sid in result.removed:
                store.remove(sid)
    return result
