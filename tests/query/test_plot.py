"""Both pictures render to valid, non-blank PNGs of the expected size, from the library and the CLI."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli


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
    assert (w, h) == (640, 640)
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
    assert r.output == f"wrote {tmp_path / 'f.png'}\n" and _png(tmp_path / "f.png")[0] == 640
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
