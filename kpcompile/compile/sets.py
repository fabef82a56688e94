"""Compile the other keypoint sets and camera metadata into their own tables (``--sets``).

The files are found by :mod:`kpcompile.ingest.sets` and parsed by
:mod:`kpcompile.parsing.sets`. A set file that cannot be read or does not have the
expected shape is recorded in the ``errors`` table (its path names the file, its
code says why) and counts against ``max_errors`` like a rejected landmark file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from kpcompile.compile.stage import Stage
from kpcompile.compile.writer import ParquetSettings, write_table
from kpcompile.errors import FormatError
from kpcompile.ingest import Source
from kpcompile.ingest.discover import FALLBACK_NAME
from kpcompile.ingest.sets import SetSource
from kpcompile.manifest import ErrorRow, FileEntry
from kpcompile.parsing.sets import parse_camera, parse_set
from kpcompile.schema import CAMERAS_SCHEMA, SET_SCHEMA, SET_TABLES


@dataclass(slots=True)
class SetsResult:
    """What :func:`compile_sets` wrote: files per table, rows, rejected set files."""

    written: dict[str, list[FileEntry]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[ErrorRow] = field(default_factory=list)
    source_bytes: int = 0


def compile_sets(
    source: Source,
    sets: Sequence[SetSource],
    stage: Stage,
    settings: ParquetSettings,
    max_bytes: int,
) -> SetsResult:
    """Read every set file and write one Parquet file per table into ``stage``.

    Every table is written, empty when no folder holds its set, so every snapshot
    built with ``--sets`` has the same tables.
    """
    result = SetsResult()
    set_rows: dict[str, dict[str, list[Any]]] = {
        t: {n: [] for n in SET_SCHEMA.names} for t in SET_TABLES
    }
    cam_rows: list[dict[str, Any]] = []
    read = source.read_many([s.path for s in sets], max_bytes)
    for src, (_rel, data) in zip(sets, read, strict=True):
        try:
            if isinstance(data, FormatError):
                raise data
            result.source_bytes += len(data)
            if src.table == "cameras":
                row = parse_camera(data, src.path)
                cam_rows.append({"datapoint": src.datapoint, "camera": src.camera, **row})
                continue
            optional = src.path.endswith(FALLBACK_NAME)
            rows = parse_set(data, src.path, src.key, optional=optional)
        except FormatError as exc:
            result.errors.append(ErrorRow(src.path, str(exc.code), str(exc)))
            continue
        cols = set_rows[src.table]
        for r in rows:
            cols["datapoint"].append(src.datapoint)
            cols["camera"].append(src.camera)
            for name, value in zip(SET_SCHEMA.names[2:], r, strict=True):
                cols[name].append(value)
    with stage.writing() as folder:
        for table in SET_TABLES:
            t = pa.Table.from_pydict(set_rows[table], schema=SET_SCHEMA)
            _write(result, table, t, folder, settings)
        cams = pa.Table.from_pylist(cam_rows, schema=CAMERAS_SCHEMA)
        _write(result, "cameras", cams, folder, settings)
    return result


def _write(
    result: SetsResult, table: str, t: pa.Table, folder: str, settings: ParquetSettings
) -> None:
    result.written[table] = [write_table(t, folder, f"{table}/part-00000.parquet", settings)]
    result.rows[table] = t.num_rows
