"""Query results as a table, CSV, JSON, NDJSON or Parquet, in a file or on stdout, streamed.

The table form is for people: it shows the first ``limit`` rows (default
:data:`TABLE_ROWS`) and says how many it left out. It fetches ``limit + 1`` rows
lazily and counts the whole result (a lazy ``len``) only when there are more.

Every other form streams: polars' streaming sinks (``sink_csv``,
``sink_ndjson``, ``sink_parquet``) write a file, or stdout, batch by batch, so no
form holds the whole result in memory (beyond what the query itself needs, a
sort for instance). ``json`` is the NDJSON stream wrapped into one array, one row
object per line. A file's format comes from its suffix unless given
(:mod:`kpcompile.query.outfiles`); files appear only when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, BinaryIO, cast

import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.outfiles import RESULT_SUFFIXES, output_format, writing
from kpcompile.query.scan import Out, query_errors, sql

RESULT_FORMATS: tuple[str, ...] = ("table", "csv", "json", "ndjson", "parquet")
TABLE_ROWS = 50
"""Rows the table form shows unless given a limit."""


def write_result(
    out: Out,
    query: str,
    output: str | os.PathLike[str] | BinaryIO,
    *,
    fmt: str | None = None,
    limit: int | None = None,
    snapshot: str | None = None,
) -> None:
    """Run :func:`~kpcompile.sql` and write its result to a file or a binary stream.

    Args:
        out: Output folder of ``kpcompile build``.
        query: A polars SQL query over the snapshot's tables.
        output: A file path, or a binary stream such as ``sys.stdout.buffer``.
        fmt: One of :data:`RESULT_FORMATS`. Default: a file's suffix (``.csv``,
            ``.json``, ``.ndjson``/``.jsonl``, ``.parquet``); ``table`` on a stream.
        limit: Rows of the table form (default :data:`TABLE_ROWS`); for the other
            formats, the most rows to write (default: all).
        snapshot: A snapshot id; ``None`` for the current snapshot.

    Raises:
        OptionsError: ``fmt`` contradicts the file's suffix, or neither gives a format.
        OutputError: The file cannot be written (the message says why).
        QueryError: An unknown format, parquet on a stream, or an invalid query.

    Example:
        >>> write_result("compiled", "SELECT * FROM keypoints", "all.parquet")  # doctest: +SKIP
        >>> write_result("compiled", "SELECT * FROM files", sys.stdout.buffer)  # doctest: +SKIP
    """
    if fmt is not None and fmt not in RESULT_FORMATS:
        msg = f"format must be one of {', '.join(RESULT_FORMATS)}; got {fmt!r}"
        raise QueryError(msg)
    if limit is not None and limit < 1:
        msg = f"limit must be at least 1; got {limit}"
        raise QueryError(msg)
    if isinstance(output, str | os.PathLike):
        fmt = output_format(output, fmt, RESULT_SUFFIXES)
        with writing(output) as tmp:
            _write(sql(out, query, eager=False, snapshot=snapshot), fmt, limit, tmp)
        return
    fmt = fmt or "table"
    if fmt == "parquet":
        msg = "the parquet format needs an output file (-o FILE)"
        raise QueryError(msg)
    _write(sql(out, query, eager=False, snapshot=snapshot), fmt, limit, output)
    output.flush()


def _write(lf: pl.LazyFrame, fmt: str, limit: int | None, dest: Path | BinaryIO) -> None:
    with query_errors():
        if fmt == "table":
            _put(dest, table(lf, TABLE_ROWS if limit is None else limit).encode())
            return
        if limit is not None:
            lf = lf.limit(limit)
        if fmt == "csv":
            lf.sink_csv(dest, engine="streaming")
        elif fmt == "ndjson":
            lf.sink_ndjson(dest, engine="streaming")
        elif fmt == "parquet":
            lf.sink_parquet(dest, engine="streaming")
        elif isinstance(dest, Path):
            with dest.open("wb") as fh:
                _json(lf, fh)
        else:
            _json(lf, dest)


def table(lf: pl.LazyFrame, limit: int) -> str:
    """The first ``limit`` rows as a box-drawn table, and a line saying how many are not shown.

    Example:
        >>> print(table(kpcompile.sql("compiled", "SELECT * FROM files", eager=False), 5))
        ... # doctest: +SKIP
    """
    head = lf.limit(limit + 1).collect()
    shown = head.head(limit)
    more = head.height > limit
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=80,
        tbl_hide_dataframe_shape=more,
    ):
        text = f"{shown}\n"
    if more:
        total = lf.select(pl.len()).collect(engine="streaming").item()
        text += (
            f"showing the first {limit:,} of {total:,} rows; "
            "--limit N shows more, -o FILE writes every row\n"
        )
    return text


def _put(dest: Path | BinaryIO, data: bytes) -> None:
    if isinstance(dest, Path):
        dest.write_bytes(data)
    else:
        dest.write(data)


def _json(lf: pl.LazyFrame, raw: BinaryIO) -> None:
    array = _JsonArray(raw)
    lf.sink_ndjson(cast("IO[bytes]", array), engine="streaming")
    array.finish()


class _JsonArray:
    """A binary sink that turns NDJSON (one object per line) into one JSON array.

    Newlines inside JSON strings are escaped, so a newline byte always ends a row:
    each becomes ``,\\n`` except the last one, which closes the array.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._started = False
        self._pending = False

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        chunk = bytes(data)
        self._raw.write(b"" if self._started else b"[\n")
        self._raw.write(b",\n" if self._pending else b"")
        self._started = True
        self._pending = chunk.endswith(b"\n")
        self._raw.write((chunk[:-1] if self._pending else chunk).replace(b"\n", b",\n"))
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def finish(self) -> None:
        self._raw.write(b"\n]\n" if self._started else b"[]\n")
