"""Run a build: discover, compile shards in parallel, check the error budget, publish.

:func:`compile_shard` is the unit of work: a pure function of a picklable
:class:`ShardTask` that reads, parses and writes one shard's Parquet files, and
returns only names, counts and rejected-file rows. The coordinating process keeps
a bounded number of tasks in flight, so memory does not grow with the dataset.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from kpcompile import snapshot as snap
from kpcompile._version import __version__
from kpcompile.errors import ErrorCode, FormatError, KpcompileError, RejectedFilesError
from kpcompile.options import BuildOptions
from kpcompile.parse import NUM_LANDMARKS, parse
from kpcompile.sources import SourceFile, discover, read_file
from kpcompile.writer import (
    ERRORS_SCHEMA,
    FILES_SCHEMA,
    SCHEMAS,
    KeypointBuffer,
    ParquetSettings,
    WrittenFile,
    partition_dir,
    write_table,
)

ErrorRow = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Everything a worker needs to compile one shard (picklable)."""

    index: int
    root: str
    files: tuple[SourceFile, ...]
    staging: str
    partition_by: str
    settings: ParquetSettings
    max_file_bytes: int


@dataclass(slots=True)
class ShardResult:
    """What a worker sends back: names and counts, never the rows themselves."""

    index: int
    written: dict[str, list[WrittenFile]] = field(default_factory=dict)
    errors: list[ErrorRow] = field(default_factory=list)
    compiled: int = 0
    rows: int = 0
    visible: int = 0
    source_bytes: int = 0
    layouts: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)


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


def compile_shard(task: ShardTask) -> ShardResult:
    """Read, parse and write one shard; every file ends in ``keypoints`` or in ``errors``."""
    result = ShardResult(task.index)
    buf = KeypointBuffer()
    cols: dict[str, list[Any]] = {name: [] for name in FILES_SCHEMA.names}
    for sf in task.files:
        lm = None
        data: bytes | None = None
        try:
            if sf.duplicate_of is not None:
                raise FormatError(
                    ErrorCode.DUPLICATE_CAMERA,
                    sf.path,
                    f"camera folder already compiled from {sf.duplicate_of}; "
                    "a camera folder may hold one landmark file",
                )
            data = _read(task.root, sf.path, task.max_file_bytes)
            lm = parse(data, sf.path)
        except FormatError as exc:
            result.errors.append((sf.path, str(exc.code), str(exc)))
        checksum = f"crc32:{zlib.crc32(data):08x}" if data is not None else None
        cols["path"].append(sf.path)
        cols["datapoint"].append(sf.datapoint)
        cols["camera"].append(sf.camera)
        cols["status"].append("ok" if lm is not None else "rejected")
        cols["layout"].append(lm.layout if lm is not None else None)
        cols["version"].append(lm.version if lm is not None else None)
        cols["landmarks"].append(NUM_LANDMARKS if lm is not None else None)
        cols["visible"].append(lm.visible_count if lm is not None else None)
        cols["bytes"].append(len(data) if data is not None else (sf.size if sf.size >= 0 else None))
        cols["mtime_ns"].append(sf.mtime_ns)
        cols["checksum"].append(checksum)
        if data is not None:
            result.source_bytes += len(data)
        if lm is None:
            continue
        key = sf.camera if task.partition_by == "camera" else ""
        buf.add(key, sf.datapoint, sf.camera, lm)
        result.compiled += 1
        result.rows += NUM_LANDMARKS
        result.visible += lm.visible_count or 0
        result.layouts[lm.layout] += 1
        result.versions[lm.version or "none"] += 1
    name = f"part-{task.index:05d}.parquet"
    kp_files = []
    for key, table in buf.tables():
        folder = f"keypoints/{partition_dir('camera', key)}" if key else "keypoints"
        kp_files.append(write_table(table, task.staging, f"{folder}/{name}", task.settings))
    result.written["keypoints"] = kp_files
    files_table = pa.Table.from_pydict(cols, schema=FILES_SCHEMA)
    result.written["files"] = [
        write_table(files_table, task.staging, f"files/{name}", task.settings)
    ]
    return result


def _read(root: str, rel: str, max_bytes: int) -> bytes:
    try:
        return read_file(root, rel, max_bytes)
    except ValueError as exc:
        raise FormatError(ErrorCode.TOO_LARGE, rel, f"file too large: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, IsADirectoryError):
            reason = "is a folder, not a file"
        raise FormatError(ErrorCode.UNREADABLE, rel, f"cannot read: {reason}") from None


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


def run_local(
    tasks: Sequence[ShardTask], workers: int, on_done: Callable[[ShardResult, int], None]
) -> list[ShardResult]:
    """Run tasks in this process (``workers == 1``) or a process pool, in bounded memory."""
    sizes = {t.index: len(t.files) for t in tasks}
    if workers == 1 or len(tasks) <= 1:
        out = []
        for t in tasks:
            r = compile_shard(t)
            on_done(r, sizes[r.index])
            out.append(r)
        return out
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kpcompile.build"])
    results: list[ShardResult] = []
    pending: set[Future[ShardResult]] = set()
    queue: Iterator[ShardTask] = iter(tasks)
    window = workers * 2
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
            for t in queue:
                pending.add(pool.submit(compile_shard, t))
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        r = f.result()
                        on_done(r, sizes[r.index])
                        results.append(r)
            for f in _as_done(pending):
                r = f.result()
                on_done(r, sizes[r.index])
                results.append(r)
    except BrokenProcessPool:
        msg = "a worker process died (killed or out of memory); nothing was published"
        raise KpcompileError(msg) from None
    return sorted(results, key=lambda r: r.index)


def _as_done(pending: set[Future[ShardResult]]) -> Iterator[Future[ShardResult]]:
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done


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
    created = dt.datetime.now(dt.UTC)
    files = discover(source)
    root_src = os.path.abspath(os.fspath(source))
    with snap.locked(out) as root:
        sid = snap.new_snapshot_id(created)
        stage = snap.staging_dir(root, sid)
        try:
            results = _run(files, opts, root_src, str(stage))
            errors = sorted(e for r in results for e in r.errors)
            if len(errors) > opts.max_errors:
                raise RejectedFilesError(errors, opts.max_errors)
            settings = ParquetSettings(opts.compression, opts.compression_level)
            err_table = pa.Table.from_pylist(
                [dict(zip(ERRORS_SCHEMA.names, e, strict=True)) for e in errors],
                schema=ERRORS_SCHEMA,
            )
            err_file = write_table(err_table, str(stage), "errors/part-00000.parquet", settings)
            manifest = _manifest(sid, created, root_src, files, results, err_file, opts)
            path = snap.publish(root, stage, sid, manifest)
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
            "bytes": sum(r.source_bytes for r in results),
        },
        "options": {
            "partition_by": opts.partition_by,
            "compression": opts.compression,
            "compression_level": opts.compression_level,
            "shard_files": opts.shard_files,
            "max_errors": opts.max_errors,
            "max_file_bytes": opts.max_file_bytes,
        },
        "counts": {
            "files": len(files),
            "compiled": compiled,
            "rejected": rejected,
            "rows": sum(r.rows for r in results),
            "visible": sum(r.visible for r in results),
        },
        "layouts": dict(sorted(layouts.items())),
        "versions": dict(sorted(versions.items())),
        "output_bytes": sum(t["bytes"] for t in tables.values()),
        "tables": tables,
    }
