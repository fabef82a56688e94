"""Landmarks as numpy tensors for feature pipelines: ``(N, K, 3)``, ``(N, K, 2)``, masks.

Rows are reshaped, never looped over: a frame sorted by (datapoint, camera,
kp_id) in which every file has the same landmark ids is exactly an ``N x K``
grid. A whole snapshot (an output folder, or the frame :func:`kpcompile.scan`
returned, untouched) is read a Parquet row group at a time with pyarrow and
written straight into the arrays (:mod:`kpcompile.feeding.rowgroups`).
:func:`iter_tensors` streams a snapshot in batches of exactly ``batch_size``
files, in the same order as :func:`tensors`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from kpcompile.errors import QueryError
from kpcompile.feeding import rowgroups as rg
from kpcompile.feeding.rowgroups import Group, K, Parts, PixelOrder
from kpcompile.query.scan import Out, scanned_snapshot
from kpcompile.schema import FLOAT_COLUMNS

_COLS = ("datapoint", "camera", "kp_id", *FLOAT_COLUMNS, "visible")
Floats = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True, slots=True)
class Tensors:
    """Landmarks of N files as arrays.

    Attributes:
        xyz: ``(N, K, 3)`` ``global_3d`` (float64 unless ``dtype="float32"``).
        pixels: ``(N, K, 2)`` ``pixel_2d``: with ``pixel_order="as_stored"`` (the
            default) ``(px, py)`` as written, which the exports write as (row,
            column); with ``pixel_order="xy"`` image coordinates (x = column, y = row).
        visible: ``(N, K)`` bool; False where the file has no visibility flag.
        has_visibility: ``(N,)`` bool, whether each file carries visibility flags.
        index: ``(N, 2)`` frame of ``datapoint``, ``camera`` naming each row of the arrays.
        ids: ``(K,)`` int16 landmark ids along axis 1 (``0..467`` for whole files).
    """

    xyz: Floats
    pixels: Floats
    visible: npt.NDArray[np.bool_]
    has_visibility: npt.NDArray[np.bool_]
    index: pl.DataFrame
    ids: npt.NDArray[np.int16]

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def tensors(
    frame: pl.LazyFrame | pl.DataFrame | Out,
    *,
    dtype: Any = "float64",
    pixel_order: PixelOrder = "as_stored",
) -> Tensors:
    """Collect keypoints into tensors, files ordered by (datapoint, camera).

    ``frame`` is a keypoints frame, or an output folder (its current snapshot).
    A frame may be filtered by rows of whole files (``datapoint``, ``camera``)
    and by landmark ids (e.g. :func:`kpcompile.filter_region`), as long as every
    file keeps the same ids. An output folder, or the frame :func:`kpcompile.scan`
    returned (untouched), is read straight from its Parquet row groups, the
    fastest way.

    Args:
        frame: A keypoints frame, or an output folder or URL.
        dtype: ``float64`` (default, the stored values exactly) or ``float32``.
        pixel_order: ``as_stored`` (default; ``px``, ``py`` as written, which the
            exports write as row, column) or ``xy`` (x = column, y = row).

    Raises:
        QueryError: Files hold different landmark ids, a required column is
            missing, or an invalid ``dtype`` / ``pixel_order``.

    Example:
        >>> t = tensors(kpcompile.scan("compiled"), dtype="float32")  # doctest: +SKIP
        >>> t.xyz.shape, t.pixels.shape, t.visible.shape, t.index.columns  # doctest: +SKIP
        ((24, 468, 3), (24, 468, 2), (24, 468), ['datapoint', 'camera'])
    """
    dt = rg.check_dtype(dtype)
    rg.check_pixel_order(pixel_order)
    if not isinstance(frame, pl.LazyFrame | pl.DataFrame):
        return _from_parts(Parts(frame), dt, pixel_order)
    source = scanned_snapshot(frame)
    if source is not None:
        return _from_parts(Parts(*source), dt, pixel_order)
    return _from_frame(frame.lazy().select(_COLS).collect(), dt, pixel_order)


def _from_frame(df: pl.DataFrame, dtype: np.dtype[Any], pixel_order: str) -> Tensors:
    # A snapshot stores each file's rows together, in kp_id order: reshape in storage
    # order and reorder whole files (n rows, not n x 468), instead of sorting every row.
    try:
        t = from_sorted(df, dtype=dtype, pixel_order=pixel_order)  # type: ignore[arg-type]
    except QueryError:
        t = None
    if t is None or t.index.n_unique() != t.index.height or not _ascending(t.ids):
        return from_sorted(
            df.sort("datapoint", "camera", "kp_id"),
            dtype=dtype,
            pixel_order=pixel_order,  # type: ignore[arg-type]
        )
    order = t.index.with_row_index("i").sort("datapoint", "camera")["i"].to_numpy()
    if np.array_equal(order, np.arange(len(order))):
        return t
    return Tensors(
        t.xyz[order],
        t.pixels[order],
        t.visible[order],
        t.has_visibility[order],
        t.index[order],
        t.ids,
    )


def _ascending(ids: npt.NDArray[np.int16]) -> bool:
    return bool(np.array_equal(ids, np.sort(ids)))


def from_sorted(
    df: pl.DataFrame, *, dtype: Any = "float64", pixel_order: PixelOrder = "as_stored"
) -> Tensors:
    """Tensors of a frame already sorted by (datapoint, camera, kp_id) within each file.

    Example:
        >>> from_sorted(kpcompile.read("compiled").sort("datapoint", "camera", "kp_id"))
        ... # doctest: +SKIP
    """
    dt = rg.check_dtype(dtype)
    rg.check_pixel_order(pixel_order)
    missing = [c for c in _COLS if c not in df.columns]
    if missing:
        msg = f"frame lacks column(s) {', '.join(missing)}"
        raise QueryError(msg)
    if df.height == 0:
        return _empty(dt)
    key_change = (pl.col("datapoint") != pl.col("datapoint").shift()) | (
        pl.col("camera") != pl.col("camera").shift()
    )
    starts = df.select(key_change.fill_null(True).arg_true()).to_series().to_numpy()
    n = len(starts)
    k = df.height // n
    kp = df["kp_id"].to_numpy()
    if df.height != n * k or not np.array_equal(np.diff(starts), np.full(n - 1, k)):
        msg = "files hold different numbers of landmarks; filter whole files or the same ids"
        raise QueryError(msg)
    grid = kp.reshape(n, k)
    if not (grid == grid[0]).all():
        msg = "files hold different landmark ids; filter every file by the same ids"
        raise QueryError(msg)
    xyz = np.empty((n, k, 3), dt)
    pix = np.empty((n, k, 2), dt)
    for axis, c in enumerate(("x3", "y3", "z3")):
        xyz[:, :, axis] = df[c].to_numpy().reshape(n, k)
    for axis, c in enumerate(rg.pixel_columns(pixel_order)):
        pix[:, :, axis] = df[c].to_numpy().reshape(n, k)
    vis = df["visible"]
    known = vis.is_not_null().to_numpy().reshape(n, k)
    visible = vis.fill_null(False).to_numpy().reshape(n, k).astype(np.bool_)
    index = df.select("datapoint", "camera").gather(starts)
    has_vis = np.asarray(known.any(axis=1), dtype=np.bool_)
    return Tensors(xyz, pix, visible, has_vis, index, grid[0].astype(np.int16))


def _from_parts(parts: Parts, dtype: np.dtype[Any], pixel_order: str) -> Tensors:
    """A whole snapshot: keys first (to place every file), then each row group in place."""
    groups = parts.row_groups()
    if not groups:
        return _empty(dtype)
    parts.plan(groups)
    keys = [parts.read(g) for g in groups]
    datapoint = np.concatenate([k.datapoint for k in keys])
    camera = np.concatenate([k.camera for k in keys])
    order = rg.key_order(datapoint, camera)
    place = np.empty_like(order)
    place[order] = np.arange(len(order))
    out = rg.empty_arrays(len(order), dtype)
    starts = np.cumsum([0, *(g.files for g in groups)])

    by_file: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_file.setdefault(g.rel, []).append(i)

    def fill(rel: str) -> None:  # one thread per file: a ParquetFile is not thread-safe
        for i in by_file[rel]:
            group = parts.read(groups[i], (*rg.FLOATS, "visible"))
            group.fill(out, place[starts[i] : starts[i + 1]], pixel_order)

    threads = os.cpu_count() or 1
    files = list(by_file)
    # Read ahead in about the order the threads ask: files a thread batch at a time.
    parts.plan(
        (
            groups[i]
            for at in range(0, len(files), threads)
            for i in rg.interleaved([by_file[f] for f in files[at : at + threads]])
        ),
        (*rg.FLOATS, "visible"),
        threads=threads,
    )
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, files))
    index = pl.DataFrame({"datapoint": datapoint[order], "camera": camera[order]})
    return _tensors(out, index)


def _tensors(arrays: dict[str, npt.NDArray[Any]], index: pl.DataFrame) -> Tensors:
    return Tensors(
        arrays["xyz"],
        arrays["pixels"],
        arrays["visible"],
        arrays["has_visibility"],
        index.cast(pl.String),
        np.arange(K, dtype=np.int16),
    )


def iter_tensors(
    out: Out,
    *,
    batch_size: int = 1024,
    snapshot: str | None = None,
    dtype: Any = "float64",
    pixel_order: PixelOrder = "as_stored",
) -> Iterator[Tensors]:
    """Stream a snapshot's keypoints as tensors of exactly ``batch_size`` files.

    Every batch holds ``batch_size`` files except the last, and the batches,
    concatenated, equal :func:`tensors` of the snapshot: files in (datapoint,
    camera) order. Row groups are read one at a time per partition folder
    (``camera=...``) and merged, so memory is one batch plus one row group per
    camera partition (one row group with ``--partition-by none``).

    Args:
        out: Output folder or URL.
        batch_size: Files per batch.
        snapshot: A snapshot id; ``None`` for the current snapshot.
        dtype: ``float64`` (default) or ``float32``.
        pixel_order: ``as_stored`` (default) or ``xy``, as in :func:`tensors`.

    Example:
        >>> for batch in iter_tensors("compiled", batch_size=256):  # doctest: +SKIP
        ...     model.train_on(batch.xyz, batch.visible)
    """
    if batch_size < 1:
        msg = f"batch_size must be at least 1, got {batch_size}"
        raise QueryError(msg)
    dt = rg.check_dtype(dtype)
    rg.check_pixel_order(pixel_order)
    parts = Parts(out, snapshot)
    chunks = rg.chunks_in_order(parts, parts.row_groups())
    for batch in rg.regroup(chunks, batch_size):
        yield to_tensors(batch, dt, pixel_order)


def to_tensors(group: Group, dtype: np.dtype[Any], pixel_order: str) -> Tensors:
    """Files of a row group (or of a batch of them) as tensors, in their order."""
    index = pl.DataFrame({"datapoint": group.datapoint, "camera": group.camera})
    return _tensors(group.arrays(dtype, pixel_order), index)


def _empty(dtype: np.dtype[Any]) -> Tensors:
    return Tensors(
        np.empty((0, 0, 3), dtype),
        np.empty((0, 0, 2), dtype),
        np.empty((0, 0), np.bool_),
        np.empty(0, np.bool_),
        pl.DataFrame(schema={"datapoint": pl.String, "camera": pl.String}),
        np.empty(0, np.int16),
    )
