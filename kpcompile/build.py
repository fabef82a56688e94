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
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpcompile import snapshot as snap
from kpcompile._version import __version__
from kpcompile.errors import KpcompileError, OptionsError, OutputError, RejectedFilesError
from kpcompile.executor import prestart, release, run
from kpcompile.incremental import (
    Previous,
    chunk,
    load_previous,
    previous_of,
    reuse_shard,
    shard_digest,
    shard_entry,
)
from kpcompile.options import BuildOptions
from kpcompile.sets import SetsResult, compile_sets
from kpcompile.shard import ErrorRow, PreviousFile, ShardResult, ShardTask, write_table_to
from kpcompile.sources import Source, SourceFile, open_source
from kpcompile.writer import (
    ERRORS_SCHEMA,
    SCHEMAS,
    ParquetSettings,
    WrittenFile,
    table_from_columns,
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
        base: The snapshot an incremental build reused, ``None`` for a full build.
        shards: Shards of the snapshot.
        reused_shards: Shards linked unchanged from ``base``.
        parsed: Files parsed from JSON.
        reused_files: Files whose landmarks came from ``base`` instead of their JSON.
    """

    snapshot_id: str
    path: Path | str
    discovered: int
    compiled: int
    rejected: int
    rows: int
    errors: list[ErrorRow]
    seconds: float
    base: str | None = None
    shards: int = 0
    reused_shards: int = 0
    parsed: int = 0
    reused_files: int = 0


def plan(files: Sequence[SourceFile], options: BuildOptions) -> list[list[SourceFile]]:
    """Split the files into shards in output order (by partition, then datapoint).

    Boundaries are content-defined (see :func:`kpcompile.incremental.chunk`), so a
    grown dataset keeps most of its shards and an incremental build reuses them.
    """
    if options.partition_by == "camera":
        ordered = sorted(files, key=lambda f: (f.camera, f.datapoint, f.path))
    else:
        ordered = sorted(files)
    return chunk(ordered, options.shard_files, options.partition_by)


def build(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: BuildOptions | None = None,
    **kwargs: Any,
) -> BuildResult:
    """Compile every keypoint file under ``source`` into a new snapshot in ``out``.

    Args:
        source: Dataset folder, archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``)
            or fsspec URL (``s3://bucket/prefix``, ``s3://bucket/dataset.tar.gz``).
        out: Output folder or URL; created if missing. Its current snapshot changes
            only if the build succeeds. When it holds a snapshot of the same source
            built with the same options, unchanged shards and files are reused
            (``full=True`` compiles everything again).
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
    # Workers forked now, before the file lists exist, do not carry them (see prestart).
    pool = prestart(opts.resolved_workers) if opts.executor == "local" else None
    try:
        return _build(source, out, opts, started, pool)
    finally:
        release(pool)


def _build(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    opts: BuildOptions,
    started: float,
    pool: ProcessPoolExecutor | None,
) -> BuildResult:
    with open_source(source, opts.max_file_bytes) as src, snap.locked(out) as root:
        files = src.files
        # Timed under the lock, so ids sort in the order builds publish.
        created = dt.datetime.now(dt.UTC)
        sid = snap.new_snapshot_id(created)
        stage = snap.staging_dir(root, sid)
        try:
            prev = None if opts.full else load_previous(os.fspath(root), src.location, opts)
            results, shards, digests, linked = _run(src, opts, str(stage), prev, pool)
            settings = _settings(opts)
            sets = _sets(src, files, str(stage), settings, opts)
            errors = sorted([*(e for r in results for e in r.errors), *sets.errors])
            if len(errors) > opts.max_errors:
                raise RejectedFilesError(errors, opts.max_errors)
            err_table = table_from_columns(
                {name: [e[k] for e in errors] for k, name in enumerate(ERRORS_SCHEMA.names)},
                ERRORS_SCHEMA,
            )
            err_file = write_table_to(err_table, str(stage), "errors/part-00000.parquet", settings)
            manifest = _manifest(sid, created, src.location, files, results, err_file, opts, sets)
            manifest["shards"] = [
                shard_entry(r, shards[r.index], digests[r.index], opts.partition_by)
                for r in results
            ]
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
        base=prev.snapshot if prev is not None else None,
        shards=len(results),
        reused_shards=linked,
        parsed=sum(r.parsed for r in results),
        reused_files=sum(r.reused for r in results),
    )


def _run(
    src: Source,
    opts: BuildOptions,
    stage: str,
    prev: Previous | None,
    pool: ProcessPoolExecutor | None = None,
) -> tuple[list[ShardResult], list[list[SourceFile]], list[str], int]:
    shards = plan(src.files, opts)
    digests = [shard_digest(s) for s in shards]
    settings = _settings(opts)
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    bar = _progress(len(src.files), show)
    linked: list[ShardResult] = []
    # previous rows of the files of changed shards (None: new file, or full build)
    previous: dict[int, tuple[PreviousFile | None, ...] | None] = {}
    if prev is not None:
        for i, shard in enumerate(shards):
            if digests[i] not in prev.shards:
                previous[i] = previous_of(prev, shard, opts.partition_by)

    def tasks() -> Iterator[ShardTask]:
        for i, shard in enumerate(shards):
            reused = reuse_shard(prev, digests[i], i, stage)
            if reused is not None:
                linked.append(reused)
                bar.update(len(shard))
                continue
            yield ShardTask(
                i,
                src.root or src.location,
                tuple(shard),
                stage,
                opts.partition_by,
                settings,
                opts.max_file_bytes,
                data=src.payload(shard, local=opts.executor == "local"),
                previous=previous.get(i),
            )

    workers = opts.resolved_workers
    if prev is not None and _to_read(shards, previous) <= opts.shard_files:
        workers = 1  # less than one shard to read: starting worker processes costs more
    try:
        results = run(
            tasks(),
            lambda _r, n: bar.update(n),
            executor=opts.executor,
            workers=workers,
            scheduler=opts.scheduler,
            pool=pool,
        )
    finally:
        bar.close()
    done = sorted(results + linked, key=lambda r: r.index)
    if [r.index for r in done] != list(range(len(shards))):
        # never publish a snapshot missing a shard, whatever an executor returned
        missing = sorted(set(range(len(shards))) - {r.index for r in done})
        msg = f"shards {missing[:10]} produced no result; nothing was published"
        raise KpcompileError(msg)
    return done, shards, digests, len(linked)


def _to_read(
    shards: list[list[SourceFile]], previous: dict[int, tuple[PreviousFile | None, ...] | None]
) -> int:
    """Files an incremental build has to read: new or changed ones, in changed shards."""
    count = 0
    for i, rows in previous.items():
        for j, f in enumerate(shards[i]):
            p = rows[j] if rows is not None else None
            count += p is None or (p.size, p.mtime_ns) != (f.size, f.mtime_ns)
    return count


def _sets(
    src: Source, files: list[SourceFile], stage: str, settings: ParquetSettings, opts: BuildOptions
) -> SetsResult:
    """The hook of ``--sets``: other keypoint sets and cameras, written into the same staging."""
    if not opts.sets:
        return SetsResult()
    if src.root is None or "://" in stage:
        msg = "sets=True (--sets) needs a local source folder and a local output folder"
        raise OptionsError(msg)
    return compile_sets(src.root, files, stage, settings, opts.max_file_bytes)


def _settings(opts: BuildOptions) -> ParquetSettings:
    return ParquetSettings(opts.compression, opts.compression_level, opts.row_group_files)


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
