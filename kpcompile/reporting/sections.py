"""The sections of a dataset report: the numbers of :class:`ReportData` as tables and pictures.

A :class:`Section` is a list of blocks (paragraphs, :class:`Table`, :class:`Picture`)
the template lays out in order; every cell is already text, so the page shows the
numbers themselves, not only pictures of them. A section with nothing to show
says why in ``missing`` (no cameras table, no visibility flags, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from kpcompile.manifest import located
from kpcompile.query.landmarks import REGION_NAMES
from kpcompile.query.projection import MODELS, TOLERANCE_PX
from kpcompile.reporting import figures
from kpcompile.reporting.data import BINS, OTHER_REGION, ReportData, region_of
from kpcompile.reporting.stream import COORDS

MAX_ROWS = 50
"""Rows a table shows; the rest are counted below it."""


@dataclass(frozen=True, slots=True)
class Table:
    """A table of text cells; ``numeric`` columns are right-aligned, ``long`` ones wrap."""

    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: tuple[bool, ...]
    long: tuple[bool, ...]
    caption: str = ""
    more: int = 0
    """Rows left out (beyond :data:`MAX_ROWS`)."""
    collapsed: bool = False
    """Shown folded (``<details>``), for long tables."""
    kind: str = "table"


@dataclass(frozen=True, slots=True)
class Picture:
    """An embedded picture (a ``data:`` URI) with its text alternative and caption."""

    uri: str
    alt: str
    caption: str
    kind: str = "picture"


@dataclass(frozen=True, slots=True)
class Text:
    """A paragraph."""

    text: str
    kind: str = "text"


Block = Table | Picture | Text


@dataclass(slots=True)
class Section:
    """One section of the page: a title and its blocks, or why it has none."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    missing: str | None = None


def n(value: Any) -> str:
    """An integer with thousands separators; ``-`` for None."""
    return "-" if value is None else f"{int(value):,}"


def pct(part: float, whole: float) -> str:
    """``part / whole`` as a percentage: one decimal, two significant digits below 1%.

    ``-`` when ``whole`` is 0; a share that is not 0 never shows as 0.

    Example:
        >>> pct(1, 3), pct(1, 3276), pct(4, 4_680_000), pct(0, 5), pct(1, 0)
        ('33.3%', '0.031%', '<0.001%', '0.0%', '-')
    """
    if not whole:
        return "-"
    share = 100 * part / whole
    if 0 < share < 0.001:
        return "<0.001%"
    return f"{share:.2g}%" if 0 < share < 1 else f"{share:.1f}%"


def num(value: Any) -> str:
    """A float with about five significant digits (``-`` for None or NaN)."""
    if value is None or value != value:
        return "-"
    v = float(value)
    if v == 0 or 1e-3 <= abs(v) < 1e6:
        return f"{v:,.5g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return f"{v:.3e}"


def size(b: int) -> str:
    """Bytes in B, KB, MB or GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b:,} B"


def table(
    columns: Iterable[str],
    rows: Iterable[Iterable[Any]],
    numeric: Iterable[bool],
    caption: str = "",
    *,
    collapsed: bool = False,
    limit: int = MAX_ROWS,
    long: Iterable[str] = (),
) -> Table:
    """A :class:`Table` of at most ``limit`` rows (cells made text with ``str``).

    ``long`` names the columns of long text (messages, one per line), which wrap.
    """
    cols = tuple(columns)
    every = [tuple(str(c) for c in row) for row in rows]
    return Table(
        cols, every[:limit], tuple(numeric), tuple(c in set(long) for c in cols), caption,
        max(0, len(every) - limit), collapsed,
    )  # fmt: skip


def build_sections(data: ReportData) -> list[Section]:
    """Every section of the report, in page order."""
    makers: list[Callable[[ReportData], Section]] = [
        snapshot_section,
        contents_section,
        rejections_section,
        visibility_section,
        coordinates_section,
        consistency_section,
        reprojection_section,
        sizes_section,
        samples_section,
    ]
    return [make(data) for make in makers]


def snapshot_section(data: ReportData) -> Section:
    """Identity of the snapshot, where it came from, and the build's options."""
    m = data.manifest
    facts = [
        ("snapshot", m.snapshot),
        ("created", m.created_at),
        ("source", m.source.path),
        ("tool", f"{m.tool.name} {m.tool.version}"),
        ("snapshots in the output", n(data.snapshots)),
    ]
    options = [(k, _option(v)) for k, v in sorted(m.options.items())]
    return Section(
        "snapshot",
        "Snapshot",
        [
            table(("", ""), facts, (False, False), "what was built, from what, by what"),
            table(("option", "value"), options, (False, False), "build options"),
        ],
    )


