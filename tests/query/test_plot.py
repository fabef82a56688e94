"""Both pictures render to valid, non-blank PNGs of the expected size, from the library and the CLI."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from kpcompile.synth import synth


def _png(path: Path) -> tuple[int, int, np.ndarray]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    from matplotlib.image import imread

    return width, height, imread(path)


def test_plot_face(compiled_sets: Path, tmp_path: Path) -> None:
    out = kpcompile.plot_face(
        compiled_sets, "faces/datapoint_00001", tmp_path / "face.png", camera="camera_01"
    )
    w, h, img = _png(out)
    assert (w, h) == (840, 640)
    rgb = img[..., :3]
    assert rgb.std() > 0.05  # not blank
    red = (rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    assert red.sum() > 50  # the lips are drawn in red


def test_plot_visibility(compiled_sets: Path, tmp_path: Path) -> None:
    w, h, img = _png(kpcompile.plot_visibility(compiled_sets, tmp_path / "vis.png", dpi=80))
    assert (w, h) == (512, 512)
    rgb = img[..., :3]
    distinct = np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(distinct) > 50  # a colour scale, not a flat picture


def test_plot_unknown_datapoint(compiled_sets: Path, tmp_path: Path) -> None:
    with pytest.raises(kpcompile.QueryError, match="no datapoint 'nope'"):
        kpcompile.plot_face(compiled_sets, "nope", tmp_path / "x.png")
    with pytest.raises(kpcompile.QueryError, match="no camera 'cam9'"):
        kpcompile.plot_face(
            compiled_sets, "faces/datapoint_00001", tmp_path / "x.png", camera="cam9"
        )


def test_cli_plot(compiled_sets: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "plot",
            str(compiled_sets),
            "--datapoint",
            "legacy/environment_00002",
            "-o",
            str(tmp_path / "f.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert r.output == f"wrote {tmp_path / 'f.png'}\n" and _png(tmp_path / "f.png")[0] == 840
    r = CliRunner().invoke(
        cli, ["plot", str(compiled_sets), "--visibility", "-o", str(tmp_path / "v.png")]
    )
    assert r.exit_code == 0 and (tmp_path / "v.png").stat().st_size > 10_000
    r = CliRunner().invoke(cli, ["plot", str(compiled_sets), "-o", str(tmp_path / "n.png")])
    assert r.exit_code == 2 and "give exactly one of --datapoint D or --visibility" in r.output
    r = CliRunner().invoke(
        cli, ["plot", str(compiled_sets), "-d", "nope", "-o", str(tmp_path / "n.png")]
    )
    assert r.exit_code == 2 and r.output == "error: no datapoint 'nope' in the snapshot\n"


@pytest.mark.parametrize(
    ("name", "magic"), [("v.svg", b"<?xml"), ("v.pdf", b"%PDF"), ("v.PNG", b"\x89PNG")]
)
def test_plot_format_from_the_suffix(
    compiled_sets: Path, tmp_path: Path, name: str, magic: bytes
) -> None:
    r = CliRunner().invoke(
        cli, ["plot", str(compiled_sets), "--visibility", "-o", str(tmp_path / name)]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / name).read_bytes().startswith(magic)
    face = kpcompile.plot_face(compiled_sets, "faces/datapoint_00001", tmp_path / f"f{name}")
    assert face.read_bytes().startswith(magic)


def test_plot_suffix_that_contradicts_the_format(compiled_sets: Path, tmp_path: Path) -> None:
    dest = tmp_path / "v.svg"
    r = CliRunner().invoke(
        cli, ["plot", str(compiled_sets), "--visibility", "--format", "png", "-o", str(dest)]
    )
    assert r.exit_code == 2
    assert r.stderr == (
        f"error: --format png does not match the file name '{dest}' (.svg means svg); "
        "drop --format or rename the file\n"
    )
    assert not dest.exists()
    dest = tmp_path / "v.jpg"
    r = CliRunner().invoke(cli, ["plot", str(compiled_sets), "--visibility", "-o", str(dest)])
    assert r.exit_code == 2
    assert r.stderr == (
        f"error: cannot tell the format of '{dest}' from its name (suffix '.jpg'); give --format, "
        "or use one of the suffixes .pdf, .png, .svg\n"
    )
    with pytest.raises(kpcompile.OptionsError, match="cannot tell the format of"):
        kpcompile.plot_visibility(compiled_sets, dest)


# --- what the pictures must show (checked on the figure, not on pixels) -------------

Figure = Any


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure the plot functions save, drawn with Agg so extents can be measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from kpcompile.query import plot

    drawn: list[Figure] = []
    save = plot._save

    def spy(fig: Figure, *args: Any, **kwargs: Any) -> Any:
        FigureCanvasAgg(fig)
        fig.canvas.draw()
        drawn.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(plot, "_save", spy)
    return drawn


@pytest.fixture(scope="module")
def drawn_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Faces built with --sets: 00001 a far camera (an 8 px face in a 1280x720 image),
    00002 every landmark invisible, 00003 as synthesized."""
    root = tmp_path_factory.mktemp("drawn") / "dataset"
    synth(root, datapoints=3, cameras=1, layout="faces", seed=5)
    cam = root / "datapoint_00001" / "camera"
    meta = json.loads((cam / "camera_metadata.json").read_text())
    meta["resolution_px"] = {"x": 1280.0, "y": 720.0}
    (cam / "camera_metadata.json").write_text(json.dumps(meta))
    f = cam / "key_points" / "face_dense_key_points.json"
    doc = json.loads(f.read_text())
    pts = np.array(
        [[p["pixel_2d"]["x"], p["pixel_2d"]["y"]] for p in doc["face"]["dense"].values()]
    )
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    for p in doc["face"]["dense"].values():
        p["pixel_2d"]["x"] = 300 + (p["pixel_2d"]["x"] - lo[0]) / (hi[0] - lo[0]) * 8
        p["pixel_2d"]["y"] = 900 + (p["pixel_2d"]["y"] - lo[1]) / (hi[1] - lo[1]) * 7
    f.write_text(json.dumps(doc))
    f = root / "datapoint_00002" / "camera" / "key_points" / "face_dense_key_points.json"
    doc = json.loads(f.read_text())
    for p in doc["face"]["dense"].values():
        p["is_visible"] = "false"
    f.write_text(json.dumps(doc))
    out = root.parent / "compiled"
    kpcompile.build(root, out, workers=1, sets=True)
    return out


