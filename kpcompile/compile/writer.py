"""Columns to Parquet: Arrow tables built from buffers, and the part writer.

Each shard (a batch of source files handled by one worker task) becomes one
Parquet file per partition of ``keypoints`` and one file of ``files``, written
by the worker itself; only file names, counts and rejected-file rows travel back
to the coordinating process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from kpcompile.manifest import FileEntry
from kpcompile.options import BuildOptions
from kpcompile.parsing import NUM_LANDMARKS, Landmarks
from kpcompile.schema import FLOAT_COLUMNS, KEYPOINTS_SCHEMA

_KP_IDS = np.arange(NUM_LANDMARKS, dtype=np.int16)

# Codecs after which the float columns are BYTE_STREAM_SPLIT. zstd and gzip compress
# the split byte streams well (zstd: 45 MB of floats per 4,000 files, 52 MB PLAIN).
# lz4 and snappy gain less from the split and no codec gains nothing, while polars
# decodes BYTE_STREAM_SPLIT slowly: with lz4, 0.18 s of CPU for those floats against
# 0.06 s PLAIN (DuckDB 0.10 and 0.08 s). benchmarks/bench_storage.py measures it.
_SPLIT_FLOAT_CODECS = frozenset({"zstd", "gzip"})


def float_encoding(compression: str) -> str:
    """The Parquet encoding of the float columns under codec ``compression``."""
    return "BYTE_STREAM_SPLIT" if compression in _SPLIT_FLOAT_CODECS else "PLAIN"


@dataclass(frozen=True, slots=True)
class ParquetSettings:
    """How tables are encoded; derived from :class:`~kpcompile.BuildOptions`."""

    compression: str = "zstd"
    compression_level: int | None = None
    row_group_files: int = 256
    """Source files per row group of ``keypoints`` (468 rows each)."""

    @classmethod
    def of(cls, options: BuildOptions) -> ParquetSettings:
        """The settings a build with ``options`` writes with."""
        return cls(options.compression, options.compression_level, options.row_group_files)


def table_from_columns(columns: dict[str, list[Any]], schema: pa.Schema) -> pa.Table:
    """A table of string, integer, float64, bool and list-of-float64 columns from
    Python lists, ``None`` for null.

    Built from buffers: any ``pa.array(...)`` or ``Table.from_pydict`` call makes
    pyarrow import pandas when it is installed, ~0.2 s of every worker process.
    """
    arrays = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_string(f.type):
            arrays.append(_string_column(values))
        elif pa.types.is_integer(f.type):
            arrays.append(_int_column(values, f.type))
        elif f.type == pa.float64():
            arrays.append(_float_column(values))
        elif pa.types.is_boolean(f.type):
            arrays.append(_bool_column(values))
        elif f.type == pa.list_(pa.float64()):
            arrays.append(_float_list_column(values))
        else:  # pragma: no cover - the tables have no other types
            msg = f"unsupported column type {f.type}"
            raise TypeError(msg)
    return pa.Table.from_arrays(arrays, schema=schema)


def _validity(values: list[Any]) -> pa.Buffer | None:
    missing = np.fromiter((v is None for v in values), np.bool_, len(values))
    return _bits(~missing) if missing.any() else None


def _int_column(values: list[int | None], type_: pa.DataType) -> pa.Array:
    dtype = np.dtype(type_.to_pandas_dtype())
    data = np.fromiter((0 if v is None else v for v in values), dtype, len(values))
    return pa.Array.from_buffers(type_, len(values), [_validity(values), pa.py_buffer(data)])


def _float_column(values: list[float | None]) -> pa.Array:
    data = np.fromiter((0.0 if v is None else v for v in values), np.float64, len(values))
    return pa.Array.from_buffers(pa.float64(), len(values), [_validity(values), pa.py_buffer(data)])


def _bool_column(values: list[bool | None]) -> pa.Array:
    flags = np.fromiter((v is True for v in values), np.bool_, len(values))
    return pa.Array.from_buffers(pa.bool_(), len(values), [_validity(values), _bits(flags)])


def _float_list_column(values: list[list[float]]) -> pa.Array:
    """A non-null ``list<double>`` column."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=offsets[1:])
    flat = np.fromiter((x for v in values for x in v), np.float64, int(offsets[-1]))
    child = pa.Array.from_buffers(pa.float64(), len(flat), [None, pa.py_buffer(flat)])
    return pa.ListArray.from_buffers(
        pa.list_(pa.float64()), len(values), [None, pa.py_buffer(offsets)], children=[child]
    )


