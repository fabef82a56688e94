"""The ``kpcompile`` command: a thin layer over the library.

Each command parses its options, calls one library function and prints. Errors
from the library's exception tree become one-line messages and the exit codes
below; anything else is a bug and keeps its traceback.

Exit codes:
    0  success
    1  unexpected failure (a bug, or an error with no more specific code)
    2  usage error: unknown option, invalid value
    3  files were rejected, more than --max-errors; nothing was published
    4  source error: missing, unreadable, or no keypoint file in it
    5  output error: output folder unusable, busy, or holding no snapshot
    6  verify found a difference: the snapshot or its source is not as built
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from kpcompile._version import __version__
from kpcompile.errors import KpcompileError, RejectedFilesError

F = TypeVar("F", bound=Callable[..., Any])
ERRORS_SHOWN = 50
VERIFY_FAILED = 6


def _fail(exc: KpcompileError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def handle_errors(func: F) -> F:
    """Turn :class:`KpcompileError` into a message on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RejectedFilesError as exc:
            _print_errors(exc.errors, limit=None)
            _fail(exc)
        except KpcompileError as exc:
            _fail(exc)

    return wrapper  # type: ignore[return-value]


def _print_errors(errors: list[tuple[str, str, str]], limit: int | None) -> None:
    shown = errors if limit is None else errors[:limit]
    for _path, code, message in shown:
        click.echo(f"rejected [{code}] {message}", err=True)
    if limit is not None and len(errors) > limit:
        click.echo(f"... and {len(errors) - limit} more; see the errors table", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="kpcompile")
def cli() -> None:
    """Compile Datagen face-landmark JSON exports into Parquet snapshots.

    \b
    Example:
      kpcompile synth dataset --datapoints 100 --cameras 2
      kpcompile build dataset compiled
      kpcompile info compiled
    """


@cli.command()
@click.argument("source")
@click.argument("out")
@click.option(
    "--workers",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: all cores].",
)
@click.option(
    "--max-errors",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Publish anyway when at most this many files are rejected.",
)
@click.option(
    "--partition-by",
    type=click.Choice(["camera", "none"]),
    default="camera",
    show_default=True,
    help="Hive partition key of the keypoints table.",
)
@click.option(
    "--compression",
    type=click.Choice(["zstd", "snappy", "lz4", "gzip", "none"]),
    default="zstd",
    show_default=True,
    help="Parquet compression codec.",
)
@click.option(
    "--shard-files",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Source files per shard (one Parquet file per partition).",
)
@click.option(
    "--row-group-files",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Source files per Parquet row group (x 468 rows); bounds workers' memory.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar [default: when stderr is a terminal].",
)
@click.option(
    "--sets",
    is_flag=True,
    help="Also compile face.standard, head, ears and camera metadata into their own tables.",
)
@click.option(
    "--full", is_flag=True, help="Compile every file again; do not reuse OUT's current snapshot."
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Run shards in local processes or as Dask tasks.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Dask scheduler (tcp://host:8786) [default: a local cluster of --workers processes].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def build(
    source: str,
    out: str,
    workers: int | None,
    max_errors: int,
    partition_by: str,
    compression: str,
    shard_files: int,
    row_group_files: int,
    progress: bool | None,
    sets: bool,
    full: bool,
    executor: str,
    scheduler: str | None,
    as_json: bool,
) -> None:
    """Compile every keypoint file under SOURCE into a new snapshot in OUT.

    SOURCE is a folder, a .tar/.tar.gz/.tgz/.zip archive or a URL (s3://bucket/prefix);
    OUT a folder or a URL. The snapshot becomes OUT's current one only if the build
    succeeds; rejected files are listed and, beyond --max-errors, fail the build.
    When OUT's current snapshot was built from SOURCE with the same options, only
    new and changed files are parsed (--full compiles everything).

    \b
    Example:
      kpcompile build dataset compiled --workers 2 --max-errors 10
      kpcompile build dataset.tar.gz s3://bucket/compiled --executor dask
    """
    from kpcompile.build import build as run_build

    result = run_build(
        source,
        out,
        workers=workers,
        max_errors=max_errors,
        partition_by=partition_by,
        compression=compression,
        shard_files=shard_files,
        row_group_files=row_group_files,
        progress=progress,
        sets=sets,
        full=full,
        executor=executor,
        scheduler=scheduler,
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "snapshot": result.snapshot_id,
                    "path": str(result.path),
                    "files": result.discovered,
                    "compiled": result.compiled,
                    "rejected": result.rejected,
                    "rows": result.rows,
                    "seconds": round(result.seconds, 3),
                    "base": result.base,
                    "shards": result.shards,
                    "reused_shards": result.reused_shards,
                    "parsed": result.parsed,
                    "reused_files": result.reused_files,
                    "errors": [
                        dict(zip(("path", "code", "message"), e, strict=True))
                        for e in result.errors
                    ],
                },
                indent=2,
            )
        )
        return
    _print_errors(result.errors, limit=ERRORS_SHOWN)
    click.echo(
        f"published snapshot {result.snapshot_id}: {result.discovered:,} files, "
        f"{result.compiled:,} compiled, {result.rejected:,} rejected, {result.rows:,} rows "
        f"in {result.seconds:.2f} s\n{result.path}"
    )
    if result.base is not None:
        click.echo(
            f"incremental from {result.base}: {result.reused_shards:,} of {result.shards:,} "
            f"shards reused, {result.parsed:,} files parsed, {result.reused_files:,} reused"
        )


