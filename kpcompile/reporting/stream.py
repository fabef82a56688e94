"""One streaming pass over a snapshot's landmarks: every per-camera and per-file number.

The report needs, over millions of landmarks, coordinate statistics and histograms
per camera, visibility per camera and landmark, pixels outside the image and the
reprojection error of every file. Joining 10 million rows with the cameras table
and grouping them by file in polars takes seconds per question; here the
``keypoints`` table is read once, one Parquet file at a time (each holds whole
landmark files, their rows together in ``kp_id`` order), each batch is reshaped
into ``files x 468`` arrays (one per coordinate, as :mod:`kpcompile.feeding.tensors` does) and
every question is a few numpy operations on it. Memory is one Parquet file's
batch plus small per-camera and per-file results.

The projection repeats :func:`kpcompile.query.projection.project`'s formulas in
numpy; ``tests/query/test_report.py`` checks both give the same errors.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.projection import MODELS, TOLERANCE_PX
from kpcompile.schema import FLOAT_COLUMNS

COORDS: tuple[str, ...] = FLOAT_COLUMNS
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Batch:
    """Whole files of one Parquet file as ``files x K`` arrays (rows in ``kp_id`` order)."""

    index: pl.DataFrame  # datapoint, camera of each file
    ids: npt.NDArray[np.int64]  # the K landmark ids
    cols: dict[str, Floats]  # coordinate -> files x K
    visible: npt.NDArray[np.bool_]  # files x K, False where no flag
    known: npt.NDArray[np.bool_]  # files x K, whether a flag is there


def _batch(df: pl.DataFrame) -> _Batch:
    """Reshape a batch; sorts it first unless its files' rows are already together, in order."""
    grid = _grid(df)
    if grid is None:
        df = df.sort("datapoint", "camera", "kp_id")
        grid = _grid(df)
    if grid is None:
        msg = "keypoints files hold different landmark ids: not a snapshot as kpcompile writes it"
        raise QueryError(msg)
    starts, ids = grid
    n, k = len(starts), len(ids)
    vis = df["visible"]
    return _Batch(
        index=df.select("datapoint", "camera").gather(starts),
        ids=ids,
        cols={c: df[c].to_numpy().reshape(n, k) for c in COORDS},
        visible=vis.fill_null(False).to_numpy().reshape(n, k),
        known=vis.is_not_null().to_numpy().reshape(n, k),
    )


def _grid(df: pl.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """Start row of each file and the landmark ids, if every file's rows are together in order."""
    change = (pl.col("datapoint") != pl.col("datapoint").shift()) | (
        pl.col("camera") != pl.col("camera").shift()
    )
    starts = df.select(change.fill_null(True).arg_true()).to_series().to_numpy()
    n = len(starts)
    k = df.height // n
    if df.height != n * k or not np.all(np.diff(starts) == k):
        return None
    kp = df["kp_id"].to_numpy().astype(np.int64).reshape(n, k)
    if not ((kp == kp[0]).all() and np.all(np.diff(kp[0]) > 0)):
        return None
    if df.select("datapoint", "camera").gather(starts).n_unique() != n:
        return None
    return starts.astype(np.int64), kp[0]


@dataclass(slots=True)
class _Camera:
    """Running totals of one camera: Chan's parallel mean and variance, extremes, histograms."""

    bins: int
    n: int = 0
    mean: Floats = field(default_factory=lambda: np.zeros(len(COORDS)))
    m2: Floats = field(default_factory=lambda: np.zeros(len(COORDS)))
    lo: Floats = field(default_factory=lambda: np.full(len(COORDS), np.inf))
    hi: Floats = field(default_factory=lambda: np.full(len(COORDS), -np.inf))
    hist: npt.NDArray[np.int64] = field(init=False)
    rows: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(468, np.int64))
    flagged: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(468, np.int64))
    visible: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(468, np.int64))

    def __post_init__(self) -> None:
        self.hist = np.zeros((len(COORDS), self.bins), dtype=np.int64)

    def add(self, j: int, values: Floats) -> None:
        """Merge a batch of one coordinate's values into its mean, variance and extremes."""
        bn = values.size
        bmean = float(values.mean())
        bm2 = float(np.square(values - bmean).sum())
        n, total = self.n, self.n + bn
        delta = bmean - self.mean[j]
        self.mean[j] += delta * bn / total
        self.m2[j] += bm2 + delta**2 * n * bn / total
        self.lo[j] = min(self.lo[j], float(values.min()))
        self.hi[j] = max(self.hi[j], float(values.max()))


