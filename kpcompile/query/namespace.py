"""The ``.kp`` namespace on polars frames: kpcompile's helpers as methods.

A thin layer over the plain functions (as polars-xdt does it): every method
forwards to one of them. ``import kpcompile`` registers the namespace (as soon
as polars is imported, so a build never imports polars for it)::

    kp = kpcompile.scan("compiled")
    kp.kp.region("lips").kp.stats(by=["camera"]).collect()
    kp.kp.visibility_rate().collect()
    t = kp.kp.tensors(dtype="float32")
    kp.kp.features().collect()

On a ``LazyFrame`` the methods return ``LazyFrame`` s (``tensors`` collects); on
a ``DataFrame`` they return ``DataFrame`` s. Type checkers cannot see attributes
polars adds at run time, so typed code can write ``kpcompile.kp(frame)`` for the
same object, fully typed (``KeypointsLazyFrame`` or ``KeypointsFrame``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl

# The helpers load when a method runs: this module is imported the moment polars
# is (kpcompile/__init__.py), possibly from within a helper module being imported.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from kpcompile.feeding.tensors import Tensors

    Predictions = pl.LazyFrame | pl.DataFrame | npt.NDArray[np.floating[Any]]
    Ids = Sequence[int] | npt.NDArray[np.integer[Any]] | None

PixelOrder = Literal["as_stored", "xy"]


@pl.api.register_lazyframe_namespace("kp")
class KeypointsLazyFrame:
    """``lf.kp``: kpcompile's helpers on a keypoints ``LazyFrame``, each returning one."""

    def __init__(self, lf: pl.LazyFrame) -> None:
        self._lf = lf

    def region(self, regions: str | Iterable[str], *, column: str = "kp_id") -> pl.LazyFrame:
        """Rows of the region(s): :func:`kpcompile.filter_region`.

        Example:
            >>> kpcompile.scan("compiled").kp.region("lips")  # doctest: +SKIP
        """
        from kpcompile.query import analytics

        return analytics.filter_region(self._lf, regions, column=column)

    def stats(self, *, by: Sequence[str] = ()) -> pl.LazyFrame:
        """Per-landmark statistics: :func:`kpcompile.landmark_stats`.

        Example:
            >>> kpcompile.scan("compiled").kp.stats(by=["camera"]).collect()  # doctest: +SKIP
        """
        from kpcompile.query import analytics

        return analytics.landmark_stats(self._lf, by)

    def visibility_rate(self, *, by: Sequence[str] = ()) -> pl.LazyFrame:
        """Share of visible rows per landmark: :func:`kpcompile.visibility_rate`.

        Example:
            >>> kpcompile.scan("compiled").kp.visibility_rate().collect()  # doctest: +SKIP
        """
        from kpcompile.query import analytics

        return analytics.visibility_rate(self._lf, by)

    def inconsistent_3d(self, *, tolerance: float = 0.0) -> pl.LazyFrame:
        """Datapoints whose 3D landmarks differ by camera: :func:`kpcompile.inconsistent_3d`."""
        from kpcompile.query import analytics

        return analytics.inconsistent_3d(self._lf, tolerance=tolerance)

    def nme(
        self,
        predictions: Predictions,
        *,
        normalizer: str,
        space: str = "2d",
        index: pl.DataFrame | None = None,
        ids: Ids = None,
        missing: str = "error",
    ) -> pl.LazyFrame:
        """NME of ``predictions`` against this frame as the truth: :func:`kpcompile.nme`.

        Example:
            >>> truth = kpcompile.scan("compiled")  # doctest: +SKIP
            >>> truth.kp.nme(pred, normalizer="inter_ocular").collect()  # doctest: +SKIP
        """
        from kpcompile.query import analytics

        return analytics.nme(
            predictions,
            self._lf,
            normalizer=normalizer,
            space=space,
            index=index,
            ids=ids,
            missing=missing,
        )

    def bboxes(
        self,
        *,
        visible_only: bool = True,
        pixel_order: PixelOrder = "as_stored",
        cameras: pl.LazyFrame | pl.DataFrame | None = None,
    ) -> pl.LazyFrame:
        """One face box per file: :func:`kpcompile.bboxes`.

        Example:
            >>> kpcompile.scan("compiled").kp.bboxes(pixel_order="xy").collect()  # doctest: +SKIP
        """
        from kpcompile.query.boxes import bboxes

        return bboxes(self._lf, visible_only=visible_only, pixel_order=pixel_order, cameras=cameras)

    def features(self, *, aligned: bool = True, dtype: Any = "float32") -> pl.LazyFrame:
        """Head pose, aligned landmarks, openness per file: :func:`kpcompile.features`.

        Computed when called (over whole files, with numpy), returned as a LazyFrame.

        Example:
            >>> kpcompile.scan("compiled").kp.features().collect()  # doctest: +SKIP
        """
        from kpcompile.query.features import features

        return features(self._lf, aligned=aligned, dtype=dtype).lazy()

    def tensors(self, *, dtype: Any = "float64", pixel_order: PixelOrder = "as_stored") -> Tensors:
        """Collect into arrays: :func:`kpcompile.tensors`.

        Example:
            >>> kpcompile.scan("compiled").kp.tensors(dtype="float32").xyz.shape  # doctest: +SKIP
            (24, 468, 3)
        """
        from kpcompile.feeding.tensors import tensors

        return tensors(self._lf, dtype=dtype, pixel_order=pixel_order)


