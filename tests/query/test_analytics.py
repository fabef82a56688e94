"""Regions, per-landmark statistics, NME and 3D consistency against plain Python over the JSON."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import kpcompile
from kpcompile.query.landmarks import REGION_CONNECTIONS
from tests.conftest import landmarks_from_json


def _source_rows(dataset: Path, out: Path) -> list[tuple[str, str, tuple]]:
    files = kpcompile.read(out, "files")
    return [
        (f["datapoint"], f["camera"], r)
        for f in files.iter_rows(named=True)
        for r in landmarks_from_json(dataset / f["path"])
    ]


def test_region_ids_are_the_connection_endpoints() -> None:
    for name, edges in REGION_CONNECTIONS.items():
        assert kpcompile.region_ids(name) == sorted({i for e in edges for i in e})
    both = kpcompile.region_ids(["left_eye", "right_eye"])
    assert 33 in both and 263 in both and len(both) == 32
    with pytest.raises(kpcompile.QueryError, match="unknown region 'mouth'; expected one of"):
        kpcompile.region_ids("mouth")


def test_filter_region_lazy_and_eager(compiled_sets: Path) -> None:
    lf = kpcompile.filter_region(kpcompile.scan(compiled_sets), "lips")
    df = kpcompile.filter_region(kpcompile.read(compiled_sets), ["lips"])
    assert isinstance(lf, pl.LazyFrame) and lf.collect().equals(df)
    assert sorted(df["kp_id"].unique().to_list()) == kpcompile.region_ids("lips")
    assert df.height == 24 * 40


def test_landmark_stats_by_camera(mixed_dataset: Path, compiled_sets: Path) -> None:
    got = kpcompile.landmark_stats(kpcompile.scan(compiled_sets), by=["camera"]).collect()
    assert got.height == 4 * 468  # camera_00/01 (faces, legacy, documented) + 2 in-cabin names
    groups: dict[tuple[str, int], list[tuple]] = defaultdict(list)
    for _dp, cam, r in _source_rows(mixed_dataset, compiled_sets):
        groups[(cam, r[0])].append(r)
    for row in got.filter(pl.col("kp_id").is_in([0, 1, 33, 263, 467])).iter_rows(named=True):
        rows = groups[(row["camera"], row["kp_id"])]
        # camera_00/01: 3 faces, 2 legacy, 2 documented; in-cabin cameras: 3 + 2 frames
        assert row["n"] == len(rows) == (7 if row["camera"].startswith("camera_") else 5)
        for i, c in enumerate(["x3", "y3", "z3", "px", "py"], start=1):
            vals = [r[i] for r in rows]
            assert row[f"mean_{c}"] == pytest.approx(statistics.fmean(vals), rel=1e-12, abs=1e-12)
            assert row[f"std_{c}"] == pytest.approx(statistics.stdev(vals), rel=1e-9, abs=1e-12)
        flags = [r[6] for r in rows if r[6] is not None]
        assert row["visible_n"] == len(flags)
        if flags:
            assert row["visible_rate"] == pytest.approx(sum(flags) / len(flags))
        else:  # in-cabin files carry no flag
            assert row["visible_rate"] is None and row["camera"].startswith("media_")


def test_visibility_rate(mixed_dataset: Path, compiled_sets: Path) -> None:
    got = dict(kpcompile.visibility_rate(kpcompile.scan(compiled_sets)).collect().rows())
    flags: dict[int, list[bool]] = defaultdict(list)
    for _dp, _cam, r in _source_rows(mixed_dataset, compiled_sets):
        if r[6] is not None:
            flags[r[0]].append(r[6])
    assert got == pytest.approx({k: sum(v) / len(v) for k, v in flags.items()})
    assert 0 < min(got.values()) < max(got.values()) <= 1


@pytest.mark.parametrize(
    ("normalizer", "space"), [("inter_ocular", "2d"), ("bbox", "2d"), ("inter_ocular", "3d")]
)
def test_nme_against_numpy(
    mixed_dataset: Path, compiled_sets: Path, normalizer: str, space: str
) -> None:
    truth = kpcompile.read(compiled_sets)
    rng = np.random.default_rng(0)
    cols = ["px", "py"] if space == "2d" else ["x3", "y3", "z3"]
    scale = 2.0 if space == "2d" else 0.002
    preds = truth.with_columns(pl.col(c) + rng.normal(0, scale, truth.height) for c in cols)
    preds = preds.filter(pl.col("kp_id") != 5)  # a missing prediction is left out of the mean
    got = kpcompile.nme(
        preds, kpcompile.scan(compiled_sets), normalizer=normalizer, space=space
    ).collect()
    assert got.height == 24
    p = {(r["datapoint"], r["camera"], r["kp_id"]): r for r in preds.iter_rows(named=True)}
    for row in got.iter_rows(named=True):
        f = kpcompile.read(compiled_sets, "files").filter(
            pl.col("datapoint") == row["datapoint"], pl.col("camera") == row["camera"]
        )["path"][0]
        ref = landmarks_from_json(mixed_dataset / f)
        idx = [1, 2, 3] if space == "3d" else [4, 5]
        errs = [
            math.dist(
                [r[i] for i in idx], [p[(row["datapoint"], row["camera"], r[0])][c] for c in cols]
            )
            for r in ref
            if r[0] != 5
        ]
        if normalizer == "inter_ocular":
            norm = math.dist([ref[33][i] for i in idx], [ref[263][i] for i in idx])
        else:
            xs, ys = [r[4] for r in ref], [r[5] for r in ref]
            norm = math.sqrt((max(xs) - min(xs)) * (max(ys) - min(ys)))
        assert row["n"] == 467
        assert row["normalizer"] == pytest.approx(norm, rel=1e-12)
        assert row["nme"] == pytest.approx(statistics.fmean(errs) / norm, rel=1e-9)


def test_nme_normalizer_is_required_and_checked(compiled_sets: Path) -> None:
    kp = kpcompile.scan(compiled_sets)
    with pytest.raises(TypeError):
        kpcompile.nme(kp, kp)  # type: ignore[call-arg]
    with pytest.raises(kpcompile.QueryError, match="normalizer must be one of inter_ocular, bbox"):
        kpcompile.nme(kp, kp, normalizer="iod")
    with pytest.raises(kpcompile.QueryError, match="bbox normalizer is defined on 2D"):
        kpcompile.nme(kp, kp, normalizer="bbox", space="3d")
    perfect = kpcompile.nme(kp, kp, normalizer="inter_ocular").collect()
    assert (perfect["nme"] == 0).all()


@pytest.mark.parametrize(("space", "normalizer"), [("2d", "bbox"), ("3d", "inter_ocular")])
def test_nme_of_numpy_predictions_with_their_index(
    compiled_sets: Path, space: str, normalizer: str
) -> None:
    t = kpcompile.tensors(kpcompile.scan(compiled_sets))
    rng = np.random.default_rng(1)
    true = t.pixels if space == "2d" else t.xyz
    arr = true + rng.normal(0, 0.01, true.shape)
    cols = ["px", "py"] if space == "2d" else ["x3", "y3", "z3"]
    frame = t.index.select(
        pl.all().repeat_by(468).explode(), kp_id=pl.lit(np.tile(t.ids, len(t)))
    ).with_columns(pl.Series(c, arr[..., i].ravel()) for i, c in enumerate(cols))
    truth = kpcompile.scan(compiled_sets)
    want = kpcompile.nme(frame, truth, normalizer=normalizer, space=space).collect()
    got = kpcompile.nme(arr, truth, index=t.index, normalizer=normalizer, space=space).collect()
    assert got.height == 24 and got["n"].to_list() == [468] * 24
    assert got.drop("nme", "mean_error").equals(want.drop("nme", "mean_error"))
    assert got["nme"].to_numpy() == pytest.approx(want["nme"].to_numpy(), rel=1e-12)
    # a region's tensors: the ids come with them
    lips = kpcompile.tensors(kpcompile.filter_region(truth, "lips"))
    part = kpcompile.nme(
        lips.pixels, truth, index=lips.index, ids=lips.ids, normalizer="inter_ocular"
    ).collect()
    assert part["n"].to_list() == [40] * 24 and (part["nme"] == 0).all()


def test_nme_refuses_numpy_predictions_it_cannot_place(compiled_sets: Path) -> None:
    t = kpcompile.tensors(kpcompile.scan(compiled_sets))
    truth = kpcompile.scan(compiled_sets)
    cases = [
        (
            t.pixels,
            {},
            "numpy predictions need index=, a frame of datapoint, camera naming each of their 24 rows (e.g. kpcompile.tensors(...).index)",
        ),
        (
            t.pixels,
            {"index": t.index.head(3)},
            "index has 3 rows but predictions hold 24 files (shape (24, 468, 2))",
        ),
        (t.pixels, {"index": t.index.select("datapoint")}, "index lacks column(s) camera"),
        (
            t.xyz,
            {"index": t.index},
            "predictions of shape (24, 468, 3) hold 3 coordinates per landmark; space='2d' needs 2 (px, py)",
        ),
        (
            t.pixels[:, :, 0],
            {"index": t.index},
            "numpy predictions must have shape (N, K, 2) for space='2d'; got shape (24, 468)",
        ),
        (
            t.pixels[:, :40],
            {"index": t.index},
            "predictions hold 40 landmarks per file, not 468: pass ids=, the K landmark ids along axis 1 (e.g. kpcompile.tensors(...).ids)",
        ),
        (
            t.pixels,
            {"index": t.index, "ids": [1, 2]},
            "ids has 2 landmark ids but predictions hold 468 per file",
        ),
    ]
    for arr, kwargs, message in cases:
        with pytest.raises(kpcompile.QueryError) as info:
            kpcompile.nme(arr, truth, normalizer="bbox", **kwargs)
        assert str(info.value) == message
    with pytest.raises(kpcompile.QueryError, match="index= and ids= go with numpy predictions"):
        kpcompile.nme(truth, truth, normalizer="bbox", index=t.index)


def test_nme_never_leaves_files_out_silently(compiled_sets: Path) -> None:
    truth = kpcompile.read(compiled_sets)
    one = truth.filter(
        pl.col("datapoint") == "faces/datapoint_00001", pl.col("camera") == "camera_00"
    )
    with pytest.raises(kpcompile.QueryError) as info:
        kpcompile.nme(one, truth, normalizer="inter_ocular")
    assert str(info.value) == (
        "predictions lack 23 of the 24 files of the truth (documented/datapoint_00001 camera_00, "
        "documented/datapoint_00001 camera_01, documented/datapoint_00002 camera_00 and 20 more); "
        "filter the truth to the predicted files, or pass missing='skip' to leave them out"
    )
    got = kpcompile.nme(one, truth, normalizer="inter_ocular", missing="skip").collect()
    assert got.select("datapoint", "camera").rows() == [("faces/datapoint_00001", "camera_00")]
    assert got["nme"][0] == 0
    extra = truth.with_columns(
        pl.when(pl.col("datapoint") == "faces/datapoint_00002")
        .then(pl.lit("faces/datapoint_00099"))
        .otherwise(pl.col("datapoint"))
        .alias("datapoint")
    )
    with pytest.raises(kpcompile.QueryError) as info:
        kpcompile.nme(extra, truth, normalizer="bbox")
    assert str(info.value) == (
        "predictions lack 2 of the 24 files of the truth (faces/datapoint_00002 camera_00, "
        "faces/datapoint_00002 camera_01); predictions hold 2 files the truth lacks "
        "(faces/datapoint_00099 camera_00, faces/datapoint_00099 camera_01); "
        "filter the truth to the predicted files, or pass missing='skip' to leave them out"
    )
    assert kpcompile.nme(extra, truth, normalizer="bbox", missing="skip").collect().height == 22
    with pytest.raises(
        kpcompile.QueryError, match="missing must be one of error, skip; got 'drop'"
    ):
        kpcompile.nme(truth, truth, normalizer="bbox", missing="drop")


def test_nme_says_when_the_truth_cannot_normalize(compiled_sets: Path) -> None:
    lips = kpcompile.filter_region(kpcompile.read(compiled_sets), "lips")
    with pytest.raises(kpcompile.QueryError) as info:
        kpcompile.nme(lips, lips, normalizer="inter_ocular")
    assert str(info.value).startswith(
        "the truth lacks landmark 33 or 263 (the inter_ocular normalizer) in 24 of its 24 files "
        "(documented/datapoint_00001 camera_00, "
    )
    assert kpcompile.nme(lips, lips, normalizer="bbox").collect().height == 24


def test_inconsistent_3d(mixed_dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "ds"
    shutil.copytree(mixed_dataset / "faces", data)
    kpcompile.build(data, tmp_path / "out", workers=1)
    assert kpcompile.inconsistent_3d(kpcompile.scan(tmp_path / "out")).collect().height == 0
    f = data / "datapoint_00002" / "camera_01" / "key_points" / "face_dense_key_points.json"
    doc = json.loads(f.read_text())
    doc["face"]["dense"]["7"]["global_3d"]["y"] += 0.001
    doc["face"]["dense"]["9"]["global_3d"]["z"] += 1e-12
    f.write_text(json.dumps(doc, indent=3))
    kpcompile.build(data, tmp_path / "out", workers=1)
    got = kpcompile.inconsistent_3d(kpcompile.scan(tmp_path / "out")).collect()
    assert got["datapoint"].to_list() == ["datapoint_00002"]
    assert got["landmarks"][0] == 2 and got["cameras"][0] == 2
    assert got["max_deviation"][0] == pytest.approx(0.001, rel=1e-6)
    tolerant = kpcompile.inconsistent_3d(kpcompile.scan(tmp_path / "out"), tolerance=1e-9).collect()
    assert tolerant["landmarks"].to_list() == [1]


@pytest.mark.parametrize(
    ("space", "normalizer"), [("2d", "bbox"), ("2d", "inter_ocular"), ("3d", "inter_ocular")]
)
def test_nme_of_whole_files_in_order_equals_the_join(
    compiled_sets: Path, space: str, normalizer: str
) -> None:
    # predictions stored as whole files of 468 rows in kp_id order are aligned file by
    # file; shuffled rows take the general join: both give the same answer
    truth = kpcompile.read(compiled_sets)
    rng = np.random.default_rng(2)
    cols = ["px", "py"] if space == "2d" else ["x3", "y3", "z3"]
    preds = truth.with_columns(pl.col(c) + rng.normal(0, 0.5, truth.height) for c in cols)
    shuffled = preds.sample(fraction=1.0, shuffle=True, seed=3)
    scan = kpcompile.scan(compiled_sets)
    got = kpcompile.nme(preds, scan, normalizer=normalizer, space=space).collect()
    want = kpcompile.nme(shuffled, scan, normalizer=normalizer, space=space).collect()
    assert got.height == 24
    _same_nme(got, want)
    # a file lacking, or held twice, or a null prediction: still the join's answer
    one = ("faces/datapoint_00001", "camera_00")
    lacking = preds.filter((pl.col("datapoint") != one[0]) | (pl.col("camera") != one[1]))
    skip = kpcompile.nme(lacking, scan, normalizer=normalizer, space=space, missing="skip")
    _same_nme(
        skip.collect(),
        got.filter((pl.col("datapoint") != one[0]) | (pl.col("camera") != one[1])),
    )
    with pytest.raises(kpcompile.QueryError, match="predictions lack 1 of the 24 files"):
        kpcompile.nme(lacking, scan, normalizer=normalizer, space=space)
    twice = pl.concat([preds, preds.head(468)])
    doubled = kpcompile.nme(twice, scan, normalizer=normalizer, space=space).collect()
    assert doubled.filter(n=936).height == 1
    holed = preds.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col(cols[0])).alias(cols[0])
    )
    assert (
        kpcompile.nme(holed, scan, normalizer=normalizer, space=space).collect()["n"].sum()
        == truth.height
    )


def _same_nme(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.schema == want.schema
    assert got.select("datapoint", "camera", "n").equals(want.select("datapoint", "camera", "n"))
    for c in ("mean_error", "normalizer", "nme"):
        assert got[c].to_numpy() == pytest.approx(want[c].to_numpy(), rel=1e-12)
