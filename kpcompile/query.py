"""Read compiled snapshots with polars: ``scan_*`` is lazy, ``read_*`` is eager.

Readers resolve ``CURRENT`` once and then read only the files the snapshot's
manifest lists, so a build publishing meanwhile never mixes two snapshots.
"""

from __future__ import annotations

import os
from typing import Any

import polars as pl
import pyarrow as pa

from kpcompile import snapshot as snap
from kpcompile.errors import SnapshotError
from kpcompile.writer import SCHEMAS

TABLES: tuple[str, ...] = tuple(SCHEMAS)


def scan(
    out: str | os.PathLike[str], table: str = "keypoints", *, snapshot: str | None = None
) -> pl.LazyFrame:
    """Lazily scan a table of a snapshot (default: the current one).

    Args:
        out: Output folder of ``kpcompile build``.
        table: ``keypoints``, ``files`` or ``errors``.
        snapshot: A snapshot id; ``None`` for the current snapshot.

    Example:
        >>> import kpcompile, polars as pl
        >>> (kpcompile.scan("compiled")
        ...     .group_by("kp_id").agg(pl.col("visible").mean())
        ...     .collect())  # doctest: +SKIP
    """
    sid = snapshot or snap.current_id(out)
    files = snap.table_files(out, table, sid)
    schema = pl.DataFrame(_schema(table).empty_table()).schema
    if not files:
        return pl.LazyFrame(schema=schema)
    if "://" in os.fspath(out):
        return _scan_url(files, table)
    return pl.scan_parquet(files, hive_partitioning=False, schema=schema)


def _scan_url(files: list[str], table: str) -> pl.LazyFrame:
    """Scan Parquet files on object storage through fsspec (credentials from the environment)."""
    import fsspec
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, _ = fsspec.core.url_to_fs(files[0])
    paths = [fsspec.core.url_to_fs(f)[1] for f in files]
    dataset = ds.dataset(
        paths, schema=_schema(table), format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs))
    )
    return pl.scan_pyarrow_dataset(dataset)


def read(
    out: str | os.PathLike[str], table: str = "keypoints", *, snapshot: str | None = None
) -> pl.DataFrame:
    """Eager :func:`scan`."""
    return scan(out, table, snapshot=snapshot).collect()


def _schema(table: str) -> pa.Schema:
    if table not in SCHEMAS:
        msg = f"unknown table {table!r}; expected one of: {', '.join(TABLES)}"
        raise SnapshotError(msg)
    return SCHEMAS[table]


def info(out: str | os.PathLike[str], *, snapshot: str | None = None) -> dict[str, Any]:
    """Summary of a snapshot: id, file counts, rows, layouts, versions, bytes.

    Example:
        >>> kpcompile.info("compiled")["rows"]  # doctest: +SKIP
        936
    """
    m = snap.read_manifest(out, snapshot)
    counts = m["counts"]
    return {
        "snapshot": m["snapshot"],
        "path": snap.snapshot_location(out, m["snapshot"]),
        "created_at": m["created_at"],
        "source": m["source"]["path"],
        "files": counts["files"],
        "compiled": counts["compiled"],
        "rejected": counts["rejected"],
        "rows": counts["rows"],
        "layouts": m["layouts"],
        "versions": m["versions"],
        "source_bytes": m["source"]["bytes"],
        "output_bytes": m["output_bytes"],
        "tool_version": m["tool"]["version"],
        "snapshots": len(snap.list_snapshots(out)),
    }
