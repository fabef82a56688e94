"""Compile one shard: the unit of work that any executor runs.

:func:`compile_shard` is a pure function of a picklable :class:`ShardTask`: it
reads, parses and writes one shard's Parquet files itself (through the task's
:class:`~kpcompile.compile.stage.Stage`), and returns only file names, counts and
rejected-file rows, never the landmark rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from kpcompile.compile.settables import ALL_SET_TABLES, compile_sets
from kpcompile.compile.stage import Stage
from kpcompile.compile.writer import (
    ParquetSettings,
    PartWriter,
    keypoints_table,
    table_from_columns,
    write_table,
)
from kpcompile.errors import ErrorCode, FormatError, SnapshotError
from kpcompile.ingest import Source, SourceFile
from kpcompile.ingest.base import READ_AHEAD, READ_TIMEOUT
from kpcompile.ingest.checksum import checksum
from kpcompile.ingest.paths import printable
from kpcompile.ingest.setfiles import SetSource
from kpcompile.manifest import ErrorRow, FileEntry
from kpcompile.parsing import NUM_LANDMARKS, Landmarks, parse
from kpcompile.schema import FILES_SCHEMA, KEYPOINTS_SCHEMA, partition_dir

SHARD_TABLES: tuple[str, ...] = ("keypoints", "files")
"""The tables every shard writes a part of."""


@dataclass(frozen=True, slots=True)
class PreviousFile:
    """A file compiled by the previous snapshot: what it was, and where its rows are.

    If the file's size and mtime are unchanged it is not read; if they changed but
    its bytes have the same checksum it is read but not parsed. Either way its
    landmarks come from ``part`` (a keypoints Parquet file of snapshot ``snapshot``).
    """

    size: int
    mtime_ns: int
    checksum: str
    layout: str
    version: str | None
    visible: int | None
    snapshot: str
    part: str


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Everything a worker needs to compile one shard (picklable)."""

    index: int
    files: tuple[SourceFile, ...]
    source: Source
    """Reads the files' bytes (see :meth:`~kpcompile.ingest.Source.portable`)."""
    stage: Stage
    partition_by: str
    settings: ParquetSettings
    max_file_bytes: int
    previous: tuple[PreviousFile | None, ...] | None = None
    """Per file, its compiled row in the previous snapshot (incremental builds)."""
    read_ahead: int = READ_AHEAD
    """Bytes of reads kept in flight while the worker parses (``0``: none)."""
    read_timeout: float = READ_TIMEOUT
    """Seconds a read may take before its file is rejected as ``unreadable``."""
    sets: tuple[SetSource, ...] | None = None
    """``--sets``: the set files of the shard's camera folders (then the shard writes a
    part of every set table, empty or not); ``None`` without ``--sets``."""
    plan_only: bool = False
    """Do nothing and return an empty result (``--plan-only``: the coordinator is measured)."""

    @property
    def size(self) -> int:
        """Files the shard reads: landmark files and set files (what progress counts)."""
        return len(self.files) + len(self.sets or ())


@dataclass(slots=True)
class ShardResult:
    """What a worker sends back: names and counts, never the rows themselves."""

    index: int
    written: dict[str, list[FileEntry]] = field(default_factory=dict)
    errors: list[ErrorRow] = field(default_factory=list)
    compiled: int = 0
    rows: int = 0
    visible: int = 0
    source_bytes: int = 0
    layouts: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    parsed: int = 0
    """Files parsed from JSON."""
    reused: int = 0
    """Files whose landmarks were taken from the previous snapshot (incremental builds)."""
    set_errors: list[ErrorRow] = field(default_factory=list)
    """Rejected ``--sets`` files (in the ``errors`` table, not counted as rejected
    landmark files)."""


@dataclass(slots=True)
class _Outcome:
    """One file's fate: its landmarks (parsed or reused) or its rejection."""

    lm: Landmarks | None = None
    reuse: PreviousFile | None = None
    size: int | None = None
    checksum: str | None = None
    error: FormatError | None = None

    @property
    def ok(self) -> bool:
        return self.lm is not None or self.reuse is not None


def compile_shard(task: ShardTask) -> ShardResult:
    """Read, parse and write one shard; every file ends in ``keypoints`` or in ``errors``."""
    if task.plan_only:
        return ShardResult(task.index)
    with task.stage.writing() as folder:
        return _compile(task, folder)


def _compile(task: ShardTask, folder: str) -> ShardResult:
    result = ShardResult(task.index)
    name = part_name(task.index)
    rows = _Rows(folder, name, task.settings)
    files = _FilesColumns()
    parts = _PreviousParts(task.stage)
    wanted = [i for i, sf in enumerate(task.files) if _must_read(task, i, sf)]
    with task.source.read_many(
        [task.files[i].path for i in wanted],
        task.max_file_bytes,
        window=task.read_ahead,
        timeout=task.read_timeout,
        sizes=[task.files[i].size for i in wanted],
    ) as reads:
        _each_file(task, result, rows, files, parts, iter(reads))
    result.written["keypoints"] = rows.close()
    table = table_from_columns(files.cols, FILES_SCHEMA)
    result.written["files"] = [write_table(table, folder, f"files/{name}", task.settings)]
    if task.sets is not None:
        sets = compile_sets(
            task.source, task.sets, folder, name, task.settings, task.max_file_bytes
        )
        result.written.update(sets.written)
        result.set_errors = sets.errors
        result.source_bytes += sets.source_bytes
    return result


