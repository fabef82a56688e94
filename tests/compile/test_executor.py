"""executor and pool: a worker killed under a shard is retried (same bytes), repeated
deaths fail the build without publishing, a retry starts from a clean slate, no
worker outlives a build, and scripts need no ``__main__`` guard."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile import KpcompileError
from kpcompile.compile.executor import MAX_ATTEMPTS
from kpcompile.compile.pool import WorkerPool
from kpcompile.compile.shard import ShardTask, remove_outputs
from kpcompile.compile.writer import ParquetSettings
from kpcompile.ingest.folder import FolderSource
from kpcompile.store import open_store
from kpcompile.store.local import LocalStage
from kpcompile.synth import synth
from tests.compile.test_kill import _alive, _build_process, _children, _kill, _workers


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
    """Kill a worker of the build running in ``thread``, ``times`` times; count the kills
    that landed (a worker may exit on its own between being listed and being killed)."""
    killed = 0
    while thread.is_alive() and killed < times:
        for pid in _workers(os.getpid())[:1]:
            killed += _kill(pid)
        time.sleep(0.005)
    return killed


def _assert_no_process_left() -> None:
    """No worker of this process runs, and no child of it is left unreaped."""
    assert _workers(os.getpid()) == []
    assert [c for c in _children(os.getpid()) if not _alive(c)] == []


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


def _tasks(dataset: Path, out: Path, shard_files: int = 10) -> list[ShardTask]:
    from kpcompile.ingest import discover, open_source
    from tests.oracles import plan

    source = open_source(dataset)
    stage = open_store(out).stage("s")
    return [
        ShardTask(i, tuple(s), source, stage, "camera", ParquetSettings(), 1 << 26)
        for i, s in enumerate(plan(discover(source), shard_files, "camera"))
    ]


@pytest.fixture(params=["forked", "fresh"])
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Workers forked, or fresh interpreters (what the pool picks depends on the
    process: polars loaded or not, other threads or not)."""
    monkeypatch.setattr("kpcompile.compile.pool._forkable", lambda: request.param == "forked")
    return str(request.param)


def test_a_pool_whose_idle_workers_died_still_runs_every_shard(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, start_method: str
) -> None:
    """Workers started early can die while idle: no task is lost, every shard runs."""
    tasks = _tasks(dataset, tmp_path / "out")
    with WorkerPool.start(2) as pool:
        dead = pool.pids
        for pid in dead:
            os.kill(pid, signal.SIGKILL)
        while any(_alive(pid) for pid in dead):
            time.sleep(0.005)
        with caplog.at_level(logging.WARNING, logger="kpcompile"):
            results = pool.run(tasks, lambda r, n: None)
        assert not set(pool.pids) & set(dead)
    assert [r.index for r in results] == [t.index for t in tasks]
    assert sum(r.compiled for r in results) == 80
    assert "a worker process died" in caplog.text
    _assert_no_process_left()


def test_an_error_in_a_worker_is_raised_and_no_worker_is_left(
    dataset: Path, tmp_path: Path, start_method: str
) -> None:
    tasks = _tasks(dataset, tmp_path / "out")
    staging = Path(tasks[0].stage.path)
    shutil.rmtree(staging)
    staging.write_bytes(b"")  # a file where the staging folder should be: workers cannot write
    with WorkerPool.start(2) as pool, pytest.raises(NotADirectoryError) as info:
        pool.run(tasks, lambda r, n: None)
    assert str(info.value.filename).startswith(str(staging))
    assert any("raised in a worker process" in n for n in info.value.__notes__)
    assert pool.pids == []  # killed by run() before it raised, not only when the pool closed
    _assert_no_process_left()


