"""Listing on the cluster (issue 19.2): with ``--executor dask``, the workers list the
prefixes of a source any machine can list, and the result is the local listing exactly.

Real components only: a LocalCluster for the listing itself, then a real ``dask
scheduler`` and two ``dask worker`` processes (no nanny: a killed worker stays dead)
building from the S3 test server, one of them SIGKILLed while it lists.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile.compile.executor import DaskConnection, dask_lister
from kpcompile.compile.plan import PlannedShard, plan_units
from kpcompile.errors import SourceError
from kpcompile.ingest import Source, VirtualSource, open_source
from kpcompile.ingest.discover import LANDMARK_NAMES, SourceFile
from kpcompile.ingest.listing import Listing
from kpcompile.ingest.units import Lister, discover_units, list_here
from kpcompile.synth import synth
from tests.helpers import free_port, manifest_dict

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).parent / "dask"
PREFIXES = 120  # legacy layout: one top-level prefix (environment) per landmark file
URL = "s3://bucket/dasklist/dataset"


@pytest.fixture(scope="module")
def dataset(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A legacy dataset on the S3 test server: 120 prefixes, each a landmark file and extras."""
    root = tmp_path_factory.mktemp("dasklist") / "dataset"
    synth(root, datapoints=PREFIXES, layout="legacy")
    s3.put(str(root), URL.removeprefix("s3://"), recursive=True)
    return URL


