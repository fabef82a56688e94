"""Compile one shard: the unit of work that any executor runs.

:func:`compile_shard` is a pure function of a picklable :class:`ShardTask`: it
reads, parses and writes one shard's Parquet files itself, and returns only file
names, counts and rejected-file rows, never the landmark rows.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kpcompile.errors import ErrorCode, FormatError
from kpcompile.parse import NUM_LANDMARKS, parse
from kpcompile.sources import SourceFile, read_file
from kpcompile.writer import (
    FILES_SCHEMA,
    KeypointBuffer,
    ParquetSettings,
    WrittenFile,
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


def compile_shard(task: ShardTask) -> ShardResult:
    """Read, parse and write one shard; every file ends in ``keypoints`` or in ``errors``."""
    result = ShardResult(task.index)
    buf = KeypointBuffer()
    cols: dict[str, list[Any]] = {name: [] for name in FILES_SCHEMA.names}
    for sf in task.files:
        lm = None
        data: bytes | None = None
        try:
            if sf.duplicate_of is not None:
                raise FormatError(
                    ErrorCode.DUPLICATE_CAMERA,
                    sf.path,
                    f"camera folder already compiled from {sf.duplicate_of}; "
                    "a camera folder may hold one landmark file",
                )
            data = _read(task.root, sf.path, task.max_file_bytes)
            lm = parse(data, sf.path)
        except FormatError as exc:
            result.errors.append((sf.path, str(exc.code), str(exc)))
        checksum = f"crc32:{zlib.crc32(data):08x}" if data is not None else None
        cols["path"].append(sf.path)
        cols["datapoint"].append(sf.datapoint)
        cols["camera"].append(sf.camera)
        cols["status"].append("ok" if lm is not None else "rejected")
        cols["layout"].append(lm.layout if lm is not None else None)
        cols["version"].append(lm.version if lm is not None else None)
        cols["landmarks"].append(NUM_LANDMARKS if lm is not None else None)
        cols["visible"].append(lm.visible_count if lm is not None else None)
        cols["bytes"].append(len(data) if data is not None else (sf.size if sf.size >= 0 else None))
        cols["mtime_ns"].append(sf.mtime_ns)
        cols["checksum"].append(checksum)
        if data is not None:
            result.source_bytes += len(data)
        if lm is None:
            continue
        key = sf.camera if task.partition_by == "camera" else ""
        buf.add(key, sf.datapoint, sf.camera, lm)
        result.compiled += 1
        result.rows += NUM_LANDMARKS
        result.visible += lm.visible_count or 0
        result.layouts[lm.layout] += 1
        result.versions[lm.version or "none"] += 1
    name = part_name(task.index)
    kp_files = []
    for key, table in buf.tables():
        folder = f"keypoints/{partition_dir('camera', key)}" if key else "keypoints"
        kp_files.append(write_table(table, task.staging, f"{folder}/{name}", task.settings))
    result.written["keypoints"] = kp_files
    files_table = table_from_columns(cols, FILES_SCHEMA)
    result.written["files"] = [
        write_table(files_table, task.staging, f"files/{name}", task.settings)
    ]
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


def _read(root: str, rel: str, max_bytes: int) -> bytes:
    try:
        return read_file(root, rel, max_bytes)
    except ValueError as exc:
        raise FormatError(ErrorCode.TOO_LARGE, rel, f"file too large: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, IsADirectoryError):
            reason = "is a folder, not a file"
        raise FormatError(ErrorCode.UNREADABLE, rel, f"cannot read: {reason}") from None
