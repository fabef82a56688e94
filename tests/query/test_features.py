"""features(): head pose recovered from heads written with known rotations, openness, real samples.

The known heads are written by this file as Faces exports (``global_3d`` in metres,
z up, a head at rest looking towards -y, as kpcompile.synth and the real Faces
exports have it), with rotations built here by composing turns about the head's
own axes (intrinsic), independently of kpcompile's code, then compiled and read
back through the fast tensor path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

import kpcompile
from kpcompile.query.features import CANONICAL, COLUMNS, face_features
from kpcompile.query.landmarks import CANONICAL_FACE

Array = npt.NDArray[np.float64]
# canonical (cm; +x subject's left, +y up, +z out of the face) -> world at rest (m)
AT_REST = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]) * 0.01
# (yaw, pitch, roll) in degrees, scale, shift in metres
POSES: list[tuple[tuple[float, float, float], float, tuple[float, float, float]]] = [
    ((0.0, 0.0, 0.0), 1.0, (0.0, 0.0, 0.1)),
    ((30.0, 0.0, 0.0), 1.05, (0.02, -0.01, 0.12)),
    ((0.0, 20.0, 0.0), 0.95, (-0.03, 0.0, 0.09)),
    ((0.0, 0.0, -15.0), 1.0, (0.0, 0.02, 0.1)),
    ((-47.5, 12.25, 8.0), 0.9, (0.1, 0.3, 1.2)),
    ((70.0, -35.0, 25.0), 1.1, (-0.2, 0.6, 1.3)),
    ((175.0, -5.0, -6.0), 1.0, (0.07, 0.6, 1.23)),  # as the in-cabin drivers
    ((-120.0, 60.0, -40.0), 1.02, (0.0, 0.0, 0.0)),
]
NOISE_CM = 0.04  # per landmark, as synth's expression noise


def _turn(axis: Array, degrees: float) -> Array:
    """Rodrigues: the rotation by ``degrees`` about the unit ``axis`` (right-handed)."""
    a = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    out: Array = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)
    return out


def head_rotation(yaw: float, pitch: float, roll: float) -> Array:
    """Yaw about the vertical, then pitch about the head's left-right axis as yaw left
    it, then roll about its back-front axis as both left it (intrinsic turns)."""
    r = _turn(np.array([0.0, 0.0, 1.0]), yaw)
    r = _turn(r @ [1.0, 0.0, 0.0], pitch) @ r
    return _turn(r @ [0.0, 1.0, 0.0], roll) @ r


def posed_head(
    angles: tuple[float, float, float], scale: float, shift: tuple[float, float, float], seed: int
) -> Array:
    """(468, 3) world landmarks of the canonical face, posed, with float32 precision."""
    rng = np.random.default_rng(seed)
    face = np.asarray(CANONICAL_FACE) + rng.normal(0.0, NOISE_CM, (468, 3))
    pts = (face * scale) @ (head_rotation(*angles) @ AT_REST).T + np.asarray(shift)
    out: Array = pts.astype(np.float32).astype(np.float64)
    return out


def write_faces_export(root: Path, heads: list[Array]) -> None:
    """One Faces ``face_dense_key_points.json`` per head, datapoint_00001 upwards."""
    for i, pts in enumerate(heads, 1):
        dense = {
            str(k): {
                "global_3d": dict(zip("xyz", map(float, p), strict=True)),
                "pixel_2d": {"x": 512.0, "y": 512.0},
                "is_visible": "true",
            }
            for k, p in enumerate(pts)
        }
        path = root / f"datapoint_{i:05d}" / "camera" / "key_points" / "face_dense_key_points.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"version": "2.0.0", "face": {"dense": dense}}, indent=3))


@pytest.fixture(scope="module")
def posed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Array]]:
    """A snapshot of the heads of POSES (read-only), and their landmarks."""
    root = tmp_path_factory.mktemp("posed")
    heads = [posed_head(a, s, t, seed) for seed, (a, s, t) in enumerate(POSES)]
    write_faces_export(root / "dataset", heads)
    kpcompile.build(root / "dataset", root / "out", workers=1)
    return root / "out", heads


def test_the_test_rotations_mean_what_the_docstring_says() -> None:
    nose = CANONICAL[1] @ AT_REST.T  # in front of the head centre at rest: -y
    assert nose[1] < 0
    assert (head_rotation(30, 0, 0) @ nose)[0] > 0  # yaw > 0: face towards +x, subject's left
    assert (head_rotation(0, 20, 0) @ nose)[2] < nose[2]  # pitch > 0: chin down
    top = CANONICAL[10] @ AT_REST.T
    assert (head_rotation(0, 0, 15) @ top)[0] > 0  # roll > 0: towards the left shoulder
    # turns about the head's own axes compose as Rz @ Rx @ Ry of the world axes
    y, p, r = np.radians([-47.5, 12.25, 8.0])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(r), 0, math.sin(r)], [0, 1, 0], [-math.sin(r), 0, math.cos(r)]])
    assert np.allclose(head_rotation(-47.5, 12.25, 8.0), rz @ rx @ ry)


def test_known_rotations_are_recovered(posed: tuple[Path, list[Array]]) -> None:
    out, heads = posed
    f = kpcompile.features(out)
    assert f.columns == ["datapoint", "camera", *COLUMNS, "aligned"]
    assert f["datapoint"].to_list() == [f"datapoint_{i:05d}" for i in range(1, len(POSES) + 1)]
    got = f.select("yaw", "pitch", "roll").to_numpy()
    want = np.array([a for a, _, _ in POSES])
    diff = (got - want + 180.0) % 360.0 - 180.0  # yaw 175 may come back as -185 + 360
    assert np.abs(diff).max() < 0.5, diff
    assert np.allclose(f["scale"], [0.01 * s for _, s, _ in POSES], rtol=2e-3)
    # the canonical origin lands at the shift (the noise moves it by well under a mm)
    assert np.allclose(f.select("tx", "ty", "tz").to_numpy(), [t for *_, t in POSES], atol=5e-4)
    assert f["fit_rms"].is_between(0.5 * NOISE_CM * 3**0.5, 1.5 * NOISE_CM * 3**0.5).all()
    aligned = f["aligned"].to_numpy()
    assert aligned.shape == (len(POSES), 468, 3) and aligned.dtype == np.float32
    assert np.abs(aligned - CANONICAL).max() < 8 * NOISE_CM
    xyz = np.stack(heads)
    assert np.allclose(f["inter_ocular"], np.linalg.norm(xyz[:, 33] - xyz[:, 263], axis=1))


def test_noise_free_heads_are_recovered_exactly() -> None:
    angles = [a for a, _, _ in POSES]
    xyz = np.stack([CANONICAL @ (head_rotation(*a) @ AT_REST).T + 0.5 for a in angles])
    values, aligned = face_features(xyz)
    got = np.stack([values["yaw"], values["pitch"], values["roll"]], axis=1)
    assert np.allclose(got, angles, atol=1e-9)
    assert np.allclose(values["scale"], 0.01) and np.allclose(aligned, CANONICAL, atol=1e-9)
    assert np.allclose(values["fit_rms"], 0.0, atol=1e-9)


def test_openness_is_the_lid_or_lip_gap_over_the_width() -> None:
    head = posed_head((20.0, -10.0, 5.0), 1.0, (0.0, 0.0, 0.1), seed=1)
    shut, gaping = head.copy(), head.copy()
    shut[159] = shut[145]  # the right upper lid on the lower one
    gaping[14] = gaping[14] + (gaping[14] - gaping[13]) * 3  # lower lip 4x further
    values, _ = face_features(np.stack([head, shut, gaping]))

    def ratio(x: Array, a: int, b: int, c: int, d: int) -> float:
        return float(np.linalg.norm(x[a] - x[b]) / np.linalg.norm(x[c] - x[d]))

    assert values["right_eye_openness"][0] == pytest.approx(ratio(head, 159, 145, 33, 133))
    assert values["left_eye_openness"][0] == pytest.approx(ratio(head, 386, 374, 362, 263))
    assert values["mouth_openness"][0] == pytest.approx(ratio(head, 13, 14, 78, 308))
    assert values["right_eye_openness"][1] == 0.0
    assert values["left_eye_openness"][1] == values["left_eye_openness"][0]
    assert values["mouth_openness"][2] == pytest.approx(4 * values["mouth_openness"][0])
    # the canonical face: eyes open a quarter of their width, lips a little apart (0.13)
    canon, _ = face_features(CANONICAL[None])
    assert 0.2 < canon["right_eye_openness"][0] < 0.3 and 0.1 < canon["mouth_openness"][0] < 0.2


def test_a_file_with_a_non_finite_coordinate_gets_nan_alone() -> None:
    good = posed_head((10.0, 5.0, 0.0), 1.0, (0.0, 0.0, 0.1), seed=2)
    bad = good.copy()
    bad[200, 1] = np.nan
    values, aligned = face_features(np.stack([good, bad, good]))
    assert np.isnan(values["yaw"][1]) and np.isnan(aligned[1]).all()
    assert values["yaw"][0] == values["yaw"][2] == pytest.approx(10.0, abs=0.5)


def test_every_way_in_gives_the_same_rows(posed: tuple[Path, list[Array]]) -> None:
    out, _ = posed
    ref = kpcompile.features(out, dtype="float64")
    assert ref.schema["aligned"] == pl.Array(pl.Float64, (468, 3))
    lazy = kpcompile.scan(out).kp.features(dtype="float64")
    assert isinstance(lazy, pl.LazyFrame)
    eager = kpcompile.read(out).reverse().kp.features(dtype="float64")  # order is restored
    from_tensors = kpcompile.features(kpcompile.tensors(out), dtype="float64")
    for other in (lazy.collect(), eager, from_tensors):
        assert other.equals(ref)
    typed = kpcompile.kp(kpcompile.scan(out)).features(aligned=False).collect()
    assert typed.columns == ["datapoint", "camera", *COLUMNS]
    assert np.allclose(typed["yaw"], ref["yaw"], atol=1e-3)  # float32 reading


def test_partial_files_and_bad_options_are_refused(posed: tuple[Path, list[Array]]) -> None:
    out, _ = posed
    with pytest.raises(kpcompile.QueryError, match="whole files"):
        kpcompile.features(kpcompile.filter_region(kpcompile.scan(out), "lips"))
    with pytest.raises(kpcompile.QueryError, match="dtype must be one of float32, float64"):
        kpcompile.features(out, dtype="float16")
    with pytest.raises(kpcompile.QueryError, match=r"shape \(N, 468, 3\)"):
        face_features(np.zeros((2, 468, 2)))
    empty = kpcompile.features(kpcompile.scan(out).filter(pl.col("camera") == "none"))
    assert empty.height == 0 and empty.columns == ["datapoint", "camera", *COLUMNS, "aligned"]


def test_synth_heads_agree_across_cameras(compiled_sets: Path) -> None:
    f = kpcompile.features(compiled_sets, aligned=False)
    assert f.height == 24 and np.isfinite(f.select(COLUMNS).to_numpy()).all()
    per_datapoint = f.group_by("datapoint").agg(
        pl.len().alias("cameras"), *(pl.col(c).n_unique().alias(c) for c in COLUMNS)
    )
    assert (per_datapoint["cameras"] == 2).all()
    assert (per_datapoint.select(COLUMNS).to_numpy() == 1).all()  # global_3d is shared
    # synth poses heads within yaw +-25, pitch +-12, roll +-8 degrees, scale 0.92-1.08
    assert f["yaw"].abs().max() < 25.5 and f["pitch"].abs().max() < 12.5
    assert f["roll"].abs().max() < 8.5 and f["scale"].is_between(0.0091, 0.0109).all()
    assert f["fit_rms"].max() < 0.1


def test_real_samples_give_plausible_features(samples: Path, tmp_path: Path) -> None:
    kpcompile.build(samples, tmp_path / "out", workers=2)
    f = kpcompile.features(tmp_path / "out")
    assert f.height == 13
    values = f.select(COLUMNS).to_numpy()
    assert np.isfinite(values).all() and np.isfinite(f["aligned"].to_numpy()).all()
    cabin = f["datapoint"].str.starts_with("hic_in_cabin")
    faces = f.filter(~cabin)
    assert faces["yaw"].abs().max() < 45 and faces["pitch"].abs().max() < 30
    assert faces["roll"].abs().max() < 20
    # the in-cabin world is the car's: the driver looks towards +y, a yaw near 180
    assert (f.filter(cabin)["yaw"].abs() > 160).all()
    assert f["inter_ocular"].is_between(0.07, 0.11).all()  # metres
    assert f["scale"].is_between(0.008, 0.012).all() and f["fit_rms"].max() < 1.0
    for eye in ("right_eye_openness", "left_eye_openness"):
        assert f[eye].is_between(0.1, 0.6).all()
    assert f["mouth_openness"].is_between(0.0, 0.5).all()
    assert np.abs(f["aligned"].to_numpy() - CANONICAL).mean() < 0.6  # cm


def test_many_files_in_threads_equal_small_batches() -> None:
    rng = np.random.default_rng(5)
    angles = rng.uniform([-90, -40, -30], [90, 40, 30], (4200, 3))
    base = np.stack([CANONICAL @ (head_rotation(*a) @ AT_REST).T for a in angles[:7]])
    xyz = base[np.arange(4200) % 7] + rng.normal(0.0, 1e-4, (4200, 468, 3))
    xyz[3000, 5] = np.inf
    values, aligned = face_features(xyz)  # three chunks, in threads
    for part in (slice(0, 1000), slice(2990, 3010), slice(4100, 4200)):
        small, small_aligned = face_features(xyz[part])
        for c in COLUMNS:
            assert np.allclose(values[c][part], small[c], atol=1e-12, equal_nan=True), c
        assert np.allclose(aligned[part], small_aligned, atol=1e-12, equal_nan=True)
    assert np.isnan(values["yaw"][3000]) and np.isfinite(np.delete(values["yaw"], 3000)).all()
    wrapped = (values["yaw"] - angles[np.arange(4200) % 7, 0] + 180) % 360 - 180
    assert np.nanmax(np.abs(wrapped)) < 0.5
