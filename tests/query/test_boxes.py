"""Face boxes against plain Python over the snapshot's rows; the inside share from cameras."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

import kpcompile


def _by_file(df: pl.DataFrame) -> dict[tuple[str, str], list[dict]]:
    files: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in df.iter_rows(named=True):
        files[(row["datapoint"], row["camera"])].append(row)
    return files


@pytest.mark.parametrize("visible_only", [True, False])
def test_boxes_equal_plain_python(compiled_sets: Path, visible_only: bool) -> None:
    got = kpcompile.bboxes(compiled_sets, visible_only=visible_only, pixel_order="xy").collect()
    assert got.columns == [
        *("datapoint", "camera", "x_min", "y_min", "x_max", "y_max", "n", "inside"),
    ]
    files = _by_file(kpcompile.read(compiled_sets))
    sizes = {
        (r["datapoint"], r["camera"]): (r["width"], r["height"])
        for r in kpcompile.read(compiled_sets, "cameras").iter_rows(named=True)
    }
    assert got.select("datapoint", "camera").rows() == sorted(files)
    for box in got.iter_rows(named=True):
        key = (box["datapoint"], box["camera"])
        rows = files[key]
        kept = [r for r in rows if r["visible"] is not False] if visible_only else rows
        assert box["n"] == len(kept)
        # xy: x is the column (py), y the row (px)
        assert (box["x_min"], box["x_max"]) == (
            min(r["py"] for r in kept),
            max(r["py"] for r in kept),
        )
        assert (box["y_min"], box["y_max"]) == (
            min(r["px"] for r in kept),
            max(r["px"] for r in kept),
        )
        if key not in sizes:
            assert box["inside"] is None
            continue
        width, height = sizes[key]
        inside = [0 <= r["py"] < width and 0 <= r["px"] < height for r in rows]
        assert box["inside"] == pytest.approx(sum(inside) / len(rows))
    flagged = got.filter(pl.col("datapoint").str.starts_with("faces/"))
    assert visible_only == (flagged["n"] < 468).any()  # faces files hide some landmarks


def test_as_stored_names_the_stored_columns_and_frames_take_cameras(compiled_sets: Path) -> None:
    kp = kpcompile.scan(compiled_sets)
    stored = kpcompile.bboxes(kp).collect()
    assert stored.columns == ["datapoint", "camera", "px_min", "py_min", "px_max", "py_max", "n"]
    xy = kpcompile.bboxes(compiled_sets, pixel_order="xy").collect()
    assert stored["px_min"].equals(xy["y_min"].alias("px_min"))
    assert stored["py_max"].equals(xy["x_max"].alias("py_max"))
    cams = kpcompile.scan(compiled_sets, "cameras")
    with_cams = kpcompile.bboxes(kp, pixel_order="xy", cameras=cams).collect()
    assert with_cams.equals(xy)


def test_a_file_with_every_landmark_hidden_keeps_its_row(compiled_sets: Path) -> None:
    df = kpcompile.read(compiled_sets)
    target = pl.col("datapoint") == "faces/datapoint_00001"
    hidden = df.with_columns(pl.when(target).then(False).otherwise("visible").alias("visible"))
    got = kpcompile.bboxes(hidden).collect().filter(target)
    assert got["n"].to_list() == [0, 0] and got["px_min"].null_count() == 2


def test_without_a_cameras_table_there_is_no_inside(mixed_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "compiled"
    kpcompile.build(mixed_dataset, out, workers=1)
    assert "inside" not in kpcompile.bboxes(out).collect().columns
    with pytest.raises(kpcompile.QueryError, match="cameras= goes with a frame"):
        kpcompile.bboxes(out, cameras=kpcompile.scan(out, "files"))
