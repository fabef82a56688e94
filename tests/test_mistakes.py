"""Mistakes and surprises a new user meets: each one said clearly, none passing silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from kpcompile.store import open_store

DENSE = "key_points/face_dense_key_points.json"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


# --- a rebuild with nothing changed publishes nothing (item 10) -----------------------


def test_a_rebuild_with_nothing_changed_publishes_nothing(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1)
    b = kpcompile.build(small_dataset, out, workers=1)
    assert b.up_to_date and not a.up_to_date
    assert (b.snapshot_id, b.path, b.compiled) == (a.snapshot_id, a.path, a.compiled)
    assert open_store(out).list_snapshots() == [a.snapshot_id]
    res = run("build", str(small_dataset), str(out), "-j", "1")
    assert (res.exit_code, res.stdout) == (0, f"up to date: snapshot {a.snapshot_id}\n")
    assert open_store(out).list_snapshots() == [a.snapshot_id]
    c = kpcompile.build(small_dataset, out, workers=1, full=True)  # --full still rebuilds
    assert not c.up_to_date and open_store(out).list_snapshots() == [a.snapshot_id, c.snapshot_id]


@pytest.mark.parametrize(
    "change",
    ["touch a file", "remove a file", "max_errors", "shard_files", "set file", "gc'd current"],
)
def test_any_change_publishes_a_new_snapshot(
    small_dataset: Path, tmp_path: Path, change: str
) -> None:
    out = tmp_path / "out"
    opts: dict[str, Any] = {"workers": 1, "sets": True}
    a = kpcompile.build(small_dataset, out, **opts)
    one = small_dataset / "datapoint_00001/camera_00"
    if change == "touch a file":
        (one / DENSE).write_bytes((one / DENSE).read_bytes() + b" ")
    elif change == "remove a file":
        shutil.rmtree(small_dataset / "datapoint_00004")
    elif change == "max_errors":
        opts["max_errors"] = 3
    elif change == "shard_files":
        opts["shard_files"] = 2
    elif change == "set file":
        meta = one / "camera_metadata.json"
        meta.write_text(meta.read_text() + " ")
    else:
        (out / "CURRENT").unlink()
    b = kpcompile.build(small_dataset, out, **opts)
    assert not b.up_to_date and b.snapshot_id != a.snapshot_id


# --- silent mistakes (item 11) ---------------------------------------------------------


def test_scheduler_without_dask_is_a_usage_error(small_dataset: Path, tmp_path: Path) -> None:
    res = run("build", str(small_dataset), str(tmp_path / "o"), "--scheduler", "tcp://h:8786")
    assert res.exit_code == 2
    assert res.stderr == (
        "error: scheduler is only used with executor='dask' (--executor dask); "
        "got executor='local'\n"
    )


def test_out_inside_source_is_refused(small_dataset: Path) -> None:
    res = run("build", str(small_dataset), str(small_dataset / "compiled"))
    assert res.exit_code == 2
    assert "is inside SOURCE" in res.stderr and "choose an output outside" in res.stderr
    assert not (small_dataset / "compiled").exists()


def test_source_inside_out_is_refused(small_dataset: Path, tmp_path: Path) -> None:
    out = small_dataset.parent
    res = run("build", str(small_dataset), str(out))
    assert res.exit_code == 2 and "SOURCE" in res.stderr and "is inside OUT" in res.stderr


def test_out_that_is_not_a_kpcompile_output_is_refused(small_dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    res = run("build", str(small_dataset), str(other))
    assert res.exit_code == 5
    assert res.stderr == (
        f"error: output folder {str(other)!r} is not empty and holds no kpcompile "
        "snapshots; choose a new or empty folder\n"
    )
    assert sorted(p.name for p in other.iterdir()) == ["holiday.jpg"]


def test_a_different_source_into_an_existing_out_says_so(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    a = kpcompile.build(small_dataset, out, workers=1)
    other = tmp_path / "other"
    shutil.copytree(small_dataset, other)
    res = run("build", str(other), str(out), "-j", "1")
    assert res.exit_code == 0
    assert (
        f"note: {str(out)!r} held snapshot {a.snapshot_id} of {str(small_dataset.resolve())!r}; "
        f"the new current snapshot is of {str(other.resolve())!r}"
    ) in res.stdout


def test_synth_into_a_non_empty_folder_needs_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    res = run("synth", str(target), "-n", "1")
    assert res.exit_code == 5
    assert res.stderr == (
        f"error: {str(target)!r} is not empty; synth writes a whole dataset: "
        "choose a new folder, or give --overwrite to replace a dataset synth wrote\n"
    )
    assert (target / "notes.txt").read_text() == "keep me"
    res = run("synth", str(target), "-n", "1", "--overwrite")  # not a dataset synth wrote
    assert res.exit_code == 5 and "holds 'notes.txt', which synth did not write" in res.stderr
    assert (target / "notes.txt").read_text() == "keep me"
    (target / "notes.txt").unlink()
    assert run("synth", str(target), "-n", "1").exit_code == 0
    res = run("synth", str(target), "-n", "2", "--overwrite")  # synth's own: replaced
    assert res.exit_code == 0 and len(list(target.rglob("face_dense_key_points.json"))) == 2


# --- refused builds (item 12) ----------------------------------------------------------


def test_json_on_a_refused_build_prints_every_rejection(
    small_dataset: Path, tmp_path: Path
) -> None:
    bad = [small_dataset / f"datapoint_0000{i}/camera_01/{DENSE}" for i in (1, 3)]
    for p in bad:
        p.write_text("{")
    res = run("build", str(small_dataset), str(tmp_path / "out"), "-j", "1", "--json")
    assert res.exit_code == 3
    data = json.loads(res.stdout)
    assert (data["published"], data["rejected"], data["max_errors"]) == (False, 2, 0)
    assert [e["code"] for e in data["errors"]] == ["invalid_json", "invalid_json"]
    assert [e["path"] for e in data["errors"]] == [str(p.relative_to(small_dataset)) for p in bad]


def test_the_rejections_of_a_refused_build_are_kept(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok = kpcompile.build(small_dataset, out, workers=1)
    bad = small_dataset / f"datapoint_00002/camera_00/{DENSE}"
    bad.write_text("[]")
    with pytest.raises(kpcompile.RejectedFilesError):
        kpcompile.build(small_dataset, out, workers=1)
    last = kpcompile.rejections(out, last=True)
    assert (last.published, last.snapshot) == (False, None)
    assert [(e.path, e.code) for e in last.errors] == [
        ("datapoint_00002/camera_00/" + DENSE, "unknown_layout")
    ]
    res = run("errors", str(out), "--last")
    assert res.exit_code == 0
    assert res.stdout.startswith("the last build was refused")
    assert "rejected [unknown_layout] datapoint_00002/camera_00/" in res.stdout
    current = kpcompile.rejections(out)  # the current snapshot's errors table
    assert (current.published, current.snapshot, current.errors) == (True, ok.snapshot_id, [])
    r = kpcompile.build(small_dataset, out, workers=1, max_errors=1)
    assert kpcompile.rejections(out, last=True).snapshot == r.snapshot_id  # published since


# --- info (item 14) --------------------------------------------------------------------


def test_info_counts_datapoints_cameras_tables_and_rejected_set_files(
    mixed_dataset: Path, tmp_path: Path
) -> None:
    src = tmp_path / "ds"
    shutil.copytree(mixed_dataset, src)
    meta = next(src.rglob("camera_metadata.json"))
    meta.write_text("{")
    kpcompile.build(src, tmp_path / "out", workers=1, sets=True, max_errors=1)
    info = kpcompile.info(tmp_path / "out")
    assert (info.files, info.compiled, info.rejected, info.sets_rejected) == (24, 24, 0, 1)
    assert (info.datapoints, info.cameras) == (12, 4)
    assert set(info.tables) == {
        "keypoints",
        "files",
        "errors",
        "face_standard",
        "head",
        "ears",
        "cameras",
    }
    text = run("info", str(tmp_path / "out")).stdout
    assert "files        24 (24 compiled, 0 rejected; 1 set file rejected)" in text
    assert "datapoints   12 datapoints, 4 cameras" in text


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["synth", "/proc/no/such/dataset"],
            5,
            "error: cannot write the dataset in '/proc/no/such/dataset': ",
        ),
        (["build", "{ds}", "s3://"], 5, "error: cannot use output 's3://': it names no bucket"),
        (["build", "s3://", "{tmp}/o"], 4, "error: source 's3://' names no bucket or folder"),
        (["build", "nope://x/y", "{tmp}/o"], 4, "error: cannot list source 'nope://x/y': "),
        (["build", "{ds}", "nope://x/y"], 5, "error: cannot use 'nope://x/y': Protocol not known"),
        (
            ["query", "{out}", "select * from nope"],
            2,
            "error: invalid query: relation 'nope' was not found\n",
        ),
        (
            ["query", "{out}", "select 1", "-o", "/proc/x.csv"],
            5,
            "error: cannot write '/proc/x.csv': no file can be created in '/proc'\n",
        ),
        (
            ["errors", "{out}", "--last", "--snapshot", "x"],
            2,
            "Error: give --last or --snapshot, not both",
        ),
    ],
)
def test_newcomer_mistakes_are_named_without_a_traceback(
    small_dataset: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "out"
    kpcompile.build(small_dataset, out, workers=1)
    fill = {"ds": str(small_dataset), "tmp": str(tmp_path), "out": str(out)}
    res = run(*(a.format(**fill) for a in args))
    assert res.exit_code == code, res.output
    assert message in res.stderr and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
