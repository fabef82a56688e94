"""tensors() and iter_tensors() equal the JSON, reshaped without loops; batches cover the snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import kpcompile
from tests.conftest import landmarks_from_json


def test_tensors_equal_the_json(mixed_dataset: Path, compiled_sets: Path) -> None:
    t = kpcompile.tensors(kpcompile.scan(compiled_sets))
    assert t.xyz.shape == (24, 468, 3) and t.pixels.shape == (24, 468, 2)
    assert t.visible.shape == (24, 468) and t.visible.dtype == np.bool_
    assert t.index.columns == ["datapoint", "camera"] and len(t) == 24
    assert t.ids.tolist() == list(range(468))
    paths = dict(
        ((f["datapoint"], f["camera"]), f["path"])
        for f in kpcompile.read(compiled_sets, "files").iter_rows(named=True)
    )
    assert t.index.rows() == sorted(paths)
    for n, key in enumerate(t.index.rows()):
        ref = landmarks_from_json(mixed_dataset / paths[key])
        assert np.array_equal(t.xyz[n], np.array([r[1:4] for r in ref]))
        assert np.array_equal(t.pixels[n], np.array([r[4:6] for r in ref]))
        has = ref[0][6] is not None
        assert t.has_visibility[n] == has
        assert t.visible[n].tolist() == ([bool(r[6]) for r in ref] if has else [False] * 468)


def test_region_tensors(compiled_sets: Path) -> None:
    full = kpcompile.tensors(kpcompile.scan(compiled_sets))
    eyes = kpcompile.tensors(kpcompile.filter_region(kpcompile.scan(compiled_sets), "left_eye"))
    ids = kpcompile.region_ids("left_eye")
    assert eyes.xyz.shape == (24, 16, 3) and eyes.ids.tolist() == ids
    assert np.array_equal(eyes.xyz, full.xyz[:, ids])


def test_ragged_frame_is_refused(compiled_sets: Path) -> None:
    kp = kpcompile.scan(compiled_sets)
    ragged = kp.filter(~((pl.col("datapoint") == "faces/datapoint_00001") & (pl.col("kp_id") == 3)))
    with pytest.raises(kpcompile.QueryError, match="different numbers of landmarks"):
        kpcompile.tensors(ragged)
    swapped = kp.filter(
        pl.when(pl.col("datapoint") == "faces/datapoint_00001")
        .then(pl.col("kp_id") != 3)
        .otherwise(pl.col("kp_id") != 4)
    )
    with pytest.raises(kpcompile.QueryError, match="different landmark ids"):
        kpcompile.tensors(swapped)


@pytest.mark.parametrize("batch_size", [1, 5, 1000])
def test_iter_tensors_covers_the_snapshot(compiled_sets: Path, batch_size: int) -> None:
    full = kpcompile.tensors(kpcompile.scan(compiled_sets))
    batches = list(kpcompile.iter_tensors(compiled_sets, batch_size=batch_size))
    assert all(len(b) <= batch_size for b in batches)
    index = pl.concat([b.index for b in batches])
    assert sorted(index.rows()) == full.index.rows()
    order = [full.index.rows().index(k) for k in index.rows()]
    assert np.array_equal(np.concatenate([b.xyz for b in batches]), full.xyz[order])
    assert np.array_equal(np.concatenate([b.visible for b in batches]), full.visible[order])


def test_empty_frame(compiled_sets: Path) -> None:
    t = kpcompile.tensors(kpcompile.scan(compiled_sets).filter(pl.col("kp_id") < 0))
    assert len(t) == 0 and t.index.height == 0
