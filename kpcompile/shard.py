"""Compile one shard: the unit of work that any executor runs.

:func:`compile_shard` is a pure function of a picklable :class:`ShardTask`: it
reads, parses and writes one shard's Parquet files itself, and returns only file
names, counts and rejected-file rows, never the landmark rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kpcompile.errors import ErrorCode, FormatError, SnapshotError
from kpcompile.parse import NUM_LANDMARKS, Landmarks, parse
from kpcompile.sources import Payload, SourceFile, SpoolRef, is_url, read_file
from kpcompile.writer import (
    FILES_SCHEMA,
    KEYPOINTS_SCHEMA,
    ParquetSettings,
    PartWriter,
    WrittenFile,
    keypoints_table,
    partition_dir,
    table_from_columns,
    write_table,
)

ErrorRow = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Everything a worker needs to compile one shard (picklable)."""

    index: int
    root: str
    files: tuple[SourceFile, ...]
    staging: str
    partition_by: str
    settings: ParquetSettings
    max_file_bytes: int
    data: Payload | None = None
    """The files' bytes when they travel in the task (streamed archives); else read from root."""
    previous: tuple[PreviousFile | None, ...] | None = None
    """Per file, its compiled row in the previous snapshot (incremental builds)."""


@dataclass(frozen=True, slots=True)
class PreviousFile:
    """A file compiled by the previous snapshot: what it was, and where its rows are.

    If the file's size and mtime are unchanged it is not read; if they changed but
    its bytes have the same checksum it is read but not parsed. Either way its
    landmarks come from ``part`` (a keypoints Parquet file of the previous snapshot).
    """

    size: int
    mtime_ns: int
    checksum: str
    layout: str
    version: str | None
    visible: int | None
    part: str


@dataclass(slots=True)
class ShardResult:
    """What a worker sends back: names and counts, never the rows themselves."""

    index: int
    written: dict[str, list[WrittenFile]] = field(default_factory=dict)
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


def compile_shard(task: ShardTask) -> ShardResult:
    """Read, parse and write one shard; every file ends in ``keypoints`` or in ``errors``.

    ``task.staging`` may be a URL (object storage): the shard is then written to a
    local temporary folder and uploaded.
    """
    if not is_url(task.staging):
        return _compile(task, task.staging)
    local = tempfile.mkdtemp(prefix="kpcompile-shard-")
    try:
        result = _compile(task, local)
        upload(local, task.staging, [w for items in result.written.values() for w in items])
        return result
    finally:
        shutil.rmtree(local, ignore_errors=True)


def upload(local: str, url: str, written: list[WrittenFile]) -> None:
    """Copy written files from a local folder to the same paths under ``url``."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(url)
    for w in written:
        fs.put_file(os.path.join(local, w.path), f"{base.rstrip('/')}/{w.path}")


def write_table_to(
    table: pa.Table, staging: str, rel: str, settings: ParquetSettings
) -> WrittenFile:
    """:func:`~kpcompile.writer.write_table` into a local folder or a URL."""
    if not is_url(staging):
        return write_table(table, staging, rel, settings)
    local = tempfile.mkdtemp(prefix="kpcompile-table-")
    try:
        written = write_table(table, local, rel, settings)
        upload(local, staging, [written])
        return written
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _compile(task: ShardTask, staging: str) -> ShardResult:
    result = ShardResult(task.index)
    rows = _Rows(staging, part_name(task.index), task.settings)
    cols: dict[str, list[Any]] = {name: [] for name in FILES_SCHEMA.names}
    parts = _PreviousParts()
    for i, sf in enumerate(task.files):
        lm: Landmarks | None = None
        data: bytes | None = None
        prev = task.previous[i] if task.previous is not None else None
        reuse = False  # landmarks come from the previous snapshot, not from JSON
        checksum: str | None = None
        try:
            if sf.duplicate_of is not None:
                raise FormatError(
                    ErrorCode.DUPLICATE_CAMERA,
                    sf.path,
                    f"camera folder already compiled from {sf.duplicate_of}; "
                    "a camera folder may hold one landmark file",
                )
            if prev is not None and (sf.size, sf.mtime_ns) == (prev.size, prev.mtime_ns):
                reuse, checksum = True, prev.checksum
            else:
                data = _read(task, i, sf.path)
                checksum = f"crc32:{zlib.crc32(data):08x}"
                if prev is not None and (len(data), checksum) == (prev.size, prev.checksum):
                    reuse = True
                else:
                    lm = parse(data, sf.path)
        except FormatError as exc:
            result.errors.append((sf.path, str(exc.code), str(exc)))
        key = sf.camera if task.partition_by == "camera" else ""
        if reuse and prev is not None:
            table, at = parts.rows(prev, sf)
            rows.add_previous(key, table, at)
            layout, version, visible_count = prev.layout, prev.version, prev.visible
            size: int | None = prev.size
            result.reused += 1
        elif lm is not None:
            rows.add(key, sf.datapoint, sf.camera, lm)
            layout, version, visible_count = lm.layout, lm.version, lm.visible_count
            size = len(data) if data is not None else None
            result.parsed += 1
        else:
            size = len(data) if data is not None else (sf.size if sf.size >= 0 else None)
        ok = reuse or lm is not None
        cols["path"].append(sf.path)
        cols["datapoint"].append(sf.datapoint)
        cols["camera"].append(sf.camera)
        cols["status"].append("ok" if ok else "rejected")
        cols["layout"].append(layout if ok else None)
        cols["version"].append(version if ok else None)
        cols["landmarks"].append(NUM_LANDMARKS if ok else None)
        cols["visible"].append(visible_count if ok else None)
        cols["bytes"].append(size)
        cols["mtime_ns"].append(sf.mtime_ns)
        cols["checksum"].append(checksum)
        if data is not None or ok:
            result.source_bytes += size or 0
        if not ok:
            continue
        result.compiled += 1
        result.rows += NUM_LANDMARKS
        result.visible += visible_count or 0
        result.layouts[layout] += 1
        result.versions[version or "none"] += 1
    name = part_name(task.index)
    result.written["keypoints"] = rows.close()
    files_table = table_from_columns(cols, FILES_SCHEMA)
    result.written["files"] = [write_table(files_table, staging, f"files/{name}", task.settings)]
    return result


def part_name(index: int) -> str:
    """File name of shard ``index``'s Parquet file in each table folder it writes."""
    return f"part-{index:05d}.parquet"


