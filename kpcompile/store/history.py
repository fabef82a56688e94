"""The history of an output: its snapshots, a summary of one, what changed between two."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kpcompile.errors import OutputError
from kpcompile.manifest import ErrorRow
from kpcompile.store import open_store
from kpcompile.store.base import Store

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    """One published snapshot, as ``kpcompile snapshots`` lists it."""

    snapshot: str
    created_at: str
    files: int
    compiled: int
    rejected: int
    rows: int
    output_bytes: int
    source: str
    current: bool


def snapshots(out: str | os.PathLike[str] | Store) -> list[SnapshotSummary]:
    """Every published snapshot of ``out``, oldest first, with its counts.

    Raises:
        OutputError: ``out`` holds no snapshot.

    Example:
        >>> [s.snapshot for s in snapshots("compiled") if s.current]  # doctest: +SKIP
        ['20250101T120000Z-1a2b3c4d']
    """
    store = open_store(out)
    ids = store.list_snapshots()
    if not ids:
        raise store.no_snapshot()
    try:
        current: str | None = store.current_id()
    except OutputError:
        current = None
    rows = []
    for sid in ids:
        m = store.read_head(sid)
        c = m.counts
        rows.append(
            SnapshotSummary(
                sid,
                m.created_at,
                c.files,
                c.compiled,
                c.rejected,
                c.rows,
                m.output_bytes,
                m.source.path,
                sid == current,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class Info:
    """A summary of one snapshot (``kpcompile info``)."""

    snapshot: str
    path: str
    created_at: str
    source: str
    files: int
    compiled: int
    rejected: int
    sets_rejected: int
    """Rejected ``--sets`` files (in ``errors`` too, but not landmark files)."""
    rows: int
    datapoints: int
    cameras: int
    """Distinct camera names."""
    layouts: dict[str, int]
    versions: dict[str, int]
    tables: dict[str, int]
    """Rows per table."""
    source_bytes: int
    output_bytes: int
    tool_version: str
    options: dict[str, Any]
    snapshots: int
    """How many snapshots the output holds."""


def info(out: str | os.PathLike[str] | Store, *, snapshot: str | None = None) -> Info:
    """Summary of a snapshot (default: the current one): counts, layouts, tables, sizes.

    Example:
        >>> kpcompile.info("compiled").rows  # doctest: +SKIP
        936
    """
    store = open_store(out)
    m = store.head(snapshot)
    c = m.counts
    return Info(
        snapshot=m.snapshot,
        path=store.uri(m.snapshot),
        created_at=m.created_at,
        source=m.source.path,
        files=c.files,
        compiled=c.compiled,
        rejected=c.rejected,
        sets_rejected=c.sets_rejected,
        rows=c.rows,
        datapoints=c.datapoints,
        cameras=c.cameras,
        layouts=dict(m.layouts),
        versions=dict(m.versions),
        tables={name: t.rows for name, t in sorted(m.tables.items())},
        source_bytes=m.source.bytes,
        output_bytes=m.output_bytes,
        tool_version=m.tool.version,
        options=dict(m.options),
        snapshots=len(store.list_snapshots()),
    )


@dataclass(frozen=True, slots=True)
class SnapshotDiff:
    """What changed from snapshot ``old`` to snapshot ``new``, per (datapoint, camera).

    A camera folder is *changed* when its file's path, checksum or status differs.
    """

    old: str
    new: str
    added: list[Key] = field(default_factory=list)
    removed: list[Key] = field(default_factory=list)
    changed: list[Key] = field(default_factory=list)
    unchanged: int = 0


def diff(out: str | os.PathLike[str] | Store, old: str, new: str) -> SnapshotDiff:
    """Which (datapoint, camera) were added, removed or changed between two snapshots.

    Compares the ``files`` tables: a camera folder's file path, ``checksum`` and status.

    Example:
        >>> d = diff("compiled", "20250101T120000Z-1a2b3c4d", "20250102T093000Z-5e6f7a8b")
        ... # doctest: +SKIP
        >>> d.added[:1]  # doctest: +SKIP
        [('datapoint_00101', 'camera_00')]
    """
    store = open_store(out)
    a, b = _files(store, old), _files(store, new)
    return SnapshotDiff(
        old,
        new,
        added=sorted(b.keys() - a.keys()),
        removed=sorted(a.keys() - b.keys()),
        changed=sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
        unchanged=sum(1 for k in a.keys() & b.keys() if a[k] == b[k]),
    )


def _files(store: Store, sid: str) -> dict[Key, tuple[Any, ...]]:
    found: dict[Key, list[tuple[Any, ...]]] = {}
    for f in store.table_files(store.read_head(sid), "files"):
        t = pq.read_table(pa.BufferReader(store.read_bytes(sid, f.path)))
        cols = t.select(["datapoint", "camera", "path", "checksum", "status"]).to_pydict()
        for dp, cam, path, checksum, status in zip(*cols.values(), strict=True):
            # a camera folder may list a rejected duplicate file too: compare them all
            found.setdefault((dp, cam), []).append((path, checksum, status))
    return {k: tuple(sorted(v)) for k, v in found.items()}


@dataclass(frozen=True, slots=True)
class Rejections:
    """Rejected files of a snapshot, or of the last build when it was refused.

    Attributes:
        published: The rejections belong to a published snapshot (``snapshot``);
            ``False``: the last build was refused and published nothing.
        snapshot: The snapshot's id, ``None`` for a refused build.
        source: What the build read.
        errors: Every rejected file.
        attempted_at: When the refused build ran (``None`` for a snapshot).
        max_errors: The refused build's budget (``None`` for a snapshot).
    """

    published: bool
    snapshot: str | None
    source: str
    errors: list[ErrorRow]
    attempted_at: str | None = None
    max_errors: int | None = None


def rejections(
    out: str | os.PathLike[str] | Store, *, last: bool = False, snapshot: str | None = None
) -> Rejections:
    """The rejected files of a snapshot (default: the current one), or of the last build.

    A refused build publishes nothing, but its rejections are kept in the output
    until a build publishes: ``last=True`` returns them (or, when the last build
    published, the current snapshot's).

    Example:
        >>> [e.code for e in kpcompile.rejections("compiled", last=True).errors]  # doctest: +SKIP
        ['invalid_json']
    """
    store = open_store(out)
    refusal = store.last_refusal() if last and snapshot is None else None
    if refusal is not None:
        return Rejections(
            False, None, refusal.source, list(refusal.errors), refusal.attempted_at,
            refusal.max_errors,
        )  # fmt: skip
    m = store.head(snapshot)
    errors: list[ErrorRow] = []
    for f in store.table_files(m, "errors"):
        t = pq.read_table(pa.BufferReader(store.read_bytes(m.snapshot, f.path)))
        errors += [ErrorRow(*row.values()) for row in t.to_pylist()]
    return Rejections(True, m.snapshot, m.source.path, errors)