Read = tuple[str, "bytes | FormatError"]


def _must_read(task: ShardTask, i: int, sf: SourceFile) -> bool:
    """Whether file ``i`` is read (see :func:`_read_and_parse`, which decides the same)."""
    if sf.unsafe is not None or sf.duplicate_of is not None:
        return False
    prev = task.previous[i] if task.previous is not None else None
    return prev is None or (sf.size, sf.mtime_ns) != (prev.size, prev.mtime_ns)


def _each_file(
    task: ShardTask,
    result: ShardResult,
    rows: _Rows,
    files: _FilesColumns,
    parts: _PreviousParts,
    reads: Iterator[Read],
) -> None:
    """Parse the shard's files in order, taking the bytes of those read as they arrive."""
    for i, sf in enumerate(task.files):
        prev = task.previous[i] if task.previous is not None else None
        got = next(reads) if _must_read(task, i, sf) else None
        assert got is None or got[0] == sf.path, (got[0] if got else None, sf.path)
        outcome = _outcome(task, sf, prev, got[1] if got is not None else None)
        key = sf.camera if task.partition_by == "camera" else ""
        if outcome.reuse is not None:
            table, at = parts.rows(outcome.reuse, sf)
            rows.add_previous(key, table, at)
            result.reused += 1
        elif outcome.lm is not None:
            rows.add(key, sf.datapoint, sf.camera, outcome.lm)
            result.parsed += 1
        elif outcome.error is not None:
            err = outcome.error
            result.errors.append(ErrorRow(printable(sf.path), str(err.code), printable(err.reason)))
        files.add(sf, outcome)
        _count(result, outcome)


def _outcome(
    task: ShardTask, sf: SourceFile, prev: PreviousFile | None, data: bytes | FormatError | None
) -> _Outcome:
    """What becomes of one file; any failure is that file's rejection, never the shard's."""
    try:
        return _read_and_parse(task, sf, prev, data)
    except Exception as exc:  # a bug on one file must not cost the other files
        reason = (
            f"internal error while compiling this file: {type(exc).__name__}: {exc}; "
            "please report it with the file"
        )
        err = FormatError(ErrorCode.INTERNAL_ERROR, sf.path, reason)
        return _Outcome(size=sf.size if sf.size >= 0 else None, error=err)


def _read_and_parse(
    task: ShardTask, sf: SourceFile, prev: PreviousFile | None, data: bytes | FormatError | None
) -> _Outcome:
    """One file's outcome; ``data``: its bytes or read error, None when it is not read."""
    if sf.unsafe is not None:
        reason = f"unsafe name: {sf.unsafe}; " + (
            "the tables hold UTF-8 text (the name is shown with \\x escapes)"
            if sf.unsafe == "a name that is not valid UTF-8"
            else "rejected as Python's tarfile 'data' filter does"
        )
        return _Outcome(error=FormatError(ErrorCode.UNSAFE_PATH, sf.path, reason))
    if sf.duplicate_of is not None:
        reason = (
            f"camera folder already compiled from {sf.duplicate_of}; "
            "a camera folder may hold one landmark file"
        )
        err = FormatError(ErrorCode.DUPLICATE_CAMERA, sf.path, reason)
        return _Outcome(size=sf.size if sf.size >= 0 else None, error=err)
    if prev is not None and (sf.size, sf.mtime_ns) == (prev.size, prev.mtime_ns):
        return _Outcome(reuse=prev, size=prev.size, checksum=prev.checksum)
    assert data is not None, "read by _each_file, as _must_read says"
    if isinstance(data, FormatError):
        return _Outcome(size=sf.size if sf.size >= 0 else None, error=data)
    out = _Outcome(size=len(data), checksum=checksum(data))
    if prev is not None and (len(data), out.checksum) == (prev.size, prev.checksum):
        out.reuse = prev
        return out
    try:
        out.lm = parse(data, sf.path)
    except FormatError as exc:
        out.error = exc
    return out


def _count(result: ShardResult, o: _Outcome) -> None:
    if o.checksum is not None or o.ok:  # the file's bytes were read (now or before)
        result.source_bytes += o.size or 0
    if o.reuse is not None:
        layout, version, visible = o.reuse.layout, o.reuse.version, o.reuse.visible
    elif o.lm is not None:
        layout, version, visible = o.lm.layout, o.lm.version, o.lm.visible_count
    else:
        return
    result.compiled += 1
    result.rows += NUM_LANDMARKS
    result.visible += visible or 0
    result.layouts[layout] += 1
    result.versions[version or "none"] += 1