def _landmark_boxes(fig: Figure) -> list[Any]:
    """Display-space bounding box of the landmarks drawn in each axes."""
    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox

    boxes = []
    for ax in fig.axes:
        pts = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
        pts = [p for p in pts if len(p)]
        if pts:
            boxes.append(Bbox.null())
            boxes[-1].update_from_data_xy(ax.transData.transform(np.concatenate(pts)))
    return boxes


def _legends(fig: Figure) -> list[Any]:
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]


def _is_grey(colour: Any) -> bool:
    from matplotlib.colors import to_rgba

    r, g, b, _ = to_rgba(colour)
    return max(r, g, b) - min(r, g, b) < 0.05


def _solid_coloured_segments(fig: Figure) -> int:
    """Drawn line segments that are solid and not grey, in every axes."""
    from matplotlib.collections import LineCollection

    n = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            if len(line.get_xdata()) > 1 and line.get_linestyle() in ("-", "solid"):
                n += 0 if _is_grey(line.get_color()) else len(line.get_xdata()) - 1
        for coll in ax.collections:
            if isinstance(coll, LineCollection):
                for seg, colour, (_, dashes) in zip(
                    coll.get_segments(),
                    np.broadcast_to(coll.get_colors(), (len(coll.get_segments()), 4)),
                    np.broadcast_to(
                        np.array(coll.get_linestyles(), dtype=object), (len(coll.get_segments()), 2)
                    ),
                    strict=True,
                ):
                    n += 0 if (dashes or _is_grey(colour)) else len(seg) - 1
    return n


def _files(out: Path) -> list[tuple[str, str]]:
    return (
        kpcompile.read(out, "files")
        .select("datapoint", "camera")
        .sort("datapoint", "camera")
        .rows()
    )


def _assert_legend_clear_of_landmarks(fig: Figure) -> None:
    legends = _legends(fig)
    assert legends
    renderer = fig.canvas.get_renderer()
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for face in _landmark_boxes(fig):
            assert not box.overlaps(face), (fig.axes[0].get_title(), box, face)


def test_the_legend_never_covers_the_face(
    compiled_sets: Path, drawn_sets: Path, tmp_path: Path, figures: list[Figure]
) -> None:
    for out in (compiled_sets, drawn_sets):
        for datapoint, camera in _files(out):
            kpcompile.plot_face(out, datapoint, tmp_path / "f.png", camera=camera)
            _assert_legend_clear_of_landmarks(figures[-1])


def test_the_legend_never_covers_a_real_face(
    samples: Path, tmp_path: Path, figures: list[Figure]
) -> None:
    kpcompile.build(samples, tmp_path / "out", workers=2, sets=True)
    for datapoint, camera in _files(tmp_path / "out"):
        kpcompile.plot_face(tmp_path / "out", datapoint, tmp_path / "f.png", camera=camera)
        _assert_legend_clear_of_landmarks(figures[-1])


def test_the_legend_says_hollow_is_not_visible(
    drawn_sets: Path, tmp_path: Path, figures: list[Figure]
) -> None:
    kpcompile.plot_face(drawn_sets, "datapoint_00003", tmp_path / "f.png")
    (legend,) = _legends(figures[-1])
    entries = dict(
        zip([t.get_text() for t in legend.get_texts()], legend.legend_handles, strict=True)
    )
    hollow = [label for label in entries if "not visible" in label]
    assert hollow, list(entries)
    handle = entries[hollow[0]]
    face = (
        handle.get_facecolor() if hasattr(handle, "get_facecolor") else handle.get_markerfacecolor()
    )
    from matplotlib.colors import to_rgba_array

    assert (to_rgba_array(face)[:, 3] == 0).all()  # drawn hollow


