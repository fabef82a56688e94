"""Compile the other keypoint sets and camera metadata into their own tables (``--sets``).

The files are found by :mod:`kpcompile.ingest.setfiles` and parsed by
:mod:`kpcompile.parsing.setrows`. They go through the same shards as the landmark
files: planning puts a camera folder's set files into the shard of its landmark
file (:meth:`kpcompile.ingest.setfiles.SetFiles.of_shard`), and the worker compiling
that shard writes one part of each set table (:func:`compile_sets`) beside its
``keypoints`` and ``files`` parts. So set
files are read in parallel, from any source a worker reads, counted in the progress
bar, and an incremental build links a shard's set parts with the rest of the shard.

A set file that cannot be read or does not have the expected shape is recorded in
the ``errors`` table (its path names the file, its code says why) and counts
against ``max_errors`` like a rejected landmark file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kpcompile.compile.writer import ParquetSettings, table_from_columns, write_table
from kpcompile.errors import ErrorCode, FormatError
from kpcompile.ingest import Source
from kpcompile.ingest.discover import FALLBACK_NAME
from kpcompile.ingest.setfiles import SetSource
from kpcompile.manifest import ErrorRow, FileEntry
from kpcompile.parsing.parse import load_json
from kpcompile.parsing.setrows import SetRow, camera_row, set_rows
from kpcompile.schema import CAMERAS_SCHEMA, SET_SCHEMA, SET_TABLES

if TYPE_CHECKING:
    import pyarrow as pa

ALL_SET_TABLES: tuple[str, ...] = (*SET_TABLES, "cameras")
"""Every table ``--sets`` adds; each shard of such a build writes one part of each."""


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
    folder: str,
    name: str,
    settings: ParquetSettings,
    max_bytes: int,
) -> SetsResult:
    """Read a shard's set files and write part ``name`` of every set table under ``folder``.

    Every table gets its part, empty when the shard holds none of its files, so every
    snapshot built with ``--sets`` has the same tables.
    """
    result = SetsResult()
    set_rows: dict[str, dict[str, list[Any]]] = {
        t: {n: [] for n in SET_SCHEMA.names} for t in SET_TABLES
    }
    cam_rows: list[dict[str, Any]] = []
    for src, parsed in zip(sets, _parsed(source, sets, max_bytes, result), strict=True):
        if isinstance(parsed, FormatError):
            result.errors.append(ErrorRow(src.path, str(parsed.code), parsed.reason))
            continue
        if isinstance(parsed, Exception):  # a bug on one file must not cost the other files
            reason = (
                f"internal error while compiling this file: {type(parsed).__name__}: {parsed}; "
                "please report it with the file"
            )
            err = FormatError(ErrorCode.INTERNAL_ERROR, src.path, reason)
            result.errors.append(ErrorRow(src.path, str(err.code), err.reason))
            continue
        if isinstance(parsed, dict):
            cam_rows.append({"datapoint": src.datapoint, "camera": src.camera, **parsed})
            continue
        cols = set_rows[src.table]
        for r in parsed:
            cols["datapoint"].append(src.datapoint)
            cols["camera"].append(src.camera)
            for col, value in zip(SET_SCHEMA.names[2:], r, strict=True):
                cols[col].append(value)
    for table in SET_TABLES:
        t = table_from_columns(set_rows[table], SET_SCHEMA)
        _write(result, table, t, folder, name, settings)
    cams = {col: [row[col] for row in cam_rows] for col in CAMERAS_SCHEMA.names}
    _write(result, "cameras", table_from_columns(cams, CAMERAS_SCHEMA), folder, name, settings)
    return result


def _parsed(
    source: Source, sets: Sequence[SetSource], max_bytes: int, result: SetsResult
) -> list[dict[str, Any] | list[SetRow] | Exception]:
    """Each set file's row or rows, or why it has none (in the order of ``sets``).

    A file is read and loaded once however many sets it holds (``all_key_points.json``
    may hold three), and its bytes are counted once: not at all when it is the shard's
    landmark file, whose bytes the landmarks count.
    """
    uses: dict[str, list[int]] = {}
    for k, s in enumerate(sets):
        uses.setdefault(s.path, []).append(k)
    got: dict[int, dict[str, Any] | list[SetRow] | Exception] = {}
    paths = list(uses)
    for path, (_rel, data) in zip(paths, source.read_many(paths, max_bytes), strict=True):
        doc: Any = data
        if not isinstance(data, FormatError):
            if not sets[uses[path][0]].landmarks:
                result.source_bytes += len(data)
            doc = _load(data, path)
        for k in uses[path]:
            got[k] = doc if isinstance(doc, Exception) else _safely(sets[k], doc)
    return [got[k] for k in range(len(sets))]


def _load(data: bytes, path: str) -> Any:
    try:
        return load_json(data, path)
    except Exception as exc:  # reported for each set of the file
        return exc


def _safely(src: SetSource, doc: Any) -> dict[str, Any] | list[SetRow] | Exception:
    try:
        return _parse(src, doc)
    except Exception as exc:  # reported, as any failure, by compile_sets
        return exc


def _parse(src: SetSource, doc: Any) -> dict[str, Any] | list[SetRow]:
    """A camera's row, or a set's rows; :class:`FormatError` naming the file if malformed."""
    if src.table == "cameras":
        return camera_row(doc, src.path)
    return set_rows(doc, src.path, src.key, optional=src.path.endswith(FALLBACK_NAME))


def _write(
    result: SetsResult, table: str, t: pa.Table, folder: str, name: str, settings: ParquetSettings
) -> None:
    result.written[table] = [write_table(t, folder, f"{table}/{name}", settings)]
    result.rows[table] = t.num_rows
