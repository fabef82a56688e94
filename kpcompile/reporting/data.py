"""The numbers of a dataset report, gathered from one snapshot.

The ``files``, ``errors`` and ``cameras`` tables have one row per file and are read
whole with polars. The ``keypoints`` table is read once, one Parquet file at a
time, by :class:`~kpcompile.reporting.stream.LandmarkPass`, which reduces it to
per-camera and per-file numbers; the histograms' ranges come from the Parquet
files' column statistics (footers only), or from one more polars pass when a file
has none. Only datapoints whose cameras disagree (their 3D landmarks hash
differently) and the sample faces are read again, by filter.

:func:`gather` returns a :class:`ReportData`; :mod:`kpcompile.reporting.sections`
turns it into the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from kpcompile.manifest import Manifest
from kpcompile.query.analytics import COORDS_3D, inconsistent_3d
from kpcompile.query.landmarks import REGIONS
from kpcompile.query.projection import MODELS
from kpcompile.query.scan import scan
from kpcompile.reporting.stream import COORDS, LandmarkPass
from kpcompile.schema import NUM_LANDMARKS
from kpcompile.store.base import Store

BINS = 40
"""Bins of each coordinate's histogram."""
BATCH_ROWS = 1_000_000
"""Landmarks read at a time (whole Parquet files; about 60 MB of columns). The next
batch is read while the current one is reduced, so two are in memory."""
SAMPLE_FACES = 8
"""Faces in the grid of samples."""
OTHER_REGION = "other"
"""Region of the landmarks in none of MediaPipe's region lists (the inner mesh)."""


@dataclass(frozen=True, slots=True)
class ReportData:
    """Small frames holding every number of the report.

    Attributes:
        manifest: The snapshot's manifest (counts, options, sizes, tool, source).
        snapshots: How many snapshots the output holds.
        files: The ``files`` table without checksums and times.
        errors: Rejections by ``code``: ``n`` and up to three example ``paths``
            and ``messages``.
        visibility: Per ``camera`` and ``kp_id``: ``n`` rows, ``flagged`` (rows
            with a visibility flag) and ``visible`` (flagged rows that are visible).
        coords: Per ``camera`` and ``coord``: ``n``, ``min``, ``mean``, ``std``, ``max``.
        histograms: Per ``coord``, ``camera`` and ``bin``: ``n`` (``BINS`` equal
            bins from the coordinate's smallest to largest value over all cameras).
        outside: Per ``camera``: ``landmarks`` and ``files`` with an image size,
            and how many of them are ``outside`` the image; ``None`` without the
            ``cameras`` table.
        consistency: Per datapoint seen by several cameras whose 3D landmarks
            differ: ``cameras``, ``landmarks``, ``max_deviation`` (see
            :func:`~kpcompile.query.analytics.inconsistent_3d`).
        multi_camera: Datapoints with compiled files from two or more cameras.
        reprojection: Per ``model``, ``datapoint`` and ``camera``: ``mean_err``,
            ``max_err`` and ``convention``; ``None`` without the ``cameras`` table.
        samples: The landmarks of the sample faces, with ``width`` and ``height``
            of their image (null when unknown).
    """

    manifest: Manifest
    snapshots: int
    files: pl.DataFrame
    errors: pl.DataFrame
    visibility: pl.DataFrame
    coords: pl.DataFrame
    histograms: pl.DataFrame
    outside: pl.DataFrame | None
    consistency: pl.DataFrame
    multi_camera: int
    reprojection: pl.DataFrame | None
    samples: pl.DataFrame


def gather(store: Store, manifest: Manifest) -> ReportData:
    """Every number of the report of ``manifest``'s snapshot.

    Example:
        >>> store = open_store("compiled")  # doctest: +SKIP
        >>> gather(store, store.manifest()).files.height  # doctest: +SKIP
        13
    """
    sid = manifest.snapshot
    kp = scan(store, snapshot=sid)
    has_cameras = "cameras" in manifest.tables
    cameras = scan(store, "cameras", snapshot=sid).collect() if has_cameras else None
    files, errors, multi = _file_tables(store, sid)
    landmarks = LandmarkPass(column_ranges(store, manifest), cameras, BINS)
    for batch in _read_ahead(store, sid, _batches(manifest)):
        landmarks.add(batch)
    per_file = landmarks.per_file()
    return ReportData(
        manifest=manifest,
        snapshots=len(store.list_snapshots()),
        files=files,
        errors=errors,
        visibility=landmarks.visibility(),
        coords=landmarks.coords(),
        histograms=landmarks.histograms(),
        outside=None if cameras is None else _outside(per_file),
        consistency=_consistency(kp, per_file),
        multi_camera=multi,
        reprojection=None if cameras is None else _reprojection(per_file),
        samples=_samples(kp, cameras, files),
    )


