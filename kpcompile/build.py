"""Run a build: discover, plan shards, compile them in parallel, check the error budget, publish.

The coordinating process only lists files, hands out shards and assembles the
manifest; workers write the Parquet files (see :mod:`kpcompile.shard`).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpcompile import snapshot as snap
from kpcompile._version import __version__
from kpcompile.errors import OutputError, RejectedFilesError
from kpcompile.executor import run_local
from kpcompile.options import BuildOptions
from kpcompile.sets import SetsResult, compile_sets
from kpcompile.shard import ErrorRow, ShardResult, ShardTask
from kpcompile.sources import SourceFile, discover
from kpcompile.writer import (
    ERRORS_SCHEMA,
    SCHEMAS,
    ParquetSettings,
    WrittenFile,
    table_from_columns,
    write_table,
)


@dataclass(frozen=True, slots=True)
class BuildResult:
    """The outcome of a published build.

    Attributes:
        snapshot_id: Id of the new current snapshot.
        path: Its folder.
        discovered: Source files found.
        compiled: Files whose landmarks are in ``keypoints``.
        rejected: Files listed in ``errors``.
        rows: Rows of ``keypoints`` (468 per compiled file).
        errors: ``(path, code, message)`` of each rejected file.
        seconds: Wall time of the build.
    """

    snapshot_id: str
    path: Path
    discovered: int
    compiled: int
    rejected: int
    rows: int
    errors: list[ErrorRow]
    seconds: float


def plan(
    files: Sequence[SourceFile], options: BuildOptions, root: str, staging: str
) -> list[ShardTask]:
    """Split the files into shards in output order (by partition, then datapoint)."""
    if options.partition_by == "camera":
        ordered = sorted(files, key=lambda f: (f.camera, f.datapoint, f.path))
    else:
        ordered = sorted(files)
    settings = ParquetSettings(options.compression, options.compression_level)
    n = options.shard_files
    return [
        ShardTask(
            i,
            root,
            tuple(ordered[s : s + n]),
            staging,
            options.partition_by,
            settings,
            options.max_file_bytes,
        )
        for i, s in enumerate(range(0, len(ordered), n))
    ]


def build(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: BuildOptions | None = None,
    **kwargs: Any,
) -> BuildResult:
    """Compile every keypoint file under ``source`` into a new snapshot in ``out``.

    Args:
        source: Dataset folder.
        out: Output folder; created if missing. Its current snapshot changes only
            if the build succeeds.
        options: Build options; keyword arguments override its fields
            (``workers=``, ``max_errors=``, ``partition_by=``, ...).

    Returns:
        What was published.

    Raises:
        SourceError: The source is missing, unreadable or holds no keypoint file.
        RejectedFilesError: More files were rejected than ``max_errors``.
        OutputError: ``out`` cannot be written or another build holds it.

    Example:
        >>> import kpcompile
        >>> r = kpcompile.build("dataset", "compiled", workers=2)  # doctest: +SKIP
        >>> r.rows == 468 * r.compiled
        True
    """
    opts = BuildOptions.from_kwargs(options, kwargs)
    started = time.perf_counter()
    files = discover(source)
    root_src = os.path.abspath(os.fspath(source))
    with snap.locked(out) as root:
        # Timed under the lock, so ids sort in the order builds publish.
        created = dt.datetime.now(dt.UTC)
        sid = snap.new_snapshot_id(created)
        stage = snap.staging_dir(root, sid)
        try:
            results = _run(files, opts, root_src, str(stage))
            settings = ParquetSettings(opts.compression, opts.compression_level)
            sets = _sets(root_src, files, str(stage), settings, opts)
            errors = sorted([*(e for r in results for e in r.errors), *sets.errors])
            if len(errors) > opts.max_errors:
                raise RejectedFilesError(errors, opts.max_errors)
            err_table = table_from_columns(
                {name: [e[k] for e in errors] for k, name in enumerate(ERRORS_SCHEMA.names)},
                ERRORS_SCHEMA,
            )
            err_file = write_table(err_table, str(stage), "errors/part-00000.parquet", settings)
            manifest = _manifest(sid, created, root_src, files, results, err_file, opts, sets)
            path = snap.publish(root, stage, sid, manifest)
        except OSError as exc:
            snap.discard(stage)
            where = f" ({exc.filename})" if exc.filename else ""
            msg = (
                f"cannot write the snapshot in {os.fspath(out)!r}: "
                f"{exc.strerror or exc}{where}; nothing was published"
            )
            raise OutputError(msg) from exc
        except BaseException:
            snap.discard(stage)
            raise
    counts = manifest["counts"]
    return BuildResult(
        sid,
        path,
        counts["files"],
        counts["compiled"],
        counts["rejected"],
        counts["rows"],
        errors,
        time.perf_counter() - started,
    )


def _run(files: list[SourceFile], opts: BuildOptions, root: str, stage: str) -> list[ShardResult]:
    tasks = plan(files, opts, root, stage)
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    bar = _progress(len(files), show)
    try:
        return run_local(tasks, opts.resolved_workers, lambda _r, n: bar.update(n))
    finally:
        bar.close()


def _sets(
    root: str, files: list[SourceFile], stage: str, settings: ParquetSettings, opts: BuildOptions
) -> SetsResult:
    """The hook of ``--sets``: other keypoint sets and cameras, written into the same staging."""
    if not opts.sets:
        return SetsResult()
    return compile_sets(root, files, stage, settings, opts.max_file_bytes)


def _progress(total: int, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="file", disable=not show, file=sys.stderr, dynamic_ncols=True)


def _manifest(
    sid: str,
    created: dt.datetime,
    source: str,
    files: list[SourceFile],
    results: list[ShardResult],
    err_file: WrittenFile,
    opts: BuildOptions,
    sets: SetsResult,
) -> dict[str, Any]:
    layouts: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for r in results:
        layouts.update(r.layouts)
        versions.update(r.versions)
    written: dict[str, list[WrittenFile]] = {"keypoints": [], "files": [], "errors": [err_file]}
    for r in results:
        for table, items in r.written.items():
            written[table].extend(items)
    written.update(sets.written)
    compiled = sum(r.compiled for r in results)
    rejected = sum(len(r.errors) for r in results)
    tables: dict[str, Any] = {}
    for name, items in written.items():
        items = sorted(items, key=lambda w: w.path)
        tables[name] = {
            "rows": sum(w.rows for w in items),
            "bytes": sum(w.bytes for w in items),
            "partition_by": opts.partition_by if name == "keypoints" else "none",
            "schema": [
                {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in SCHEMAS[name]
            ],
            "files": [
                {"path": w.path, "rows": w.rows, "bytes": w.bytes, "sha256": w.sha256}
                for w in items
            ],
        }
    return {
        "format": snap.FORMAT,
        "snapshot": sid,
        "created_at": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "tool": {"name": "kpcompile", "version": __version__},
        "source": {
            "path": source,
            "files": len(files),
            "bytes": sum(r.source_bytes for r in results) + sets.source_bytes,
        },
        "options": {
            "partition_by": opts.partition_by,
            "compression": opts.compression,
            "compression_level": opts.compression_level,
            "shard_files": opts.shard_files,
            "max_errors": opts.max_errors,
            "max_file_bytes": opts.max_file_bytes,
            "sets": opts.sets,
        },
        "counts": {
            "files": len(files),
            "compiled": compiled,
            "rejected": rejected,
            "rows": sum(r.rows for r in results),
            "visible": sum(r.visible for r in results),
            **({"sets_rejected": len(sets.errors)} if opts.sets else {}),
        },
        "layouts": dict(sorted(layouts.items())),
        "versions": dict(sorted(versions.items())),
        "output_bytes": sum(t["bytes"] for t in tables.values()),
        "tables": tables,
    }
