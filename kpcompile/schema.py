"""The tables of a snapshot: their Arrow schemas and how partition folders are named.

Shared by every stage: the compile stage writes these schemas, the store checks
them (``verify``) and records them in the manifest, the query stage reads them.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    import polars as pl

NUM_LANDMARKS = 468
"""Face-mesh landmarks per keypoint file (ids ``0..467``; the iris landmarks excluded):
the rows of one file in the ``keypoints`` table."""
FLOAT_COLUMNS: tuple[str, ...] = ("x3", "y3", "z3", "px", "py")
"""The coordinates of a landmark: ``global_3d`` x, y, z and ``pixel_2d`` x, y."""

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

SET_SCHEMA = pa.schema(
    [
        pa.field("datapoint", pa.string(), nullable=False),
        pa.field("camera", pa.string(), nullable=False),
        pa.field("part", pa.string()),
        pa.field("kp_id", pa.string(), nullable=False),
        *(pa.field(c, pa.float64(), nullable=False) for c in FLOAT_COLUMNS),
        pa.field("visible", pa.bool_()),
    ]
)
"""A keypoint set other than the 468 (``face_standard``, ``head``, ``ears``; ``--sets``).

``part`` is the sub-group (``left``, ``top``, ...; null for ``face_standard``) and
``kp_id`` the id exactly as written in the source (``"01"``, ``"1"``, ``"0"``).
"""

CAMERAS_SCHEMA = pa.schema(
    [
        pa.field("datapoint", pa.string(), nullable=False),
        pa.field("camera", pa.string(), nullable=False),
        pa.field("camera_name", pa.string()),
        pa.field("camera_type", pa.string()),
        pa.field("width", pa.float64(), nullable=False),
        pa.field("height", pa.float64(), nullable=False),
        pa.field("focal_length", pa.float64()),
        *(pa.field(f"location_{a}", pa.float64()) for a in "xyz"),
        *(pa.field(f"aspect_{a}", pa.float64()) for a in "xy"),
        pa.field("intrinsic", pa.list_(pa.float64()), nullable=False),
        pa.field("extrinsic", pa.list_(pa.float64()), nullable=False),
    ]
)
"""One row per ``camera_metadata.json`` (``--sets``): matrices row-major, 3x3 and 3x4."""

SET_TABLES: tuple[str, ...] = ("face_standard", "head", "ears")

SCHEMAS: dict[str, pa.Schema] = {
    "keypoints": KEYPOINTS_SCHEMA,
    "files": FILES_SCHEMA,
    "errors": ERRORS_SCHEMA,
    **dict.fromkeys(SET_TABLES, SET_SCHEMA),
    "cameras": CAMERAS_SCHEMA,
}


@functools.cache
def polars_schema(table: str) -> pl.Schema:
    """A table's schema as polars names it, for scans that must not open a file to learn it.

    Made from an empty Arrow table built without ``pa.array``/``Schema.empty_table``,
    which import pandas when it is installed (0.35 s of a reader's first call).
    """
    import polars as pl

    empty = pa.Table.from_batches([], schema=SCHEMAS[table])
    frame = pl.from_arrow(empty)
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


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
