"""One renderer for every command's result: text for people, JSON for programs.

Library functions return dataclasses (:class:`~kpcompile.BuildResult`,
:class:`~kpcompile.Info`, ...). :func:`to_json` turns any of them into JSON values
the same way, field by field; :func:`text` has one short text form per type. The
CLI calls :func:`emit` and never formats a result itself.

Text forms are looked up by the result's type name, so this module imports none of
the modules defining those types: printing a build's result does not import the
query, history or synth modules (start-up time of every command).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kpcompile.errors import RejectedFilesError

if TYPE_CHECKING:
    from kpcompile.pipeline import BuildResult
    from kpcompile.reporting import ReportResult
    from kpcompile.store.history import Info, Rejections, SnapshotDiff
    from kpcompile.store.retention import GcResult
    from kpcompile.store.verify import Verification
    from kpcompile.synth import SynthResult

ERRORS_SHOWN = 50
"""Rejected files a build prints (all of them are in the ``errors`` table)."""


def emit(result: Any, *, as_json: bool = False, err: bool = False) -> None:
    """Print ``result`` as text or as indented JSON, on stdout (``err``: stderr)."""
    click.echo(json.dumps(to_json(result), indent=2) if as_json else text(result), err=err)


def to_json(value: Any) -> Any:
    """JSON-ready form of a result: dataclasses and named tuples become objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: to_json(v) for k, v in zip(value._fields, value, strict=True)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


_TEXT: dict[str, Callable[[Any], str]] = {}
_F = TypeVar("_F", bound=Callable[..., str])


def _text_of(func: _F) -> _F:
    """Register ``func`` as the text form of the type its first parameter is annotated with."""
    annotation = next(iter(func.__annotations__.values()))
    _TEXT[str(annotation).split("[")[0]] = func
    return func


def text(result: Any) -> str:
    """The text form of a result."""
    form = _TEXT.get(type(result).__name__)
    return form(result) if form is not None else str(result)


def rejections(errors: Sequence[tuple[str, str, str]], limit: int | None = ERRORS_SHOWN) -> str:
    """One line per rejected file, at most ``limit`` of them."""
    from kpcompile.manifest import located

    shown = list(errors) if limit is None else list(errors[:limit])
    lines = [f"rejected [{code}] {located(path, message)}" for path, code, message in shown]
    if limit is not None and len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more; see the errors table")
    return "\n".join(lines)


@_text_of
def _build(r: BuildResult) -> str:
    if r.up_to_date:
        return f"up to date: snapshot {r.snapshot_id}"
    if not r.snapshot_id:  # plan only
        return "\n".join(
            [f"planned {r.discovered:,} files in {r.shards:,} shards in {r.seconds:.2f} s"]
            + [f"note: {n}" for n in r.notes]
        )
    lines = [rejections(r.errors)] if r.errors else []
    lines.append(
        f"published snapshot {r.snapshot_id}: {r.discovered:,} files, "
        f"{r.compiled:,} compiled, {r.rejected:,} rejected, {r.rows:,} rows "
        f"in {r.seconds:.2f} s\n{r.path}"
    )
    if r.base is not None:
        lines.append(
            f"incremental from {r.base}: {r.reused_shards:,} of {r.shards:,} "
            f"shards reused, {r.parsed:,} files parsed, {r.reused_files:,} reused"
        )
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


