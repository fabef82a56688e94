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
from kpcompile import snapshot as snap
from kpcompile.executor import MAX_ATTEMPTS
from kpcompile.shard import ShardTask, remove_outputs
from kpcompile.synth import synth
from kpcompile.writer import ParquetSettings
from tests.test_kill import _workers


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
        snap.read_manifest(tmp_path / "out")["tables"]
        == snap.read_manifest(tmp_path / "ref", ref.snapshot_id)["tables"]
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
    assert snap.current_id(out) == first.snapshot_id
    assert snap.list_snapshots(out) == [first.snapshot_id]
    assert list((out / snap.STAGING).iterdir()) == []


def test_remove_outputs_touches_only_its_shard(tmp_path: Path) -> None:
    names = [
        "keypoints/camera=a/part-00003.parquet",
        "keypoints/camera=b/part-00003.parquet.tmp",
        "files/part-00003.parquet",
        "keypoints/camera=a/part-00030.parquet",
        "files/part-00004.parquet",
        "errors/part-00003.parquet",
    ]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    task = ShardTask(3, "/", (), str(tmp_path), "camera", ParquetSettings(), 1)
    assert remove_outputs(task) == 3
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(names[3:])


def test_a_pool_broken_before_its_first_task_still_runs_every_shard(
    dataset: Path, tmp_path: Path
) -> None:
    """Workers started early (prestart) can die while idle: the pool is then broken
    at the first submit, with no task lost; every shard must still run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from kpcompile.build import plan
    from kpcompile.executor import run_local
    from kpcompile.options import BuildOptions
    from kpcompile.sources import discover

    files = discover(dataset)
    opts = BuildOptions(shard_files=10)
    stage = tmp_path / "stage"
    stage.mkdir()
    tasks = [
        ShardTask(i, str(dataset), tuple(s), str(stage), "camera", ParquetSettings(), 1 << 26)
        for i, s in enumerate(plan(files, opts))
    ]
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    pool.submit(int).result()
    for proc in list(pool._processes.values()):  # private: the test breaks the pool on purpose
        os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    results = run_local(tasks, 2, lambda r, n: None, pool=pool)
    assert [r.index for r in results] == [t.index for t in tasks]
    assert sum(r.compiled for r in results) == 80