def _option(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def contents_section(data: ReportData) -> Section:
    """Files, datapoints, cameras and landmarks by layout, version and camera."""
    files = data.files.with_columns(
        pl.col("layout").fill_null("(unread)"),
        pl.when(pl.col("status") != "ok")
        .then(pl.col("version"))
        .otherwise(pl.col("version").fill_null("none"))
        .fill_null("(unread)"),
    )
    blocks: list[Block] = [
        Text(
            "Files counts every landmark file found; compiled ones are in the keypoints "
            "table, rejected ones in errors (their layout and version are unknown when "
            "they could not be read). Landmarks are rows of the keypoints table."
        )
    ]
    for keys, caption in (
        (["layout"], "by layout"),
        (["version"], "by version (none: the files have no version field)"),
        (["camera"], "by camera"),
        (["layout", "version", "camera"], "by layout, version and camera"),
    ):
        blocks.append(_breakdown(files, keys, caption))
    return Section("contents", "Files, datapoints and landmarks", blocks)


def _breakdown(files: pl.DataFrame, keys: list[str], caption: str) -> Table:
    ok = pl.col("status") == "ok"
    agg = (
        files.group_by(keys)
        .agg(
            pl.len().alias("files"),
            ok.sum().alias("compiled"),
            (~ok).sum().alias("rejected"),
            pl.col("datapoint").filter(ok).n_unique().alias("datapoints"),
            pl.col("landmarks").filter(ok).cast(pl.Int64).sum().alias("landmarks"),
        )
        .sort(keys)
    )
    cols = ("files", "compiled", "rejected", "datapoints", "landmarks")
    rows = [[*(r[k] for k in keys), *(n(r[c]) for c in cols)] for r in agg.iter_rows(named=True)]
    return table((*keys, *cols), rows, (False,) * len(keys) + (True,) * len(cols), caption)


def rejections_section(data: ReportData) -> Section:
    """Rejected files by code, with up to three examples each."""
    errors, m = data.errors, data.manifest
    section = Section("rejected", "Rejected files")
    if errors.is_empty():
        section.blocks.append(Text(f"No file was rejected: all {m.counts.files:,} files compiled."))
        return section
    total = int(errors["n"].sum())
    what = f"{total:,} rejected file{'s' if total != 1 else ''}"
    if m.counts.sets_rejected:
        what += f" ({m.counts.rejected:,} landmark files, {m.counts.sets_rejected:,} --sets files)"
    section.blocks.append(
        Text(f"{what}, by code; `kpcompile errors OUT` lists them all with their messages.")
    )
    rows = []
    for code, count, paths, messages in errors.select("code", "n", "paths", "messages").iter_rows():
        examples = "\n".join(located(p, msg) for p, msg in zip(paths, messages, strict=True))
        rows.append((code, n(count), pct(count, total), examples))
    section.blocks.append(
        table(
            ("code", "files", "share", "examples"),
            rows,
            (False, True, True, False),
            "examples: the first files by path",
            long=("examples",),
        )
    )
    return section


def visibility_section(data: ReportData) -> Section:
    """Visibility rate per landmark on the canonical face, per camera and per region."""
    vis = data.visibility.join(region_of(), on="kp_id", how="left")
    files = data.files.filter(pl.col("status") == "ok")
    flagged_files = int(files["visible"].is_not_null().sum())
    section = Section("visibility", "Visibility")
    if files.is_empty():
        section.missing = "The snapshot holds no compiled file."
        return section
    if flagged_files == 0:
        section.missing = (
            f"None of the {files.height:,} compiled files carries visibility flags "
            "(in-cabin exports have none), so there is no visibility rate to show."
        )
        return section
    per_kp = vis.group_by("kp_id").agg(pl.col("flagged").sum(), pl.col("visible").sum())
    rates = per_kp.select("kp_id", (pl.col("visible") / pl.col("flagged")).alias("rate")).sort(
        "kp_id"
    )
    section.blocks.append(
        Picture(
            figures.visibility(rates, flagged_files, files.height - flagged_files),
            "visibility rate of each landmark drawn at its place on MediaPipe's canonical face",
            "Each landmark's share of visible rows among rows with a visibility flag.",
        )
    )
    section.blocks += [_visibility_by_camera(vis, files), _visibility_by_region(vis)]
    section.blocks.append(_visibility_per_landmark(per_kp.join(region_of(), on="kp_id")))
    return section


def _visibility_by_camera(vis: pl.DataFrame, files: pl.DataFrame) -> Table:
    per_file = files.group_by("camera").agg(
        pl.len().alias("files"), pl.col("visible").is_not_null().sum().alias("with_flags")
    )
    agg = (
        vis.group_by("camera")
        .agg(pl.col("flagged").sum(), pl.col("visible").sum())
        .join(per_file, on="camera", how="left")
        .sort("camera")
    )
    rows = [
        (r["camera"], n(r["files"]), n(r["with_flags"]), n(r["flagged"]), n(r["visible"]),
         pct(r["visible"], r["flagged"]))
        for r in agg.iter_rows(named=True)
    ]  # fmt: skip
    cols = ("camera", "files", "files with flags", "flagged landmarks", "visible", "visible rate")
    return table(cols, rows, (False, *[True] * 5), "per camera")


def _visibility_by_region(vis: pl.DataFrame) -> Table:
    agg = vis.group_by("camera", "region").agg(pl.col("flagged").sum(), pl.col("visible").sum())
    regions = [*REGION_NAMES, OTHER_REGION]
    rows = []
    for cam in sorted(agg["camera"].unique().to_list()):
        part = {r["region"]: r for r in agg.filter(pl.col("camera") == cam).iter_rows(named=True)}
        rows.append(
            (cam, *(pct(part[g]["visible"], part[g]["flagged"]) if g in part else "-"
                    for g in regions))
        )  # fmt: skip
    caption = "visible rate per camera and region (other: the landmarks of no region)"
    return table(("camera", *regions), rows, (False, *[True] * len(regions)), caption)


def _visibility_per_landmark(per_kp: pl.DataFrame) -> Table:
    ordered = per_kp.sort(pl.col("visible") / pl.col("flagged"), "kp_id", nulls_last=True)
    rows = [
        (str(r["kp_id"]), r["region"], n(r["flagged"]), n(r["visible"]),
         pct(r["visible"], r["flagged"]))
        for r in ordered.iter_rows(named=True)
    ]  # fmt: skip
    return table(
        ("landmark", "region", "flagged", "visible", "visible rate"),
        rows,
        (True, False, True, True, True),
        "every landmark, least visible first",
        collapsed=True,
        limit=len(rows),
    )


def coordinates_section(data: ReportData) -> Section:
    """Distributions of the 3D and pixel coordinates per camera, and pixels outside the image."""
    section = Section("coordinates", "Coordinates")
    if data.coords.is_empty():
        section.missing = "The snapshot holds no landmark."
        return section
    section.blocks.append(
        Picture(
            figures.histograms(data.histograms, COORDS, BINS),
            "histograms of x3, y3, z3, px and py, one line per camera",
            f"Landmarks per bin ({BINS} equal bins over each coordinate's range), per camera; "
            "cameras with the same counts overlap (solid, dashed and dotted lines keep each "
            "in sight).",
        )
    )
    rows = [
        (r["camera"], r["coord"], n(r["n"]), num(r["min"]), num(r["mean"]), num(r["std"]),
         num(r["max"]))
        for r in data.coords.iter_rows(named=True)
    ]  # fmt: skip
    cols = ("camera", "coordinate", "landmarks", "min", "mean", "std", "max")
    caption = "per camera (std: sample, ddof 1)"
    section.blocks.append(table(cols, rows, (False, False, *[True] * 5), caption, limit=100))
    section.blocks.append(_outside(data))
    return section


def _outside(data: ReportData) -> Block:
    if data.outside is None:
        return Text(
            "Pixels outside the image: unknown. The image sizes are in the cameras "
            "table, which only `kpcompile build --sets` compiles."
        )
    rows = [
        (r["camera"], n(r["files"]), n(r["landmarks"]), n(r["outside"]),
         pct(r["outside"], r["landmarks"]), n(r["files_outside"]))
        for r in data.outside.iter_rows(named=True)
    ]  # fmt: skip
    if not rows:
        return Text("Pixels outside the image: no compiled file has camera metadata.")
    cols = ("camera", "files with a size", "landmarks", "outside", "share", "files with some")
    return table(
        cols, rows, (False, *[True] * 5),
        "pixels outside the image: px (row) outside 0..height or py (column) outside 0..width",
    )  # fmt: skip


def consistency_section(data: ReportData) -> Section:
    """Whether each datapoint's 3D landmarks are the same in every camera's file."""
    section = Section("consistency", "3D consistency across cameras")
    if data.multi_camera == 0:
        section.missing = (
            "No datapoint has compiled files from two cameras, so there is nothing to compare."
        )
        return section
    bad = data.consistency
    worst = bad["max_deviation"].max() if bad.height else None
    verdict = (
        f"{bad.height:,} of them differ; the largest difference is {num(worst)}."
        if bad.height
        else "in every one of them, all cameras hold exactly the same 3D landmarks."
    )
    section.blocks.append(
        Text(
            "A datapoint's files should hold the same global_3d landmarks in every camera. "
            f"{data.multi_camera:,} datapoints have files from two or more cameras; {verdict}"
        )
    )
    if bad.height:
        top = bad.sort("max_deviation", "datapoint", descending=[True, False])
        rows = [
            (d, n(c), n(lm), num(dev)) for d, c, lm, dev in top.iter_rows()
        ]  # fmt: skip
        cols = ("datapoint", "cameras", "landmarks that differ", "largest difference")
        section.blocks.append(
            table(cols, rows, (False, True, True, True), "datapoints that differ, worst first")
        )
    return section


def reprojection_section(data: ReportData) -> Section:
    """Reprojection error per camera with both camera models."""
    section = Section("reprojection", "Reprojection error")
    rep = data.reprojection
    if rep is None:
        section.missing = (
            "No cameras table: build with `kpcompile build --sets` to compile "
            "camera_metadata.json and measure the reprojection error."
        )
        return section
    if rep.is_empty():
        section.missing = "No compiled file has camera metadata, so nothing can be projected."
        return section
    section.blocks.append(
        Text(
            "Each file's global_3d landmarks projected into pixels with its camera_metadata.json "
            "and compared with its pixel_2d, with two camera models: `matrices` (the intrinsic "
            "and extrinsic matrices as written; Faces exports fit it) and `pose` (the "
            "rotation with the camera's location, square pixels; the real in-cabin exports "
            f"fit it). A file fits a model when its mean error is at most {TOLERANCE_PX:g} px "
            "with px as the row and py as the column (or the other way round)."
        )
    )
    layouts = data.files.select("datapoint", "camera", "layout")
    agg = (
        rep.join(layouts, on=["datapoint", "camera"], how="left")
        .group_by("model", "layout", "camera")
        .agg(
            pl.len().alias("files"),
            (pl.col("convention") != "neither").sum().alias("fit"),
            pl.col("mean_err").mean().alias("mean"),
            pl.col("mean_err").median().alias("median"),
            pl.col("max_err").max().alias("max"),
        )
        .sort(pl.col("model").replace_strict(MODELS, range(len(MODELS))), "layout", "camera")
    )
    rows = [
        (r["model"], r["layout"], r["camera"], n(r["files"]), n(r["fit"]),
         num(r["mean"]), num(r["median"]), num(r["max"]))
        for r in agg.iter_rows(named=True)
    ]  # fmt: skip
    cols = ("model", "layout", "camera", "files", "files that fit", *("mean", "median", "max"))
    section.blocks.append(
        table(cols, rows, (False, False, False, *[True] * 5), "error per file (pixels), summarized")
    )
    return section


def sizes_section(data: ReportData) -> Section:
    """Source and output bytes, compression ratio, and each table's size."""
    m = data.manifest
    ratio = m.source.bytes / m.output_bytes if m.output_bytes else 0.0
    section = Section("sizes", "Sizes")
    section.blocks.append(
        Text(
            f"The source's {m.source.files:,} files hold {size(m.source.bytes)}; the snapshot "
            f"{size(m.output_bytes)}: {ratio:.1f}x smaller."
        )
    )
    rows = [
        (name, n(t.rows), n(len(t.files)), size(t.bytes), n(t.bytes),
         num(t.bytes / t.rows) if t.rows else "-")
        for name, t in sorted(m.tables.items())
    ]  # fmt: skip
    cols = ("table", "rows", "Parquet files", "size", "bytes", "bytes per row")
    section.blocks.append(table(cols, rows, (False, *[True] * 5), "per table"))
    return section


def samples_section(data: ReportData) -> Section:
    """A small grid of faces, taking turns across layouts and cameras."""
    section = Section("samples", "Sample faces")
    if data.samples.is_empty():
        section.missing = "The snapshot holds no compiled file."
        return section
    per_file = data.samples.group_by("datapoint", "camera", "layout", maintain_order=True).agg(
        pl.len().alias("landmarks"),
        pl.col("visible").sum().alias("visible"),
        pl.col("visible").count().alias("flagged"),
        pl.col("width").first(),
        pl.col("height").first(),
    )
    section.blocks.append(
        Picture(
            figures.sample_faces(data.samples),
            "a grid of sample faces drawn from their 2D landmarks",
            "2D landmarks (column across, row down), regions coloured; hollow: not visible.",
        )
    )
    rows = [
        (r["datapoint"], r["camera"], r["layout"], n(r["landmarks"]),
         n(r["visible"]) if r["flagged"] else "no flags",
         f"{r['width']:,.0f} x {r['height']:,.0f}" if r["width"] is not None else "-")
        for r in per_file.iter_rows(named=True)
    ]  # fmt: skip
    cols = ("datapoint", "camera", "layout", "landmarks", "visible", "image")
    section.blocks.append(table(cols, rows, (False, False, False, True, True, True)))
    return section
