"""The pictures of a dataset report, as ``data:`` URIs of SVG the page embeds.

Each picture is a matplotlib ``Figure`` (no pyplot) saved as SVG with its text
drawn as paths, so the page needs no font and makes no request. The faces are
drawn by :mod:`kpcompile.query.plot`'s own helpers, so a report's faces look like
``kpcompile plot``'s.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import polars as pl

from kpcompile.query.plot import Face, draw_landmarks, fit_image_axes, visibility_figure

PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
"""Colours of the cameras in the histograms (matplotlib's tab10)."""
MAX_SERIES = len(PALETTE)
COORD_LABELS: dict[str, str] = {
    "x3": "x3 (global_3d.x)",
    "y3": "y3 (global_3d.y)",
    "z3": "z3 (global_3d.z)",
    "px": "px (pixel_2d.x, row)",
    "py": "py (pixel_2d.y, column)",
}


def svg_uri(fig: Any, *, tight: bool = False) -> str:
    """``data:image/svg+xml;base64,...`` of a figure (no date in it: same data, same bytes).

    Example:
        >>> from matplotlib.figure import Figure
        >>> svg_uri(Figure(figsize=(1, 1)))[:26]
        'data:image/svg+xml;base64,'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight" if tight else None)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def visibility(rates: pl.DataFrame, flagged: int, unflagged: int) -> str:
    """Visibility rate per landmark (``kp_id``, ``rate``) on MediaPipe's canonical face."""
    return svg_uri(visibility_figure(rates, flagged, unflagged, dpi=72), tight=True)


def histograms(hist: pl.DataFrame, coords: tuple[str, ...], bins: int) -> str:
    """One panel per coordinate; one line per camera (the largest ten; the rest as ``other``).

    ``hist`` holds ``coord``, ``camera``, ``bin``, ``n``, ``lo``, ``hi`` (see
    :class:`~kpcompile.reporting.data.ReportData`).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    hist = _top_cameras(hist)
    cameras = hist["camera"].unique(maintain_order=True).to_list()
    # fixed margins: a constrained layout would measure every tick label twice
    fig = Figure(figsize=(10.5, 6.2))
    grid = {"left": 0.06, "right": 0.99, "bottom": 0.06, "top": 0.95, "wspace": 0.3, "hspace": 0.3}
    axes = fig.subplots(2, 3, gridspec_kw=grid).ravel()
    for ax, coord in zip(axes, coords, strict=False):
        part = hist.filter(pl.col("coord") == coord)
        if part.is_empty():
            ax.set_axis_off()
            continue
        lo, hi = float(part["lo"][0]), float(part["hi"][0])
        edges = np.linspace(lo, hi if hi > lo else lo + bins, bins + 1)
        for i, cam in enumerate(cameras):
            counts = np.zeros(bins)
            rows = part.filter(pl.col("camera") == cam)
            counts[rows["bin"].to_numpy()] = rows["n"].to_numpy()
            ax.stairs(counts, edges, color=PALETTE[i % MAX_SERIES], lw=1.3, ls=_style(i))
        ax.set_title(COORD_LABELS.get(coord, coord), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.tick_params(labelsize=8)
        ax.set_ylabel("landmarks", fontsize=8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    legend_ax = axes[len(coords)] if len(coords) < len(axes) else axes[-1]
    legend_ax.set_axis_off()
    handles = [_line(PALETTE[i % MAX_SERIES], cam, i) for i, cam in enumerate(cameras)]
    legend_ax.legend(handles=handles, loc="center", fontsize=8, frameon=False, title="camera")
    return svg_uri(fig)


def _style(i: int) -> Any:
    """Line style of the ``i``-th camera: cameras with the same counts stay visible on top
    of each other (solid under dashed under dotted)."""
    return ("-", (0, (5, 3)), (0, (1, 2)))[i % 3]


def _line(colour: str, label: str, i: int) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, lw=1.5, ls=_style(i), label=label)


def _top_cameras(hist: pl.DataFrame) -> pl.DataFrame:
    """The ``MAX_SERIES - 1`` cameras with most landmarks; the others summed as ``other``."""
    totals = hist.group_by("camera").agg(pl.col("n").sum()).sort("n", "camera", descending=True)
    if totals.height <= MAX_SERIES:
        return hist.sort("camera")
    keep = totals["camera"].head(MAX_SERIES - 1).sort().to_list()
    named = pl.when(pl.col("camera").is_in(keep)).then("camera").otherwise(pl.lit("other"))
    merged = hist.with_columns(named.alias("camera"))
    return (
        merged.group_by("coord", "camera", "bin", "lo", "hi")
        .agg(pl.col("n").sum())
        .sort(pl.col("camera") == "other", "camera")
    )


def sample_faces(samples: pl.DataFrame) -> str:
    """A grid of the sample faces, each fitted to its landmarks, regions coloured.

    ``samples`` holds ``datapoint``, ``camera``, ``layout``, ``kp_id``, ``px``,
    ``py``, ``visible``, ``width``, ``height``, sorted by file and ``kp_id``.
    """
    from matplotlib.figure import Figure

    files = samples.select("datapoint", "camera", "layout").unique(maintain_order=True)
    cols = min(4, max(files.height, 1))
    rows = max(1, -(-files.height // cols))
    fig = Figure(figsize=(2.7 * cols, 3.1 * rows))
    grid = {"left": 0.02, "right": 0.98, "bottom": 0.06, "top": 0.92, "wspace": 0.08, "hspace": 0.3}
    axes = np.atleast_1d(fig.subplots(rows, cols, gridspec_kw=grid)).ravel()
    for ax, (dp, cam, layout) in zip(axes, files.iter_rows(), strict=False):
        face = _face(samples.filter((pl.col("datapoint") == dp) & (pl.col("camera") == cam)))
        draw_landmarks(ax, face)
        fit_image_axes(ax, face.col, face.row, margin=0.08)
        ax.set_xticks([])
        ax.set_yticks([])
        shown = f"{int(face.visible.sum())}/{len(face.ids)} visible" if face.flagged else "no flags"
        ax.set_title(f"{_short(dp)}\n{_short(cam)}", fontsize=7.5)
        ax.set_xlabel(f"{layout or '?'}; {shown}", fontsize=7.5)
    for ax in axes[files.height :]:
        ax.set_axis_off()
    return svg_uri(fig)


def _face(rows: pl.DataFrame) -> Face:
    flagged = bool(rows["visible"].is_not_null().any())
    return Face(
        title="",
        ids=rows["kp_id"].to_numpy().astype(np.int64),
        col=rows["py"].to_numpy(),
        row=rows["px"].to_numpy(),
        visible=rows["visible"].fill_null(not flagged).to_numpy().astype(np.bool_),
        flagged=flagged,
        image=None,
    )


def _short(name: str, width: int = 34) -> str:
    """``name`` kept to ``width`` characters, its start elided (the end tells files apart)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]