def _batches(manifest: Manifest) -> list[list[str]]:
    """The keypoints table's Parquet files in groups of about :data:`BATCH_ROWS` rows."""
    groups: list[list[str]] = [[]]
    rows = 0
    for entry in manifest.table("keypoints").files:
        if rows >= BATCH_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(entry.path)
        rows += entry.rows
    return [g for g in groups if g]


def _read_ahead(store: Store, sid: str, groups: list[list[str]]) -> Iterator[pl.DataFrame]:
    """Each group's keypoints, read while the caller works on the previous one."""
    with ThreadPoolExecutor(1) as pool:
        pending: Future[pl.DataFrame] | None = None
        for rels in groups:
            ahead = pool.submit(store.scan_parquet(sid, "keypoints", rels).collect)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()


def column_ranges(store: Store, manifest: Manifest) -> dict[str, tuple[float, float]]:
    """Smallest and largest value of each coordinate in the keypoints table.

    Read from the Parquet footers' statistics (kpcompile writes them), or, when a
    row group has none, computed by one polars pass over the coordinates.
    """
    import fsspec
    import pyarrow.parquet as pq

    lo = dict.fromkeys(COORDS, float("inf"))
    hi = dict.fromkeys(COORDS, float("-inf"))
    sid = manifest.snapshot
    for entry in manifest.table("keypoints").files:
        with fsspec.open(store.uri(sid, entry.path), "rb") as fh:
            meta = pq.read_metadata(fh)
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for coord in COORDS:
                stats = group.column(names.index(coord)).statistics
                if stats is None or not stats.has_min_max:
                    return _computed_ranges(store, sid)
                lo[coord] = min(lo[coord], float(stats.min))
                hi[coord] = max(hi[coord], float(stats.max))
    return {c: (lo[c], hi[c]) for c in COORDS}


def _computed_ranges(store: Store, sid: str) -> dict[str, tuple[float, float]]:
    exprs = [e for c in COORDS for e in (pl.col(c).min(), pl.col(c).max().alias(f"{c}_max"))]
    row = scan(store, snapshot=sid).select(exprs).collect().row(0)
    return {c: (row[2 * i], row[2 * i + 1]) for i, c in enumerate(COORDS)}


