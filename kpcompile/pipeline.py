"""The whole pipeline in one call: ingest → parse → compile → publish.

:func:`build` opens the source (:mod:`kpcompile.ingest`) and the store
(:mod:`kpcompile.store`), plans shards and runs the workers
(:mod:`kpcompile.compile`), checks the error budget and publishes. The
coordinating process only lists files, hands out shards and assembles the
manifest; workers write the Parquet files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kpcompile._version import __version__
from kpcompile.compile.executor import run as run_shards
from kpcompile.compile.incremental import (
    Previous,
    ShardInput,
    previous_of,
    reuse_shard,
    shard_record,
    transient_errors,
)
from kpcompile.compile.plan import Plan, plan_shards
from kpcompile.compile.pool import WorkerPool
from kpcompile.compile.shard import ShardResult, ShardTask
from kpcompile.compile.stage import Stage
from kpcompile.compile.writer import ParquetSettings, table_from_columns, write_table
from kpcompile.errors import (
    TRANSIENT_CODES,
    FormatError,
    KpcompileError,
    OptionsError,
    OutputError,
    RejectedFilesError,
)
from kpcompile.ingest import Source, open_source, preload
from kpcompile.ingest.discover import LANDMARK_NAMES, Discovered, discover_files
from kpcompile.ingest.paths import printable
from kpcompile.ingest.setfiles import SET_NAMES, SetFiles, find_set_files
from kpcompile.manifest import (
    FORMAT,
    Column,
    Counts,
    ErrorRow,
    FileEntry,
    Manifest,
    Refusal,
    SourceInfo,
    TableEntry,
    Tool,
)
from kpcompile.options import BuildOptions, recorded
from kpcompile.schema import ERRORS_SCHEMA, SCHEMAS
from kpcompile.store import Store, open_store
from kpcompile.store.base import new_snapshot_id


@dataclass(frozen=True, slots=True)
class BuildResult:
    """The outcome of a published build.

    Attributes:
        snapshot_id: Id of the new current snapshot.
        path: Its folder (or URL).
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
        up_to_date: Nothing changed since the current snapshot (same files, same
            options): nothing was published, ``snapshot_id`` is the current one.
        notes: Things worth knowing (the output held another source's snapshot).
    """

    snapshot_id: str
    path: str
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
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Compiled:
    """What the workers produced: one result per shard, with its input."""

    results: list[ShardResult]
    shards: list[ShardInput]
    linked: int
    base: str | None = None


def build(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | Store,
    *,
    options: BuildOptions | None = None,
    **kwargs: Any,
) -> BuildResult:
    """Compile every keypoint file under ``source`` into a new snapshot in ``out``.

    Args:
        source: Dataset folder, archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``)
            or URL (``s3://bucket/prefix``, ``s3://bucket/dataset.tar.gz``).
        out: Output folder or URL; created if missing. Its current snapshot changes
            only if the build succeeds. When it holds a snapshot of the same source
            built with the same output options, unchanged shards and files are
            reused (``full=True`` compiles everything again).
        options: Build options; keyword arguments override its fields
            (``workers=``, ``max_errors=``, ``partition_by=``, ...).

    Returns:
        What was published.

    Raises:
        OptionsError: An option has an invalid value.
        SourceError: The source is missing, unreadable or holds no keypoint file.
        RejectedFilesError: More files were rejected than ``max_errors``.
        OutputError: ``out`` cannot be written or another build holds it.

    Example:
        >>> import kpcompile
        >>> r = kpcompile.build("dataset", "compiled", workers=2)  # doctest: +SKIP
        >>> r.rows == 468 * r.compiled  # doctest: +SKIP
        True
    """
    opts = BuildOptions.from_kwargs(options, kwargs)
    started = time.perf_counter()
    preload(source)  # before workers fork: they inherit an imported s3fs
    with _worker_pool(opts) as pool:
        return _build(source, open_store(out), opts, started, pool)


def _worker_pool(opts: BuildOptions) -> contextlib.AbstractContextManager[WorkerPool | None]:
    """The local executor's workers, started now: before the file lists exist, so
    forked workers do not carry them (see :meth:`WorkerPool.start`)."""
    if opts.executor == "local" and opts.resolved_workers > 1:
        return WorkerPool.start(opts.resolved_workers)
    return contextlib.nullcontext()


def _build(
    source: str | os.PathLike[str],
    store: Store,
    opts: BuildOptions,
    started: float,
    pool: WorkerPool | None,
) -> BuildResult:
    names = LANDMARK_NAMES | SET_NAMES if opts.sets else LANDMARK_NAMES
    with open_source(source, max_file_bytes=opts.max_file_bytes, names=names) as src:
        _check_apart(src, store)
        inputs = _inputs(src, names, opts)
        with store.lock():
            current = _current(store)
            if _up_to_date(current, inputs, opts):
                assert current is not None
                return _unchanged(current, store, started)
            # Timed under the lock, so ids sort in the order builds publish.
            created = dt.datetime.now(dt.UTC)
            stage = store.stage(new_snapshot_id(created))
            try:
                compiled = _compile(inputs, current, stage, opts, pool)
                if opts.plan_only:
                    store.discard(stage)
                    return _planned(compiled, inputs, started)
                manifest = _publishable(compiled, inputs, stage, opts, created)
                path = store.publish(stage, manifest)
            except RejectedFilesError as exc:
                store.discard(stage)
                store.record_refusal(_refusal(exc, inputs, created))
                raise
            except OSError as exc:
                store.discard(stage)
                where = f" ({exc.filename})" if exc.filename else ""
                msg = (
                    f"cannot write the snapshot in {store.location!r}: "
                    f"{exc.strerror or exc}{where}; nothing was published"
                )
                raise OutputError(msg) from exc
            except BaseException:
                store.discard(stage)
                raise
    return _result(manifest, path, compiled, started, _notes(current, src, store))


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What a build reads: the source, its landmark files, its set files, their shards
    and digest."""

    src: Source
    files: Discovered
    sets: SetFiles | None
    plan: Plan
    digest: str


def _inputs(src: Source, names: frozenset[str], opts: BuildOptions) -> _Inputs:
    files, _ = discover_files(src, names)
    sets = find_set_files(files) if opts.sets else None
    plan = plan_shards(files, opts.shard_files, opts.partition_by, sets)
    return _Inputs(src, files, sets, plan, plan.digest())


def _check_apart(src: Source, store: Store) -> None:
    """Refuse an output inside the dataset, or a dataset inside the output."""

    def inside(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip("/") + "/")

    where = f"OUT {store.location!r}", f"SOURCE {src.location!r}"
    for (a, b), (x, y) in (
        ((store.canonical, src.canonical), where),
        ((src.canonical, store.canonical), where[::-1]),
    ):
        if inside(a, b):
            msg = (
                f"{x} is inside {y}: a build must not write where it reads; "
                "choose an output outside the dataset"
            )
            raise OptionsError(msg)


def _current(store: Store) -> Manifest | None:
    try:
        return store.manifest()
    except KpcompileError:
        return None


def _up_to_date(current: Manifest | None, inputs: _Inputs, opts: BuildOptions) -> bool:
    """Whether the current snapshot is exactly what this build would publish.

    Names, sizes and modification times say nothing of a read that failed (a stalled
    object, an I/O error): files rejected so are read again, and the snapshot is up to
    date only if every one of them fails again the same way."""
    return (
        current is not None
        and not opts.full
        and current.inputs == inputs.digest
        and current.source.path == inputs.src.location
        and current.tool.version == __version__
        and current.options == recorded(opts)
        and not _transient_cleared(current, inputs, opts)
    )


def _transient_cleared(current: Manifest, inputs: _Inputs, opts: BuildOptions) -> bool:
    """Whether a file that ``current`` rejected as unreadable (or for a bug) reads now."""
    standing = {e.path for s in current.shards for e in transient_errors(s)}
    if not standing:
        return False
    # the manifest names files as printable() does: find their names in the listing,
    # which holds the landmark files and, with --sets, the set files
    listing = inputs.files.listing
    raw = sorted({p for p in listing.paths(np.arange(len(listing))) if printable(p) in standing})
    if len(raw) != len(standing):
        return True  # a rejected file is gone (its digest would differ anyway)
    with inputs.src.read_many(
        raw, opts.max_file_bytes, window=opts.read_ahead << 20, timeout=float(opts.read_timeout)
    ) as reads:
        for _name, data in reads:
            if not isinstance(data, FormatError) or data.code not in TRANSIENT_CODES:
                return True
    return False


def _unchanged(current: Manifest, store: Store, started: float) -> BuildResult:
    c = current.counts
    errors = [e for shard in current.shards for e in (*shard.errors, *shard.set_errors)]
    return BuildResult(
        current.snapshot, store.uri(current.snapshot), c.files, c.compiled, c.rejected, c.rows,
        sorted(errors), time.perf_counter() - started, shards=len(current.shards),
        up_to_date=True,
    )  # fmt: skip


def _planned(compiled: _Compiled, inputs: _Inputs, started: float) -> BuildResult:
    """The result of a ``plan_only`` build: shards planned and handed out, nothing else."""
    return BuildResult(
        "", "", len(inputs.files), 0, 0, 0, [], time.perf_counter() - started,
        base=compiled.base, shards=len(compiled.results), reused_shards=compiled.linked,
        notes=["plan only: no file was read, parsed or written, and nothing was published"],
    )  # fmt: skip


def _notes(current: Manifest | None, src: Source, store: Store) -> list[str]:
    if current is None or current.source.path == src.location:
        return []
    return [
        f"{store.location!r} held snapshot {current.snapshot} of {current.source.path!r}; "
        f"the new current snapshot is of {src.location!r}"
    ]


def _refusal(exc: RejectedFilesError, inputs: _Inputs, created: dt.datetime) -> Refusal:
    return Refusal(
        attempted_at=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        source=inputs.src.location,
        files=len(inputs.files),
        rejected=len(exc.errors),
        max_errors=exc.max_errors,
        errors=[ErrorRow(*e) for e in exc.errors],
    )


def _compile(
    inputs: _Inputs,
    current: Manifest | None,
    stage: Stage,
    opts: BuildOptions,
    pool: WorkerPool | None,
) -> _Compiled:
    prev = None
    if current is not None and not opts.full:
        prev = Previous.of(current, inputs.src.location, opts, stage)
    return _compile_shards(inputs, opts, stage, prev, pool)


def _compile_shards(
    inputs: _Inputs,
    opts: BuildOptions,
    stage: Stage,
    prev: Previous | None,
    pool: WorkerPool | None,
) -> _Compiled:
    """Plan shards as a stream and hand them out: the coordinator holds the columnar
    file list and the shards in flight, never every file as an object. With
    ``--sets``, a camera folder's set files go through the shard of its landmark file."""
    src, files = inputs.src, inputs.files
    settings = ParquetSettings.of(opts)
    bar = _progress(len(files) + len(inputs.sets or ()), opts.progress)
    linked: list[ShardResult] = []
    planned: list[ShardInput] = []
    local = opts.executor == "local"
    plan = inputs.plan

    def tasks() -> Iterator[ShardTask]:
        for i, digest in enumerate(plan.digests):
            reused = reuse_shard(prev, digest, i, stage)
            if reused is not None:
                assert prev is not None
                planned.append(ShardInput.reused(prev.shards[digest]))
                linked.append(reused)
                bar.update(plan.size(i))
                continue
            shard = plan.files(files, i)
            mine = plan.set_files(i, shard)
            planned.append(ShardInput.of(shard, digest, opts.partition_by))
            rels = [f.path for f in shard] + [s.path for s in mine or ()]
            portable = src.portable(rels, local=local)
            yield ShardTask(
                i, tuple(shard), portable, stage, opts.partition_by, settings,
                opts.max_file_bytes, previous=previous_of(prev, shard, opts.partition_by),
                sets=mine, read_ahead=opts.read_ahead << 20,
                read_timeout=float(opts.read_timeout), plan_only=opts.plan_only,
            )  # fmt: skip

    workers = opts.resolved_workers
    if prev is not None and _few_to_read(prev, inputs, opts):
        workers = 1  # less than one shard to read: starting worker processes costs more
    try:
        results = run_shards(
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
    if [r.index for r in done] != list(range(len(planned))):
        # never publish a snapshot missing a shard, whatever an executor returned
        missing = sorted(set(range(len(planned))) - {r.index for r in done})
        msg = f"shards {missing[:10]} produced no result; nothing was published"
        raise KpcompileError(msg)
    return _Compiled(done, planned, len(linked), prev.snapshot if prev is not None else None)


def _few_to_read(prev: Previous, inputs: _Inputs, opts: BuildOptions) -> bool:
    """Whether an incremental build has at most one shard's worth of new or changed
    files (set files of changed shards included) to read; stops counting once it has more."""
    count = 0
    plan = inputs.plan
    for i, digest in enumerate(plan.digests):
        if digest in prev.shards:
            continue
        shard = plan.files(inputs.files, i)
        count += plan.set_counts[i] if plan.set_counts is not None else 0
        rows = previous_of(prev, shard, opts.partition_by)
        for j, f in enumerate(shard):
            p = rows[j] if rows is not None else None
            count += p is None or (p.size, p.mtime_ns) != (f.size, f.mtime_ns)
        if count > opts.shard_files:
            return False
    return True


class _NoProgress:
    """The progress bar of a build that shows none (importing tqdm costs start-up time)."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool | None) -> Any:
    visible = show if show is not None else sys.stderr.isatty()
    if not visible:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)


def _publishable(
    compiled: _Compiled, inputs: _Inputs, stage: Stage, opts: BuildOptions, created: dt.datetime
) -> Manifest:
    """Check the error budget, write the errors table, and assemble the manifest."""
    errors = _errors(compiled)
    if len(errors) > opts.max_errors:
        raise RejectedFilesError(errors, opts.max_errors)
    columns = {name: [e[k] for e in errors] for k, name in enumerate(ERRORS_SCHEMA.names)}
    with stage.writing() as folder:
        table = table_from_columns(columns, ERRORS_SCHEMA)
        err_file = write_table(table, folder, "errors/part-00000.parquet", ParquetSettings.of(opts))
    return _manifest(compiled, inputs, err_file, opts, stage.snapshot, created)


def _errors(compiled: _Compiled) -> list[ErrorRow]:
    """Every rejected file, landmark or set file, sorted."""
    return sorted(e for r in compiled.results for e in (*r.errors, *r.set_errors))


def _manifest(
    compiled: _Compiled,
    inputs: _Inputs,
    err_file: FileEntry,
    opts: BuildOptions,
    sid: str,
    created: dt.datetime,
) -> Manifest:
    results, files = compiled.results, inputs.files
    layouts: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    written: dict[str, list[FileEntry]] = {"keypoints": [], "files": [], "errors": [err_file]}
    for r in results:
        layouts.update(r.layouts)
        versions.update(r.versions)
        for table, items in r.written.items():
            written.setdefault(table, []).extend(items)
    tables = {name: _table(name, items, opts) for name, items in written.items()}
    counts = Counts(
        files=len(files),
        compiled=sum(r.compiled for r in results),
        rejected=sum(len(r.errors) for r in results),
        rows=sum(r.rows for r in results),
        visible=sum(r.visible for r in results),
        sets_rejected=sum(len(r.set_errors) for r in results),
        **_distinct(files, results),
    )
    source_bytes = sum(r.source_bytes for r in results)
    return Manifest(
        format=FORMAT,
        snapshot=sid,
        created_at=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        tool=Tool("kpcompile", __version__),
        source=SourceInfo(inputs.src.location, len(files), source_bytes),
        options=recorded(opts),
        counts=counts,
        layouts=dict(sorted(layouts.items())),
        versions=dict(sorted(versions.items())),
        output_bytes=sum(t.bytes for t in tables.values()),
        tables=tables,
        shards=[shard_record(r, compiled.shards[r.index]) for r in results],
        inputs=inputs.digest,
    )


def _distinct(files: Discovered, results: list[ShardResult]) -> dict[str, int]:
    """Datapoints and camera names among the compiled files."""
    datapoints, cameras = files.distinct({e.path for r in results for e in r.errors})
    return {"datapoints": datapoints, "cameras": cameras}


def _table(name: str, items: list[FileEntry], opts: BuildOptions) -> TableEntry:
    items = sorted(items, key=lambda w: w.path)
    return TableEntry(
        rows=sum(w.rows for w in items),
        bytes=sum(w.bytes for w in items),
        partition_by=opts.partition_by if name == "keypoints" else "none",
        schema=[Column(f.name, str(f.type), f.nullable) for f in SCHEMAS[name]],
        files=items,
    )


def _result(
    manifest: Manifest, path: str, compiled: _Compiled, started: float, notes: list[str]
) -> BuildResult:
    c = manifest.counts
    errors = _errors(compiled)
    return BuildResult(
        manifest.snapshot,
        path,
        c.files,
        c.compiled,
        c.rejected,
        c.rows,
        errors,
        time.perf_counter() - started,
        base=compiled.base,
        shards=len(compiled.results),
        reused_shards=compiled.linked,
        parsed=sum(r.parsed for r in compiled.results),
        reused_files=sum(r.reused for r in compiled.results),
        notes=notes,
    )