@pytest.fixture(scope="module")
def local_build(dataset: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The reference: the dataset built in this process, listed here."""
    return kpcompile.build(dataset, tmp_path_factory.mktemp("local") / "out", shard_files=16)


@pytest.fixture(scope="module")
def connection(s3: Any) -> Iterator[DaskConnection]:
    """A LocalCluster of two processes (started with the S3 server's environment)."""
    with DaskConnection(None, 2) as c:
        yield c


def listings(src: Source, chunks: list[list[str]], lister: Lister) -> list[Listing]:
    return list(lister(src, LANDMARK_NAMES, iter(chunks)))


def columns(lst: Listing) -> tuple[Any, ...]:
    """Everything a listing holds, comparable with ``==``."""
    arrays = (lst.folder, lst.name, lst.sizes, lst.mtimes)
    return (lst.folders.to_pylist(), lst.names, *(a.tolist() for a in arrays))


def units(src: Source, lister: Lister) -> tuple[list[SourceFile], list[PlannedShard]]:
    """The files ``discover_units`` hands out, in order, and the shards planned from them."""
    files = [f for b in discover_units(src, LANDMARK_NAMES, "camera", batch_files=20, lister=lister)
             for f in b.files.take(b.order)]  # fmt: skip
    batches = discover_units(src, LANDMARK_NAMES, "camera", batch_files=20, lister=lister)
    return files, list(plan_units(batches, 4, "camera"))


def assert_same_listing(src: Source, connection: DaskConnection) -> int:
    """The Dask listing of ``src`` equals the local one: per chunk, and as units."""
    prefixes = list(src.prefixes(LANDMARK_NAMES))
    chunks = [[prefixes[0]], prefixes[1:3], prefixes[3:40], [], prefixes[40:]]
    remote = listings(src, chunks, dask_lister(connection))
    local = listings(src, chunks, list_here)
    assert [columns(r) for r in remote] == [columns(lo) for lo in local]
    assert sum(map(len, local)) > 0
    files, shards = units(src, dask_lister(connection))
    assert (files, shards) == units(src, list_here)
    assert len(shards) > 10
    return len(files)


def test_dask_listing_of_a_virtual_source_equals_the_local_listing(
    connection: DaskConnection,
) -> None:
    assert assert_same_listing(VirtualSource(3000, 60), connection) == 3000


def test_dask_listing_of_an_s3_dataset_equals_the_local_listing(
    dataset: str, connection: DaskConnection
) -> None:
    with open_source(dataset) as src:
        assert src.listable_anywhere
        assert assert_same_listing(src, connection) == PREFIXES


def test_a_folder_is_listed_by_the_coordinator(tmp_path: Path) -> None:
    """Only the coordinator surely sees a local folder; it keeps listing it."""
    synth(tmp_path / "ds", datapoints=3)
    with open_source(tmp_path / "ds") as src:
        assert not src.listable_anywhere


# --- a real scheduler and two worker processes ---------------------------------------------


@contextlib.contextmanager
def spawned_cluster(**env: str) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and two ``dask worker`` processes on loopback: the scheduler's
    address and the worker processes by address. Everything is killed on the way out."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    environ = {
        **os.environ,
        **env,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    common: dict[str, Any] = {"env": environ, "cwd": REPO, **quiet}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **common)]  # fmt: skip
    try:
        for name in ("w0", "w1"):
            procs.append(subprocess.Popen([DASK, "worker", address, "--name", name, "--nthreads",
                "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], **common))  # fmt: skip
        with distributed.Client(address, timeout="30s") as observer:
            observer.wait_for_workers(2, timeout=60)
            workers = observer.scheduler_info()["workers"]
            by_name = {p.args[4]: p for p in procs[1:]}
            yield address, {a: by_name[w["name"]] for a, w in workers.items()}
    finally:
        for p in procs:
            p.kill()
            p.wait()


class KillWhileListing(threading.Thread):
    """Watches the scheduler; SIGKILLs the first worker seen running a listing task."""

    def __init__(self, address: str, workers: dict[str, subprocess.Popen[bytes]]) -> None:
        super().__init__(daemon=True)
        self.address, self.pids = address, {a: p.pid for a, p in workers.items()}
        self.killed: tuple[str, str] | None = None  # (worker address, its listing task)
        self.stop = threading.Event()

    def run(self) -> None:
        with distributed.Client(self.address, timeout="30s") as observer:
            while not self.stop.is_set() and self.killed is None:
                for worker, keys in observer.processing().items():
                    listing = [k for k in keys if str(k).startswith("list_prefixes-")]
                    if listing and worker in self.pids:
                        os.kill(self.pids[worker], signal.SIGKILL)
                        self.killed = (worker, str(listing[0]))
                        return
                time.sleep(0.01)


def tasks_run(address: str) -> dict[str, int]:
    """Tasks the scheduler saw finish, per function (its task prefixes count the tasks
    that entered each state, forgotten ones too)."""

    def count(dask_scheduler: Any) -> dict[str, int]:
        return {n: t.state_counts["memory"] for n, t in dask_scheduler.task_prefixes.items()}

    with distributed.Client(address, timeout="30s") as observer:
        counts: dict[str, int] = observer.run_on_scheduler(count)
        return counts


def data_files(r: kpcompile.BuildResult) -> dict[str, bytes]:
    root = Path(r.path)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def manifest_lists(r: kpcompile.BuildResult) -> dict[str, Any]:
    m = manifest_dict(Path(r.path).parent.parent, r.snapshot_id)
    return {k: m[k] for k in ("tables", "shards", "counts", "inputs", "source")}


def dask_build(dataset: str, out: Path, address: str) -> kpcompile.BuildResult:
    return kpcompile.build(dataset, out, executor="dask", scheduler=address, shard_files=16)


def test_a_real_cluster_lists_and_builds_what_a_local_build_does(
    dataset: str, local_build: Any, tmp_path: Path
) -> None:
    with spawned_cluster() as (address, _):
        r = dask_build(dataset, tmp_path / "dask", address)
        ran = tasks_run(address)
    assert ran["list_prefixes"] >= 5 and ran["compile_shard"] == r.shards
    assert r.compiled == PREFIXES and r.shards > 4
    assert data_files(r) == data_files(local_build)
    assert manifest_lists(r) == manifest_lists(local_build)


def test_a_worker_killed_while_listing_changes_nothing(
    dataset: str, local_build: Any, tmp_path: Path, slow_s3_listing: list[float]
) -> None:
    with spawned_cluster() as (address, workers):
        killer = KillWhileListing(address, workers)
        killer.start()
        try:
            r = dask_build(dataset, tmp_path / "dask", address)
        finally:
            killer.stop.set()
            killer.join()
        assert killer.killed is not None, "no worker was seen listing"
        assert workers[killer.killed[0]].poll() == -signal.SIGKILL
        assert tasks_run(address)["list_prefixes"] >= 5
    assert r.compiled == PREFIXES
    assert data_files(r) == data_files(local_build)
    assert manifest_lists(r) == manifest_lists(local_build)


def test_listing_killed_beyond_allowed_failures_is_a_clear_source_error(
    dataset: str, tmp_path: Path, slow_s3_listing: list[float]
) -> None:
    """With no failure allowed, the scheduler gives the task up: the build says which
    source and prefixes, and publishes nothing."""
    no_retry = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    with spawned_cluster(**no_retry) as (address, workers):
        killer = KillWhileListing(address, workers)
        killer.start()
        try:
            with pytest.raises(SourceError) as caught:
                dask_build(dataset, tmp_path / "dask", address)
        finally:
            killer.stop.set()
            killer.join()
    assert killer.killed is not None
    message = str(caught.value)
    assert message.startswith(f"cannot list source {dataset!r}: Dask workers died listing prefixes")
    assert "nothing was published" in message
    assert not (tmp_path / "dask" / "CURRENT").exists()
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
