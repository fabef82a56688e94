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
    RejectedFilesError,
    SnapshotError,
    SourceError,
)
from kpcompile.options import BuildOptions
from kpcompile.parse import SUPPORTED_VERSIONS, Landmarks, parse
from kpcompile.shard import compile_shard
from kpcompile.sources import SourceFile, discover

if TYPE_CHECKING:
    from kpcompile.history import diff, snapshots
    from kpcompile.query import info, read, scan

_LAZY = {
    "scan": "kpcompile.query",
    "read": "kpcompile.query",
    "info": "kpcompile.query",
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
    "RejectedFilesError",
    "SnapshotError",
    "SourceError",
    "SourceFile",
    "__version__",
    "build",
    "compile_shard",
    "diff",
    "discover",
    "info",
    "parse",
    "read",
    "scan",
    "snapshots",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'kpcompile' has no attribute {name!r}"
    raise AttributeError(msg)
