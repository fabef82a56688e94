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


@pytest.fixture(scope="module", params=["camera", "none"])
def small_groups(
    request: pytest.FixtureRequest, mixed_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``mixed_dataset`` in row groups of 2 files and shards of about 3, by camera or not."""
    out = tmp_path_factory.mktemp("small_groups") / "compiled"
    kpcompile.build(
        mixed_dataset,
        out,
        workers=1,
        shard_files=3,
        row_group_files=2,
        partition_by=request.param,
    )
    return out


def _same(a: kpcompile.Tensors, b: kpcompile.Tensors) -> None:
    assert a.index.equals(b.index) and a.ids.tolist() == b.ids.tolist()
    assert a.xyz.dtype == b.xyz.dtype and a.pixels.dtype == b.pixels.dtype
    for name in ("xyz", "pixels", "visible", "has_visibility"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_a_whole_snapshot_reads_as_its_frame_does(small_groups: Path) -> None:
    frame = kpcompile.read(small_groups)  # the general path: a collected frame
    want = kpcompile.tensors(frame)
    _same(kpcompile.tensors(small_groups), want)  # an output folder: row groups
    _same(kpcompile.tensors(kpcompile.scan(small_groups)), want)  # scan()'s own frame: the same
    assert len(want) == 24 and want.index.rows() == sorted(want.index.rows())


@pytest.mark.parametrize("batch_size", [1, 5, 24, 1000])
def test_iter_tensors_batches_are_exact_and_in_tensors_order(
    small_groups: Path, batch_size: int
) -> None:
    full = kpcompile.tensors(small_groups)
    batches = list(kpcompile.iter_tensors(small_groups, batch_size=batch_size))
    sizes = [len(b) for b in batches]
    assert sizes == [batch_size] * (24 // batch_size) + (
        [24 % batch_size] if 24 % batch_size else []
    )
    assert pl.concat([b.index for b in batches]).equals(full.index)
    for name in ("xyz", "pixels", "visible", "has_visibility"):
        got = np.concatenate([getattr(b, name) for b in batches])
        assert np.array_equal(got, getattr(full, name)), name


def test_dtype_and_pixel_order(compiled_sets: Path) -> None:
    f64 = kpcompile.tensors(compiled_sets)
    for t in (
        kpcompile.tensors(compiled_sets, dtype="float32", pixel_order="xy"),
        kpcompile.tensors(kpcompile.read(compiled_sets), dtype=np.float32, pixel_order="xy"),
        next(
            kpcompile.iter_tensors(compiled_sets, batch_size=100, dtype="float32", pixel_order="xy")
        ),
    ):
        assert t.xyz.dtype == np.float32 and t.pixels.dtype == np.float32
        assert np.array_equal(t.xyz, f64.xyz.astype(np.float32))
        # xy: x is the image column (py), y the row (px)
        assert np.array_equal(t.pixels, f64.pixels[..., ::-1].astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float16"}, "dtype must be one of float32, float64; got 'float16'"),
        ({"dtype": "int64"}, "dtype must be one of float32, float64; got 'int64'"),
        ({"pixel_order": "yx"}, "pixel_order must be one of as_stored, xy; got 'yx'"),
    ],
)
def test_invalid_options_are_query_errors(
    compiled_sets: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(kpcompile.QueryError, match=message):
        kpcompile.tensors(compiled_sets, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(kpcompile.QueryError, match=message):
        list(kpcompile.iter_tensors(compiled_sets, **kwargs))  # type: ignore[arg-type]
