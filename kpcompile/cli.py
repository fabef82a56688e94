"""The ``kpcompile`` command: a thin layer over the library.

Each command parses its options, calls one library function and hands the result
to the renderer (:mod:`kpcompile.output`). ``build``'s options are generated from
:class:`~kpcompile.options.BuildOptions`, so the CLI cannot drift from the API.
Errors of the library's exception tree become one-line messages and the exit
codes of :class:`~kpcompile.errors.ExitCode`; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field
from typing import Any, TypeVar

import click

from kpcompile._version import __version__
from kpcompile.errors import ExitCode, KpcompileError, RejectedFilesError
from kpcompile.options import BuildOptions, option_fields

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn :class:`KpcompileError` into a message on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            # Ctrl-C: the library has already undone what it started (staging, workers)
            what = "; nothing published" if func.__name__ == "build" else ""
            click.echo(f"interrupted{what}", err=True)
            sys.exit(ExitCode.INTERRUPTED)
        except KpcompileError as exc:
            if isinstance(exc, RejectedFilesError):
                from kpcompile.output import rejections

                click.echo(rejections(exc.errors, limit=None), err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def _click_option(f: Field[Any]) -> Callable[[F], F]:
    """The ``--kebab-case`` click option of a :class:`BuildOptions` field."""
    meta, flag = f.metadata, "--" + f.name.replace("_", "-")
    decls = [flag, meta["short"]] if meta["short"] else [flag]
    kwargs: dict[str, Any] = {"help": meta["help"], "default": f.default}
    if f.type == "bool":
        kwargs["is_flag"] = True
    elif f.type == "bool | None":
        decls = [f"{flag}/--no-{flag[2:]}"]
    elif meta["choices"]:
        kwargs.update(type=click.Choice(meta["choices"]), show_default=True)
    elif f.type.startswith("int"):
        kwargs["type"] = click.IntRange(min=meta["minimum"]) if meta["minimum"] is not None else int
        kwargs["show_default"] = f.default is not None
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    assert f.default is not MISSING
    return click.option(*decls, f.name, **kwargs)


def _reader_went_away(exc: OSError) -> bool:
    """Whether writing to stdout failed because its reader closed the pipe."""
    # polars re-raises EPIPE (its own or our writer's) as an OSError without an errno
    return exc.errno == errno.EPIPE or os.strerror(errno.EPIPE) in str(exc)


def build_options(func: F) -> F:
    """Add one click option per :class:`BuildOptions` field, in field order."""
    for f in reversed(option_fields()):
        func = _click_option(f)(func)
    return func


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


def _emit(result: Any, as_json: bool, *, err: bool = False) -> None:
    from kpcompile.output import emit

    emit(result, as_json=as_json, err=err)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
snapshot_option = click.option(
    "--snapshot", default=None, help="Snapshot id [default: the current one]."
)


@cli.command()
@click.argument("source")
@click.argument("out")
@build_options
@json_option
@handle_errors
def build(source: str, out: str, as_json: bool, **options: Any) -> None:
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
    from kpcompile.pipeline import build as run_build

    try:
        result = run_build(source, out, options=BuildOptions(**options))
    except RejectedFilesError as exc:
        if not as_json:
            raise
        from kpcompile.output import refusal_json

        click.echo(json.dumps(refusal_json(exc), indent=2))
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    _emit(result, as_json)


@cli.command()
@click.argument("out")
@snapshot_option
@json_option
@handle_errors
def info(out: str, snapshot: str | None, as_json: bool) -> None:
    """Summarize a snapshot of OUT: files, rows, layouts, versions, tables, sizes.

    \b
    Example:
      kpcompile info compiled --json
    """
    from kpcompile.store.history import info as get_info

    _emit(get_info(out, snapshot=snapshot), as_json)


@cli.command()
@click.argument("out")
@json_option
@handle_errors
def snapshots(out: str, as_json: bool) -> None:
    """List the snapshots of OUT, oldest first; * marks the current one.

    \b
    Example:
      kpcompile snapshots compiled
    """
    from kpcompile.store.history import snapshots as list_snapshots

    _emit(list_snapshots(out), as_json)


@cli.command()
@click.argument("out")
@click.argument("old")
@click.argument("new")
@json_option
@handle_errors
def diff(out: str, old: str, new: str, as_json: bool) -> None:
    """Say which datapoints (and cameras) were added, removed or changed from OLD to NEW.

    OLD and NEW are snapshot ids of OUT (see `kpcompile snapshots`); a camera folder
    changed when its file's path, checksum or status did.

    \b
    Example:
      kpcompile diff compiled 20250101T120000Z-1a2b3c4d 20250102T093000Z-5e6f7a8b
    """
    from kpcompile.store.history import diff as diff_snapshots

    _emit(diff_snapshots(out, old, new), as_json)


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
    type=click.Choice(["2.0.0", "2.0.1", "none"]),
    default="2.0.0",
    show_default=True,
    help="version field of the files (none: no field, as older exports).",
)
@click.option(
    "--extras/--no-extras",
    default=True,
    show_default=True,
    help="Also write all_key_points.json, the 68-point set and camera metadata.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a dataset synth wrote in OUT (refused if OUT holds any other file).",
)
@json_option
@handle_errors
def synth(
    out: str,
    datapoints: int,
    cameras: int,
    layout: str,
    seed: int,
    version_: str,
    extras: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Write a realistic synthetic dataset in any Datagen layout into OUT.

    \b
    Example:
      kpcompile synth dataset --datapoints 100 --cameras 2 --layout mixed
    """
    from kpcompile.synth import synth as run_synth

    result = run_synth(
        out,
        datapoints=datapoints,
        cameras=cameras,
        layout=layout,
        seed=seed,
        version=None if version_ == "none" else version_,
        extras=extras,
        overwrite=overwrite,
    )
    _emit(result, as_json)


