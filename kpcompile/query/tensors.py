"""Landmarks as numpy tensors for feature pipelines: ``(N, K, 3)``, ``(N, K, 2)``, masks.

Rows are reshaped, never looped over: a frame sorted by (datapoint, camera,
kp_id) in which every file has the same landmark ids is exactly an ``N x K``
grid. :func:`iter_tensors` streams a snapshot one Parquet file at a time, so
datasets larger than memory can be fed in batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.scan import Out, table_uris

_COLS = ("datapoint", "camera", "kp_id", "x3", "y3", "z3", "px", "py", "visible")


@dataclass(frozen=True, slots=True)
class Tensors:
    """Landmarks of N files as arrays.

    Attributes:
        xyz: ``(N, K, 3)`` float64 ``global_3d``.
        pixels: ``(N, K, 2)`` float64 ``pixel_2d`` as written (``px``, ``py``).
        visible: ``(N, K)`` bool; False where the file has no visibility flag.
        has_visibility: ``(N,)`` bool, whether each file carries visibility flags.
        index: ``(N, 2)`` frame of ``datapoint``, ``camera`` naming each row of the arrays.
        ids: ``(K,)`` int16 landmark ids along axis 1 (``0..467`` for whole files).
    """

    xyz: npt.NDArray[np.float64]
    pixels: npt.NDArray[np.float64]
    visible: npt.NDArray[np.bool_]
    has_visibility: npt.NDArray[np.bool_]
    index: pl.DataFrame
    ids: npt.NDArray[np.int16]

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def tensors(frame: pl.LazyFrame | pl.DataFrame) -> Tensors:
    """Collect a keypoints frame into tensors, files ordered by (datapoint, camera).

    The frame may be filtered by rows of whole files (``datapoint``, ``camera``)
    and by landmark ids (e.g. :func:`kpcompile.analytics.filter_region`), as long
    as every file keeps the same ids.

    Raises:
        QueryError: Files hold different landmark ids, or a required column is missing.

    Example:
        >>> t = tensors(kpcompile.scan("compiled"))  # doctest: +SKIP
        >>> t.xyz.shape, t.pixels.shape, t.visible.shape, t.index.columns  # doctest: +SKIP
        ((24, 468, 3), (24, 468, 2), (24, 468), ['datapoint', 'camera'])
    """
    df = frame.lazy().select(_COLS).collect()
    # A snapshot stores each file's rows together, in kp_id order: reshape in storage
    # order and reorder whole files (n rows, not n x 468), instead of sorting every row.
    try:
        t = from_sorted(df)
    except QueryError:
        return from_sorted(df.sort("datapoint", "camera", "kp_id"))
    if t.index.n_unique() != t.index.height or not np.array_equal(t.ids, np.sort(t.ids)):
        return from_sorted(df.sort("datapoint", "camera", "kp_id"))
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


def from_sorted(df: pl.DataFrame) -> Tensors:
    """Tensors of a frame already sorted by (datapoint, camera, kp_id) within each file.

    Example:
        >>> from_sorted(kpcompile.read("compiled").sort("datapoint", "camera", "kp_id"))
        ... # doctest: +SKIP
    """
    missing = [c for c in _COLS if c not in df.columns]
    if missing:
        msg = f"frame lacks column(s) {', '.join(missing)}"
        raise QueryError(msg)
    if df.height == 0:
        return _empty()
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
    xyz = np.stack([df[c].to_numpy() for c in ("x3", "y3", "z3")], axis=-1).reshape(n, k, 3)
    pix = np.stack([df[c].to_numpy() for c in ("px", "py")], axis=-1).reshape(n, k, 2)
    vis = df["visible"]
    known = vis.is_not_null().to_numpy().reshape(n, k)
    visible = vis.fill_null(False).to_numpy().reshape(n, k).astype(np.bool_)
    index = df.select("datapoint", "camera").gather(starts)
    has_vis = np.asarray(known.any(axis=1), dtype=np.bool_)
    return Tensors(xyz, pix, visible, has_vis, index, grid[0].astype(np.int16))


def iter_tensors(
    out: Out, *, batch_size: int = 1024, snapshot: str | None = None
) -> Iterator[Tensors]:
    """Stream a snapshot's keypoints as tensors of at most ``batch_size`` files.

    Reads one Parquet file of the ``keypoints`` table at a time (each holds whole
    files, sorted by datapoint), so memory is bounded by one Parquet file plus one
    batch. Batches come in storage order: by camera partition, then datapoint.

    Example:
        >>> for batch in iter_tensors("compiled", batch_size=256):  # doctest: +SKIP
        ...     model.train_on(batch.xyz, batch.visible)
    """
    if batch_size < 1:
        msg = f"batch_size must be at least 1, got {batch_size}"
        raise QueryError(msg)
    for path in table_uris(out, "keypoints", snapshot=snapshot):
        df = pl.read_parquet(path, columns=list(_COLS), hive_partitioning=False)
        df = df.sort("datapoint", "camera", "kp_id", maintain_order=True)
        t = from_sorted(df)
        for s in range(0, len(t), batch_size):
            e = s + batch_size
            yield Tensors(
                t.xyz[s:e],
                t.pixels[s:e],
                t.visible[s:e],
                t.has_visibility[s:e],
                t.index.slice(s, batch_size),
                t.ids,
            )


def _empty() -> Tensors:
    return Tensors(
        np.empty((0, 0, 3)),
        np.empty((0, 0, 2)),
        np.empty((0, 0), np.bool_),
        np.empty(0, np.bool_),
        pl.DataFrame(schema={"datapoint": pl.String, "camera": pl.String}),
        np.empty(0, np.int16),
    )
