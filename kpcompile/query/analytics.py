"""Landmark analytics over compiled snapshots: regions, statistics, errors, consistency.

Every helper takes a polars frame (usually ``kpcompile.scan(out)``, filtered as
you like) and returns a LazyFrame, so it composes with other polars code and
runs over millions of landmarks without a Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.landmarks import INTER_OCULAR, REGION_NAMES, REGIONS

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)
COORDS_2D: tuple[str, ...] = ("px", "py")
COORDS_3D: tuple[str, ...] = ("x3", "y3", "z3")
NORMALIZERS: tuple[str, ...] = ("inter_ocular", "bbox")


def region_ids(regions: str | Iterable[str]) -> list[int]:
    """Sorted landmark ids of one region or the union of several.

    Regions come from MediaPipe's face-mesh connection lists
    (:data:`kpcompile.landmarks.REGIONS`): ``face_oval``, ``left_eye``,
    ``left_eyebrow``, ``lips``, ``nose``, ``right_eye``, ``right_eyebrow``; left is
    the subject's left.

    Raises:
        QueryError: An unknown region name (the message lists the valid ones).

    Example:
        >>> region_ids(["left_eye", "right_eye"])[:3]
        [7, 33, 144]
    """
    names = [regions] if isinstance(regions, str) else list(regions)
    ids: set[int] = set()
    for name in names:
        if name not in REGIONS:
            msg = f"unknown region {name!r}; expected one of: {', '.join(REGION_NAMES)}"
            raise QueryError(msg)
        ids |= REGIONS[name]
    return sorted(ids)


def filter_region(frame: FrameT, regions: str | Iterable[str], *, column: str = "kp_id") -> FrameT:
    """Keep the rows whose landmark id is in the region(s).

    Example:
        >>> lips = filter_region(kpcompile.scan("compiled"), "lips")  # doctest: +SKIP
        >>> lips.select(pl.col("kp_id").n_unique()).collect().item()  # doctest: +SKIP
        40
    """
    return frame.filter(pl.col(column).is_in(region_ids(regions)))


def landmark_stats(frame: pl.LazyFrame | pl.DataFrame, by: Sequence[str] = ()) -> pl.LazyFrame:
    """Per-landmark statistics, optionally within groups (``by=["camera"]``, ...).

    Columns: the ``by`` keys, ``kp_id``, ``n`` (rows), ``mean_``/``std_`` of
    ``x3``, ``y3``, ``z3``, ``px``, ``py`` (sample standard deviation, ddof 1),
    ``visible_n`` (rows with a visibility flag) and ``visible_rate`` (share of
    those that are visible; null when no row has a flag). Sorted by the keys.

    Example:
        >>> landmark_stats(kpcompile.scan("compiled"), by=["camera"]).collect()  # doctest: +SKIP
    """
    keys = [*by, "kp_id"]
    cols = (*COORDS_3D, *COORDS_2D)
    return (
        frame.lazy()
        .group_by(keys)
        .agg(
            pl.len().alias("n"),
            *(pl.col(c).mean().alias(f"mean_{c}") for c in cols),
            *(pl.col(c).std().alias(f"std_{c}") for c in cols),
            pl.col("visible").count().alias("visible_n"),
            pl.col("visible").cast(pl.Float64).mean().alias("visible_rate"),
        )
        .sort(keys)
    )


def visibility_rate(frame: pl.LazyFrame | pl.DataFrame, by: Sequence[str] = ()) -> pl.LazyFrame:
    """Share of visible rows per landmark (rows without a flag are ignored).

    Example:
        >>> visibility_rate(kpcompile.scan("compiled")).collect()  # doctest: +SKIP
    """
    keys = [*by, "kp_id"]
    return (
        frame.lazy()
        .group_by(keys)
        .agg(pl.col("visible").cast(pl.Float64).mean().alias("visible_rate"))
        .sort(keys)
    )


def nme(
    predictions: pl.LazyFrame | pl.DataFrame,
    truth: pl.LazyFrame | pl.DataFrame,
    *,
    normalizer: str,
    space: str = "2d",
) -> pl.LazyFrame:
    """Normalized mean error of predicted landmarks, per (datapoint, camera).

    For each file: the mean Euclidean distance between predicted and true landmarks
    (over the ids present in both), divided by the normalizer computed from the
    *ground truth* of that file:

    * ``inter_ocular``: distance between the outer eye corners 33 and 263
      (:data:`kpcompile.landmarks.INTER_OCULAR`), in the same space;
    * ``bbox``: ``sqrt(width * height)`` of the bounding box of the file's true 2D
      landmarks (2D only).

    Args:
        predictions: ``datapoint``, ``camera``, ``kp_id`` and ``px``/``py``
            (``space="2d"``) or ``x3``/``y3``/``z3`` (``space="3d"``).
        truth: Ground truth in the same columns, usually ``kpcompile.scan(out)``.
        normalizer: ``inter_ocular`` or ``bbox``; no default, on purpose.
        space: ``2d`` (pixels) or ``3d`` (world units).

    Returns:
        ``datapoint``, ``camera``, ``n``, ``mean_error``, ``normalizer``, ``nme``,
        sorted by datapoint and camera. ``nme.mean()`` is the dataset's NME.

    Example:
        >>> nme(preds, kpcompile.scan("compiled"), normalizer="inter_ocular")  # doctest: +SKIP
    """
    if normalizer not in NORMALIZERS:
        msg = f"normalizer must be one of {', '.join(NORMALIZERS)}; got {normalizer!r}"
        raise QueryError(msg)
    if space not in ("2d", "3d"):
        msg = f"space must be 2d or 3d; got {space!r}"
        raise QueryError(msg)
    if normalizer == "bbox" and space != "2d":
        msg = "the bbox normalizer is defined on 2D landmarks; use space='2d'"
        raise QueryError(msg)
    coords = COORDS_2D if space == "2d" else COORDS_3D
    keys = ["datapoint", "camera"]
    pred = predictions.lazy().select(
        *keys, pl.col("kp_id").cast(pl.Int16), *(pl.col(c).alias(f"{c}_pred") for c in coords)
    )
    gt = truth.lazy().select(*keys, "kp_id", *coords)
    dist = sum((pl.col(f"{c}_pred") - pl.col(c)) ** 2 for c in coords) ** 0.5
    err = (
        pred.join(gt, on=[*keys, "kp_id"], how="inner")
        .group_by(keys)
        .agg(pl.len().alias("n"), dist.mean().alias("mean_error"))
    )
    if normalizer == "inter_ocular":
        a, b = INTER_OCULAR
        eyes = gt.filter(pl.col("kp_id").is_in([a, b]))
        norm = eyes.group_by(keys).agg(
            (sum((pl.col(c).first() - pl.col(c).last()) ** 2 for c in coords) ** 0.5).alias(
                "normalizer"
            ),
            pl.len().alias("_eyes"),
        )
        # the distance is symmetric, so the order of the two rows does not matter
        norm = norm.filter(pl.col("_eyes") == 2).drop("_eyes")
    else:
        norm = gt.group_by(keys).agg(
            ((pl.col("px").max() - pl.col("px").min()) * (pl.col("py").max() - pl.col("py").min()))
            .sqrt()
            .alias("normalizer")
        )
    return (
        err.join(norm, on=keys, how="inner")
        .with_columns((pl.col("mean_error") / pl.col("normalizer")).alias("nme"))
        .sort(keys)
    )


def inconsistent_3d(frame: pl.LazyFrame | pl.DataFrame, *, tolerance: float = 0.0) -> pl.LazyFrame:
    """Datapoints whose 3D landmarks differ between cameras.

    Datagen's documentation says a datapoint's ``global_3d`` coordinates are the
    same in every camera's file. This reports, per datapoint seen by two or more
    cameras, where that does not hold: ``cameras`` (how many), ``landmarks``
    (how many ids differ by more than ``tolerance`` on some axis) and
    ``max_deviation`` (largest max-minus-min across cameras on any axis). Only
    datapoints with ``landmarks > 0`` are returned, sorted.

    Example:
        >>> inconsistent_3d(kpcompile.scan("compiled"), tolerance=1e-9).collect()  # doctest: +SKIP
    """
    spread = pl.max_horizontal(*(pl.col(c).max() - pl.col(c).min() for c in COORDS_3D))
    per_id = (
        frame.lazy()
        .group_by("datapoint", "kp_id")
        .agg(pl.col("camera").n_unique().alias("cameras"), spread.alias("deviation"))
        .filter(pl.col("cameras") > 1)
    )
    return (
        per_id.group_by("datapoint")
        .agg(
            pl.col("cameras").max(),
            (pl.col("deviation") > tolerance).sum().cast(pl.Int64).alias("landmarks"),
            pl.col("deviation").max().alias("max_deviation"),
        )
        .filter(pl.col("landmarks") > 0)
        .sort("datapoint")
    )
