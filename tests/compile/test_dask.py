"""The Dask executor on a real LocalCluster with two worker processes."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from tests.helpers import manifest_dict

distributed = pytest.importorskip("distributed")


def tables(r: kpcompile.BuildResult) -> dict[str, Any]:
    m = manifest_dict(Path(r.path).parent.parent, r.snapshot_id)
    return {"tables": m["tables"], "shards": m["shards"], "counts": m["counts"]}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


def test_dask_build_equals_local_build(mixed_dataset: Path, tmp_path: Path, cluster: Any) -> None:
    local = kpcompile.build(mixed_dataset, tmp_path / "local", workers=2, shard_files=4)
    remote = kpcompile.build(
        mixed_dataset,
        tmp_path / "dask",
        executor="dask",
        scheduler=cluster.scheduler_address,
        shard_files=4,
    )
    assert remote.shards > 2 and remote.compiled == 24
    assert tables(remote) == tables(local)


def test_dask_runs_streamed_archive_tasks(
    small_dataset: Path, tmp_path: Path, cluster: Any
) -> None:
    archive = tmp_path / "dataset.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(small_dataset, arcname="dataset")
    local = kpcompile.build(archive, tmp_path / "local", workers=1, shard_files=2)
    res = CliRunner().invoke(
        cli,
        [
            "build",
            str(archive),
            str(tmp_path / "dask"),
            "--executor",
            "dask",
            "--scheduler",
            cluster.scheduler_address,
            "--shard-files",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["compiled"] == 8
    manifest = manifest_dict(Path(data["path"]).parent.parent, data["snapshot_id"])
    assert manifest["tables"] == tables(local)["tables"]


def test_unreachable_scheduler_is_a_clear_error(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kpcompile.compile.executor.CONNECT_TIMEOUT", "1s")
    with pytest.raises(kpcompile.KpcompileError, match="cannot reach the Dask scheduler"):
        kpcompile.build(
            small_dataset, tmp_path / "out", executor="dask", scheduler="tcp://127.0.0.1:1"
        )
    assert not (tmp_path / "out" / "CURRENT").exists()


def test_without_a_scheduler_a_local_cluster_runs_the_build(
    small_dataset: Path, tmp_path: Path
) -> None:
    local = kpcompile.build(small_dataset, tmp_path / "local", workers=1, shard_files=3)
    r = kpcompile.build(small_dataset, tmp_path / "dask", executor="dask", workers=2, shard_files=3)
    assert tables(r) == tables(local)
