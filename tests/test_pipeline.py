"""build(): tables, order, exactness, rejected files, all-or-nothing publish."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import kpcompile
from kpcompile import ErrorCode, RejectedFilesError
from kpcompile import manifest as mf
from kpcompile.schema import FILES_SCHEMA, KEYPOINTS_SCHEMA
from tests.conftest import landmarks_from_json
from tests.helpers import manifest_dict


def test_schema_and_counts(mixed_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(mixed_dataset, tmp_path / "out", workers=1)
    assert (r.discovered, r.compiled, r.rejected, r.rows) == (24, 24, 0, 24 * 468)
    kp = kpcompile.read(tmp_path / "out")
    assert kp.columns == ["datapoint", "camera", "kp_id", "x3", "y3", "z3", "px", "py", "visible"]
    assert dict(kp.schema) == {
        "datapoint": pl.String,
        "camera": pl.String,
        "kp_id": pl.Int16,
        "x3": pl.Float64,
        "y3": pl.Float64,
        "z3": pl.Float64,
        "px": pl.Float64,
        "py": pl.Float64,
        "visible": pl.Boolean,
    }
    files = kpcompile.read(tmp_path / "out", "files")
    assert files.height == 24 and (files["status"] == "ok").all()
    assert set(files["layout"]) == {"faces", "in_cabin", "legacy", "documented"}
    assert kpcompile.read(tmp_path / "out", "errors").height == 0
    one = next(iter((Path(r.path) / "keypoints").rglob("*.parquet")))
    assert pq.read_schema(one).remove_metadata() == KEYPOINTS_SCHEMA
    assert (
        pq.read_schema(next(iter((Path(r.path) / "files").glob("*.parquet")))).remove_metadata()
        == FILES_SCHEMA
    )


def test_values_equal_the_json_exactly(mixed_dataset: Path, tmp_path: Path) -> None:
    kpcompile.build(mixed_dataset, tmp_path / "out", workers=2, shard_files=5)
    kp = kpcompile.read(tmp_path / "out")
    files = kpcompile.read(tmp_path / "out", "files")
    for row in files.iter_rows(named=True):
        got = kp.filter(pl.col("datapoint") == row["datapoint"], pl.col("camera") == row["camera"])
        got = got.sort("kp_id")
        ref = landmarks_from_json(mixed_dataset / row["path"])
        assert got["kp_id"].to_list() == list(range(468))
        for i, col in enumerate(["x3", "y3", "z3", "px", "py"], start=1):
            want = np.array([r[i] for r in ref])
            assert np.array_equal(got[col].to_numpy().view(np.int64), want.view(np.int64)), col
        assert got["visible"].to_list() == [r[6] for r in ref]
        assert row["visible"] == (None if ref[0][6] is None else sum(bool(r[6]) for r in ref))


def test_rows_are_sorted_within_each_partition(mixed_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(mixed_dataset, tmp_path / "out", workers=2, shard_files=3)
    for part in sorted((Path(r.path) / "keypoints").iterdir()):
        frames = [pl.read_parquet(f) for f in sorted(part.glob("*.parquet"))]
        df = pl.concat(frames)
        assert df["camera"].n_unique() == 1
        assert df.equals(df.sort("datapoint", "camera", "kp_id"))


def test_unpartitioned_output_is_globally_sorted(mixed_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(
        mixed_dataset, tmp_path / "out", partition_by="none", shard_files=4, workers=2
    )
    assert not any(p.is_dir() for p in (Path(r.path) / "keypoints").iterdir())
    df = kpcompile.read(tmp_path / "out")
    assert df.equals(df.sort("datapoint", "camera", "kp_id"))


def test_same_bytes_whatever_the_worker_count(mixed_dataset: Path, tmp_path: Path) -> None:
    kpcompile.build(mixed_dataset, tmp_path / "a", workers=1, shard_files=5)
    kpcompile.build(mixed_dataset, tmp_path / "b", workers=2, shard_files=5)
    ma = manifest_dict(tmp_path / "a")["tables"]
    mb = manifest_dict(tmp_path / "b")["tables"]
    for t in ma:
        for t in ("keypoints", "errors"):
            assert ma[t] == mb[t]
    # files rows carry mtimes, equal here since both builds read the same files
    assert ma["files"] == mb["files"]


def _break(dataset: Path) -> list[str]:
    bad = [
        "datapoint_00001/camera_00/key_points/face_dense_key_points.json",
        "datapoint_00003/camera_01/key_points/face_dense_key_points.json",
    ]
    (dataset / bad[0]).write_bytes(b'{"version": "9.9.9", "face": {"dense": {}}}')
    text = (dataset / bad[1]).read_text()
    (dataset / bad[1]).write_text(text[: len(text) // 2])
    return bad


def test_rejected_files_fail_the_build_and_publish_nothing(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = kpcompile.build(small_dataset, out, workers=1)
    bad = _break(small_dataset)
    with pytest.raises(RejectedFilesError) as info:
        kpcompile.build(small_dataset, out, workers=2, shard_files=2)
    assert [e[0] for e in info.value.errors] == bad  # all reported, in one run
    assert [e[1] for e in info.value.errors] == ["unsupported_version", "invalid_json"]
    assert str(info.value) == "2 files rejected, more than --max-errors 0; nothing was published"
    assert kpcompile.info(out).snapshot == first.snapshot_id
    assert not any((out / ".staging").iterdir()) if (out / ".staging").exists() else True
    assert kpcompile.read(out).height == 8 * 468


def test_max_errors_publishes_and_keeps_errors(small_dataset: Path, tmp_path: Path) -> None:
    bad = _break(small_dataset)
    r = kpcompile.build(small_dataset, tmp_path / "out", max_errors=2, workers=2, shard_files=3)
    assert (r.discovered, r.compiled, r.rejected, r.rows) == (8, 6, 2, 6 * 468)
    errors = kpcompile.read(tmp_path / "out", "errors")
    assert errors["path"].to_list() == bad
    assert errors["code"].to_list() == [ErrorCode.UNSUPPORTED_VERSION, ErrorCode.INVALID_JSON]
    # the message says what is wrong; the path is in its own column, not repeated
    assert errors["message"][0] == (
        'version "9.9.9" is not supported; supported versions: 2.0.0, 2.0.1'
    )
    files = kpcompile.read(tmp_path / "out", "files")
    # rows of the files table follow the shards, numbered as they close (camera by camera
    # within each top-level prefix): sorted within a shard, not across cameras
    assert sorted(files.filter(pl.col("status") == "rejected")["path"].to_list()) == bad
    # nothing lost: every discovered file is compiled or rejected
    assert files.height == r.compiled + r.rejected


def test_unreadable_and_duplicate_files_are_rejected(small_dataset: Path, tmp_path: Path) -> None:
    (small_dataset / "datapoint_00009/cam/key_points/face_dense_key_points.json").mkdir(
        parents=True
    )
    dup = small_dataset / "datapoint_00002/camera_01/dense_keypoints.json"
    dup.write_bytes(b"{}")
    r = kpcompile.build(small_dataset, tmp_path / "out", max_errors=5, workers=1)
    codes = {e[0]: e[1] for e in r.errors}
    assert codes == {
        "datapoint_00002/camera_01/dense_keypoints.json": "duplicate_camera",
        "datapoint_00009/cam/key_points/face_dense_key_points.json": "unreadable",
    }
    assert r.rows == 8 * 468


def test_too_large_files_are_rejected_unread(small_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(
        small_dataset, tmp_path / "out", max_errors=8, max_file_bytes=1000, workers=1
    )
    assert r.compiled == 0 and {e[1] for e in r.errors} == {"too_large"}
    assert kpcompile.read(tmp_path / "out").height == 0


def test_manifest_describes_the_snapshot(small_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(small_dataset, tmp_path / "out", workers=1)
    m = manifest_dict(tmp_path / "out")
    assert m["snapshot"] == r.snapshot_id and m["tool"]["name"] == "kpcompile"
    assert m["counts"] == {
        "files": 8,
        "compiled": 8,
        "rejected": 0,
        "rows": 8 * 468,
        "visible": m["counts"]["visible"],
        "sets_rejected": 0,
        "datapoints": 4,
        "cameras": 2,
    }
    listed = {f["path"] for t in m["tables"].values() for f in t["files"]}
    on_disk = {str(p.relative_to(r.path)) for p in Path(r.path).rglob("*.parquet")}
    on_disk -= {mf.FILES_LIST, mf.SHARDS_LIST}  # the manifest's own lists
    assert listed == on_disk
    assert m["source"]["bytes"] == sum(
        (small_dataset / p).stat().st_size
        for p in kpcompile.read(tmp_path / "out", "files")["path"]
    )
    assert [c["name"] for c in m["tables"]["keypoints"]["schema"]] == KEYPOINTS_SCHEMA.names


def test_unknown_option_is_named() -> None:
    with pytest.raises(kpcompile.OptionsError, match="unknown build option 'worker'"):
        kpcompile.build("a", "b", worker=2)


@pytest.mark.parametrize("sets", [False, True])
def test_a_build_does_not_import_pandas_or_polars(
    small_dataset: Path, tmp_path: Path, sets: bool
) -> None:
    # importing either costs 0.2 s in every worker process; pyarrow imports pandas
    # on its first pa.array() or Table.from_pydict() call when pandas is installed
    import subprocess
    import sys

    code = (
        "import sys, kpcompile; "
        f"kpcompile.build({str(small_dataset)!r}, {str(tmp_path / 'out')!r}, workers=1, "
        f"max_errors=0, sets={sets}); "
        "print(sorted(m for m in ('pandas', 'polars', 'pyarrow.compute') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# what `kpcompile build` needs is kpcompile's build path, click, msgspec, orjson and
# pyarrow; everything else is start-up time a build does not use (issue 11, item 5)
NOT_FOR_A_BUILD = (
    "pandas",
    "polars",
    "pyarrow.compute",
    "pyarrow.dataset",
    "tqdm",
    "fsspec",
    "kpcompile.query",
    "kpcompile.feeding",
    "kpcompile.reporting",
    "kpcompile.synth",
    "kpcompile.store.history",
    "kpcompile.store.verify",
    "kpcompile.store.retention",
)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_build_command_imports_only_what_it_uses(
    small_dataset: Path, tmp_path: Path, workers: int
) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from kpcompile.cli import cli; "
        f"cli.main(['build', {str(small_dataset)!r}, {str(tmp_path / 'out')!r}, "
        f"'-j', '{workers}', '--no-progress'], standalone_mode=False); "
        f"print(sorted(m for m in {NOT_FOR_A_BUILD!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "published snapshot" in out.stdout


def test_row_groups_bound_what_a_worker_holds(mixed_dataset: Path, tmp_path: Path) -> None:
    one = kpcompile.build(mixed_dataset, tmp_path / "one", workers=1, shard_files=100)
    many = kpcompile.build(
        mixed_dataset, tmp_path / "many", workers=2, shard_files=100, row_group_files=3
    )
    groups = [
        pq.ParquetFile(p).metadata.row_group(i).num_rows
        for p in sorted((Path(many.path) / "keypoints").rglob("*.parquet"))
        for i in range(pq.ParquetFile(p).metadata.num_row_groups)
    ]
    # per camera: 7 files in 3 groups (camera_00, camera_01), 5 in 2 (each in-cabin camera)
    assert max(groups) == 3 * 468 and sum(groups) == 24 * 468 and len(groups) == 10
    assert kpcompile.read(tmp_path / "many").equals(kpcompile.read(tmp_path / "one"))
    assert one.rows == many.rows


@pytest.mark.parametrize("seed", range(20))
def test_tasks_go_out_largest_of_the_window_first(seed: int) -> None:
    """Each task handed out is the largest of the next ``window`` planned (ties by
    index), every task exactly once."""
    import random
    from dataclasses import dataclass
    from typing import Any, cast

    from kpcompile.pipeline import _largest_first

    @dataclass
    class Task:
        index: int
        size: int

    rng = random.Random(seed)
    tasks = [Task(i, rng.randint(1, 20)) for i in range(rng.randint(0, 30))]
    window = rng.randint(1, 6)
    out = list(_largest_first(iter(cast(Any, tasks)), window))
    assert sorted(t.index for t in out) == list(range(len(tasks)))
    pending = list(tasks[: window - 1])
    rest = iter(tasks[window - 1 :])
    for t in out:
        nxt = next(rest, None)
        if nxt is not None:
            pending.append(nxt)
        best = min(pending, key=lambda p: (-p.size, p.index))
        assert t is best
        pending.remove(best)
