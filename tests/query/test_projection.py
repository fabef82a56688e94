"""Reprojection through the cameras table, checked with numpy straight from the JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import kpcompile
from tests.conftest import landmarks_from_json


def _numpy_projection(meta: dict, pts: np.ndarray, model: str) -> np.ndarray:
    k = np.array(meta["intrinsic_matrix"], dtype=float)
    e = np.array(meta["extrinsic_matrix"], dtype=float)
    if model == "pose":
        loc = np.array([meta["location"][a] for a in "xyz"])
        e[:, 3] = -e[:, :3] @ loc
        k[1, 1] = k[0, 0]
    uvw = (k @ e @ np.c_[pts, np.ones(len(pts))].T).T
    return uvw[:, :2] / uvw[:, 2:]  # (u = column, v = row)


@pytest.mark.parametrize("model", ["matrices", "pose"])
def test_project_equals_numpy(mixed_dataset: Path, compiled_sets: Path, model: str) -> None:
    got = (
        kpcompile.project(compiled_sets, model=model).sort("datapoint", "camera", "kp_id").collect()
    )
    assert got.height == 16 * 468  # faces and in-cabin files have camera metadata
    for (dp, cam), rows in got.group_by("datapoint", "camera", maintain_order=True):
        folder = mixed_dataset / str(dp) / str(cam)
        meta = json.loads((folder / "camera_metadata.json").read_text())
        ref = landmarks_from_json(folder / "key_points" / "face_dense_key_points.json")
        uv = _numpy_projection(meta, np.array([r[1:4] for r in ref]), model)
        assert np.allclose(rows["u"].to_numpy(), uv[:, 0], rtol=1e-12, atol=1e-9)
        assert np.allclose(rows["v"].to_numpy(), uv[:, 1], rtol=1e-12, atol=1e-9)
        px = np.array([r[4:6] for r in ref])
        assert np.allclose(
            rows["err"].to_numpy(), np.hypot(px[:, 0] - uv[:, 1], px[:, 1] - uv[:, 0])
        )


def test_synthetic_pixels_follow_the_row_column_convention(compiled_sets: Path) -> None:
    m = kpcompile.reprojection_error(compiled_sets, model="matrices")
    p = kpcompile.reprojection_error(compiled_sets, model="pose")
    cabin = m["datapoint"].str.starts_with("in_cabin")  # in_cabin/ and in_cabin_unversioned/
    assert m.height == 16 and cabin.sum() == 10
    # Faces: the written matrices reproduce the float pixels; so does the pose model
    assert set(m.filter(~cabin)["convention"]) == {"row_col"}
    assert m.filter(~cabin)["max_err"].max() < 1e-9
    assert p.filter(~cabin)["max_err"].max() < 1e-9
    # in-cabin, as the real exports: only the pose model fits (integer pixels, rounded)
    assert set(p["convention"]) == {"row_col"}
    assert p.filter(cabin)["max_err"].max() < 0.71
    assert set(m.filter(cabin)["convention"]) == {"neither"}
    assert p["mean_err_swapped"].min() > 10


def test_real_samples_reprojection(samples: Path, tmp_path: Path) -> None:
    kpcompile.build(samples, tmp_path / "out", workers=2, sets=True)
    m = kpcompile.reprojection_error(tmp_path / "out", model="matrices")
    p = kpcompile.reprojection_error(tmp_path / "out", model="pose")
    faces = m["datapoint"].str.starts_with("faces_1")
    cabin = m["datapoint"].str.starts_with("hic_in_cabin")
    assert faces.sum() == 7 and cabin.sum() == 4
    # Faces: the file's matrices reproduce pixel_2d (x = row, y = column) to 1e-12 px
    assert m.filter(faces)["max_err"].max() < 1e-12
    assert set(m.filter(faces)["convention"]) == {"row_col"}
    # In-cabin: the file's matrices are far off in either axis order ...
    assert (
        m.filter(cabin)["mean_err"].min() > 500 and m.filter(cabin)["mean_err_swapped"].min() > 500
    )
    # ... the pose model (t = -R @ location, fy = fx) gives integer rounding only
    assert p.filter(cabin)["max_err"].max() < 0.75
    assert set(p["convention"]) == {"row_col"}
    # no axis order fits the in-cabin files with their own matrices: say so
    assert set(m.filter(cabin)["convention"]) == {"neither"}
    assert p.filter(faces)["max_err"].max() < 1e-12


def test_convention_is_neither_beyond_the_tolerance(compiled_sets: Path) -> None:
    default = kpcompile.reprojection_error(compiled_sets, model="pose")
    strict = kpcompile.reprojection_error(compiled_sets, model="pose", tolerance=0.01)
    cabin = strict["datapoint"].str.starts_with("in_cabin")  # in_cabin/ and in_cabin_unversioned/
    # in-cabin pixels are rounded to integers: within the default 2 px, not within 0.01 px
    assert set(default["convention"]) == {"row_col"}
    assert set(strict.filter(cabin)["convention"]) == {"neither"}
    assert set(strict.filter(~cabin)["convention"]) == {"row_col"}
    assert strict["mean_err"].to_numpy() == pytest.approx(default["mean_err"].to_numpy())


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_tolerance_is_checked(compiled_sets: Path, tolerance: float) -> None:
    with pytest.raises(
        kpcompile.QueryError, match=r"tolerance must be a finite number of pixels >= 0; got"
    ):
        kpcompile.reprojection_error(compiled_sets, tolerance=tolerance)


def test_unknown_model(compiled_sets: Path) -> None:
    with pytest.raises(kpcompile.QueryError, match="model must be one of matrices, pose"):
        kpcompile.project(compiled_sets, model="blender")
