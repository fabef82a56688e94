"""kpcompile: compile Datagen face-landmark JSON exports into Parquet snapshots.

Example:
    >>> import kpcompile
    >>> kpcompile.build("dataset", "compiled")  # doctest: +SKIP
    >>> kpcompile.scan("compiled").filter(pl.col("kp_id") == 1).collect()  # doctest: +SKIP

Everything but the exceptions and the options loads on first use: ``kpcompile
build`` never imports polars, ``kpcompile info`` never imports the compiler, and a
fresh worker process imports only what compiling needs.
"""

from __future__ import annotations

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
    from kpcompile.query.plot import plot_face, plot_visibility
    from kpcompile.query.projection import project, reprojection_error
    from kpcompile.query.report import ReportResult, report
    from kpcompile.query.scan import read, scan, sql, tables
    from kpcompile.query.tensors import Tensors, iter_tensors, tensors
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
    "region_ids": "kpcompile.query.analytics",
    "filter_region": "kpcompile.query.analytics",
    "landmark_stats": "kpcompile.query.analytics",
    "visibility_rate": "kpcompile.query.analytics",
    "nme": "kpcompile.query.analytics",
    "inconsistent_3d": "kpcompile.query.analytics",
    "Tensors": "kpcompile.query.tensors",
    "tensors": "kpcompile.query.tensors",
    "iter_tensors": "kpcompile.query.tensors",
    "project": "kpcompile.query.projection",
    "reprojection_error": "kpcompile.query.projection",
    "plot_face": "kpcompile.query.plot",
    "plot_visibility": "kpcompile.query.plot",
    "report": "kpcompile.query.report",
    "ReportResult": "kpcompile.query.report",
}

__all__ = [
    "SUPPORTED_VERSIONS",
    "BuildOptions",
    "BuildResult",
    "ErrorCode",
    "FormatError",
    "GcResult",
    "Info",
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
    "build",
    "diff",
    "filter_region",
    "gc",
    "inconsistent_3d",
    "info",
    "iter_tensors",
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'kpcompile' has no attribute {name!r}"
    raise AttributeError(msg)
