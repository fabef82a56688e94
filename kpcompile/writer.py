"""Columns to Parquet: the tables' schemas and the shard writer.

Each shard (a batch of source files handled by one worker task) becomes one
Parquet file per partition of ``keypoints`` and one file of ``files``, written
by the worker itself; only file names, counts and rejected-file rows travel back
to the coordinating process.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kpcompile.parse import NUM_LANDMARKS, Landmarks

FLOAT_COLUMNS: tuple[str, ...] = ("x3", "y3", "z3", "px", "py")

KEYPOINTS_SCHEMA = pa.schema(
    [
        pa.field("datapoint", pa.string(), nullable=False),
        pa.field("camera", pa.string(), nullable=False),
        pa.field("kp_id", pa.int16(), nullable=False),
        *(pa.field(c, pa.float64(), nullable=False) for c in FLOAT_COLUMNS),
        pa.field("visible", pa.bool_()),
    ]
)
"""One row per landmark of every compiled file."""

FILES_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("datapoint", pa.string(), nullable=False),
        pa.field("camera", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("layout", pa.string()),
        pa.field("version", pa.string()),
        pa.field("landmarks", pa.int16()),
        pa.field("visible", pa.int16()),
        pa.field("bytes", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("checksum", pa.string()),
    ]
)
"""One row per discovered source file, compiled (``status="ok"``) or ``"rejected"``."""

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)
"""One row per rejected source file; ``code`` is an :class:`~kpcompile.ErrorCode`."""

SCHEMAS: dict[str, pa.Schema] = {
    "keypoints": KEYPOINTS_SCHEMA,
    "files": FILES_SCHEMA,
    "errors": ERRORS_SCHEMA,
}

_KP_IDS = np.arange(NUM_LANDMARKS, dtype=np.int16)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A Parquet file of a snapshot: path relative to the snapshot folder, and checks."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ParquetSettings:
    """How tables are encoded; derived from :class:`~kpcompile.BuildOptions`."""

    compression: str = "zstd"
    compression_level: int | None = None


def partition_dir(key: str, value: str) -> str:
    """Hive folder name ``key=value``, percent-encoding anything outside ``[A-Za-z0-9_.-]``.

    Example:
        >>> partition_dir("camera", "cam 1/left")
        'camera=cam%201%2Fleft'
    """
    enc = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), value)
    if enc in ("", ".", ".."):
        enc = enc.replace(".", "%2E") or "%00"
    return f"{key}={enc}"


def write_table(
    table: pa.Table, snapshot_dir: str, rel: str, settings: ParquetSettings
) -> WrittenFile:
    """Write ``table`` to ``snapshot_dir/rel`` and return its size and SHA-256.

    The file is written under a temporary name (``<rel>.tmp``, which no
    ``*.parquet`` glob matches) and renamed once complete, so an interrupted write
    never leaves a partial file under the final name.
    """
    dest = os.path.join(snapshot_dir, rel)
    tmp = dest + ".tmp"
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    compression = None if settings.compression == "none" else settings.compression
    string_cols = [f.name for f in table.schema if pa.types.is_string(f.type)]
    float_cols = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    pq.write_table(
        table,
        tmp,
        compression=compression,
        compression_level=settings.compression_level,
        use_dictionary=string_cols,
        column_encoding=dict.fromkeys(float_cols, "BYTE_STREAM_SPLIT") or None,
        row_group_size=max(1, table.num_rows),
        write_statistics=True,
    )
    os.replace(tmp, dest)
    return WrittenFile(rel, table.num_rows, os.path.getsize(dest), _sha256(dest))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(slots=True)
class KeypointBuffer:
    """Landmarks of one shard, in arrival order, grouped by partition value."""

    parts: dict[str, list[tuple[str, str, Landmarks]]] = field(default_factory=dict)

    def add(self, partition: str, datapoint: str, camera: str, lm: Landmarks) -> None:
        self.parts.setdefault(partition, []).append((datapoint, camera, lm))

    def tables(self) -> list[tuple[str, pa.Table]]:
        """One table per partition value, in order of the value."""
        return [(key, keypoints_table(rows)) for key, rows in sorted(self.parts.items())]


def keypoints_table(rows: Sequence[tuple[str, str, Landmarks]]) -> pa.Table:
    """Build the ``keypoints`` table of several files' landmarks, rows in the given order."""
    n = len(rows)
    datapoints = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(n, dtype=np.int32), NUM_LANDMARKS)),
        pa.array([r[0] for r in rows], pa.string()),
    ).cast(pa.string())
    cameras = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(n, dtype=np.int32), NUM_LANDMARKS)),
        pa.array([r[1] for r in rows], pa.string()),
    ).cast(pa.string())
    cols: list[pa.Array] = [datapoints, cameras, pa.array(np.tile(_KP_IDS, n))]
    for name in FLOAT_COLUMNS:
        cols.append(pa.array(np.concatenate([getattr(r[2], name) for r in rows])))
    vis: list[bool | None] = []
    for _, _, lm in rows:
        vis.extend(lm.visible if lm.visible is not None else [None] * NUM_LANDMARKS)
    cols.append(pa.array(vis, pa.bool_()))
    return pa.Table.from_arrays(cols, schema=KEYPOINTS_SCHEMA)