def remove_outputs(task: ShardTask) -> int:
    """Remove whatever an earlier attempt of ``task`` wrote (complete or partial).

    Only files named after this shard are touched, so other shards' outputs stay.
    Returns how many files were removed.
    """
    prefix = part_name(task.index)
    removed = 0
    for table in ("keypoints", "files"):
        for folder, _, names in os.walk(os.path.join(task.staging, table)):
            for n in names:
                if n == prefix or n.startswith(prefix + "."):
                    os.remove(os.path.join(folder, n))
                    removed += 1
    return removed


class _Rows:
    """A shard's keypoint rows per partition, in file order, written a row group at a time.

    Rows are parsed files' landmarks, or runs of rows copied from the previous
    snapshot's Parquet (incremental builds). Every ``row_group_files`` files of a
    partition become one row group with the values a full build computes, at the
    same boundaries, so the Parquet bytes are the same either way.
    """

    def __init__(self, staging: str, name: str, settings: ParquetSettings) -> None:
        self._staging, self._name, self._settings = staging, name, settings
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
                self._staging, f"{folder}/{self._name}", self._settings, KEYPOINTS_SCHEMA
            )
        self._writers[key].write(table)

    def close(self) -> list[WrittenFile]:
        """Write what is left and finish every partition's file, in partition order."""
        for key in sorted(self._pending):
            self._flush(key)
        return [self._writers[key].close() for key in sorted(self._writers)]


class _PreviousParts:
    """Keypoints Parquet files of the previous snapshot, opened once per shard."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[pa.Table, dict[tuple[str, str], int]]] = {}

    def rows(self, prev: PreviousFile, sf: SourceFile) -> tuple[pa.Table, int]:
        """The previous part holding ``sf``'s rows, and the first row's offset."""
        if prev.part not in self._open:
            table = read_parquet(prev.part).combine_chunks()
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


def read_parquet(path: str) -> pa.Table:
    """Read a Parquet file from a local path or a URL."""
    if not is_url(path):
        # ParquetFile, not read_table: the latter imports pyarrow.dataset and, with
        # it, pandas (0.25 s of an incremental build)
        return pq.ParquetFile(path).read()
    import fsspec

    with fsspec.open(path, "rb") as fh:
        return pq.ParquetFile(fh).read()


def _read(task: ShardTask, i: int, rel: str) -> bytes:
    if task.data is not None:
        item = task.data[i]
        if isinstance(item, bytes):
            return item
        if isinstance(item, SpoolRef):
            return item.read()
        code = ErrorCode.TOO_LARGE if item.too_large else ErrorCode.UNREADABLE
        what = "file too large" if item.too_large else "cannot read"
        raise FormatError(code, rel, f"{what}: {item.reason}")
    try:
        return read_file(task.root, rel, task.max_file_bytes)
    except ValueError as exc:
        raise FormatError(ErrorCode.TOO_LARGE, rel, f"file too large: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, IsADirectoryError):
            reason = "is a folder, not a file"
        raise FormatError(ErrorCode.UNREADABLE, rel, f"cannot read: {reason}") from None
