"""The .kp namespace: registered by `import kpcompile`, forwarding to the plain functions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import kpcompile


def test_lazy_methods_equal_the_functions(compiled_sets: Path) -> None:
    kp = kpcompile.scan(compiled_sets)
    pairs = [
        (kp.kp.region("lips"), kpcompile.filter_region(kp, "lips")),
        (kp.kp.region(["left_eye"], column="kp_id"), kpcompile.filter_region(kp, "left_eye")),
        (kp.kp.stats(by=["camera"]), kpcompile.landmark_stats(kp, by=["camera"])),
        (kp.kp.visibility_rate(), kpcompile.visibility_rate(kp)),
        (kp.kp.inconsistent_3d(tolerance=1e-9), kpcompile.inconsistent_3d(kp, tolerance=1e-9)),
        (kp.kp.bboxes(pixel_order="xy"), kpcompile.bboxes(kp, pixel_order="xy")),
        (
            kp.kp.nme(kp, normalizer="bbox"),
            kpcompile.nme(kp, kp, normalizer="bbox"),
        ),
    ]
    for method, function in pairs:
        assert isinstance(method, pl.LazyFrame)
        assert_frame_equal(method.collect(), function.collect())
    chained = kp.kp.region("lips").kp.stats().collect()
    assert chained["kp_id"].to_list() == kpcompile.region_ids("lips")


def test_eager_methods_return_data_frames(compiled_sets: Path) -> None:
    df = kpcompile.read(compiled_sets)
    lf = kpcompile.scan(compiled_sets)
    assert_frame_equal(df.kp.region("nose"), lf.kp.region("nose").collect())
    assert_frame_equal(df.kp.stats(by=["camera"]), lf.kp.stats(by=["camera"]).collect())
    assert_frame_equal(df.kp.visibility_rate(), lf.kp.visibility_rate().collect())
    assert_frame_equal(df.kp.inconsistent_3d(), lf.kp.inconsistent_3d().collect())
    assert_frame_equal(df.kp.bboxes(), lf.kp.bboxes().collect())
    assert df.kp.nme(df, normalizer="inter_ocular", space="3d")["nme"].max() == 0.0
    t, want = df.kp.tensors(dtype="float32"), kpcompile.tensors(lf, dtype="float32")
    assert np.array_equal(t.xyz, want.xyz) and t.index.equals(want.index)
    xy = lf.kp.tensors(pixel_order="xy").pixels
    assert np.array_equal(xy, kpcompile.tensors(lf).pixels[..., ::-1])


def test_typed_accessor_is_the_namespace(compiled_sets: Path) -> None:
    lf = kpcompile.scan(compiled_sets)
    assert isinstance(kpcompile.kp(lf), kpcompile.KeypointsLazyFrame)
    assert isinstance(kpcompile.kp(lf.collect()), kpcompile.KeypointsFrame)
    assert isinstance(lf.kp, kpcompile.KeypointsLazyFrame)
    assert kpcompile.kp(lf).region("lips").collect().equals(lf.kp.region("lips").collect())


def test_mistakes_are_query_errors(compiled_sets: Path) -> None:
    with pytest.raises(kpcompile.QueryError, match="unknown region 'mouth'"):
        kpcompile.scan(compiled_sets).kp.region("mouth")
    with pytest.raises(kpcompile.QueryError, match="pixel_order must be one of"):
        kpcompile.read(compiled_sets).kp.bboxes(pixel_order="rc")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "script",
    [
        # polars imported after kpcompile: registered when polars arrives, and not before
        "import sys, kpcompile; assert 'polars' not in sys.modules; "
        "import polars as pl; print(type(pl.LazyFrame({'kp_id': [1]}).kp).__name__)",
        # polars imported first
        "import polars as pl, kpcompile; print(type(pl.DataFrame({'kp_id': [1]}).kp).__name__)",
        # polars first imported by a kpcompile helper
        "import kpcompile; kpcompile.region_ids('lips'); kpcompile.scan; "
        "import polars as pl; print(type(pl.LazyFrame().kp).__name__)",
    ],
)
def test_registered_on_import(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("KeypointsLazyFrame", "KeypointsFrame")