class LandmarkPass:
    """Feed it each Parquet file's rows (:meth:`add`), then read the frames it built.

    Args:
        ranges: ``coord -> (lo, hi)`` of every coordinate over the whole table;
            the histograms have ``bins`` equal bins over it.
        cameras: The ``cameras`` table (one row per file with metadata), or ``None``.
        bins: Bins per histogram.

    Example:
        >>> p = LandmarkPass(ranges, cameras, bins=40)  # doctest: +SKIP
        >>> for rows in batches: p.add(rows)  # doctest: +SKIP
        >>> p.coords()  # doctest: +SKIP
    """

    def __init__(
        self, ranges: dict[str, tuple[float, float]], cameras: pl.DataFrame | None, bins: int
    ) -> None:
        self.ranges = ranges
        self.bins = bins
        self.cameras = None if cameras is None else _camera_matrices(cameras)
        self.per_camera: dict[str, _Camera] = {}
        self.files: list[pl.DataFrame] = []

    def add(self, df: pl.DataFrame) -> None:
        """Take one batch: the keypoints columns of whole files, in any order."""
        if df.height == 0:
            return
        b = _batch(df)
        # numpy releases the GIL: the per-file numbers are computed beside the per-camera ones
        with ThreadPoolExecutor(1) as pool:
            per_file = pool.submit(self._per_file, b)
            self._per_camera(b)
            self.files.append(per_file.result())

    def _per_camera(self, b: _Batch) -> None:
        names, codes = np.unique(b.index["camera"].to_numpy(), return_inverse=True)
        for i, name in enumerate(names):
            cam = self.per_camera.setdefault(str(name), _Camera(self.bins))
            mine = slice(None) if len(names) == 1 else codes == i
            for j, coord in enumerate(COORDS):
                values = b.cols[coord][mine].ravel()
                cam.add(j, values)
                cam.hist[j] += self._histogram(coord, values)
            cam.n += int(b.cols["x3"][mine].size)
            cam.rows[b.ids] += b.cols["x3"][mine].shape[0]
            cam.flagged[b.ids] += b.known[mine].sum(axis=0)
            cam.visible[b.ids] += (b.visible[mine] & b.known[mine]).sum(axis=0)

    def _histogram(self, coord: str, values: Floats) -> npt.NDArray[np.int64]:
        lo, hi = self.ranges[coord]
        scale = self.bins / (hi - lo) if hi > lo else 0.0
        b = ((values - lo) * scale).astype(np.int64)
        np.clip(b, 0, self.bins - 1, out=b)
        return np.bincount(b, minlength=self.bins)

    def _per_file(self, b: _Batch) -> pl.DataFrame:
        """Per file: a digest of its 3D landmarks, pixels outside the image, reprojection."""
        frame = b.index.with_columns(pl.Series("digest", _digests(b)))
        if self.cameras is None:
            return frame
        ones = np.ones_like(b.cols["x3"])
        points = np.stack([b.cols["x3"], b.cols["y3"], b.cols["z3"], ones], axis=-1)
        cams = b.index.join(self.cameras, on=["datapoint", "camera"], how="left", coalesce=True)
        size_known = cams["_known"].fill_null(False).to_numpy()
        width = cams["width"].to_numpy().astype(np.float64)[:, None]
        height = cams["height"].to_numpy().astype(np.float64)[:, None]
        px, py = b.cols["px"], b.cols["py"]
        out = (px < 0) | (px > height) | (py < 0) | (py > width)
        columns: dict[str, Any] = {
            "has_camera": cams["_known"].is_not_null().to_numpy(),
            "sized": size_known,
            "outside": np.where(size_known, out.sum(axis=1), 0),
        }
        for model in MODELS:
            columns.update(_reprojection(b, points, cams, model))
        return frame.with_columns(pl.DataFrame(columns))

    def coords(self) -> pl.DataFrame:
        """Per ``camera`` and ``coord``: ``n``, ``min``, ``mean``, ``std`` (ddof 1), ``max``."""
        rows = []
        for name in sorted(self.per_camera):
            cam = self.per_camera[name]
            std = np.sqrt(cam.m2 / (cam.n - 1)) if cam.n > 1 else np.full(len(COORDS), np.nan)
            for j, coord in enumerate(COORDS):
                rows.append((name, cam.n, coord, cam.lo[j], cam.mean[j], float(std[j]), cam.hi[j]))
        schema = {"camera": pl.String, "n": pl.Int64, "coord": pl.String}
        floats = dict.fromkeys(("min", "mean", "std", "max"), pl.Float64)
        return pl.DataFrame(rows, schema={**schema, **floats}, orient="row")

    def histograms(self) -> pl.DataFrame:
        """Per ``coord``, ``camera`` and ``bin``: ``n``, with the range ``lo``, ``hi``."""
        rows = []
        for name in sorted(self.per_camera):
            hist = self.per_camera[name].hist
            for j, coord in enumerate(COORDS):
                lo, hi = self.ranges[coord]
                rows += [(coord, name, b, int(c), lo, hi) for b, c in enumerate(hist[j]) if c]
        schema = {"coord": pl.String, "camera": pl.String, "bin": pl.Int32, "n": pl.Int64}
        schema |= {"lo": pl.Float64, "hi": pl.Float64}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def visibility(self) -> pl.DataFrame:
        """Per ``camera`` and ``kp_id``: ``n`` rows, ``flagged`` and ``visible`` rows."""
        schema = {"camera": pl.String, "kp_id": pl.Int16, "n": pl.Int64}
        frames = [pl.DataFrame(schema={**schema, "flagged": pl.Int64, "visible": pl.Int64})]
        for name in sorted(self.per_camera):
            cam = self.per_camera[name]
            seen = cam.rows > 0
            frame = pl.DataFrame(
                {
                    "camera": name,
                    "kp_id": np.flatnonzero(seen).astype(np.int16),
                    "n": cam.rows[seen],
                    "flagged": cam.flagged[seen],
                    "visible": cam.visible[seen],
                }
            )
            frames.append(frame)
        return pl.concat(frames)

    def per_file(self) -> pl.DataFrame:
        """One row per file: ``datapoint``, ``camera``, ``digest``, and with cameras
        ``has_camera``, ``sized``, ``outside``, ``<model>_mean``, ``<model>_max``,
        ``<model>_convention``."""
        if not self.files:
            return pl.DataFrame(schema={"datapoint": pl.String, "camera": pl.String})
        return pl.concat(self.files, how="diagonal_relaxed").sort("datapoint", "camera")


