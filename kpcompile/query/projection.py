"""Project ``global_3d`` into pixels with the ``cameras`` table and measure the error.

Pixel axis convention (found on the real samples, see README "Cameras"): with
``u = column`` and ``v = row`` from ``K @ [R | t] @ [x, y, z, 1]``, the files hold
``pixel_2d.x == v`` (row) and ``pixel_2d.y == u`` (column).

Two camera models:

* ``matrices``: ``intrinsic_matrix @ extrinsic_matrix`` exactly as written. It
  reproduces the Faces samples to 1e-13 px.
* ``pose``: the rotation of ``extrinsic_matrix`` with ``t = -R @ location`` and
  square pixels (``fy = fx``). The human-in-cabin samples need it: their
  extrinsic translation is not ``-R @ location`` and their ``fy`` is ``fx``
  scaled by width/height; with this model they reproduce to 0.5 px, the rounding
  of their integer pixels. For the Faces samples both models agree.

The helpers never hide the error: :func:`reprojection_error` reports it per file
for both axis orders, and names the order that fits within a tolerance (or
``neither``).
"""

from __future__ import annotations

import math
import os

import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.scan import scan
from kpcompile.schema import FLOAT_COLUMNS

MODELS: tuple[str, ...] = ("matrices", "pose")
TOLERANCE_PX = 2.0
"""Default largest mean reprojection error (pixels) for which an axis order "fits"."""


def project(
    out: str | os.PathLike[str], *, model: str = "matrices", snapshot: str | None = None
) -> pl.LazyFrame:
    """Every landmark of the files that have camera metadata, projected into pixels.

    Needs a snapshot built with ``--sets``. Columns: ``datapoint``, ``camera``,
    ``kp_id``, ``px``, ``py`` (as stored), ``u`` (projected column), ``v``
    (projected row), ``depth`` (camera-space z), ``err`` (distance between
    (``px``, ``py``) and (``v``, ``u``): the row/column convention) and
    ``err_swapped`` (distance to (``u``, ``v``)).

    Example:
        >>> project("compiled", model="pose").collect()  # doctest: +SKIP
    """
    if model not in MODELS:
        msg = f"model must be one of {', '.join(MODELS)}; got {model!r}"
        raise QueryError(msg)
    cams = scan(out, "cameras", snapshot=snapshot)
    k = [pl.col("intrinsic").list.get(i).alias(f"k{i}") for i in range(9)]
    e = [pl.col("extrinsic").list.get(i).alias(f"e{i}") for i in range(12)]
    cams = cams.select("datapoint", "camera", "location_x", "location_y", "location_z", *k, *e)
    if model == "pose":
        loc = [pl.col(f"location_{a}") for a in "xyz"]
        cams = cams.with_columns(
            *(
                (
                    -(
                        pl.col(f"e{4 * r}") * loc[0]
                        + pl.col(f"e{4 * r + 1}") * loc[1]
                        + pl.col(f"e{4 * r + 2}") * loc[2]
                    )
                ).alias(f"e{4 * r + 3}")
                for r in range(3)
            ),
            pl.col("k0").alias("k4"),
        )
    kp = scan(out, "keypoints", snapshot=snapshot).select(
        "datapoint", "camera", "kp_id", *FLOAT_COLUMNS
    )
    x, y, z = pl.col("x3"), pl.col("y3"), pl.col("z3")

    def cam_row(r: int) -> pl.Expr:
        return (
            pl.col(f"e{4 * r}") * x
            + pl.col(f"e{4 * r + 1}") * y
            + pl.col(f"e{4 * r + 2}") * z
            + pl.col(f"e{4 * r + 3}")
        )

    c0, c1, c2 = (pl.col(f"c{i}") for i in range(3))

    def img_row(r: int) -> pl.Expr:
        return (
            pl.col(f"k{3 * r}") * c0 + pl.col(f"k{3 * r + 1}") * c1 + pl.col(f"k{3 * r + 2}") * c2
        )

    u, v = pl.col("u"), pl.col("v")
    return (
        kp.join(cams, on=["datapoint", "camera"], how="inner")
        .with_columns(cam_row(0).alias("c0"), cam_row(1).alias("c1"), cam_row(2).alias("c2"))
        .with_columns(
            (img_row(0) / img_row(2)).alias("u"),
            (img_row(1) / img_row(2)).alias("v"),
            c2.alias("depth"),
        )
        .with_columns(
            ((pl.col("px") - v) ** 2 + (pl.col("py") - u) ** 2).sqrt().alias("err"),
            ((pl.col("px") - u) ** 2 + (pl.col("py") - v) ** 2).sqrt().alias("err_swapped"),
        )
        .select("datapoint", "camera", "kp_id", "px", "py", "u", "v", "depth", "err", "err_swapped")
    )


def reprojection_error(
    out: str | os.PathLike[str],
    *,
    model: str = "matrices",
    tolerance: float = TOLERANCE_PX,
    snapshot: str | None = None,
) -> pl.DataFrame:
    """Reprojection error per file, for both pixel axis orders.

    Columns: ``datapoint``, ``camera``, ``n``, ``mean_err``/``max_err`` (stored
    ``px`` = row, ``py`` = column), ``mean_err_swapped``/``max_err_swapped``
    (``px`` = column), and ``convention``: ``row_col`` or ``col_row``, the order
    whose mean error is the smaller one *and* at most ``tolerance`` pixels, or
    ``neither`` when no order fits (the camera model does not describe the file).
    Sorted by datapoint and camera.

    Args:
        out: Output folder of a ``kpcompile build --sets``.
        model: ``matrices`` or ``pose`` (see the module's docstring).
        tolerance: Largest mean error, in pixels, for which an axis order fits;
            default 2 px (integer pixels are off by up to 0.71 px by rounding).
        snapshot: A snapshot id; ``None`` for the current snapshot.

    Raises:
        QueryError: An unknown model, or a tolerance that is negative or not finite.

    Example:
        >>> reprojection_error("compiled", model="pose", tolerance=1.0)  # doctest: +SKIP
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        msg = f"tolerance must be a finite number of pixels >= 0; got {tolerance!r}"
        raise QueryError(msg)
    err, swapped = pl.col("mean_err"), pl.col("mean_err_swapped")
    return (
        project(out, model=model, snapshot=snapshot)
        .group_by("datapoint", "camera")
        .agg(
            pl.len().alias("n"),
            pl.col("err").mean().alias("mean_err"),
            pl.col("err").max().alias("max_err"),
            pl.col("err_swapped").mean().alias("mean_err_swapped"),
            pl.col("err_swapped").max().alias("max_err_swapped"),
        )
        .with_columns(
            pl.when((err <= swapped) & (err <= tolerance))
            .then(pl.lit("row_col"))
            .when((swapped < err) & (swapped <= tolerance))
            .then(pl.lit("col_row"))
            .otherwise(pl.lit("neither"))
            .alias("convention")
        )
        .sort("datapoint", "camera")
        .collect()
    )