class _FilesColumns:
    """The ``files`` table of a shard, one row per source file."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {name: [] for name in FILES_SCHEMA.names}

    def add(self, sf: SourceFile, o: _Outcome) -> None:
        if o.reuse is not None:
            layout, version, visible = o.reuse.layout, o.reuse.version, o.reuse.visible
        elif o.lm is not None:
            layout, version, visible = o.lm.layout, o.lm.version, o.lm.visible_count
        else:
            layout, version, visible = None, None, None
        c = self.cols
        c["path"].append(printable(sf.path))
        c["datapoint"].append(printable(sf.datapoint))
        c["camera"].append(printable(sf.camera))
        c["status"].append("ok" if o.ok else "rejected")
        c["layout"].append(layout)
        c["version"].append(version)
        c["landmarks"].append(NUM_LANDMARKS if o.ok else None)
        c["visible"].append(visible)
        c["bytes"].append(o.size)
        c["mtime_ns"].append(sf.mtime_ns)
        c["checksum"].append(o.checksum)


def part_name(index: int) -> str:
    """File name of shard ``index``'s Parquet file in each table folder it writes."""
    return f"part-{index:05d}.parquet"


def remove_outputs(task: ShardTask) -> int:
    """Remove whatever an earlier attempt of ``task`` wrote (complete or partial).

    Only files named after this shard are touched, so other shards' outputs stay.
    Returns how many files were removed.
    """
    return task.stage.remove_named(part_name(task.index), SHARD_TABLES + ALL_SET_TABLES)


class _Rows:
    """A shard's keypoint rows per partition, in file order, written a row group at a time.

    Rows are parsed files' landmarks, or runs of rows copied from the previous
    snapshot's Parquet (incremental builds). Every ``row_group_files`` files of a
    partition become one row group with the values a full build computes, at the
    same boundaries, so the Parquet bytes are the same either way.
    """

    def __init__(self, folder: str, name: str, settings: ParquetSettings) -> None:
        self._folder, self._name, self._settings = folder, name, settings
        self._pending: dict[str, list[Any]] = {}
        self._count: dict[str, int] = {}
        self._writers: dict[str, PartWriter] = {}

    def add(self, key: str, datapoint: str, camera: str, lm: Landmarks) -> None:
        segs = self._pending.setdefault(key, [])
        if not segs or not isinstance(segs[-1], list):
            segs.append([])
        segs[-1].append((datapoint, camera, lm))
        self._added(key)

    def add_previous(self, key: str, table: pa.Table, at: int) -> None:
        segs = self._pending.setdefault(key, [])
        last = segs[-1] if segs else None
        if isinstance(last, tuple) and last[0] is table and last[2] == at:
            segs[-1] = (table, last[1], at + NUM_LANDMARKS)  # the next file of the same run
        else:
            segs.append((table, at, at + NUM_LANDMARKS))
        self._added(key)

    def _added(self, key: str) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        if self._count[key] >= self._settings.row_group_files:
            self._flush(key)

    def _flush(self, key: str) -> None:
        segs = self._pending.pop(key, [])
        self._count[key] = 0
        if not segs:
            return
        pieces = [
            keypoints_table(s)
            if isinstance(s, list)
            else pa.Table.from_arrays(
                s[0].slice(s[1], s[2] - s[1]).columns, schema=KEYPOINTS_SCHEMA
            )
            for s in segs
        ]
        table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces).combine_chunks()
        if key not in self._writers:
            folder = f"keypoints/{partition_dir('camera', key)}" if key else "keypoints"
            self._writers[key] = PartWriter(
                self._folder, f"{folder}/{self._name}", self._settings, KEYPOINTS_SCHEMA
            )
        self._writers[key].write(table)

    def close(self) -> list[FileEntry]:
        """Write what is left and finish every partition's file, in partition order."""
        for key in sorted(self._pending):
            self._flush(key)
        return [self._writers[key].close() for key in sorted(self._writers)]


class _PreviousParts:
    """Keypoints Parquet files of the previous snapshot, opened once per shard."""

    def __init__(self, stage: Stage) -> None:
        self._stage = stage
        self._open: dict[str, tuple[pa.Table, dict[tuple[str, str], int]]] = {}

    def rows(self, prev: PreviousFile, sf: SourceFile) -> tuple[pa.Table, int]:
        """The previous part holding ``sf``'s rows, and the first row's offset."""
        if prev.part not in self._open:
            table = self._stage.read_table(prev.snapshot, prev.part).combine_chunks()
            starts = np.arange(0, table.num_rows, NUM_LANDMARKS)
            # scalar access, not .take(): pyarrow.compute would import pandas (0.15 s)
            dps, cams = table.column("datapoint"), table.column("camera")
            keys = [(dps[int(i)].as_py(), cams[int(i)].as_py()) for i in starts]
            self._open[prev.part] = (table, {k: int(s) for k, s in zip(keys, starts, strict=True)})
        table, index = self._open[prev.part]
        at = index.get((sf.datapoint, sf.camera))
        if at is None:
            msg = f"{prev.part} holds no rows of {sf.path}; rebuild with --full"
            raise SnapshotError(msg)
        return table, at
