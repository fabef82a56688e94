"""The history of an output folder: list its snapshots, compare two of them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from kpcompile import snapshot as snap
from kpcompile.errors import OutputError
from kpcompile.shard import read_parquet

Key = tuple[str, str]


def snapshots(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every published snapshot of ``out``, oldest first, with its counts.

    Example:
        >>> [s["snapshot"] for s in snapshots("compiled") if s["current"]]  # doctest: +SKIP
        ['20250101T120000Z-1a2b3c4d']
    """
    ids = snap.list_snapshots(out)
    if not ids:
        msg = f"{os.fspath(out)!r} holds no snapshot; build one with `kpcompile build SOURCE {out}`"
        raise OutputError(msg)
    try:
        current: str | None = snap.current_id(out)
    except OutputError:
        current = None
    rows = []
    for sid in ids:
        m = snap.read_manifest(out, sid)
        c = m["counts"]
        rows.append(
            {
                "snapshot": sid,
                "created_at": m["created_at"],
                "files": c["files"],
                "compiled": c["compiled"],
                "rejected": c["rejected"],
                "rows": c["rows"],
                "output_bytes": m["output_bytes"],
                "source": m["source"]["path"],
                "current": sid == current,
            }
        )
    return rows


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""

        def keys(items: list[Key]) -> list[dict[str, str]]:
            return [{"datapoint": d, "camera": c} for d, c in items]

        return {
            "old": self.old,
            "new": self.new,
            "added": keys(self.added),
            "removed": keys(self.removed),
            "changed": keys(self.changed),
            "unchanged": self.unchanged,
        }


def diff(out: str | os.PathLike[str], old: str, new: str) -> SnapshotDiff:
    """Which (datapoint, camera) were added, removed or changed between two snapshots.

    Compares the ``files`` tables: a camera folder's file path, ``checksum`` and status.

    Example:
        >>> old, new = [s["snapshot"] for s in snapshots("compiled")][-2:]  # doctest: +SKIP
        >>> d = diff("compiled", old, new)  # doctest: +SKIP
        >>> d.added[:1]  # doctest: +SKIP
        [('datapoint_00101', 'camera_00')]
    """
    a, b = _files(out, old), _files(out, new)
    return SnapshotDiff(
        old,
        new,
        added=sorted(b.keys() - a.keys()),
        removed=sorted(a.keys() - b.keys()),
        changed=sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
        unchanged=sum(1 for k in a.keys() & b.keys() if a[k] == b[k]),
    )


def _files(out: str | os.PathLike[str], sid: str) -> dict[Key, tuple[Any, ...]]:
    paths = snap.table_files(out, "files", sid)
    found: dict[Key, list[tuple[Any, ...]]] = {}
    for p in paths:
        t: pa.Table = read_parquet(p)
        cols = t.select(["datapoint", "camera", "path", "checksum", "status"]).to_pydict()
        for dp, cam, path, checksum, status in zip(*cols.values(), strict=True):
            # a camera folder may list a rejected duplicate file too: compare them all
            found.setdefault((dp, cam), []).append((path, checksum, status))
    return {k: tuple(sorted(v)) for k, v in found.items()}