@pl.api.register_dataframe_namespace("kp")
class KeypointsFrame:
    """``df.kp``: kpcompile's helpers on a keypoints ``DataFrame``, each returning one."""

    def __init__(self, df: pl.DataFrame) -> None:
        self._df = df
        self._lazy = KeypointsLazyFrame(df.lazy())

    def region(self, regions: str | Iterable[str], *, column: str = "kp_id") -> pl.DataFrame:
        """Rows of the region(s): :func:`kpcompile.filter_region`.

        Example:
            >>> kpcompile.read("compiled").kp.region(["left_eye", "right_eye"])  # doctest: +SKIP
        """
        from kpcompile.query import analytics

        return analytics.filter_region(self._df, regions, column=column)

    def stats(self, *, by: Sequence[str] = ()) -> pl.DataFrame:
        """Per-landmark statistics: :func:`kpcompile.landmark_stats`."""
        return self._lazy.stats(by=by).collect()

    def visibility_rate(self, *, by: Sequence[str] = ()) -> pl.DataFrame:
        """Share of visible rows per landmark: :func:`kpcompile.visibility_rate`."""
        return self._lazy.visibility_rate(by=by).collect()

    def inconsistent_3d(self, *, tolerance: float = 0.0) -> pl.DataFrame:
        """Datapoints whose 3D landmarks differ by camera: :func:`kpcompile.inconsistent_3d`."""
        return self._lazy.inconsistent_3d(tolerance=tolerance).collect()

    def nme(
        self,
        predictions: Predictions,
        *,
        normalizer: str,
        space: str = "2d",
        index: pl.DataFrame | None = None,
        ids: Ids = None,
        missing: str = "error",
    ) -> pl.DataFrame:
        """NME of ``predictions`` against this frame as the truth: :func:`kpcompile.nme`."""
        lazy = self._lazy.nme(
            predictions, normalizer=normalizer, space=space, index=index, ids=ids, missing=missing
        )
        return lazy.collect()

    def bboxes(
        self,
        *,
        visible_only: bool = True,
        pixel_order: PixelOrder = "as_stored",
        cameras: pl.LazyFrame | pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """One face box per file: :func:`kpcompile.bboxes`."""
        lazy = self._lazy.bboxes(
            visible_only=visible_only, pixel_order=pixel_order, cameras=cameras
        )
        return lazy.collect()

    def features(self, *, aligned: bool = True, dtype: Any = "float32") -> pl.DataFrame:
        """Head pose, aligned landmarks, openness per file: :func:`kpcompile.features`."""
        from kpcompile.query.features import features

        return features(self._df, aligned=aligned, dtype=dtype)

    def tensors(self, *, dtype: Any = "float64", pixel_order: PixelOrder = "as_stored") -> Tensors:
        """Arrays of this frame's files: :func:`kpcompile.tensors`."""
        from kpcompile.feeding.tensors import tensors

        return tensors(self._df, dtype=dtype, pixel_order=pixel_order)


@overload
def kp(frame: pl.LazyFrame) -> KeypointsLazyFrame: ...


@overload
def kp(frame: pl.DataFrame) -> KeypointsFrame: ...


def kp(frame: pl.LazyFrame | pl.DataFrame) -> KeypointsLazyFrame | KeypointsFrame:
    """``frame.kp``, typed: the namespace of a frame, for code that type checkers read.

    Example:
        >>> kpcompile.kp(kpcompile.scan("compiled")).region("lips").collect()  # doctest: +SKIP
    """
    if isinstance(frame, pl.LazyFrame):
        return KeypointsLazyFrame(frame)
    return KeypointsFrame(frame)
