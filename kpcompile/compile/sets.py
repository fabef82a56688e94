"""Compile the other keypoint sets and camera metadata into their own tables (``--sets``).

The files are found by :mod:`kpcompile.ingest.sets` and parsed by
:mod:`kpcompile.parsing.sets`. They go through the same shards as the landmark
files: :func:`assign_sets` puts a camera folder's set files into the shard of its
landmark file, and the worker compiling that shard writes one part of each set
table (:func:`compile_sets`) beside its ``keypoints`` and ``files`` parts. So set
files are read in parallel, from any source a worker reads, counted in the progress
bar, and an incremental build links a shard's set parts with the rest of the shard.

A set file that cannot be read or does not have the expected shape is recorded in
the ``errors`` table (its path names the file, its code says why) and counts
against ``max_errors`` like a rejected landmark file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kpcompile.compile.writer import ParquetSettings, table_from_columns, write_table
from kpcompile.errors import ErrorCode, FormatError
from kpcompile.ingest import Source, SourceFile
from kpcompile.ingest.discover import FALLBACK_NAME
from kpcompile.ingest.sets import SetSource
from kpcompile.manifest import ErrorRow, FileEntry
from kpcompile.parsing.sets import SetRow, parse_camera, parse_set
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


def assign_sets(
    shards: Iterable[Sequence[SourceFile]], sets: Sequence[SetSource]
) -> list[tuple[SetSource, ...]]:
    """Per shard, the set files of the camera folders whose landmark file it holds.

    Example:
        >>> f = SourceFile("dp", "cam", "dp/cam/key_points/face_dense_key_points.json")
        >>> s = SetSource("cameras", "dp", "cam", "dp/cam/camera_metadata.json", "")
        >>> [len(x) for x in assign_sets([[], [f]], [s])]
        [0, 1]
    """
    assign = SetAssigner(sets)
    return [assign(shard) for shard in shards]


class SetAssigner:
    """Hands each shard, as shards are planned one after the other, its set files.

    A camera folder's set files go with its first landmark file in output order
    (a folder holding a duplicate landmark file is not counted twice). Within a
    shard they are in the shard's order, so each set table's rows follow the
    ``keypoints`` table's order.
    """

    def __init__(self, sets: Sequence[SetSource]) -> None:
        self._by_folder: dict[tuple[str, str], list[SetSource]] = {}
        for s in sets:
            self._by_folder.setdefault((s.datapoint, s.camera), []).append(s)

    def __call__(self, shard: Iterable[SourceFile]) -> tuple[SetSource, ...]:
        """The set files of ``shard``: to call once per shard, in planning order."""
        mine: list[SetSource] = []
        for f in shard:
            mine.extend(self._by_folder.pop((f.datapoint, f.camera), ()))
        mine.sort(key=lambda s: _RANK[s.table])  # stable: shard order within a table
        return tuple(mine)


_RANK = {t: i for i, t in enumerate(ALL_SET_TABLES)}


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
    read = source.read_many([s.path for s in sets], max_bytes)
    for src, (_rel, data) in zip(sets, read, strict=True):
        try:
            if isinstance(data, FormatError):
                raise data
            result.source_bytes += len(data)
            parsed = _parse(src, data)
        except FormatError as exc:
            result.errors.append(ErrorRow(src.path, str(exc.code), exc.reason))
            continue
        except Exception as exc:  # a bug on one file must not cost the other files
            reason = (
                f"internal error while compiling this file: {type(exc).__name__}: {exc}; "
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


def _parse(src: SetSource, data: bytes) -> dict[str, Any] | list[SetRow]:
    """A camera's row, or a set's rows; :class:`FormatError` naming the file if malformed."""
    if src.table == "cameras":
        return parse_camera(data, src.path)
    return parse_set(data, src.path, src.key, optional=src.path.endswith(FALLBACK_NAME))


def _write(
    result: SetsResult, table: str, t: pa.Table, folder: str, name: str, settings: ParquetSettings
) -> None:
    result.written[table] = [write_table(t, folder, f"{table}/{name}", settings)]
    result.rows[table] = t.num_rows