def _digests(b: _Batch) -> list[str]:
    """A hash of each file's 3D landmarks: equal hashes, equal coordinates."""
    x, y, z = b.cols["x3"], b.cols["y3"], b.cols["z3"]
    out = []
    for i in range(x.shape[0]):
        h = hashlib.sha256(x[i])
        h.update(y[i])
        h.update(z[i])
        out.append(h.hexdigest())
    return out


def _camera_matrices(cameras: pl.DataFrame) -> pl.DataFrame:
    """The cameras table as plain float columns: width, height, k0-k8, e0-e11, location."""
    k = [pl.col("intrinsic").list.get(i, null_on_oob=True).alias(f"k{i}") for i in range(9)]
    e = [pl.col("extrinsic").list.get(i, null_on_oob=True).alias(f"e{i}") for i in range(12)]
    return cameras.unique(["datapoint", "camera"], keep="first", maintain_order=True).select(
        "datapoint",
        "camera",
        ((pl.col("width") > 0) & (pl.col("height") > 0)).alias("_known"),
        "width",
        "height",
        *k,
        *e,
        *(pl.col(f"location_{a}").alias(f"l{a}") for a in "xyz"),
    )


def _reprojection(b: _Batch, points: Floats, cams: pl.DataFrame, model: str) -> dict[str, Any]:
    """Mean and largest error per file, and the axis order that fits (as ``project``).

    ``points`` are the homogeneous 3D landmarks (files x K x 4). ``project``
    applies the extrinsic matrix, then the intrinsic one; here their product
    ``P = K @ [R | t]`` is applied once (a third of the arithmetic), which gives
    the same pixels up to rounding.
    """
    k = cams.select(f"k{i}" for i in range(9)).to_numpy().astype(np.float64).reshape(-1, 3, 3)
    e = cams.select(f"e{i}" for i in range(12)).to_numpy().astype(np.float64).reshape(-1, 3, 4)
    if model == "pose":
        loc = cams.select("lx", "ly", "lz").to_numpy().astype(np.float64)
        e = e.copy()
        e[:, :, 3] = -(e[:, :, 0] * loc[:, :1] + e[:, :, 1] * loc[:, 1:2] + e[:, :, 2] * loc[:, 2:])
        k = k.copy()
        k[:, 1, 1] = k[:, 0, 0]
    p = k @ e  # files x 3 x 4
    img = np.einsum("nkj,nij->nki", points, p, optimize=True)  # files x K x 3
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = img[..., 0] / img[..., 2], img[..., 1] / img[..., 2]
    px, py = b.cols["px"], b.cols["py"]
    err = np.sqrt((px - v) ** 2 + (py - u) ** 2)
    swapped = np.sqrt((px - u) ** 2 + (py - v) ** 2)
    mean, worst, mean_sw = err.mean(axis=1), err.max(axis=1), swapped.mean(axis=1)
    convention = np.where(
        (mean <= mean_sw) & (mean <= TOLERANCE_PX),
        "row_col",
        np.where((mean_sw < mean) & (mean_sw <= TOLERANCE_PX), "col_row", "neither"),
    )
    return {f"{model}_mean": mean, f"{model}_max": worst, f"{model}_convention": convention}
