"""Landmark analytics over compiled snapshots: regions, statistics, errors, consistency.

Every helper takes a polars frame (usually ``kpcompile.scan(out)``, filtered as
you like) and returns a LazyFrame, so it composes with other polars code and
runs over millions of landmarks without a Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.landmarks import INTER_OCULAR, REGION_NAMES, REGIONS
from kpcompile.schema import FLOAT_COLUMNS, NUM_LANDMARKS

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)
COORDS_2D: tuple[str, ...] = FLOAT_COLUMNS[3:]
COORDS_3D: tuple[str, ...] = FLOAT_COLUMNS[:3]
NORMALIZERS: tuple[str, ...] = ("inter_ocular", "bbox")
MISSING: tuple[str, ...] = ("error", "skip")


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
        # the mean of the booleans, not of a float cast: ~10% less work over 10M rows
        .agg(pl.col("visible").mean().cast(pl.Float64).alias("visible_rate"))
        .sort(keys)
    )


def nme(
    predictions: pl.LazyFrame | pl.DataFrame | npt.NDArray[np.floating[Any]],
    truth: pl.LazyFrame | pl.DataFrame,
    *,
    normalizer: str,
    space: str = "2d",
    index: pl.DataFrame | None = None,
    ids: Sequence[int] | npt.NDArray[np.integer[Any]] | None = None,
    missing: str = "error",
) -> pl.LazyFrame:
    """Normalized mean error of predicted landmarks, per (datapoint, camera).

    For each file: the mean Euclidean distance between predicted and true landmarks
    (over the ids present in both; ``n`` says how many), divided by the normalizer
    computed from the *ground truth* of that file:

    * ``inter_ocular``: distance between the outer eye corners 33 and 263
      (:data:`kpcompile.landmarks.INTER_OCULAR`), in the same space;
    * ``bbox``: ``sqrt(width * height)`` of the bounding box of the file's true 2D
      landmarks (2D only).

    Files are never left out silently: when the predictions lack files of the
    truth, hold files the truth lacks, or the truth cannot give a file its
    normalizer, ``nme`` raises :class:`QueryError` naming how many and a few of
    them, unless ``missing="skip"`` (then those files are not in the result).

    When both sides are whole files (every file one block of its 468 rows in
    ``kp_id`` order, as :func:`kpcompile.read` gives them, or numpy predictions of all
    468 ids), checked row by row, files are matched on (datapoint, camera), N rows
    instead of N x 468, and the errors computed with numpy: the work is done by this
    call, and the LazyFrame holds the result. Anything else is joined landmark by
    landmark, lazily.

    Args:
        predictions: A frame of ``datapoint``, ``camera``, ``kp_id`` and
            ``px``/``py`` (``space="2d"``) or ``x3``/``y3``/``z3`` (``space="3d"``);
            or a numpy array of shape ``(N, K, 2)`` or ``(N, K, 3)`` with ``index``
            (and ``ids`` unless ``K`` is 468), as :func:`kpcompile.tensors` gives.
        truth: Ground truth in the frame columns, usually ``kpcompile.scan(out)``.
        normalizer: ``inter_ocular`` or ``bbox``; no default, on purpose.
        space: ``2d`` (pixels) or ``3d`` (world units).
        index: For numpy predictions: a frame of ``datapoint``, ``camera`` naming
            each of the N rows, in order (``Tensors.index``).
        ids: For numpy predictions: the K landmark ids along axis 1
            (``Tensors.ids``); default ``0..467`` when K is 468.
        missing: ``error`` (default) or ``skip`` files that are not in both.

    Returns:
        ``datapoint``, ``camera``, ``n``, ``mean_error``, ``normalizer``, ``nme``,
        sorted by datapoint and camera. ``nme.mean()`` is the dataset's NME.

    Raises:
        QueryError: An invalid argument, numpy predictions that cannot be placed,
            or (with ``missing="error"``) files that are not in both.

    Example:
        >>> t = kpcompile.tensors(kpcompile.scan("compiled"))  # doctest: +SKIP
        >>> nme(model(t.pixels), kpcompile.scan("compiled"), index=t.index,
        ...     normalizer="inter_ocular").collect()  # doctest: +SKIP
    """
    _check_nme_args(normalizer, space, missing)
    coords = COORDS_2D if space == "2d" else COORDS_3D
    keys = ["datapoint", "camera"]
    gt = truth.lazy().select(*keys, "kp_id", *coords)
    pred_files = _prediction_files(predictions, coords, index, ids)
    if pred_files is not None:
        gt_df = gt.collect()
        truth_files = _file_blocks(gt_df, coords)
        if truth_files is not None:
            return _nme_of_files(pred_files, truth_files, normalizer, missing).lazy()
        gt = gt_df.lazy()
    pred = _prediction_frame(predictions, coords, index, ids).select(
        *keys, pl.col("kp_id").cast(pl.Int16), *(pl.col(c).alias(f"{c}_pred") for c in coords)
    )
    return _nme_by_landmark(pred, gt, coords, normalizer, missing)


def _nme_by_landmark(
    pred: pl.LazyFrame, gt: pl.LazyFrame, coords: tuple[str, ...], normalizer: str, missing: str
) -> pl.LazyFrame:
    """:func:`nme` by a join of predicted and true landmarks on (datapoint, camera, kp_id)."""
    keys = ["datapoint", "camera"]
    norm = _normalizers(gt, normalizer, coords)
    if missing == "error":
        _check_files(pred, gt, norm, normalizer)
    dist = sum((pl.col(f"{c}_pred") - pl.col(c)) ** 2 for c in coords) ** 0.5
    err = (
        pred.join(gt, on=[*keys, "kp_id"], how="inner")
        .group_by(keys)
        .agg(pl.len().alias("n"), dist.mean().alias("mean_error"))
    )
    return (
        err.join(norm, on=keys, how="inner")
        .with_columns((pl.col("mean_error") / pl.col("normalizer")).alias("nme"))
        .sort(keys)
    )


def _check_nme_args(normalizer: str, space: str, missing: str) -> None:
    if normalizer not in NORMALIZERS:
        msg = f"normalizer must be one of {', '.join(NORMALIZERS)}; got {normalizer!r}"
        raise QueryError(msg)
    if space not in ("2d", "3d"):
        msg = f"space must be 2d or 3d; got {space!r}"
        raise QueryError(msg)
    if normalizer == "bbox" and space != "2d":
        msg = "the bbox normalizer is defined on 2D landmarks; use space='2d'"
        raise QueryError(msg)
    if missing not in MISSING:
        msg = f"missing must be one of {', '.join(MISSING)}; got {missing!r}"
        raise QueryError(msg)


def _prediction_frame(
    predictions: pl.LazyFrame | pl.DataFrame | npt.NDArray[np.floating[Any]],
    coords: tuple[str, ...],
    index: pl.DataFrame | None,
    ids: Sequence[int] | npt.NDArray[np.integer[Any]] | None,
) -> pl.LazyFrame:
    """Predictions as a long frame; numpy arrays are placed by ``index`` and ``ids``."""
    if isinstance(predictions, pl.LazyFrame | pl.DataFrame):
        if index is not None or ids is not None:
            msg = "index= and ids= go with numpy predictions; a frame names its rows itself"
            raise QueryError(msg)
        return predictions.lazy()
    arr = np.asarray(predictions)
    space, d = ("2d", 2) if len(coords) == 2 else ("3d", 3)
    if arr.ndim != 3:
        msg = (
            f"numpy predictions must have shape (N, K, {d}) for space={space!r}; "
            f"got shape {arr.shape}"
        )
        raise QueryError(msg)
    n, k, got = arr.shape
    if got != d:
        msg = (
            f"predictions of shape {arr.shape} hold {got} coordinates per landmark; "
            f"space={space!r} needs {d} ({', '.join(coords)})"
        )
        raise QueryError(msg)
    files = _checked_index(index, n, arr.shape)
    kp = _checked_ids(ids, k)
    flat = arr.reshape(n * k, d)
    return (
        files.select(pl.all().repeat_by(k).explode())
        .with_columns(
            pl.Series("kp_id", np.tile(kp, n)),
            *(pl.Series(c, flat[:, i]) for i, c in enumerate(coords)),
        )
        .lazy()
    )


def _checked_index(index: pl.DataFrame | None, n: int, shape: tuple[int, ...]) -> pl.DataFrame:
    if index is None:
        msg = (
            "numpy predictions need index=, a frame of datapoint, camera naming each of "
            f"their {n} rows (e.g. kpcompile.tensors(...).index)"
        )
        raise QueryError(msg)
    lacking = [c for c in ("datapoint", "camera") if c not in index.columns]
    if lacking:
        msg = f"index lacks column(s) {', '.join(lacking)}"
        raise QueryError(msg)
    if index.height != n:
        msg = f"index has {index.height} rows but predictions hold {n} files (shape {shape})"
        raise QueryError(msg)
    return index.select("datapoint", "camera")


def _checked_ids(
    ids: Sequence[int] | npt.NDArray[np.integer[Any]] | None, k: int
) -> npt.NDArray[np.int16]:
    if ids is None:
        if k != NUM_LANDMARKS:
            msg = (
                f"predictions hold {k} landmarks per file, not {NUM_LANDMARKS}: pass ids=, the K "
                "landmark ids along axis 1 (e.g. kpcompile.tensors(...).ids)"
            )
            raise QueryError(msg)
        return np.arange(k, dtype=np.int16)
    kp = np.asarray(ids, dtype=np.int16)
    if kp.shape != (k,):
        msg = f"ids has {kp.size} landmark ids but predictions hold {k} per file"
        raise QueryError(msg)
    return kp


def _normalizers(gt: pl.LazyFrame, normalizer: str, coords: tuple[str, ...]) -> pl.LazyFrame:
    """``datapoint``, ``camera``, ``normalizer`` of each file that has one."""
    keys = ["datapoint", "camera"]
    if normalizer == "bbox":
        return gt.group_by(keys).agg(
            ((pl.col("px").max() - pl.col("px").min()) * (pl.col("py").max() - pl.col("py").min()))
            .sqrt()
            .alias("normalizer")
        )
    eyes = gt.filter(pl.col("kp_id").is_in(INTER_OCULAR))
    norm = eyes.group_by(keys).agg(
        (sum((pl.col(c).first() - pl.col(c).last()) ** 2 for c in coords) ** 0.5).alias(
            "normalizer"
        ),
        pl.len().alias("_eyes"),
    )
    # the distance is symmetric, so the order of the two rows does not matter
    return norm.filter(pl.col("_eyes") == 2).drop("_eyes")


def _check_files(pred: pl.LazyFrame, gt: pl.LazyFrame, norm: pl.LazyFrame, normalizer: str) -> None:
    """Raise unless predictions and truth hold the same files, each with a normalizer."""
    keys = ["datapoint", "camera"]
    p, t, n = pl.collect_all(
        [pred.select(keys).unique(), gt.select(keys).unique(), norm.select(keys)]
    )
    _raise_unmatched(p, t, n, normalizer)


def _raise_unmatched(p: pl.DataFrame, t: pl.DataFrame, n: pl.DataFrame, normalizer: str) -> None:
    """Raise unless the files ``p`` and ``t`` are the same, each in ``n`` (has a normalizer)."""
    keys = ["datapoint", "camera"]
    lacking, extra = t.join(p, on=keys, how="anti"), p.join(t, on=keys, how="anti")
    problems = []
    if lacking.height:
        problems.append(
            f"predictions lack {lacking.height} of the {t.height} files of the truth "
            f"({_examples(lacking)})"
        )
    if extra.height:
        s = "s" if extra.height != 1 else ""
        problems.append(
            f"predictions hold {extra.height} file{s} the truth lacks ({_examples(extra)})"
        )
    if problems:
        msg = "; ".join(problems)
        msg += "; filter the truth to the predicted files, or pass missing='skip' to leave them out"
        raise QueryError(msg)
    unnormalized = t.join(n, on=keys, how="anti")
    if unnormalized.height:
        a, b = INTER_OCULAR
        msg = (
            f"the truth lacks landmark {a} or {b} (the {normalizer} normalizer) in "
            f"{unnormalized.height} of its {t.height} files ({_examples(unnormalized)}); "
            "use normalizer='bbox', or pass missing='skip' to leave them out"
        )
        raise QueryError(msg)


# Whole files, aligned: (datapoint, camera) of N files, and their (N, 468, d) coordinates.
Files = tuple[pl.DataFrame, npt.NDArray[np.float64]]


def _prediction_files(
    predictions: pl.LazyFrame | pl.DataFrame | npt.NDArray[np.floating[Any]],
    coords: tuple[str, ...],
    index: pl.DataFrame | None,
    ids: Sequence[int] | npt.NDArray[np.integer[Any]] | None,
) -> Files | None:
    """Predictions as whole files when they are (else ``None``: the general join takes them).

    A DataFrame qualifies when it is blocks of 468 rows in ``kp_id`` order (as
    ``kpcompile.read`` gives); numpy ``(N, 468, d)`` with all ids in order and an index
    naming N distinct files does too. A LazyFrame is not collected to find out.
    """
    if isinstance(predictions, pl.DataFrame):
        return _file_blocks(predictions, coords) if index is None and ids is None else None
    if isinstance(predictions, pl.LazyFrame) or index is None:
        return None
    arr = np.asarray(predictions)
    whole = ids is None or np.array_equal(np.asarray(ids), np.arange(NUM_LANDMARKS))
    if not whole or arr.shape[1:] != (NUM_LANDMARKS, len(coords)) or index.height != len(arr):
        return None
    files = _string_keys(index)
    if files is None or files.is_duplicated().any():
        return None
    return files, arr.astype(np.float64, copy=False)


def _string_keys(frame: pl.DataFrame) -> pl.DataFrame | None:
    keys = ("datapoint", "camera")
    if any(frame.schema.get(k) != pl.String or frame[k].null_count() for k in keys):
        return None
    return frame.select(keys)


def _file_blocks(df: pl.DataFrame, coords: tuple[str, ...]) -> Files | None:
    """``df`` as whole files when every file is one block of 468 rows in ``kp_id`` order.

    Checked, never assumed: ids ``0..467`` in each block, one (datapoint, camera)
    per block, no file twice, no null coordinate; ``None`` otherwise.
    """
    k = NUM_LANDMARKS
    n, rest = divmod(df.height, k)
    keys = _string_keys(df) if "kp_id" in df.columns else None
    if keys is None or n == 0 or rest or any(df[c].null_count() for c in ("kp_id", *coords)):
        return None
    if not (df["kp_id"].to_numpy().reshape(n, k) == np.arange(k)).all():
        return None
    same = keys.select(
        pl.all_horizontal(pl.col(c) == pl.col(c).shift() for c in keys.columns).fill_null(True)
    ).to_series()
    start = np.zeros(df.height, dtype=bool)
    start[::k] = True
    files = keys.gather_every(k)
    if not (same.to_numpy() | start).all() or files.is_duplicated().any():
        return None
    values = df.select(pl.col(c).cast(pl.Float64) for c in coords).to_numpy()
    return files, values.reshape(n, k, len(coords))


def _nme_of_files(pred: Files, truth: Files, normalizer: str, missing: str) -> pl.DataFrame:
    """:func:`nme` of whole files: a join of N files (not N x 468 rows), then numpy."""
    keys = ["datapoint", "camera"]
    (pf, p), (tf, t) = pred, truth
    if missing == "error":
        _raise_unmatched(pf, tf, tf, normalizer)
    pairs = pf.with_row_index("_p").join(tf.with_row_index("_t"), on=keys, how="inner")
    p, t = p[pairs["_p"].to_numpy()], t[pairs["_t"].to_numpy()]
    err = np.sqrt(((p - t) ** 2).sum(axis=-1)).mean(axis=1)
    if normalizer == "inter_ocular":
        a, b = INTER_OCULAR
        norm = np.sqrt(((t[:, a] - t[:, b]) ** 2).sum(axis=-1))
    else:
        span = t.max(axis=1) - t.min(axis=1)
        norm = np.sqrt(span[:, 0] * span[:, 1])
    return (
        pairs.select(keys)
        .with_columns(
            pl.lit(NUM_LANDMARKS, dtype=pl.get_index_type()).alias("n"),
            pl.Series("mean_error", err),
            pl.Series("normalizer", norm),
            pl.Series("nme", err / norm),
        )
        .sort(keys)
    )


def _examples(keys: pl.DataFrame, shown: int = 3) -> str:
    """``datapoint camera`` of the first few files (sorted), and how many more."""
    rows = keys.sort("datapoint", "camera").rows()
    names = [f"{d} {c}" for d, c in rows[:shown]]
    if len(rows) > shown:
        return f"{', '.join(names)} and {len(rows) - shown} more"
    return ", ".join(names)


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