@cli.command()
@click.argument("out")
@click.option("--last", is_flag=True, help="The last build's rejections, also when it was refused.")
@snapshot_option
@json_option
@handle_errors
def errors(out: str, last: bool, snapshot: str | None, as_json: bool) -> None:
    """List the rejected files of a snapshot of OUT, or of the last (refused) build.

    A refused build publishes nothing; what it rejected is kept in OUT until a build
    publishes, and --last shows it.

    \b
    Example:
      kpcompile errors compiled --last
      kpcompile errors compiled --snapshot 20250101T120000Z-1a2b3c4d --json
    """
    from kpcompile.store.history import rejections

    if last and snapshot is not None:
        raise click.UsageError("give --last or --snapshot, not both")
    _emit(rejections(out, last=last, snapshot=snapshot), as_json)


@cli.command()
@click.argument("out")
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "ndjson", "parquet"]),
    default=None,
    help="Output format [default: from -o's suffix (.csv, .json, .ndjson/.jsonl, "
    ".parquet); table on stdout]. parquet needs -o.",
)
@click.option("-o", "--output", default=None, help="Write to this file instead of stdout.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Rows the table shows [default: 50]; with another format, the most rows "
    "written [default: all].",
)
@snapshot_option
@handle_errors
def query(
    out: str,
    query: str,
    fmt: str | None,
    output: str | None,
    limit: int | None,
    snapshot: str | None,
) -> None:
    """Run SQL over every table of OUT's snapshot and print or save the result.

    Tables: keypoints, files, errors (and with build --sets: face_standard, head,
    ears, cameras). With -o FILE the format comes from FILE's suffix unless
    --format is given; a --format that contradicts the suffix is refused.

    The table shows the first --limit rows and says how many more there are.
    csv, json, ndjson and parquet stream every row (or --limit rows), on stdout
    or into FILE, batch by batch in bounded memory; json is one array with one
    row object per line. FILE appears only once it is complete. A reader that
    stops early (| head) ends the query quietly.

    \b
    Example:
      kpcompile query compiled "SELECT camera, avg(visible::int) FROM keypoints GROUP BY camera"
      kpcompile query compiled "SELECT * FROM keypoints" --limit 20
      kpcompile query compiled "SELECT * FROM keypoints" -o keypoints.parquet
      kpcompile query compiled "SELECT * FROM errors" --format csv > errors.csv
    """
    from kpcompile.query.results import write_result

    if output is not None:
        write_result(out, query, output, fmt=fmt, limit=limit, snapshot=snapshot)
        return
    try:
        write_result(out, query, sys.stdout.buffer, fmt=fmt, limit=limit, snapshot=snapshot)
    except OSError as exc:
        if not _reader_went_away(exc):
            raise
        # `kpcompile query ... | head`: the reader has what it wanted; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@cli.command()
