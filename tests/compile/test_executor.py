"""executor: a worker killed under a shard is retried (same bytes), repeated deaths fail
the build without publishing, and a retry starts from a clean slate."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile import KpcompileError
from kpcompile.compile.executor import MAX_ATTEMPTS
from kpcompile.compile.worker import ShardTask, remove_outputs
from kpcompile.compile.writer import ParquetSettings
from kpcompile.ingest.folder import FolderSource
from kpcompile.store import open_store
from kpcompile.store.local import LocalStage
from kpcompile.synth import synth
from tests.compile.test_kill import _workers


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("executor") / "dataset"
    synth(root, datapoints=40, cameras=2, layout="faces", seed=21, extras=False)
    return root


def _build_in_thread(source: Path, out: Path, **opts: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(kpcompile.build(source, out, workers=2, **opts))
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def _kill_workers(thread: threading.Thread, times: int) -> int:
    killed = 0
    while thread.is_alive() and killed < times:
        for pid in _workers(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
            break
        time.sleep(0.005)
    return killed


def test_a_killed_worker_is_retried_with_identical_output(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = kpcompile.build(dataset, tmp_path / "ref", workers=1, shard_files=10)
    t, result = _build_in_thread(dataset, tmp_path / "out", shard_files=10)
    with caplog.at_level(logging.WARNING, logger="kpcompile"):
        assert _kill_workers(t, times=1) == 1
        t.join(120)
    r = result[0]
    assert not isinstance(r, BaseException), r
    # the kill lands mid-shard (retried) or, with workers started early, before any shard
    assert "a worker process died" in caplog.text
    assert (r.compiled, r.rows) == (80, 80 * 468)
    assert (
        open_store(tmp_path / "out").manifest().tables
        == open_store(tmp_path / "ref").read_manifest(ref.snapshot_id).tables
    )


def test_workers_dying_again_and_again_fail_without_publishing(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = kpcompile.build(dataset, out, workers=1)
    t, result = _build_in_thread(dataset, out, shard_files=40)
    _kill_workers(t, times=10 * MAX_ATTEMPTS)
    t.join(120)
    exc = result[0]
    assert isinstance(exc, KpcompileError)
    assert f"worker processes died {MAX_ATTEMPTS} times while compiling shard" in str(exc)
    assert str(exc).endswith("nothing was published")
    assert open_store(out).current_id() == first.snapshot_id
    assert open_store(out).list_snapshots() == [first.snapshot_id]
    assert list((out / ".staging").iterdir()) == []


def test_remove_outputs_touches_only_its_shard(tmp_path: Path) -> None:
    names = [
        "keypoints/camera=a/part-00003.parquet",
        "keypoints/camera=b/part-00003.parquet.tmp",
        "files/part-00003.parquet",
        "keypoints/camera=a/part-00030.parquet",
        "files/part-00004.parquet",
        "errors/part-00003.parquet",
    ]
    stage = LocalStage(str(tmp_path), "s")
    base = Path(stage.path)
    for n in names:
        (base / n).parent.mkdir(parents=True, exist_ok=True)
        (base / n).write_bytes(b"x")
    task = ShardTask(3, (), FolderSource(tmp_path), stage, "camera", ParquetSettings(), 1)
    assert remove_outputs(task) == 3
    left = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert left == sorted(names[3:])


def test_a_pool_broken_before_its_first_task_still_runs_every_shard(
    dataset: Path, tmp_path: Path
) -> None:
    """Workers started early (prestart) can die while idle: the pool is then broken
    at the first submit, with no task lost; every shard must still run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from kpcompile.compile.executor import run_local
    from kpcompile.compile.plan import plan
    from kpcompile.ingest import discover, open_source

    source = open_source(dataset)
    files = discover(source)
    stage = open_store(tmp_path / "out").stage("s")
    tasks = [
        ShardTask(i, tuple(s), source, stage, "camera", ParquetSettings(), 1 << 26)
        for i, s in enumerate(plan(files, 10, "camera"))
    ]
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    pool.submit(int).result()
    for proc in list(pool._processes.values()):  # private: the test breaks the pool on purpose
        os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    results = run_local(tasks, 2, lambda r, n: None, pool=pool)
    assert [r.index for r in results] == [t.index for t in tasks]
    assert sum(r.compiled for r in results) == 80
