"""Read compiled snapshots with polars: ``scan_*`` is lazy, ``read_*`` is eager.

Readers resolve ``CURRENT`` once and then read only the files the snapshot's
manifest lists, so a build publishing meanwhile never mixes two snapshots.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal, overload

import polars as pl
import pyarrow as pa

from kpcompile import snapshot as snap
from kpcompile.errors import QueryError, SnapshotError
from kpcompile.writer import SCHEMAS

TABLES: tuple[str, ...] = tuple(SCHEMAS)
RESULT_FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")


def scan(
    out: str | os.PathLike[str], table: str = "keypoints", *, snapshot: str | None = None
) -> pl.LazyFrame:
    """Lazily scan a table of a snapshot (default: the current one).

    Args:
        out: Output folder of ``kpcompile build``.
        table: ``keypoints``, ``files``, ``errors``, or with ``--sets`` builds
            ``face_standard``, ``head``, ``ears``, ``cameras``.
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


def tables(out: str | os.PathLike[str], *, snapshot: str | None = None) -> list[str]:
    """Names of the tables a snapshot holds (from its manifest).

    Example:
        >>> kpcompile.tables("compiled")  # doctest: +SKIP
        ['errors', 'files', 'keypoints']
    """
    return sorted(snap.read_manifest(out, snapshot)["tables"])


@overload
def sql(
    out: str | os.PathLike[str],
    query: str,
    *,
    eager: Literal[True] = ...,
    snapshot: str | None = None,
) -> pl.DataFrame: ...


@overload
def sql(
    out: str | os.PathLike[str],
    query: str,
    *,
    eager: Literal[False],
    snapshot: str | None = None,
) -> pl.LazyFrame: ...


def sql(
    out: str | os.PathLike[str],
    query: str,
    *,
    eager: bool = True,
    snapshot: str | None = None,
) -> pl.DataFrame | pl.LazyFrame:
    """Run SQL over every table of a snapshot (polars ``SQLContext``).

    Each table of the snapshot is registered under its name (``keypoints``,
    ``files``, ``errors``, and with ``--sets`` ``face_standard``, ``head``,
    ``ears``, ``cameras``). ``CURRENT`` is read once, so all tables come from the
    same snapshot even if a build publishes meanwhile.

    Args:
        out: Output folder of ``kpcompile build``.
        query: A polars SQL query.
        eager: Return a DataFrame (default) or a LazyFrame.
        snapshot: A snapshot id; ``None`` for the current snapshot.

    Raises:
        QueryError: The query is not valid SQL for these tables.

    Example:
        >>> kpcompile.sql("compiled", "SELECT camera, avg(visible::int) AS rate "
        ...               "FROM keypoints GROUP BY camera")  # doctest: +SKIP
    """
    sid = snapshot or snap.current_id(out)
    frames = {name: scan(out, name, snapshot=sid) for name in tables(out, snapshot=sid)}
    ctx = pl.SQLContext(frames)
    try:
        lf = ctx.execute(query, eager=False)
        return lf.collect() if eager else lf
    except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError) as exc:
        msg = f"invalid query: {exc}"
        raise QueryError(msg) from None
    except (pl.exceptions.ColumnNotFoundError, pl.exceptions.InvalidOperationError) as exc:
        msg = f"query failed: {str(exc).splitlines()[0]}"
        raise QueryError(msg) from None


def write_result(
    out: str | os.PathLike[str],
    query: str,
    *,
    fmt: str = "table",
    output: str | os.PathLike[str] | None = None,
    snapshot: str | None = None,
) -> str | None:
    """Run :func:`sql` and render the result as ``table``, ``csv``, ``json`` or ``parquet``.

    Writes to ``output`` when given (required for ``parquet``) and returns None;
    otherwise returns the text. ``json`` is a list of row objects.

    Example:
        >>> print(write_result("compiled", "SELECT count(*) AS n FROM files", fmt="csv"))
        ... # doctest: +SKIP
        n
        24
    """
    if fmt not in RESULT_FORMATS:
        msg = f"format must be one of {', '.join(RESULT_FORMATS)}; got {fmt!r}"
        raise QueryError(msg)
    df = sql(out, query, snapshot=snapshot)
    if fmt == "parquet":
        if output is None:
            msg = "the parquet format needs an output file (-o FILE)"
            raise QueryError(msg)
        df.write_parquet(os.fspath(output))
        return None
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "json":
        text = json.dumps(df.to_dicts(), indent=2, default=str)
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=80):
            text = str(df)
    if output is not None:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        return None
    return text.rstrip("\n")


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
