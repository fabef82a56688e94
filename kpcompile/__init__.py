"""kpcompile: compile Datagen face-landmark JSON exports into Parquet snapshots.

Example:
    >>> import kpcompile
    >>> kpcompile.build("dataset", "compiled")  # doctest: +SKIP
    >>> kpcompile.scan("compiled").filter(pl.col("kp_id") == 1).collect()  # doctest: +SKIP

Query helpers (which import polars) load on first use, so worker processes and
``kpcompile build`` start without polars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kpcompile._version import __version__
from kpcompile.build import BuildResult, build
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
from kpcompile.parse import SUPPORTED_VERSIONS, Landmarks, parse
from kpcompile.shard import compile_shard
from kpcompile.sources import SourceFile, discover

if TYPE_CHECKING:
    from kpcompile.analytics import (
        filter_region,
        inconsistent_3d,
        landmark_stats,
        nme,
        region_ids,
        visibility_rate,
    )
    from kpcompile.arrays import Tensors, iter_tensors, tensors
    from kpcompile.history import diff, snapshots
    from kpcompile.plot import plot_face, plot_visibility
    from kpcompile.projection import project, reprojection_error
    from kpcompile.query import info, read, scan, sql, tables

_LAZY = {
    "scan": "kpcompile.query",
    "read": "kpcompile.query",
    "info": "kpcompile.query",
    "sql": "kpcompile.query",
    "tables": "kpcompile.query",
    "region_ids": "kpcompile.analytics",
    "filter_region": "kpcompile.analytics",
    "landmark_stats": "kpcompile.analytics",
    "visibility_rate": "kpcompile.analytics",
    "nme": "kpcompile.analytics",
    "inconsistent_3d": "kpcompile.analytics",
    "Tensors": "kpcompile.arrays",
    "tensors": "kpcompile.arrays",
    "iter_tensors": "kpcompile.arrays",
    "project": "kpcompile.projection",
    "reprojection_error": "kpcompile.projection",
    "plot_face": "kpcompile.plot",
    "plot_visibility": "kpcompile.plot",
    "snapshots": "kpcompile.history",
    "diff": "kpcompile.history",
}

__all__ = [
    "SUPPORTED_VERSIONS",
    "BuildOptions",
    "BuildResult",
    "ErrorCode",
    "FormatError",
    "KpcompileError",
    "Landmarks",
    "OptionsError",
    "OutputError",
    "QueryError",
    "RejectedFilesError",
    "SnapshotError",
    "SourceError",
    "SourceFile",
    "Tensors",
    "__version__",
    "build",
    "compile_shard",
    "diff",
    "discover",
    "filter_region",
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
    "reprojection_error",
    "scan",
    "snapshots",
    "sql",
    "tables",
    "tensors",
    "visibility_rate",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'kpcompile' has no attribute {name!r}"
    raise AttributeError(msg)
