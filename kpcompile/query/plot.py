"""Pictures of compiled landmarks (PNG, SVG or PDF; matplotlib without a display).

Figures are made with ``matplotlib.figure.Figure`` directly (no pyplot, no global
backend state), so plotting works in servers, tests and worker processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kpcompile.errors import QueryError
from kpcompile.query.landmarks import CANONICAL_FACE, REGION_CONNECTIONS, REGION_NAMES
from kpcompile.query.outfiles import PICTURE_SUFFIXES, output_format, writing
from kpcompile.query.scan import scan

_COLOURS = {
    "face_oval": "#7f7f7f",
    "left_eye": "#1f77b4",
    "left_eyebrow": "#17becf",
    "lips": "#d62728",
    "nose": "#2ca02c",
    "right_eye": "#ff7f0e",
    "right_eyebrow": "#bcbd22",
}


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
    (``px``, growing downwards), the convention of the real exports. Invisible
    landmarks are drawn hollow.

    Args:
        out: Output folder of ``kpcompile build``.
        datapoint: The ``datapoint`` to draw.
        path: Picture file to write.
        camera: Which camera; default: the first (alphabetically) of the datapoint.
        fmt: ``png``, ``svg`` or ``pdf``; default: from ``path``'s suffix.
        snapshot: A snapshot id; ``None`` for the current snapshot.
        dpi: Resolution (the figure is 6.4 x 6.4 inches).

    Raises:
        QueryError: No such datapoint or camera.
        OptionsError: ``fmt`` contradicts ``path``'s suffix, or neither gives a format.

    Example:
        >>> plot_face("compiled", "datapoint_00001", "face.png")  # doctest: +SKIP
    """
    fmt = output_format(path, fmt, PICTURE_SUFFIXES)
    kp = scan(out, snapshot=snapshot).filter(pl.col("datapoint") == datapoint)
    if camera is None:
        cams = kp.select(pl.col("camera").unique().sort()).collect()["camera"]
        if cams.is_empty():
            msg = f"no datapoint {datapoint!r} in the snapshot"
            raise QueryError(msg)
        camera = str(cams[0])
    df = kp.filter(pl.col("camera") == camera).sort("kp_id").collect()
    if df.height == 0:
        msg = f"no camera {camera!r} for datapoint {datapoint!r} in the snapshot"
        raise QueryError(msg)
    col, row = df["py"].to_numpy(), df["px"].to_numpy()
    visible = df["visible"].fill_null(True).to_numpy()
    pos = {int(i): (c, r) for i, c, r in zip(df["kp_id"].to_list(), col, row, strict=True)}

    fig, ax = _figure(dpi)
    ax.scatter(col[visible], row[visible], s=4, c="#444444", label="other")
    ax.scatter(col[~visible], row[~visible], s=6, facecolors="none", edgecolors="#999999")
    for name in REGION_NAMES:
        colour = _COLOURS[name]
        for a, b in REGION_CONNECTIONS[name]:
            if a in pos and b in pos:
                ax.plot(*zip(pos[a], pos[b], strict=True), color=colour, linewidth=1.2)
        ax.plot([], [], color=colour, label=name)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel("column (pixel_2d.y)")
    ax.set_ylabel("row (pixel_2d.x)")
    ax.set_title(f"{datapoint} / {camera}")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path, fmt)


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
    coloured by the share of files in which they are visible; grey where no file
    has a visibility flag. ``fmt`` (``png``, ``svg``, ``pdf``) defaults to
    ``path``'s suffix.

    Example:
        >>> plot_visibility("compiled", "visibility.png")  # doctest: +SKIP
    """
    fmt = output_format(path, fmt, PICTURE_SUFFIXES)
    rates = (
        scan(out, snapshot=snapshot)
        .group_by("kp_id")
        .agg(pl.col("visible").cast(pl.Float64).mean().alias("rate"), pl.len().alias("n"))
        .sort("kp_id")
        .collect()
    )
    canon = np.asarray(CANONICAL_FACE)
    ids = rates["kp_id"].to_numpy()
    rate = rates["rate"].to_numpy().astype(np.float64)  # nulls become NaN
    known = ~np.isnan(rate)
    fig, ax = _figure(dpi)
    x, y = canon[ids, 0], canon[ids, 1]
    ax.scatter(x[~known], y[~known], s=10, c="#cccccc")
    sc = ax.scatter(x[known], y[known], s=14, c=rate[known], cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(sc, ax=ax, label="visible rate", shrink=0.8)
    ax.set_aspect("equal")
    ax.set_axis_off()
    files = int(rates["n"].to_numpy().max()) if rates.height else 0
    ax.set_title(f"visibility rate per landmark ({files:,} files)")
    return _save(fig, path, fmt)


def _figure(dpi: int) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.4), dpi=dpi)
    return fig, fig.add_subplot()


def _save(fig: Any, path: str | os.PathLike[str], fmt: str) -> Path:
    with writing(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return Path(path)