def _file_tables(store: Store, sid: str) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The files table, the rejections by code, and the datapoints seen by several cameras."""
    files = scan(store, "files", snapshot=sid).drop("checksum", "mtime_ns").collect()
    errors = (
        scan(store, "errors", snapshot=sid)
        .sort("path")
        .group_by("code")
        .agg(
            pl.len().alias("n"),
            pl.col("path").head(3).alias("paths"),
            pl.col("message").head(3).alias("messages"),
        )
        .sort(pl.col("n"), pl.col("code"), descending=[True, False])
        .collect()
    )
    multi = (
        files.filter(pl.col("status") == "ok")
        .group_by("datapoint")
        .agg(pl.col("camera").n_unique().alias("cameras"))
        .filter(pl.col("cameras") > 1)
        .height
    )
    return files, errors, multi


def _outside(per_file: pl.DataFrame) -> pl.DataFrame:
    """Per camera: landmarks and files with a known image size, and those outside the image."""
    sized = per_file.filter(pl.col("sized"))
    return (
        sized.group_by("camera")
        .agg(
            (pl.len() * NUM_LANDMARKS).cast(pl.Int64).alias("landmarks"),
            pl.col("outside").sum().cast(pl.Int64),
            pl.len().alias("files"),
            (pl.col("outside") > 0).sum().alias("files_outside"),
        )
        .sort("camera")
    )


def _consistency(kp: pl.LazyFrame, per_file: pl.DataFrame) -> pl.DataFrame:
    """Datapoints whose 3D landmarks differ between cameras.

    Only datapoints whose files' 3D landmarks hash differently are read again.
    """
    schema = {"datapoint": pl.String, "cameras": pl.UInt32, "landmarks": pl.Int64}
    empty = pl.DataFrame(schema={**schema, "max_deviation": pl.Float64})
    if per_file.is_empty():
        return empty
    suspects = (
        per_file.group_by("datapoint")
        .agg(pl.col("digest").n_unique().alias("digests"))
        .filter(pl.col("digests") > 1)["datapoint"]
    )
    if suspects.is_empty():
        return empty
    cols = kp.filter(pl.col("datapoint").is_in(suspects.implode())).select(
        "datapoint", "camera", "kp_id", *COORDS_3D
    )
    return inconsistent_3d(cols, tolerance=0.0).collect()


def _reprojection(per_file: pl.DataFrame) -> pl.DataFrame:
    """Per model and file with camera metadata: ``mean_err``, ``max_err``, ``convention``."""
    if "has_camera" not in per_file.columns:
        schema = {"model": pl.String, "datapoint": pl.String, "camera": pl.String}
        floats = {"mean_err": pl.Float64, "max_err": pl.Float64}
        return pl.DataFrame(schema={**schema, **floats, "convention": pl.String})
    known = per_file.filter(pl.col("has_camera"))
    return pl.concat(
        [
            known.select(
                pl.lit(model).alias("model"),
                "datapoint",
                "camera",
                pl.col(f"{model}_mean").alias("mean_err"),
                pl.col(f"{model}_max").alias("max_err"),
                pl.col(f"{model}_convention").alias("convention"),
            )
            for model in MODELS
        ]
    )


def region_of() -> pl.DataFrame:
    """``kp_id`` and its ``region`` (``other`` for the inner mesh), one row per landmark."""
    rows = [(i, name) for name, ids in REGIONS.items() for i in ids]
    regions = pl.DataFrame(rows, schema={"kp_id": pl.Int16, "region": pl.String}, orient="row")
    every = pl.DataFrame({"kp_id": pl.int_range(0, NUM_LANDMARKS, eager=True).cast(pl.Int16)})
    return every.join(regions, on="kp_id", how="left").with_columns(
        pl.col("region").fill_null(OTHER_REGION)
    )


def sample_files(files: pl.DataFrame, n: int = SAMPLE_FACES) -> pl.DataFrame:
    """Up to ``n`` compiled files, taking turns across (layout, camera), first datapoints first.

    Example:
        >>> sample_files(kpcompile.read("compiled", "files")).rows()  # doctest: +SKIP
        [('faces/datapoint_00001', 'camera_00', 'faces'), ...]
    """
    ok = files.filter(pl.col("status") == "ok").sort("layout", "camera", "datapoint")
    ranked = ok.with_columns(
        pl.int_range(pl.len()).over("layout", "camera").alias("turn"),
    ).sort("turn", "layout", "camera")
    return ranked.head(n).select("datapoint", "camera", "layout")


def _samples(kp: pl.LazyFrame, cameras: pl.DataFrame | None, files: pl.DataFrame) -> pl.DataFrame:
    """The landmarks of :func:`sample_files`, with their image size when known."""
    chosen = sample_files(files)
    rows = (
        kp.filter(pl.col("datapoint").is_in(chosen["datapoint"].unique().to_list()))
        .join(chosen.lazy(), on=["datapoint", "camera"], how="inner")
        .select("datapoint", "camera", "layout", "kp_id", "px", "py", "visible")
    )
    if cameras is not None:
        sizes = cameras.select("datapoint", "camera", "width", "height").unique(
            ["datapoint", "camera"], keep="first"
        )
        rows = rows.join(sizes.lazy(), on=["datapoint", "camera"], how="left")
    else:
        rows = rows.with_columns(
            pl.lit(None, pl.Float64).alias("width"), pl.lit(None, pl.Float64).alias("height")
        )
    return rows.sort("layout", "camera", "datapoint", "kp_id").collect()