@click.argument("out")
@click.argument("source", required=False)
@snapshot_option
@click.option("--no-source", is_flag=True, help="Check the snapshot only, not its source.")
@json_option
@handle_errors
def verify(
    out: str, source: str | None, snapshot: str | None, no_source: bool, as_json: bool
) -> None:
    """Re-read a snapshot of OUT and check it against its manifest and its source.

    Checks every Parquet file's size, SHA-256, rows and schema, the counts, and
    that no unlisted file is in the snapshot; then that every file of SOURCE (a
    folder, an archive or a URL; default: the source the snapshot was built from)
    is in the snapshot with unchanged content. Prints each difference and exits
    with 6 when there is one.

    \b
    Example:
      kpcompile verify compiled
      kpcompile verify compiled dataset.tar.gz --snapshot 20250101T120000Z-1a2b3c4d
    """
    from kpcompile.store.verify import verify as run_verify

    if no_source and source is not None:
        raise click.UsageError("give SOURCE or --no-source, not both")
    report = run_verify(out, source, snapshot=snapshot, check_source=not no_source)
    _emit(report, as_json, err=not report.ok)
    if not report.ok:
        sys.exit(ExitCode.VERIFY_FAILED)


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--datapoint",
    "-d",
    default=None,
    help="Draw this datapoint's 2D landmarks (its name in the files table, with the "
    "folders above it: faces/datapoint_00001 in a mixed dataset).",
)
@click.option("--camera", "-c", default=None, help="Its camera [default: the first].")
@click.option("--visibility", is_flag=True, help="Draw the visibility rate per landmark.")
@click.option(
    "-o",
    "--output",
    required=True,
    help="Picture file (.png, .svg or .pdf).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "svg", "pdf"]),
    default=None,
    help="Picture format [default: from -o's suffix].",
)
@snapshot_option
@handle_errors
def plot(
    out: str,
    datapoint: str | None,
    camera: str | None,
    visibility: bool,
    output: str,
    fmt: str | None,
    snapshot: str | None,
) -> None:
    """Draw a datapoint's landmarks (regions coloured) or the visibility rate to a picture.

    A face: visible landmarks filled, the others hollow with their region lines
    dashed; with `build --sets` the image frame is drawn and a face smaller than a
    fifth of its image gets a zoom. --visibility colours each landmark by the share
    of files, among those with visibility flags, in which it is visible.

    The format (PNG, SVG, PDF) comes from -o's suffix unless --format is given; a
    --format that contradicts the suffix is refused.

    \b
    Example:
      kpcompile plot compiled --datapoint faces/datapoint_00001 -o face.png
      kpcompile plot compiled --visibility -o vis.svg
    """
    from kpcompile.query import plot as plots

    if (datapoint is None) == (not visibility):
        raise click.UsageError("give exactly one of --datapoint D or --visibility")
    if visibility:
        path = plots.plot_visibility(out, output, fmt=fmt, snapshot=snapshot)
    else:
        assert datapoint is not None
        path = plots.plot_face(out, datapoint, output, camera=camera, fmt=fmt, snapshot=snapshot)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("out")
@click.option(
    "-o",
    "--output",
    default="report.html",
    show_default=True,
    help="The HTML file to write (.html or .htm); replaced if it exists.",
)
@snapshot_option
@json_option
@handle_errors
def report(out: str, output: str, snapshot: str | None, as_json: bool) -> None:
    """Write one self-contained HTML page describing a snapshot of OUT.

    The page shows the snapshot, its source, tool version and options; files,
    datapoints and landmarks by layout, version and camera; rejected files by code
    with examples; visibility per landmark (on the canonical face), camera and
    region; coordinate distributions per camera and pixels outside the image; 3D
    consistency across cameras; reprojection error; sizes; and sample faces.
    Numbers are text; pictures are embedded; the page loads nothing, so it opens
    offline. Sections that need `build --sets` (image sizes, reprojection) say so.

    \b
    Example:
      kpcompile report compiled
      kpcompile report compiled -o reports/latest.html --snapshot 20250101T120000Z-1a2b3c4d
    """
    from kpcompile.reporting import report as make_report

    _emit(make_report(out, output, snapshot=snapshot), as_json)


@cli.command()
@click.argument("out")
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    required=True,
    help="How many of the newest snapshots to keep (the current one is always kept).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option(
    "--stale-after",
    "stale_hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    metavar="HOURS",
    help="On object storage, remove what a killed build left once nothing was written "
    "to it for this many hours (local folders: at once, as gc holds the lock).",
)
@json_option
@handle_errors
def gc(out: str, keep: int, dry_run: bool, stale_hours: float, as_json: bool) -> None:
    """Remove old snapshots of OUT, keeping the newest --keep and the current one.

    Nothing else ever removes a published snapshot. A reader still reading a
    removed snapshot fails, so keep as many as your pinned runs need. Also removes
    what killed builds left. On object storage, snapshots newer than the current
    one are kept (a build may be publishing one).

    \b
    Example:
      kpcompile gc compiled --keep 3 --dry-run
      kpcompile gc s3://bucket/compiled --keep 3 --stale-after 6
    """
    import datetime as dt

    from kpcompile.store.retention import gc as run_gc

    stale_after = dt.timedelta(hours=stale_hours)
    _emit(run_gc(out, keep=keep, dry_run=dry_run, stale_after=stale_after), as_json)


def main() -> None:
    """Entry point of the ``kpcompile`` script."""
    cli()