@cli.command()
@click.argument("out")
@click.option("--snapshot", default=None, help="Snapshot id [default: the current one].")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def info(out: str, snapshot: str | None, as_json: bool) -> None:
    """Summarize a snapshot of OUT: files, rows, layouts, versions, sizes.

    \b
    Example:
      kpcompile info compiled --json
    """
    from kpcompile.query import info as get_info

    data = get_info(out, snapshot=snapshot)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    ratio = data["source_bytes"] / data["output_bytes"] if data["output_bytes"] else 0.0
    lines = [
        f"snapshot     {data['snapshot']}  (created {data['created_at']})",
        f"path         {data['path']}",
        f"source       {data['source']}",
        f"files        {data['files']:,} "
        f"({data['compiled']:,} compiled, {data['rejected']:,} rejected)",
        f"rows         {data['rows']:,}",
        "layouts      " + ", ".join(f"{k} {v:,}" for k, v in data["layouts"].items()),
        "versions     " + ", ".join(f"{k} {v:,}" for k, v in data["versions"].items()),
        f"source bytes {data['source_bytes']:,}",
        f"output bytes {data['output_bytes']:,} ({ratio:.1f}x smaller)",
    ]
    click.echo("\n".join(lines))


@cli.command()
@click.argument("out")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def snapshots(out: str, as_json: bool) -> None:
    """List the snapshots of OUT, oldest first; * marks the current one.

    \b
    Example:
      kpcompile snapshots compiled
    """
    from kpcompile.history import snapshots as list_snapshots

    rows = list_snapshots(out)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"  {'snapshot':<26} {'created':<20} {'files':>9} {'rejected':>8} {'rows':>12}")
    for r in rows:
        mark = "*" if r["current"] else " "
        click.echo(
            f"{mark} {r['snapshot']:<26} {r['created_at']:<20} {r['files']:>9,} "
            f"{r['rejected']:>8,} {r['rows']:>12,}"
        )


