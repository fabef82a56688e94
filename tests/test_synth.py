"""synth(): faithful to the real layouts, deterministic, and accepted by the parser."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

import kpcompile
from kpcompile.reporting import data as report_data
from kpcompile.store import open_store
from kpcompile.synth import synth
from tests.conftest import SAMPLES


def test_files_are_three_space_json_dumps(mixed_dataset: Path) -> None:
    checked = 0
    for path in sorted(mixed_dataset.rglob("*.json")):
        text = path.read_text()
        assert json.dumps(json.loads(text), indent=3) == text, path
        checked += 1
    assert checked > 24


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    synth(tmp_path / "a", datapoints=3, layout="mixed", seed=1)
    synth(tmp_path / "b", datapoints=3, layout="mixed", seed=1)
    synth(tmp_path / "c", datapoints=3, layout="mixed", seed=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.json"))
    assert all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files
    )
    assert any(
        (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files
    )


def test_layout_details_match_the_real_exports(mixed_dataset: Path) -> None:
    faces = json.loads(
        next(mixed_dataset.glob("faces/*/*/key_points/face_dense_key_points.json")).read_text()
    )
    lm = faces["face"]["dense"]["0"]
    assert faces["version"] == "2.0.0" and isinstance(lm["pixel_2d"]["x"], float)
    assert lm["is_visible"] in ("true", "false")
    cabin = json.loads(
        next(mixed_dataset.glob("in_cabin/**/face_dense_key_points.json")).read_text()
    )
    assert cabin["version"] == "2.0.0" and "is_visible" not in cabin["face"]["dense"]["0"]
    older = json.loads(
        next(mixed_dataset.glob("in_cabin_unversioned/**/face_dense_key_points.json")).read_text()
    )
    assert "version" not in older and "is_visible" not in older["face"]["dense"]["0"]
    assert isinstance(cabin["face"]["dense"]["0"]["pixel_2d"]["x"], int)
    legacy = json.loads(next(mixed_dataset.glob("legacy/*/*/dense_keypoints.json")).read_text())
    assert set(legacy) == {"keypoints_3d_coordinates", "keypoints_2d_coordinates", "is_visible"}
    assert legacy["is_visible"]["0"] in (True, False)
    doc = json.loads(
        next(mixed_dataset.glob("documented/**/face_dense_key_points.json")).read_text()
    )
    assert list(doc["face"]) == ["standard"] and len(doc["face"]["standard"]) == 468
    assert isinstance(doc["face"]["standard"]["0"]["pixel_2d"]["x"], int)


def test_pixels_are_the_projection_of_the_3d_points(mixed_dataset: Path) -> None:
    import numpy as np

    cam = next(mixed_dataset.glob("faces/datapoint_00001/camera_00"))
    meta = json.loads((cam / "camera_metadata.json").read_text())
    dense = json.loads((cam / "key_points/face_dense_key_points.json").read_text())["face"]["dense"]
    pts = np.array([[v["global_3d"][a] for a in "xyz"] for v in dense.values()])
    pix = np.array([[v["pixel_2d"][a] for a in "xy"] for v in dense.values()])
    cam_xyz = (np.array(meta["extrinsic_matrix"]) @ np.c_[pts, np.ones(468)].T).T
    uvw = (np.array(meta["intrinsic_matrix"]) @ cam_xyz.T).T
    uv = uvw[:, :2] / uvw[:, 2:]
    # as in the real Faces exports: pixel_2d.x is the row (v), pixel_2d.y the column (u)
    assert np.allclose(pix[:, 0], uv[:, 1]) and np.allclose(pix[:, 1], uv[:, 0])
    assert pix.min() > 0 and pix.max() < 1024


@pytest.mark.parametrize("bad", [{"layout": "nope"}, {"datapoints": 0}])
def test_bad_arguments(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(kpcompile.OptionsError):
        synth(tmp_path, **bad)  # type: ignore[arg-type]


def test_in_cabin_is_written_as_real_in_cabin_exports(tmp_path: Path) -> None:
    synth(tmp_path / "v", datapoints=2, layout="in_cabin", extras=False)
    doc = json.loads(next((tmp_path / "v").rglob("face_dense_key_points.json")).read_text())
    assert doc["version"] == "2.0.0" and list(doc) == ["version", "face"]
    lm = doc["face"]["dense"]["0"]
    assert "is_visible" not in lm and isinstance(lm["pixel_2d"]["x"], int)
    synth(tmp_path / "old", datapoints=2, layout="in_cabin", version=None, extras=False)
    doc = json.loads(next((tmp_path / "old").rglob("face_dense_key_points.json")).read_text())
    assert "version" not in doc  # as the older exports in ../shared/datagen-samples
    r = kpcompile.build(tmp_path / "v", tmp_path / "out", workers=1)
    assert kpcompile.info(tmp_path / "out").layouts == {"in_cabin": r.compiled}


def test_mixed_has_in_cabin_frames_with_and_without_version(mixed_dataset: Path) -> None:
    versions = {
        json.loads(p.read_text()).get("version")
        for p in mixed_dataset.rglob("face_dense_key_points.json")
        if "/frames/" in p.as_posix()
    }
    assert versions == {"2.0.0", None}


def test_overwrite_replaces_only_a_dataset_synth_wrote(tmp_path: Path) -> None:
    """Issue 17.10: --overwrite never deletes a compiled output or a file synth did not write."""
    root = tmp_path / "ds"
    synth(root, datapoints=2, cameras=1)
    synth(root, datapoints=3, cameras=1, overwrite=True)  # its own dataset: replaced
    assert len(list(root.rglob("face_dense_key_points.json"))) == 3
    (root / "thesis.tex").write_text("years of work")
    with pytest.raises(kpcompile.OutputError, match=r"holds 'thesis.tex', which synth did not"):
        synth(root, datapoints=1, cameras=1, overwrite=True)
    assert (root / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "compiled"
    kpcompile.build(tmp_path / "ds", out, workers=1)
    with pytest.raises(kpcompile.OutputError, match="it is a kpcompile output"):
        synth(out, datapoints=1, cameras=1, overwrite=True)
    assert kpcompile.info(out).compiled == 3


def test_overwrite_on_the_command_line_names_the_foreign_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kpcompile.cli import cli

    root = tmp_path / "ds"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("x")
    r = CliRunner().invoke(cli, ["synth", str(root), "--overwrite"])
    assert r.exit_code == 5 and "holds 'notes/a.txt', which synth did not write" in r.output
    assert (root / "notes" / "a.txt").exists()


def _convention_check(source: Path, out: Path) -> dict[str, tuple[float, bool]]:
    """The report's camera check on the in-cabin files: per model, (mean error, every file fits)."""
    kpcompile.build(source, out, workers=1, sets=True)
    store = open_store(out)
    rep = report_data.gather(store, store.manifest()).reprojection
    assert rep is not None
    cabin = rep.filter(pl.col("camera").str.starts_with("media_"))
    assert cabin.height > 0
    per_model = cabin.group_by("model").agg(
        pl.col("mean_err").mean(), (pl.col("convention") != "neither").all()
    )
    return {m: (err, fits) for m, err, fits in per_model.iter_rows()}


def test_in_cabin_cameras_follow_the_real_exports_convention(tmp_path: Path) -> None:
    """Synthetic in-cabin cameras fit the model the real in-cabin samples fit (`pose`)."""
    synth(tmp_path / "dataset", datapoints=3, cameras=2, layout="in_cabin")
    synthetic = _convention_check(tmp_path / "dataset", tmp_path / "synthetic")
    assert synthetic["pose"][1] and synthetic["pose"][0] < 0.71  # integer pixels: rounding
    assert not synthetic["matrices"][1]  # the written matrices do not reproduce the pixels
    if not SAMPLES.is_dir():
        pytest.skip("../shared/datagen-samples is not present: synthetic part checked only")
    real = _convention_check(SAMPLES / "hic_in_cabin", tmp_path / "real")
    assert {m: fits for m, (_, fits) in real.items()} == {
        m: fits for m, (_, fits) in synthetic.items()
    }
    assert min(real, key=lambda m: real[m][0]) == min(synthetic, key=lambda m: synthetic[m][0])
