"""Object storage: SOURCE and OUT as s3:// URLs, against a real S3 server on loopback.

The server is moto's standalone server (``ThreadedMotoServer``), spoken to over HTTP
by s3fs; credentials and endpoint come from AWS_* environment variables, as in
production. Builds here use ``workers=1``: local worker processes come from a
forkserver that may have started before these variables were set.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from kpcompile.store import open_store
from tests.helpers import manifest_dict


def manifest(out: str | Path) -> dict[str, Any]:
    return manifest_dict(out)


def test_local_source_to_s3_out_equals_local_out(
    s3: Any, mixed_dataset: Path, tmp_path: Path
) -> None:
    local = kpcompile.build(mixed_dataset, tmp_path / "out", workers=1, shard_files=5)
    r = kpcompile.build(mixed_dataset, "s3://bucket/t1/compiled", workers=1, shard_files=5)
    assert r.path == f"s3://bucket/t1/compiled/snapshots/{r.snapshot_id}"
    m = manifest("s3://bucket/t1/compiled")
    assert m["tables"] == manifest(tmp_path / "out")["tables"]  # same bytes (SHA-256)
    for table in m["tables"].values():  # the uploaded objects are the files the manifest lists
        for f in table["files"]:
            assert (
                s3.size(f"bucket/t1/compiled/snapshots/{r.snapshot_id}/{f['path']}") == f["bytes"]
            )
    assert s3.cat_file("bucket/t1/compiled/CURRENT") == f"{r.snapshot_id}\n".encode()
    got = kpcompile.read("s3://bucket/t1/compiled")
    assert got.equals(kpcompile.read(tmp_path / "out"))
    assert kpcompile.info("s3://bucket/t1/compiled").files == local.discovered


def test_s3_source_and_incremental_s3_out(s3: Any, small_dataset: Path) -> None:
    s3.put(str(small_dataset), "bucket/t2/dataset", recursive=True)
    out = "s3://bucket/t2/compiled"
    a = kpcompile.build("s3://bucket/t2/dataset", out, workers=1, shard_files=2)
    assert (a.compiled, a.rejected) == (8, 0)
    files = kpcompile.read(out, "files")
    assert sorted(files["path"]) == sorted(
        str(p.relative_to(small_dataset)) for p in small_dataset.rglob("face_dense_key_points.json")
    )
    kpcompile.build(small_dataset, small_dataset.parent / "local", workers=1)
    # same rows; the files tables differ in mtime_ns (objects carry their upload time)
    assert kpcompile.read(out).equals(kpcompile.read(small_dataset.parent / "local"))
    assert kpcompile.build("s3://bucket/t2/dataset", out, workers=1, shard_files=2).up_to_date
    b = kpcompile.build("s3://bucket/t2/dataset", out, workers=1, shard_files=2, max_errors=1)
    assert (b.base, b.parsed, b.reused_shards) == (a.snapshot_id, 0, b.shards)
    assert manifest(out)["tables"] == manifest_dict(out, a.snapshot_id)["tables"]
    res = CliRunner().invoke(cli, ["snapshots", out, "--json"])
    assert res.exit_code == 0
    assert {r["snapshot"] for r in json.loads(res.stdout)} == {a.snapshot_id, b.snapshot_id}


def test_archive_in_object_storage(s3: Any, small_dataset: Path, tmp_path: Path) -> None:
    archive = tmp_path / "dataset.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(small_dataset, arcname="dataset")
    s3.put_file(str(archive), "bucket/t3/dataset.tar.gz")
    local = kpcompile.build(archive, tmp_path / "out", workers=1)
    kpcompile.build("s3://bucket/t3/dataset.tar.gz", "s3://bucket/t3/compiled", workers=1)
    assert manifest("s3://bucket/t3/compiled")["tables"] == manifest(tmp_path / "out")["tables"]
    assert local.compiled == 8


def test_failed_build_leaves_no_snapshot_and_current_untouched(
    s3: Any, small_dataset: Path
) -> None:
    out = "s3://bucket/t4/compiled"
    a = kpcompile.build(small_dataset, out, workers=1)
    bad = small_dataset / "datapoint_00001/camera_00/key_points/face_dense_key_points.json"
    bad.write_text("{")
    with pytest.raises(kpcompile.RejectedFilesError):
        kpcompile.build(small_dataset, out, workers=1, full=True)
    assert open_store(out).current_id() == a.snapshot_id
    assert s3.ls("bucket/t4/compiled/snapshots") == [
        f"bucket/t4/compiled/snapshots/{a.snapshot_id}"
    ]


def test_missing_source_and_bucket_errors(s3: Any, small_dataset: Path) -> None:
    with pytest.raises(kpcompile.SourceError, match="'s3://bucket/nothing' does not exist"):
        kpcompile.build("s3://bucket/nothing", "s3://bucket/t5/out", workers=1)
    with pytest.raises(kpcompile.OutputError, match="cannot use output 's3://no-such-bucket/out'"):
        kpcompile.build(small_dataset, "s3://no-such-bucket/out", workers=1)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_every_command_works_on_an_s3_out(s3: Any, small_dataset: Path, tmp_path: Path) -> None:
    """build, info, query, snapshots, diff, verify and gc, each on s3://, through the CLI."""
    out = "s3://bucket/t6/compiled"
    res = _cli("build", str(small_dataset), out, "--workers", "1", "--json")
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)["snapshot_id"]
    changed = small_dataset / "datapoint_00001/camera_00/key_points/face_dense_key_points.json"
    changed.write_bytes(changed.read_bytes() + b"\n")
    res = _cli("build", str(small_dataset), out, "--workers", "1", "--json")
    assert res.exit_code == 0, res.output
    second = json.loads(res.stdout)["snapshot_id"]

    info = json.loads(_cli("info", out, "--json").stdout)
    assert (info["snapshot"], info["files"], info["snapshots"]) == (second, 8, 2)
    assert info["path"] == f"{out}/snapshots/{second}"
    res = _cli("query", out, "SELECT count(*) AS n FROM keypoints", "--format", "csv")
    assert (res.exit_code, res.stdout) == (0, f"n\n{8 * 468}\n")
    listed = json.loads(_cli("snapshots", out, "--json").stdout)
    assert [(s["snapshot"], s["current"]) for s in listed] == [(first, False), (second, True)]
    res = _cli("diff", out, first, second)
    assert res.exit_code == 0 and "~ datapoint_00001 camera_00" in res.stdout
    res = _cli("verify", out, str(small_dataset))
    assert res.exit_code == 0, res.output
    assert f"snapshot {second} verified" in res.stdout
    res = _cli("verify", out, "--snapshot", first, str(small_dataset))
    assert res.exit_code == 6 and "when the snapshot was built" in res.stderr
    res = _cli("gc", out, "--keep", "1", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["removed"] == [first]
    assert open_store(out).list_snapshots() == [second]
    assert not s3.exists(f"bucket/t6/compiled/snapshots/{first}")


def test_verify_finds_damage_on_object_storage(s3: Any, small_dataset: Path) -> None:
    out = "s3://bucket/t7/compiled"
    r = kpcompile.build(small_dataset, out, workers=1)
    assert kpcompile.verify(out).ok
    part = manifest(out)["tables"]["files"]["files"][0]["path"]
    key = f"bucket/t7/compiled/snapshots/{r.snapshot_id}/{part}"
    s3.pipe_file(key, s3.cat_file(key)[:-1] + b"x")
    stray = f"bucket/t7/compiled/snapshots/{r.snapshot_id}/keypoints/stray.parquet"
    s3.pipe_file(stray, b"x")
    problems = kpcompile.verify(out).problems
    assert any(p.startswith(f"files: {part}: sha256 ") for p in problems), problems
    assert "keypoints/stray.parquet: file not listed in the manifest" in problems
    res = _cli("verify", out, "--snapshot", "nope")
    assert res.exit_code == 5 and f"available: {r.snapshot_id}" in res.stderr


def test_a_snapshot_listed_is_a_snapshot_found(s3: Any, small_dataset: Path) -> None:
    """verify s3://… once said a snapshot did not exist while listing it as available."""
    out = "s3://bucket/t8/compiled"
    r = kpcompile.build(small_dataset, out, workers=1)
    for sid in open_store(out).list_snapshots():
        assert kpcompile.verify(out, snapshot=sid).snapshot == sid == r.snapshot_id


def test_object_keys_with_unsafe_names_are_rejected(s3: Any, small_dataset: Path) -> None:
    data = (
        small_dataset / "datapoint_00001/camera_00/key_points/face_dense_key_points.json"
    ).read_bytes()
    good = "ok/dp1/camera/key_points/face_dense_key_points.json"
    bad = [
        "ok/dp4/../../camera=x/key_points/face_dense_key_points.json",
        "ok//dp5/camera/key_points/face_dense_key_points.json",
    ]
    for key in [good, *bad]:
        s3.pipe_file(f"bucket/t9/ds/{key}", data)
    listed = s3.find("bucket/t9/ds")
    unsafe = [k for k in bad if f"bucket/t9/ds/{k}" in listed]  # keys the client kept as written
    r = kpcompile.build("s3://bucket/t9/ds", "s3://bucket/t9/out", workers=1, max_errors=2)
    assert sorted((e.path, e.code) for e in r.errors) == [
        (k, "unsafe_path") for k in sorted(unsafe)
    ]
    assert kpcompile.read("s3://bucket/t9/out")["datapoint"].unique().to_list() == ["ok/dp1"]
    assert unsafe, "the S3 client normalised every key: nothing was tested"


def test_tensors_and_files_of_an_s3_out(s3: Any, small_dataset: Path, tmp_path: Path) -> None:
    out = "s3://bucket/t9/compiled"
    kpcompile.build(small_dataset, out, workers=1, row_group_files=3)
    kpcompile.build(small_dataset, tmp_path / "local", workers=1, row_group_files=3)
    remote, local = kpcompile.tensors(out), kpcompile.tensors(tmp_path / "local")
    assert remote.index.equals(local.index) and (remote.xyz == local.xyz).all()
    batches = list(kpcompile.iter_tensors(out, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 2]
    assert all(f.startswith(f"{out}/snapshots/") for f in kpcompile.files(out))


def test_format_3_lists_on_object_storage(s3: Any, small_dataset: Path) -> None:
    """The head and both Parquet lists are objects; a damaged shard list is named by verify."""
    from kpcompile import manifest as mf

    out = "s3://bucket/t10/compiled"
    r = kpcompile.build(small_dataset, out, workers=1, shard_files=2)
    prefix = f"bucket/t10/compiled/snapshots/{r.snapshot_id}"
    assert s3.exists(f"{prefix}/{mf.FILES_LIST}") and s3.exists(f"{prefix}/{mf.SHARDS_LIST}")
    store = open_store(out)
    head = store.head()
    assert head.format == mf.FORMAT and head.whole is None
    whole = store.manifest()
    assert store.shard_records(head, first=whole.shards[-1].first) == whole.shards[-1:]
    assert kpcompile.sql(out, "SELECT count(*) AS n FROM keypoints")["n"][0] == 8 * 468
    key = f"{prefix}/{mf.SHARDS_LIST}"
    s3.pipe_file(key, s3.cat_file(key)[:-1] + b"x")
    problems = kpcompile.verify(out).problems
    assert len(problems) == 1 and problems[0].startswith(f"{mf.SHARDS_LIST}: sha256 ")