@cli.command()
@click.argument("out")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def diff(out: str, old: str, new: str, as_json: bool) -> None:
    """Say which datapoints (and cameras) were added, removed or changed from OLD to NEW.

    OLD and NEW are snapshot ids of OUT (see `kpcompile snapshots`); a camera folder
    changed when its file's path, checksum or status did.

    \b
    Example:
      kpcompile diff compiled 20250101T120000Z-1a2b3c4d 20250102T093000Z-5e6f7a8b
    """
    from kpcompile.history import diff as diff_snapshots

    d = diff_snapshots(out, old, new)
    if as_json:
        click.echo(json.dumps(d.to_dict(), indent=2))
        return
    for sign, keys in (("+", d.added), ("-", d.removed), ("~", d.changed)):
        for datapoint, camera in keys:
            click.echo(f"{sign} {datapoint} {camera}")
    click.echo(
        f"{len(d.added):,} added, {len(d.removed):,} removed, {len(d.changed):,} changed, "
        f"{d.unchanged:,} unchanged (datapoint, camera) from {old} to {new}"
    )


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--datapoints",
    "-n",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Datapoints (frames for in_cabin, environments for legacy).",
)
@click.option(
    "--cameras",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Cameras per datapoint.",
)
@click.option(
    "--layout",
    type=click.Choice(["faces", "in_cabin", "legacy", "documented", "mixed"]),
    default="faces",
    show_default=True,
    help="Export layout to imitate.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--version",
    "version_",
    type=click.Choice(["2.0.0", "2.0.1"]),
    default="2.0.0",
    show_default=True,
    help="version field of versioned layouts.",
)
@click.option(
    "--extras/--no-extras",
    default=True,
    show_default=True,
    help="Also write all_key_points.json, the 68-point set and camera metadata.",
)
@handle_errors
def synth(
    out: str, datapoints: int, cameras: int, layout: str, seed: int, version_: str, extras: bool
) -> None:
    """Write a realistic synthetic dataset in any Datagen layout into OUT.

    \b
    Example:
      kpcompile synth dataset --datapoints 1000 --cameras 2 --layout mixed
    """
    from kpcompile.synth import synth as run_synth

    r = run_synth(
        out,
        datapoints=datapoints,
        cameras=cameras,
        layout=layout,
        seed=seed,
        version=version_,
        extras=extras,
    )
    click.echo(
        f"wrote {r.landmark_files:,} landmark files ({r.files:,} files, "
        f"{r.bytes / 1e6:,.1f} MB) to {out}"
    )


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format (parquet needs -o).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), default=None)
@click.option("--snapshot", default=None, help="Snapshot id [default: the current one].")
@handle_errors
def query(out: str, query: str, fmt: str, output: str | None, snapshot: str | None) -> None:
    """Run SQL over every table of OUT's snapshot and print or save the result.

    Tables: keypoints, files, errors (and with build --sets: face_standard, head,
    ears, cameras).

    \b
    Example:
      kpcompile query compiled "SELECT camera, avg(visible::int) FROM keypoints GROUP BY camera"
      kpcompile query compiled "SELECT * FROM errors" --format csv -o errors.csv
    """
    from kpcompile.query import write_result

    text = write_result(out, query, fmt=fmt, output=output, snapshot=snapshot)
    if text is not None:
        click.echo(text)


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.argument("source", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--snapshot", default=None, help="Snapshot id [default: the current one].")
@handle_errors
def verify(out: str, source: str | None, snapshot: str | None) -> None:
    """Re-read a snapshot of OUT and check it against its manifest and SOURCE.

    Checks every Parquet file's size, SHA-256, rows and schema, the counts, and
    that no unlisted file is in the snapshot; with SOURCE, that every source file
    is in the snapshot with unchanged content. Prints each difference and exits
    with 6 when there is one.

    \b
    Example:
      kpcompile verify compiled dataset
    """
    from kpcompile.verify import verify as run_verify

    report = run_verify(out, source, snapshot=snapshot)
    for line in report.notes:
        click.echo(f"note: {line}", err=True)
    for line in report.problems:
        click.echo(f"differs: {line}", err=True)
    checked = f"{report.files_checked:,} Parquet files"
    if source is not None:
        checked += f", {report.source_files_checked:,} source files"
    if not report.ok:
        click.echo(
            f"snapshot {report.snapshot}: {len(report.problems):,} "
            f"difference{'s' if len(report.problems) != 1 else ''} ({checked} checked)",
            err=True,
        )
        sys.exit(VERIFY_FAILED)
    click.echo(f"snapshot {report.snapshot} verified: {checked} checked, no difference")


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option("--datapoint", "-d", default=None, help="Draw this datapoint's 2D landmarks.")
@click.option("--camera", "-c", default=None, help="Its camera [default: the first].")
@click.option("--visibility", is_flag=True, help="Draw the visibility rate per landmark.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=str), required=True, help="PNG."
)
@click.option("--snapshot", default=None, help="Snapshot id [default: the current one].")
@handle_errors
def plot(
    out: str,
    datapoint: str | None,
    camera: str | None,
    visibility: bool,
    output: str,
    snapshot: str | None,
) -> None:
    """Draw a datapoint's landmarks (regions coloured) or the visibility rate to a PNG.

    \b
    Example:
      kpcompile plot compiled --datapoint datapoint_00001 -o face.png
      kpcompile plot compiled --visibility -o vis.png
    """
    from kpcompile import plot as plots

    if (datapoint is None) == (not visibility):
        raise click.UsageError("give exactly one of --datapoint D or --visibility")
    if visibility:
        path = plots.plot_visibility(out, output, snapshot=snapshot)
    else:
        assert datapoint is not None
        path = plots.plot_face(out, datapoint, output, camera=camera, snapshot=snapshot)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    required=True,
    help="How many of the newest snapshots to keep (the current one is always kept).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@handle_errors
def gc(out: str, keep: int, dry_run: bool) -> None:
    """Remove old snapshots of OUT, keeping the newest --keep and the current one.

    Nothing else ever removes a published snapshot. A reader still reading a
    removed snapshot fails, so keep as many as your pinned runs need.

    \b
    Example:
      kpcompile gc compiled --keep 3 --dry-run
    """
    from kpcompile.retention import gc as run_gc

    r = run_gc(out, keep=keep, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for sid in r.removed:
        click.echo(f"{verb} {sid}")
    click.echo(
        f"{verb} {len(r.removed)} snapshot{'s' if len(r.removed) != 1 else ''} "
        f"({r.bytes_freed / 1e6:,.1f} MB); kept {len(r.kept)}, current {r.current}"
    )


def main() -> None:
    """Entry point of the ``kpcompile`` script."""
    cli()
