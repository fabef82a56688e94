"""Query results as a table, CSV, JSON, NDJSON or Parquet, on stdout or in a file.

``kpcompile query`` hands its SQL here. A file's format comes from its suffix
unless given (:mod:`kpcompile.query.outfiles`).
"""

from __future__ import annotations

import json
import os

import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.outfiles import RESULT_SUFFIXES, output_format, writing
from kpcompile.query.scan import Out, sql

RESULT_FORMATS: tuple[str, ...] = ("table", "csv", "json", "ndjson", "parquet")


def write_result(
    out: Out,
    query: str,
    *,
    fmt: str | None = None,
    output: str | os.PathLike[str] | None = None,
    snapshot: str | None = None,
) -> str | None:
    """Run :func:`~kpcompile.sql` and render the result in one of :data:`RESULT_FORMATS`.

    Writes to ``output`` when given (required for ``parquet``) and returns None;
    otherwise returns the text. Without ``fmt``, ``output``'s suffix gives the
    format (``.csv``, ``.json``, ``.ndjson``/``.jsonl``, ``.parquet``), and
    stdout gets a table. ``json`` is a list of row objects, ``ndjson`` one object
    per line.

    Raises:
        OptionsError: ``fmt`` contradicts ``output``'s suffix, or neither gives a format.
        QueryError: An unknown format, parquet without ``output``, or an invalid query.

    Example:
        >>> print(write_result("compiled", "SELECT count(*) AS n FROM files", fmt="csv"))
        ... # doctest: +SKIP
        n
        24
    """
    if fmt is not None and fmt not in RESULT_FORMATS:
        msg = f"format must be one of {', '.join(RESULT_FORMATS)}; got {fmt!r}"
        raise QueryError(msg)
    fmt = (fmt or "table") if output is None else output_format(output, fmt, RESULT_SUFFIXES)
    if fmt == "parquet" and output is None:
        msg = "the parquet format needs an output file (-o FILE)"
        raise QueryError(msg)
    if output is None:
        return _text(sql(out, query, snapshot=snapshot), fmt).rstrip("\n")
    with writing(output) as tmp:
        df = sql(out, query, snapshot=snapshot)
        if fmt == "parquet":
            df.write_parquet(tmp)
        else:
            text = _text(df, fmt)
            tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return None


def _text(df: pl.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.write_csv()
    if fmt == "json":
        return json.dumps(df.to_dicts(), indent=2, default=str)
    if fmt == "ndjson":
        return df.write_ndjson()
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=80):
        return str(df)