def _string_column(values: list[str | None]) -> pa.Array:
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    buffers = [_validity(values), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def write_table(
    table: pa.Table, snapshot_dir: str, rel: str, settings: ParquetSettings
) -> FileEntry:
    """Write ``table`` to ``snapshot_dir/rel`` as one row group; return its size and SHA-256."""
    part = PartWriter(snapshot_dir, rel, settings, table.schema)
    part.write(table)
    return part.close()


class PartWriter:
    """One Parquet file, written a row group at a time.

    The file is written under a temporary name (``<rel>.tmp``, which no
    ``*.parquet`` glob matches) and renamed by :meth:`close`, so an interrupted
    write never leaves a partial file under the final name. Writing row group by
    row group keeps a worker's memory to one row group, whatever the shard size.
    """

    def __init__(
        self, snapshot_dir: str, rel: str, settings: ParquetSettings, schema: pa.Schema
    ) -> None:
        self.rel = rel
        self.dest = os.path.join(snapshot_dir, rel)
        self.tmp = self.dest + ".tmp"
        self.rows = 0
        os.makedirs(os.path.dirname(self.dest), exist_ok=True)
        compression = None if settings.compression == "none" else settings.compression
        strings = [f.name for f in schema if pa.types.is_string(f.type)]
        floats = [f.name for f in schema if pa.types.is_floating(f.type)]
        self.schema = schema
        self._writer = pq.ParquetWriter(
            self.tmp,
            schema,
            compression=compression,
            compression_level=settings.compression_level,
            use_dictionary=strings,
            column_encoding=dict.fromkeys(floats, float_encoding(settings.compression)) or None,
            write_statistics=True,
            # Readers take the types from Parquet's own logical types.
            store_schema=False,
        )

    def write(self, table: pa.Table) -> None:
        """Append ``table`` as one row group."""
        if not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows

    def close(self) -> FileEntry:
        """Finish the file, give it its final name, return its size and SHA-256."""
        self._writer.close()
        os.replace(self.tmp, self.dest)
        return FileEntry(self.rel, self.rows, os.path.getsize(self.dest), _sha256(self.dest))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def keypoints_table(rows: Sequence[tuple[str, str, Landmarks]]) -> pa.Table:
    """Build the ``keypoints`` table of several files' landmarks, rows in the given order."""
    n = len(rows)
    datapoints = _repeated([r[0] for r in rows])
    cameras = _repeated([r[1] for r in rows])
    cols: list[pa.Array] = [datapoints, cameras, _numeric(np.tile(_KP_IDS, n), pa.int16())]
    for name in FLOAT_COLUMNS:
        cols.append(_numeric(np.concatenate([getattr(r[2], name) for r in rows]), pa.float64()))
    cols.append(_visible_column([r[2] for r in rows]))
    schema = pa.schema([f.with_type(c.type) for f, c in zip(KEYPOINTS_SCHEMA, cols, strict=True)])
    return pa.Table.from_arrays(cols, schema=schema)


_ALL_MISSING = np.ones(NUM_LANDMARKS, dtype=np.bool_)
_NONE_MISSING = np.zeros(NUM_LANDMARKS, dtype=np.bool_)
_NO_FLAGS = np.zeros(NUM_LANDMARKS, dtype=np.bool_)


def _visible_column(lms: Sequence[Landmarks]) -> pa.Array:
    """``visible`` as one bool array, null where a landmark has no ``is_visible``."""
    flags = np.concatenate([lm.visible if lm.visible is not None else _NO_FLAGS for lm in lms])
    masks = [
        _ALL_MISSING
        if lm.visible is None
        else (lm.visible_missing if lm.visible_missing is not None else _NONE_MISSING)
        for lm in lms
    ]
    mask = np.concatenate(masks)
    validity = _bits(~mask) if mask.any() else None
    return pa.Array.from_buffers(pa.bool_(), len(flags), [validity, _bits(flags)])


# pa.array(numpy) makes pyarrow import pandas when it is installed (hundreds of ms
# per worker process); building arrays from buffers avoids that.
def _bits(flags: npt.NDArray[np.bool_]) -> pa.Buffer:
    return pa.py_buffer(np.packbits(flags, bitorder="little"))


def _numeric(values: npt.NDArray[Any], type_: pa.DataType) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def _repeated(per_file: list[str]) -> pa.Array:
    """A string column holding each file's value for its 468 rows, built from buffers."""
    encoded = [v.encode() for v in per_file]
    lengths = np.repeat(np.fromiter(map(len, encoded), np.int64, len(encoded)), NUM_LANDMARKS)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = pa.py_buffer(b"".join(e * NUM_LANDMARKS for e in encoded))
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(
            pa.string(), len(lengths), [None, pa.py_buffer(offsets.astype(np.int32)), data]
        )
    buffers = [None, pa.py_buffer(offsets), data]
    return pa.Array.from_buffers(pa.large_string(), len(lengths), buffers)