@_text_of
def _info(d: Info) -> str:
    ratio = d.source_bytes / d.output_bytes if d.output_bytes else 0.0
    return "\n".join(
        [
            f"snapshot     {d.snapshot}  (created {d.created_at})",
            f"path         {d.path}",
            f"source       {d.source}",
            f"files        {d.files:,} ({d.compiled:,} compiled, {d.rejected:,} rejected"
            + (f"; {_plural(d.sets_rejected, 'set file')} rejected)" if d.sets_rejected else ")"),
            f"datapoints   {_plural(d.datapoints, 'datapoint')}, {_plural(d.cameras, 'camera')}",
            f"rows         {d.rows:,}",
            "layouts      " + ", ".join(f"{k} {v:,}" for k, v in d.layouts.items()),
            "versions     " + ", ".join(f"{k} {v:,}" for k, v in d.versions.items()),
            "tables       " + ", ".join(f"{k} ({v:,} rows)" for k, v in d.tables.items()),
            f"source bytes {d.source_bytes:,}",
            f"output bytes {d.output_bytes:,} ({ratio:.1f}x smaller)",
        ]
    )


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@_text_of
def _rejections(r: Rejections) -> str:
    n = _plural(len(r.errors), "rejected file")
    if r.published:
        head = f"snapshot {r.snapshot} of {r.source!r}: {n}"
    else:
        head = (
            f"the last build was refused ({r.attempted_at}, {r.source!r}): {n}, "
            f"more than max_errors {r.max_errors}; nothing was published"
        )
    from kpcompile.manifest import located

    lines = (f"rejected [{e.code}] {located(e.path, e.message)}" for e in r.errors)
    return "\n".join([head, *lines])


def refusal_json(exc: RejectedFilesError) -> dict[str, Any]:
    """The JSON result of a refused build: nothing published, every rejection."""
    return {
        "published": False,
        "rejected": len(exc.errors),
        "max_errors": exc.max_errors,
        "errors": to_json(exc.errors),
    }


@_text_of
def _summaries(rows: list) -> str:  # type: ignore[type-arg]
    if not all(type(r).__name__ == "SnapshotSummary" for r in rows):
        return "\n".join(text(r) for r in rows)
    lines = [f"  {'snapshot':<26} {'created':<20} {'files':>9} {'rejected':>8} {'rows':>12}"]
    for r in rows:
        mark = "*" if r.current else " "
        lines.append(
            f"{mark} {r.snapshot:<26} {r.created_at:<20} {r.files:>9,} "
            f"{r.rejected:>8,} {r.rows:>12,}"
        )
    return "\n".join(lines)


@_text_of
def _diff(d: SnapshotDiff) -> str:
    lines = [
        f"{sign} {datapoint} {camera}"
        for sign, keys in (("+", d.added), ("-", d.removed), ("~", d.changed))
        for datapoint, camera in keys
    ]
    lines.append(
        f"{len(d.added):,} added, {len(d.removed):,} removed, {len(d.changed):,} changed, "
        f"{d.unchanged:,} unchanged (datapoint, camera) from {d.old} to {d.new}"
    )
    return "\n".join(lines)


@_text_of
def _gc(r: GcResult) -> str:
    verb = "would remove" if r.dry_run else "removed"
    lines = [f"{verb} {sid}" for sid in r.removed]
    lines += [f"{verb} abandoned build {name}" for name in r.abandoned]
    lines.append(
        f"{verb} {len(r.removed)} snapshot{'s' if len(r.removed) != 1 else ''} "
        f"({r.bytes_freed / 1e6:,.1f} MB); kept {len(r.kept)}, current {r.current}"
    )
    return "\n".join(lines)


@_text_of
def _verification(v: Verification) -> str:
    lines = [f"note: {line}" for line in v.notes]
    lines += [f"differs: {line}" for line in v.problems]
    checked = f"{v.files_checked:,} Parquet files"
    if v.source is not None:
        checked += f", {v.source_files_checked:,} source files"
    if v.ok:
        lines.append(f"snapshot {v.snapshot} verified: {checked} checked, no difference")
    else:
        n = len(v.problems)
        lines.append(
            f"snapshot {v.snapshot}: {n:,} difference{'s' if n != 1 else ''} ({checked} checked)"
        )
    return "\n".join(lines)


@_text_of
def _report(r: ReportResult) -> str:
    lines = [f"note: {title}: {why}" for title, why in r.missing.items()]
    lines.append(
        f"wrote {r.path}: snapshot {r.snapshot}, {len(r.sections)} sections, "
        f"{r.bytes:,} bytes in {r.seconds:.2f} s"
    )
    return "\n".join(lines)


@_text_of
def _synth(r: SynthResult) -> str:
    return (
        f"wrote {r.landmark_files:,} landmark files ({r.files:,} files, "
        f"{r.bytes / 1e6:,.1f} MB) to {r.root}"
    )
