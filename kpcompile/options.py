"""Build options shared by the CLI and the Python API."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from kpcompile.errors import OptionsError

PARTITION_KEYS: tuple[str, ...] = ("camera", "none")
COMPRESSIONS: tuple[str, ...] = ("zstd", "snappy", "lz4", "gzip", "none")
EXECUTORS: tuple[str, ...] = ("local", "dask")


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildOptions:
    """How a build runs and what it writes.

    Attributes:
        workers: Worker processes parsing in parallel; ``None`` means all cores.
            With ``1`` everything runs in the calling process.
        max_errors: How many rejected files still publish a snapshot (they are
            listed in the ``errors`` table). ``0``: any rejected file fails the build.
        partition_by: ``"camera"`` writes ``keypoints/camera=<name>/`` folders;
            ``"none"`` writes one folder.
        compression: Parquet codec for every table.
        compression_level: Codec level, ``None`` for the codec's default.
        shard_files: Source files per shard on average (one worker task, one
            Parquet file per partition; between half and twice this many, with
            content-defined boundaries so incremental builds reuse shards). Not
            derived from ``workers``, so the output does not depend on the worker count.
        row_group_files: Source files per Parquet row group of ``keypoints``
            (x 468 rows). Workers write a row group at a time, so this, not the
            shard size, bounds their memory.
        max_file_bytes: Larger source files are rejected as ``too_large``
            without being read; bounds each worker's memory.
        progress: Show a progress bar; ``None`` shows it when stderr is a terminal.
        sets: Also compile the other keypoint sets and camera metadata into the
            ``face_standard``, ``head``, ``ears`` and ``cameras`` tables (:mod:`kpcompile.sets`).
        full: Compile every file again instead of reusing OUT's current snapshot
            where the source is unchanged (see :mod:`kpcompile.incremental`).
        executor: ``"local"`` (this machine's processes) or ``"dask"``.
        scheduler: Dask scheduler address; ``None`` starts a local Dask cluster.

    Example:
        >>> BuildOptions(workers=2, max_errors=10)
        BuildOptions(workers=2, max_errors=10, partition_by='camera', ...)  # doctest: +SKIP
    """

    workers: int | None = None
    max_errors: int = 0
    partition_by: str = "camera"
    compression: str = "zstd"
    compression_level: int | None = None
    shard_files: int = 512
    row_group_files: int = 256
    max_file_bytes: int = 64 * 1024 * 1024
    progress: bool | None = None
    sets: bool = False
    full: bool = False
    executor: str = "local"
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            msg = f"workers must be at least 1, got {self.workers}"
            raise OptionsError(msg)
        if self.max_errors < 0:
            msg = f"max_errors must be 0 or more, got {self.max_errors}"
            raise OptionsError(msg)
        if self.partition_by not in PARTITION_KEYS:
            valid = ", ".join(PARTITION_KEYS)
            msg = f"partition_by must be one of {valid}; got {self.partition_by!r}"
            raise OptionsError(msg)
        if self.compression not in COMPRESSIONS:
            msg = f"compression must be one of {', '.join(COMPRESSIONS)}; got {self.compression!r}"
            raise OptionsError(msg)
        if self.row_group_files < 1:
            msg = f"row_group_files must be at least 1, got {self.row_group_files}"
            raise OptionsError(msg)
        if self.shard_files < 1:
            msg = f"shard_files must be at least 1, got {self.shard_files}"
            raise OptionsError(msg)
        if self.executor not in EXECUTORS:
            msg = f"executor must be one of {', '.join(EXECUTORS)}; got {self.executor!r}"
            raise OptionsError(msg)
        if self.max_file_bytes < 1:
            msg = f"max_file_bytes must be at least 1, got {self.max_file_bytes}"
            raise OptionsError(msg)

    @property
    def resolved_workers(self) -> int:
        """The number of worker processes actually used."""
        if self.workers is not None:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1

    @classmethod
    def from_kwargs(cls, options: BuildOptions | None, kwargs: dict[str, Any]) -> BuildOptions:
        """Merge keyword overrides into ``options``, naming unknown keywords."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            msg = f"unknown build option {unknown[0]!r}; valid options: {', '.join(sorted(names))}"
            raise OptionsError(msg)
        base = options or cls()
        values = {f.name: getattr(base, f.name) for f in fields(cls)}
        values.update(kwargs)
        return cls(**values)
