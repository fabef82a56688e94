"""Face boxes: the bounding box of each file's 2D landmarks, to crop faces for training.

The first thing Datagen's own examples compute from these landmarks. The box is
in the order ``pixel_order`` names: ``xy`` (image coordinates, x = column,
y = row, what cropping code expects) or ``as_stored`` (``px``, ``py`` as the
exports write them: row, column).
"""

from __future__ import annotations

import polars as pl

from kpcompile.errors import QueryError
from kpcompile.feeding.rowgroups import PixelOrder, check_pixel_order, pixel_columns
from kpcompile.query.scan import Out, scan, tables

KEYS = ["datapoint", "camera"]


def bboxes(
    frame: pl.LazyFrame | pl.DataFrame | Out,
    *,
    visible_only: bool = True,
    pixel_order: PixelOrder = "as_stored",
    cameras: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """One row per (datapoint, camera): the box of its 2D landmarks.

    Columns: ``datapoint``, ``camera``, the box (``x_min``, ``y_min``, ``x_max``,
    ``y_max`` with ``pixel_order="xy"``; ``px_min``, ``py_min``, ``px_max``,
    ``py_max`` with ``as_stored``), ``n`` (landmarks boxed) and, with the image
    sizes of a ``cameras`` table, ``inside``: the share of the file's landmarks
    (all of them, visible or not) that lie in the image (``0 <= column < width``,
    ``0 <= row < height``). Sorted by datapoint and camera.

    Args:
        frame: A keypoints frame, or an output folder: its current snapshot's
            keypoints, and its ``cameras`` table when it has one (``--sets``).
        visible_only: Box only the landmarks not flagged invisible (default).
            Files without visibility flags (in-cabin exports) keep every landmark.
        pixel_order: ``as_stored`` (default) or ``xy``.
        cameras: The ``cameras`` table (``kpcompile.scan(out, "cameras")``) for
            ``inside``, when ``frame`` is a frame.

    Raises:
        QueryError: An invalid ``pixel_order``, or ``cameras`` given with an output folder.

    Example:
        >>> kpcompile.bboxes("compiled", pixel_order="xy").collect()  # doctest: +SKIP
        >>> # crop: image[y_min:y_max + 1, x_min:x_max + 1]
    """
    check_pixel_order(pixel_order)
    if not isinstance(frame, pl.LazyFrame | pl.DataFrame):
        if cameras is not None:
            msg = "cameras= goes with a frame; an output folder brings its own cameras table"
            raise QueryError(msg)
        cameras = scan(frame, "cameras") if "cameras" in tables(frame) else None
        frame = scan(frame)
    first, second = pixel_columns(pixel_order)
    x, y = ("x", "y") if pixel_order == "xy" else (first, second)
    kp = frame.lazy().select(*KEYS, "px", "py", "visible")
    keep = pl.col("visible").fill_null(True)  # flagged invisible: left out

    def boxed(name: str) -> pl.Expr:
        return pl.col(name).filter(keep) if visible_only else pl.col(name)

    aggs = [
        boxed(first).min().alias(f"{x}_min"),
        boxed(second).min().alias(f"{y}_min"),
        boxed(first).max().alias(f"{x}_max"),
        boxed(second).max().alias(f"{y}_max"),
        (keep.sum() if visible_only else pl.len()).cast(pl.Int64).alias("n"),
    ]
    if cameras is not None:
        sizes = cameras.lazy().select(*KEYS, "width", "height")
        kp = kp.join(sizes, on=KEYS, how="left")
        aggs.append(_inside().alias("inside"))
    return kp.group_by(KEYS).agg(aggs).sort(KEYS)


def _inside() -> pl.Expr:
    """Share of a file's landmarks inside its image (``px`` is the row, ``py`` the column)."""
    within = (
        (pl.col("px") >= 0)
        & (pl.col("px") < pl.col("height"))
        & (pl.col("py") >= 0)
        & (pl.col("py") < pl.col("width"))
    )
    return within.cast(pl.Float64).mean()
