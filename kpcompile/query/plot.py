"""Pictures of compiled landmarks (PNG, SVG or PDF; matplotlib without a display).

Figures are made with ``matplotlib.figure.Figure`` directly (no pyplot, no global
backend state), so plotting works in servers, tests and worker processes.

A face picture shows one file's 2D landmarks in image coordinates: regions
coloured, visible landmarks filled, landmarks that are not visible hollow and the
region lines that touch them dashed grey. When the ``cameras`` table (``build
--sets``) knows the image's size, the image frame is drawn, and a face smaller
than :data:`ZOOM_BELOW` of the image gets a zoomed view beside it. The legend has
its own place beside the picture, so it never covers the face.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.landmarks import CANONICAL_FACE, REGION_CONNECTIONS, REGION_NAMES
from kpcompile.query.outfiles import PICTURE_SUFFIXES, output_format, writing
from kpcompile.query.scan import scan, tables

_COLOURS = {
    "face_oval": "#8c564b",
    "left_eye": "#1f77b4",
    "left_eyebrow": "#17becf",
    "lips": "#d62728",
    "nose": "#2ca02c",
    "right_eye": "#ff7f0e",
    "right_eyebrow": "#bcbd22",
}
_DARK, _GREY, _FRAME, _ZOOM = "#333333", "#9a9a9a", "#555555", "#7b3294"
_HIDDEN_STYLE = (0, (3, 2))
ZOOM_BELOW = 0.2
"""A face whose larger side is below this share of the image's larger side gets a zoom."""


@dataclass(frozen=True, slots=True)
class Face:
    """One file's landmarks as drawn: columns, rows, visibility, image size."""

    title: str
    ids: npt.NDArray[np.int64]
    col: npt.NDArray[np.float64]
    row: npt.NDArray[np.float64]
    visible: npt.NDArray[np.bool_]
    flagged: bool
    image: tuple[float, float] | None  # (width, height) in pixels

    @property
    def size(self) -> tuple[float, float]:
        """Width (columns) and height (rows) of the landmarks' bounding box."""
        return float(np.ptp(self.col)), float(np.ptp(self.row))

    @property
    def tiny(self) -> bool:
        return self.image is not None and max(self.size) < ZOOM_BELOW * max(self.image)


