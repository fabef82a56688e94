"""Retention: remove old snapshots, explicitly, never the current one.

Builds never delete published snapshots (a training run or an analysis may be
pinned to one). :func:`gc` is the only thing that does, and only when asked:
it keeps the ``keep`` newest snapshots plus the current one, whatever its age.

A snapshot is removed by first renaming its folder into ``OUT/.staging/`` (one
atomic step, so readers never see a half-deleted snapshot under
``snapshots/``) and then deleting it; if that deletion is interrupted, the next
build or ``gc`` finishes it. ``gc`` holds the build lock, so it never runs while
a build publishes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kpcompile import snapshot as snap
from kpcompile.errors import OptionsError, OutputError


@dataclass(slots=True)
class GcResult:
    """What :func:`gc` removed (or would remove, with ``dry_run``).

    Attributes:
        current: Id of the current snapshot (always kept).
        kept: Ids kept, oldest first.
        removed: Ids removed, oldest first.
        bytes_freed: Size of the removed snapshots' files.
    """

    current: str
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def gc(out: str | os.PathLike[str], *, keep: int, dry_run: bool = False) -> GcResult:
    """Remove all but the ``keep`` newest snapshots of ``out``; never the current one.

    Args:
        out: Output folder of ``kpcompile build``.
        keep: How many of the newest snapshots (by id, i.e. build time) to keep;
            the current snapshot is kept in addition when it is not among them.
            ``0`` keeps only the current one.
        dry_run: Only report what would be removed.

    Raises:
        OptionsError: ``keep`` is negative.
        OutputError: ``out`` holds no snapshot, or another build holds its lock.

    Example:
        >>> from kpcompile.retention import gc
        >>> gc("compiled", keep=3).removed  # doctest: +SKIP
        ['20240101T000000Z-1a2b3c4d']
    """
    if keep < 0:
        msg = f"keep must be 0 or more, got {keep}"
        raise OptionsError(msg)
    if not (os.path.isdir(out)):
        msg = f"{os.fspath(out)!r} is not an output folder"
        raise OutputError(msg)
    with snap.locked(out) as root:
        current = snap.current_id(root)
        ids = snap.list_snapshots(root)
        newest = set(ids[len(ids) - keep :]) if keep else set()
        result = GcResult(current)
        for sid in ids:
            if sid == current or sid in newest:
                result.kept.append(sid)
                continue
            folder = root / snap.SNAPSHOTS / sid
            result.bytes_freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            result.removed.append(sid)
            if not dry_run:
                _remove(root / snap.STAGING / f"gc-{sid}", folder)
    return result


def _remove(trash: Path, folder: Path) -> None:
    try:
        trash.parent.mkdir(exist_ok=True)
        os.rename(folder, trash)
        shutil.rmtree(trash)
    except OSError as exc:
        msg = f"cannot remove snapshot {str(folder)!r}: {exc.strerror or exc}"
        raise OutputError(msg) from None
