"""The real Datagen exports in ../shared/datagen-samples compile to exactly their JSON values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

import kpcompile
from tests.conftest import landmarks_from_json


def test_every_value_of_every_sample_file(samples: Path, tmp_path: Path) -> None:
    r = kpcompile.build(samples, tmp_path / "out", workers=2, shard_files=3)
    # 7 Faces datapoints, 4 in-cabin frames, 2 legacy environments; nothing rejected
    assert (r.discovered, r.compiled, r.rejected) == (13, 13, 0)
    info = kpcompile.info(tmp_path / "out")
    assert info.layouts == {"faces": 7, "in_cabin": 4, "legacy": 2}
    assert info.versions == {"2.0.0": 7, "none": 6}
    kp = kpcompile.read(tmp_path / "out")
    files = kpcompile.read(tmp_path / "out", "files")
    assert kp.height == 13 * 468
    checked = 0
    for row in files.iter_rows(named=True):
        src = samples / row["path"]
        assert row["bytes"] == src.stat().st_size
        ref = landmarks_from_json(src)
        got = kp.filter(pl.col("datapoint") == row["datapoint"], pl.col("camera") == row["camera"])
        assert got["kp_id"].to_list() == list(range(468))
        for i, col in enumerate(["x3", "y3", "z3", "px", "py"], start=1):
            want = np.array([r[i] for r in ref], dtype=np.float64)
            assert np.array_equal(got[col].to_numpy().view(np.int64), want.view(np.int64)), (
                src,
                col,
            )
        assert got["visible"].to_list() == [r[6] for r in ref]
        checked += 1
    assert checked == 13
    assert set(files["datapoint"]) >= {
        "faces_1/datapoint_00001",
        "hic_in_cabin/scene_00001/frames/001",
        "legacy/environment_00002",
    }


def test_all_key_points_does_not_double_rows(samples: Path, tmp_path: Path) -> None:
    kpcompile.build(samples / "faces_1", tmp_path / "out", workers=1)
    files = kpcompile.read(tmp_path / "out", "files")
    assert files["path"].str.ends_with("face_dense_key_points.json").all()
    assert files.height == 7


def test_real_files_parse_independently_of_the_build(samples: Path) -> None:
    for path in sorted(samples.rglob("*dense*.json")):
        lm = kpcompile.parse(path.read_bytes(), str(path))
        doc = json.loads(path.read_text())
        assert lm.version == doc.get("version")