def plot_face(
    out: str | os.PathLike[str],
    datapoint: str,
    path: str | os.PathLike[str],
    *,
    camera: str | None = None,
    fmt: str | None = None,
    snapshot: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw one file's 2D landmarks in image coordinates, regions coloured, to a picture.

    The horizontal axis is the image column (``py``), the vertical axis the row
    (``px``, growing downwards), the convention of the real exports. Visible
    landmarks are filled; landmarks that are not visible are hollow and the region
    lines touching them dashed grey; a file without visibility flags says so. With
    a ``--sets`` build the image frame is drawn, and a face smaller than a fifth of
    its image also gets a zoomed view. The legend sits beside the picture.

    Args:
        out: Output folder of ``kpcompile build``.
        datapoint: The ``datapoint`` to draw.
        path: Picture file to write.
        camera: Which camera; default: the first (alphabetically) of the datapoint.
        fmt: ``png``, ``svg`` or ``pdf``; default: from ``path``'s suffix.
        snapshot: A snapshot id; ``None`` for the current snapshot.
        dpi: Resolution (the figure is 8.4 x 6.4 inches).

    Raises:
        QueryError: No such datapoint or camera.
        OptionsError: ``fmt`` contradicts ``path``'s suffix, or neither gives a format.
        OutputError: ``path`` cannot be written.

    Example:
        >>> plot_face("compiled", "datapoint_00001", "face.png")  # doctest: +SKIP
    """
    fmt = output_format(path, fmt, PICTURE_SUFFIXES)
    face = _load_face(out, datapoint, camera, snapshot)
    return _save(_face_figure(face, dpi), path, fmt)


def _load_face(
    out: str | os.PathLike[str], datapoint: str, camera: str | None, snapshot: str | None
) -> Face:
    kp = scan(out, snapshot=snapshot).filter(pl.col("datapoint") == datapoint)
    cams = kp.select(pl.col("camera").unique().sort()).collect()["camera"].to_list()
    if not cams:
        names = scan(out, snapshot=snapshot).select(pl.col("datapoint").unique()).collect()
        msg = f"no datapoint {datapoint!r} in the snapshot{_did_you_mean(datapoint, names[:, 0])}"
        raise QueryError(msg)
    camera = cams[0] if camera is None else camera
    df = kp.filter(pl.col("camera") == camera).sort("kp_id").collect()
    if df.height == 0:
        msg = (
            f"no camera {camera!r} for datapoint {datapoint!r} in the snapshot; "
            f"it has {', '.join(map(repr, cams))}"
        )
        raise QueryError(msg)
    flagged = df["visible"].is_not_null().any()
    return Face(
        title=f"{datapoint} / {camera}",
        ids=df["kp_id"].to_numpy().astype(np.int64),
        col=df["py"].to_numpy(),
        row=df["px"].to_numpy(),
        visible=df["visible"].fill_null(not flagged).to_numpy().astype(np.bool_),
        flagged=bool(flagged),
        image=_image_size(out, datapoint, camera, snapshot),
    )


def _did_you_mean(name: str, names: pl.Series, most: int = 4) -> str:
    """``"; did you mean 'a' or 'b'?"``: names ending in ``/name``, else close spellings."""
    known = names.drop_nulls().sort().to_list()
    near = [n for n in known if n.endswith(f"/{name}")]
    near = near or difflib.get_close_matches(name, known, n=most, cutoff=0.75)
    if not near:
        return ""
    shown = [repr(n) for n in near[:most]]
    if len(near) > most:
        return f"; did you mean {', '.join(shown)} (or {len(near) - most} more)?"
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return f"; did you mean {listed}?"


def _image_size(
    out: str | os.PathLike[str], datapoint: str, camera: str, snapshot: str | None
) -> tuple[float, float] | None:
    """(width, height) from the ``cameras`` table, when the snapshot has it and it is known."""
    if "cameras" not in tables(out, snapshot=snapshot):
        return None
    sizes = (
        scan(out, "cameras", snapshot=snapshot)
        .filter(pl.col("datapoint") == datapoint, pl.col("camera") == camera)
        .select("width", "height")
        .collect()
    )
    if sizes.height == 0 or sizes.null_count().sum_horizontal().item():
        return None
    width, height = float(sizes["width"][0]), float(sizes["height"][0])
    return (width, height) if width > 0 and height > 0 else None


def _face_figure(face: Face, dpi: int) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 6.4), dpi=dpi, layout="constrained")
    # the picture on the left; the legend, and the zoom if any, in a column of their own
    panels: Any = fig.subfigures(1, 2, width_ratios=(3.0, 1.4) if face.tiny else (3.2, 1.0))
    ax = panels[0].add_subplot()
    draw_landmarks(ax, face)
    _image_view(ax, face)
    ax.set_xlabel("column (pixel_2d.y)")
    ax.set_ylabel("row (pixel_2d.x)")
    ax.set_title(f"{face.title}\n{_summary(face)}", fontsize=10)
    side, below = panels[1].subplots(2, 1)
    side.set_axis_off()
    side.legend(handles=_legend_handles(face), loc="upper left", fontsize=8, frameon=False)
    if face.tiny:
        _zoom(ax, below, face)
    else:
        below.set_axis_off()
    return fig


def _zoom(ax: Any, zoom: Any, face: Face) -> None:
    """Draw the face again in ``zoom``, and mark where it is in ``ax``."""
    from matplotlib.patches import Rectangle

    draw_landmarks(zoom, face)
    fit_image_axes(zoom, face.col, face.row, margin=0.12)
    zoom.set_title("zoom on the face", fontsize=8)
    zoom.tick_params(labelsize=7)
    (x0, x1), (y1, y0) = zoom.get_xlim(), zoom.get_ylim()
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=_ZOOM, lw=1.0))
    near_top = face.image is not None and y0 < 0.25 * face.image[1]
    ax.annotate(
        "face", xy=((x0 + x1) / 2, y1 if near_top else y0), textcoords="offset points",
        xytext=(0, -36 if near_top else 28), ha="center", va="center", color=_ZOOM,
        arrowprops={"arrowstyle": "->", "color": _ZOOM},
    )  # fmt: skip


def draw_landmarks(ax: Any, face: Face) -> None:
    """Markers (filled: visible, hollow: not visible) and region lines (dashed when hidden)."""
    from matplotlib.collections import LineCollection

    vis = face.visible
    ax.scatter(face.col[vis], face.row[vis], s=5, c=_DARK, linewidths=0, zorder=3)
    ax.scatter(face.col[~vis], face.row[~vis], s=12, facecolors="none", edgecolors=_GREY, zorder=3)
    pos = {int(i): (c, r) for i, c, r in zip(face.ids, face.col, face.row, strict=True)}
    seen = {int(i): bool(v) for i, v in zip(face.ids, vis, strict=True)}
    for name in REGION_NAMES:
        shown: list[list[tuple[float, float]]] = []
        hidden: list[list[tuple[float, float]]] = []
        for a, b in sorted(REGION_CONNECTIONS[name]):
            if a in pos and b in pos:
                (shown if seen[a] and seen[b] else hidden).append([pos[a], pos[b]])
        ax.add_collection(LineCollection(shown, colors=_COLOURS[name], linewidths=1.3, zorder=2))
        ax.add_collection(
            LineCollection(hidden, colors=_GREY, linewidths=0.9, linestyles=[_HIDDEN_STYLE])
        )


def _image_view(ax: Any, face: Face) -> None:
    """The image frame when its size is known, and limits holding it and every landmark."""
    from matplotlib.patches import Rectangle

    cols, rows = face.col, face.row
    if face.image is not None:
        width, height = face.image
        ax.add_patch(Rectangle((0, 0), width, height, fill=False, edgecolor=_FRAME, lw=1.0))
        cols = np.append(cols, [0.0, width])
        rows = np.append(rows, [0.0, height])
    fit_image_axes(ax, cols, rows, margin=0.04)


def fit_image_axes(
    ax: Any, cols: npt.NDArray[np.float64], rows: npt.NDArray[np.float64], margin: float
) -> None:
    """Equal-aspect limits around the points, rows growing downwards."""
    pad = margin * max(float(np.ptp(cols)), float(np.ptp(rows)), 1.0)
    ax.set_xlim(float(cols.min()) - pad, float(cols.max()) + pad)
    ax.set_ylim(float(rows.max()) + pad, float(rows.min()) - pad)
    ax.set_aspect("equal", adjustable="box")


def _summary(face: Face) -> str:
    width, height = face.size
    text = f"face {width:,.0f} x {height:,.0f} px"
    if face.image is not None:
        text += f" in a {face.image[0]:,.0f} x {face.image[1]:,.0f} image"
    if face.flagged:
        return f"{text}; {int(face.visible.sum())} of {len(face.ids)} landmarks visible"
    return f"{text}; no visibility flags in this file"


def _legend_handles(face: Face) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Line2D([], [], color=_COLOURS[name], lw=1.5, label=name) for name in REGION_NAMES
    ]
    if face.flagged:
        handles.append(_marker(Line2D, _DARK, "visible landmark"))
        handles.append(
            Line2D(
                [], [], color=_GREY, ls=_HIDDEN_STYLE, marker="o", ms=5, mfc="none", mec=_GREY,
                label="not visible (hollow;\nits lines dashed)",
            )
        )  # fmt: skip
    else:
        handles.append(_marker(Line2D, _DARK, "landmark (this file has\nno visibility flags)"))
    if face.image is not None:
        handles.append(Patch(fill=False, edgecolor=_FRAME, label="image frame"))
    if face.tiny:
        handles.append(Patch(fill=False, edgecolor=_ZOOM, label="area of the zoom"))
    return handles


def _marker(line: Any, colour: str, label: str) -> Any:
    return line([], [], ls="none", marker="o", ms=4, mfc=colour, mec=colour, label=label)


def plot_visibility(
    out: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    snapshot: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw each landmark's visibility rate across the dataset on the face layout, to a picture.

    Landmarks sit at their place in MediaPipe's canonical face (frontal view,
    subject's left on the right of the picture, as a viewer sees the face) and are
    coloured by the share of files in which they are visible, over the files that
    carry visibility flags (the title counts those, and the files without flags
    that are left out); grey where no file has a flag, and the picture says so
    when none has. ``fmt`` (``png``, ``svg``, ``pdf``) defaults to ``path``'s suffix.

    Example:
        >>> plot_visibility("compiled", "visibility.png")  # doctest: +SKIP
    """
    fmt = output_format(path, fmt, PICTURE_SUFFIXES)
    kp = scan(out, snapshot=snapshot)
    rates, files = pl.collect_all(
        [
            kp.group_by("kp_id")
            .agg(pl.col("visible").cast(pl.Float64).mean().alias("rate"))
            .sort("kp_id"),
            kp.group_by("datapoint", "camera").agg(pl.col("visible").count().alias("flags")),
        ]
    )
    flagged = int((files["flags"] > 0).sum())
    return _save(visibility_figure(rates, flagged, files.height - flagged, dpi), path, fmt)


def visibility_figure(rates: pl.DataFrame, flagged: int, unflagged: int, dpi: int) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.4), dpi=dpi)
    ax = fig.add_subplot()
    canon = np.asarray(CANONICAL_FACE)
    ids = rates["kp_id"].to_numpy()
    rate = rates["rate"].to_numpy().astype(np.float64)  # nulls become NaN
    known = ~np.isnan(rate)
    x, y = canon[ids, 0], canon[ids, 1]
    ax.scatter(x[~known], y[~known], s=10, c="#cccccc")
    if known.any():
        sc = ax.scatter(x[known], y[known], s=14, c=rate[known], cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(sc, ax=ax, label="visible rate", shrink=0.8)
    else:
        ax.text(
            0.5, 0.5, "no file has visibility flags:\nthere is no rate to show",
            transform=ax.transAxes, ha="center", va="center", fontsize=12,
            bbox={"facecolor": "white", "edgecolor": _GREY},
        )  # fmt: skip
    ax.set_aspect("equal")
    ax.set_axis_off()
    title = f"visibility rate per landmark over {flagged:,} files with flags"
    if unflagged:
        title += f"\n({unflagged:,} files without flags not counted)"
    ax.set_title(title)
    return fig


def _save(fig: Any, path: str | os.PathLike[str], fmt: str) -> Path:
    with writing(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return Path(path)