def test_tasks_are_taken_lazily(dataset: Path, tmp_path: Path, start_method: str) -> None:
    """At most 2 x workers tasks are taken before the first result comes back."""
    tasks = _tasks(dataset, tmp_path / "out", shard_files=2)
    taken: list[int] = []
    first_done: list[int] = []

    def feed() -> Any:
        for t in tasks:
            taken.append(t.index)
            yield t

    def done(r: Any, n: int) -> None:
        if not first_done:
            first_done.append(len(taken))

    with WorkerPool.start(2) as pool:
        results = pool.run(feed(), done)
    assert len(results) == len(tasks) > 20
    assert first_done[0] <= 2 * 2 + 1  # in flight and ready, plus the one being pulled
    _assert_no_process_left()


@pytest.mark.parametrize("workers", [1, 2])
def test_no_process_is_left_after_a_build(dataset: Path, tmp_path: Path, workers: int) -> None:
    kpcompile.build(dataset, tmp_path / "out", workers=workers, shard_files=10)
    _assert_no_process_left()
    with pytest.raises(KpcompileError):
        kpcompile.build(dataset, tmp_path / "out", workers=workers, max_errors=-1)
    _assert_no_process_left()


_UNGUARDED = """
{imports}
import kpcompile

r = kpcompile.build({source!r}, {out!r}, workers=2, shard_files=10, progress=False)
print("built", r.compiled)
"""


@pytest.mark.parametrize("imports", ["import polars", "import json"])
def test_a_script_without_a_main_guard_builds_once(
    dataset: Path, tmp_path: Path, imports: str
) -> None:
    """Workers never run the caller's script again: forked ones, and fresh interpreters
    (what the pool starts when polars is loaded)."""
    script = tmp_path / "script.py"
    out = str(tmp_path / "out")
    script.write_text(_UNGUARDED.format(imports=imports, source=str(dataset), out=out))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "built 80\n"
    assert res.stderr == ""
    assert len(open_store(tmp_path / "out").list_snapshots()) == 1


def test_ctrl_c_stops_the_build_and_its_workers_quietly(dataset: Path, tmp_path: Path) -> None:
    """SIGINT to the whole process group (what Ctrl-C does): workers ignore it, the
    build stops, kills its workers, and only the coordinator reports it."""
    cmd = [sys.executable, "-m", "kpcompile", "build", str(dataset), str(tmp_path / "out")]
    args = [*cmd, "--workers", "2", "--shard-files", "1", "--no-progress"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with _build_process(args, start_new_session=True, **pipes) as proc:
        while not list((tmp_path / "out").glob(".staging/*/files/part-*.parquet")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
        family = _workers(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.decode() == "interrupted; nothing published\n"  # no traceback from anyone
    assert family and not any(_alive(p) for p in family)
    assert not (tmp_path / "out" / "CURRENT").exists()


_SIGINT_STORM = """
import pathlib, signal, sys
{imports}
import kpcompile

caught = []
signal.signal(signal.SIGINT, lambda *_: caught.append(1))  # the coordinator survives them
pathlib.Path(sys.argv[1], "ready").touch()
r = kpcompile.build({source!r}, {out!r}, workers=2, shard_files=5, progress=False)
pathlib.Path(sys.argv[1], "done").touch()
print("built", r.compiled, "interrupts", bool(caught))
"""


@pytest.mark.parametrize("imports", ["import polars", "import json"])
def test_workers_ignore_sigint_from_their_first_instruction(
    dataset: Path, tmp_path: Path, imports: str
) -> None:
    """SIGINT to the process group again and again while workers start (a fresh
    interpreter takes a while to reach its own code on a loaded machine): no worker
    dies of it, prints a traceback, or needs a retry."""
    script = tmp_path / "storm.py"
    out = str(tmp_path / "out")
    script.write_text(_SIGINT_STORM.format(imports=imports, source=str(dataset), out=out))
    cmd = [sys.executable, str(script), str(tmp_path)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with _build_process(cmd, start_new_session=True, **pipes) as proc:
        while not (tmp_path / "ready").exists():  # the coordinator's handler is set
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.002)
        while not (tmp_path / "done").exists() and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.003)
        out_text, err = proc.communicate(timeout=120)
    assert err.decode() == ""
    assert (proc.returncode, out_text.decode()) == (0, "built 80 interrupts True\n")
