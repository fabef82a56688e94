"""kpcompile: compile Datagen face-landmark JSON exports into Parquet snapshots.

Example:
    >>> import kpcompile
    >>> kpcompile.build("dataset", "compiled")  # doctest: +SKIP
    >>> kpcompile.scan("compiled").filter(pl.col("kp_id") == 1).collect()  # doctest: +SKIP

Everything but the exceptions and the options loads on first use: ``kpcompile
build`` never imports polars, ``kpcompile info`` never imports the compiler, and a
fresh worker process imports only what compiling needs.
The ``.kp`` namespace on polars frames is registered as soon as polars is
imported (:mod:`kpcompile.query.namespace`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from kpcompile._version import __version__
from kpcompile.errors import (
    ErrorCode,
    FormatError,
    KpcompileError,
    OptionsError,
    OutputError,
    QueryError,
    RejectedFilesError,
    SnapshotError,
    SourceError,
)
from kpcompile.options import BuildOptions

if TYPE_CHECKING:
    from kpcompile.feeding.tensors import Tensors, iter_tensors, tensors
    from kpcompile.parsing import SUPPORTED_VERSIONS, Landmarks, parse
    from kpcompile.pipeline import BuildResult, build
    from kpcompile.query.analytics import (
        filter_region,
        inconsistent_3d,
        landmark_stats,
        nme,
        region_ids,
        visibility_rate,
    )
    from kpcompile.query.boxes import bboxes
    from kpcompile.query.features import features
    from kpcompile.query.namespace import KeypointsFrame, KeypointsLazyFrame, kp
    from kpcompile.query.plot import plot_face, plot_visibility
    from kpcompile.query.projection import project, reprojection_error
    from kpcompile.query.scan import files, read, scan, sql, tables
    from kpcompile.reporting import ReportResult, report
    from kpcompile.store.history import (
        Info,
        Rejections,
        SnapshotDiff,
        SnapshotSummary,
        diff,
        info,
        rejections,
        snapshots,
    )
    from kpcompile.store.retention import GcResult, gc
    from kpcompile.store.verify import Verification, verify

_LAZY = {
    "SUPPORTED_VERSIONS": "kpcompile.parsing",
    "Landmarks": "kpcompile.parsing",
    "parse": "kpcompile.parsing",
    "BuildResult": "kpcompile.pipeline",
    "build": "kpcompile.pipeline",
    "Info": "kpcompile.store.history",
    "Rejections": "kpcompile.store.history",
    "SnapshotDiff": "kpcompile.store.history",
    "SnapshotSummary": "kpcompile.store.history",
    "diff": "kpcompile.store.history",
    "info": "kpcompile.store.history",
    "rejections": "kpcompile.store.history",
    "snapshots": "kpcompile.store.history",
    "GcResult": "kpcompile.store.retention",
    "gc": "kpcompile.store.retention",
    "verify": "kpcompile.store.verify",
    "Verification": "kpcompile.store.verify",
    "scan": "kpcompile.query.scan",
    "read": "kpcompile.query.scan",
    "sql": "kpcompile.query.scan",
    "tables": "kpcompile.query.scan",
    "files": "kpcompile.query.scan",
    "bboxes": "kpcompile.query.boxes",
    "features": "kpcompile.query.features",
    "kp": "kpcompile.query.namespace",
    "KeypointsFrame": "kpcompile.query.namespace",
    "KeypointsLazyFrame": "kpcompile.query.namespace",
    "region_ids": "kpcompile.query.analytics",
    "filter_region": "kpcompile.query.analytics",
    "landmark_stats": "kpcompile.query.analytics",
    "visibility_rate": "kpcompile.query.analytics",
    "nme": "kpcompile.query.analytics",
    "inconsistent_3d": "kpcompile.query.analytics",
    "Tensors": "kpcompile.feeding.tensors",
    "tensors": "kpcompile.feeding.tensors",
    "iter_tensors": "kpcompile.feeding.tensors",
    "project": "kpcompile.query.projection",
    "reprojection_error": "kpcompile.query.projection",
    "plot_face": "kpcompile.query.plot",
    "plot_visibility": "kpcompile.query.plot",
    "report": "kpcompile.reporting",
    "ReportResult": "kpcompile.reporting",
}

__all__ = [
    "SUPPORTED_VERSIONS",
    "BuildOptions",
    "BuildResult",
    "ErrorCode",
    "FormatError",
    "GcResult",
    "Info",
    "KeypointsFrame",
    "KeypointsLazyFrame",
    "KpcompileError",
    "Landmarks",
    "OptionsError",
    "OutputError",
    "QueryError",
    "RejectedFilesError",
    "Rejections",
    "ReportResult",
    "SnapshotDiff",
    "SnapshotError",
    "SnapshotSummary",
    "SourceError",
    "Tensors",
    "Verification",
    "__version__",
    "bboxes",
    "build",
    "diff",
    "features",
    "files",
    "filter_region",
    "gc",
    "inconsistent_3d",
    "info",
    "iter_tensors",
    "kp",
    "landmark_stats",
    "nme",
    "parse",
    "plot_face",
    "plot_visibility",
    "project",
    "read",
    "region_ids",
    "rejections",
    "report",
    "reprojection_error",
    "scan",
    "snapshots",
    "sql",
    "tables",
    "tensors",
    "verify",
    "visibility_rate",
]


_SUBMODULES = frozenset({"torch"})
"""Submodules reachable as attributes after ``import kpcompile`` (imported on first use)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"kpcompile.{name}")
    msg = f"module 'kpcompile' has no attribute {name!r}"
    raise AttributeError(msg)


class _AfterPolars:
    """Registers the ``.kp`` namespace right after polars is imported (a post-import hook).

    ``import kpcompile`` must not import polars (a build forks workers only while
    polars is not loaded), yet ``frame.kp`` must work once polars is there.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "polars":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("polars")
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)  # type: ignore[assignment]
        return spec


class _RegisteringLoader:
    """A module loader that imports :mod:`kpcompile.query.namespace` after its module."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        import kpcompile.query.namespace  # noqa: F401 - registers the namespace


if "polars" in sys.modules:
    import kpcompile.query.namespace  # noqa: F401 - registers the namespace
elif not any(isinstance(f, _AfterPolars) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterPolars())