def test_an_invisible_file_has_no_solid_coloured_lines(
    drawn_sets: Path, tmp_path: Path, figures: list[Figure]
) -> None:
    kpcompile.plot_face(drawn_sets, "datapoint_00002", tmp_path / "f.png")
    assert _solid_coloured_segments(figures[-1]) == 0
    kpcompile.plot_face(drawn_sets, "datapoint_00003", tmp_path / "g.png")
    assert _solid_coloured_segments(figures[-1]) > 100  # visible regions stay coloured


def _frames(fig: Figure) -> list[tuple[float, float, float, float]]:
    from matplotlib.patches import Rectangle

    return [
        (p.get_x(), p.get_y(), p.get_width(), p.get_height())
        for ax in fig.axes
        for p in ax.patches
        if isinstance(p, Rectangle)
    ]


def test_the_image_frame_is_drawn_when_the_camera_is_known(
    compiled_sets: Path, drawn_sets: Path, tmp_path: Path, figures: list[Figure]
) -> None:
    kpcompile.plot_face(drawn_sets, "datapoint_00003", tmp_path / "f.png")
    assert (0, 0, 1024, 1024) in _frames(figures[-1])
    # no camera metadata, no frame
    kpcompile.plot_face(compiled_sets, "legacy/environment_00001", tmp_path / "f.png")
    assert _frames(figures[-1]) == []


def test_a_tiny_face_gets_a_zoom_inside_its_image(
    drawn_sets: Path, tmp_path: Path, figures: list[Figure]
) -> None:
    kpcompile.plot_face(drawn_sets, "datapoint_00001", tmp_path / "f.png")
    fig = figures[-1]
    assert (0, 0, 1280, 720) in _frames(fig)  # width along columns, height along rows
    spans = []
    for ax in fig.axes:
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        spans.append((x0, x1, y0, y1))
    # one view holds the whole image, another zooms on the 7 x 8 px face
    assert any(x0 <= 0 and x1 >= 1280 and y0 <= 0 and y1 >= 720 for x0, x1, y0, y1 in spans)
    assert any(
        x1 - x0 < 40 and y1 - y0 < 40 and x0 <= 900 and x1 >= 907 and y0 <= 300 and y1 >= 308
        for x0, x1, y0, y1 in spans
    )


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]


def test_visibility_counts_only_files_with_flags(
    compiled_sets: Path, tmp_path: Path, figures: list[Figure]
) -> None:
    kpcompile.plot_visibility(compiled_sets, tmp_path / "v.png")
    fig = figures[-1]
    assert fig.axes[0].get_title() == (
        "visibility rate per landmark over 14 files with flags\n(10 files without flags not counted)"
    )
    assert not any("no file has visibility flags" in t for t in _texts(fig))


def test_visibility_without_any_flag_says_so(tmp_path: Path, figures: list[Figure]) -> None:
    synth(tmp_path / "ds", datapoints=2, cameras=1, layout="in_cabin")
    kpcompile.build(tmp_path / "ds", tmp_path / "out", workers=1)
    kpcompile.plot_visibility(tmp_path / "out", tmp_path / "v.png")
    fig = figures[-1]
    assert fig.axes[0].get_title() == (
        "visibility rate per landmark over 0 files with flags\n(2 files without flags not counted)"
    )
    assert any("no file has visibility flags" in t for t in _texts(fig))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "datapoint_00001",
            "error: no datapoint 'datapoint_00001' in the snapshot; did you mean "
            "'documented/datapoint_00001' or 'faces/datapoint_00001'?\n",
        ),
        (
            "faces/datapoint_0001",
            "error: no datapoint 'faces/datapoint_0001' in the snapshot; did you mean "
            "'faces/datapoint_00001'",
        ),
        (
            "scene_00001/frames/001",
            "error: no datapoint 'scene_00001/frames/001' in the snapshot; did you mean "
            "'in_cabin/scene_00001/frames/001' or 'in_cabin_unversioned/scene_00001/frames/001'?\n",
        ),
    ],
)
def test_cli_plot_suggests_near_names(
    compiled_sets: Path, tmp_path: Path, name: str, message: str
) -> None:
    r = CliRunner().invoke(
        cli, ["plot", str(compiled_sets), "-d", name, "-o", str(tmp_path / "f.png")]
    )
    assert r.exit_code == 2 and r.output.startswith(message), r.output
    assert not (tmp_path / "f.png").exists()


def test_cli_plot_lists_the_cameras_of_the_datapoint(compiled_sets: Path, tmp_path: Path) -> None:
    args = ["plot", str(compiled_sets), "-d", "faces/datapoint_00001", "-c", "camera"]
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "f.png")])
    assert r.exit_code == 2 and r.output == (
        "error: no camera 'camera' for datapoint 'faces/datapoint_00001' in the snapshot; "
        "it has 'camera_00', 'camera_01'\n"
    )
