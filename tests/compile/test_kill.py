"""Promise 1, kill anywhere: SIGKILL real builds (main process or one worker) at random moments.

Afterwards the previous snapshot is still current and fully readable, no partial
snapshot is visible, no process of the killed build is left, leftovers are
cleaned by the next build, and a rerun succeeds. A killed worker's shard is
retried, so the published snapshot is byte-identical to an undisturbed build.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile.store import open_store
from kpcompile.store.verify import verify
from kpcompile.synth import synth

SHARD_FILES = 8


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def _descendants(pid: int) -> list[int]:
    out = []
    for c in _children(pid):
        out += [c, *_descendants(c)]
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _workers(main: int) -> list[int]:
    """Live worker processes of a build: forked from it (same command line as the
    build's process: the CLI's case), or fresh interpreters running the worker loop."""
    own = _cmdline(main)
    return [
        c
        for c in _children(main)
        if _alive(c) and (b"kpcompile.compile.serve" in (cmd := _cmdline(c)) or cmd == own)
    ]


def _kill(pid: int) -> bool:
    """SIGKILL ``pid`` if it still runs; False if it had exited (it finished first)."""
    if not _alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.01)
    left = [p for p in pids if _alive(p)]
    for p in left:  # processes this test started; do not leak them
        os.kill(p, signal.SIGKILL)
    return left


@contextlib.contextmanager
def _build_process(cmd: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process this test starts: if the test fails, it is killed with its descendants,
    and its pipes are closed whatever happens (an unclosed pipe would surface as a
    ResourceWarning, an error, in whichever later test the garbage collector runs)."""
    with subprocess.Popen(cmd, **kwargs) as proc:
        try:
            yield proc
        except BaseException:
            for pid in [proc.pid, *_descendants(proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise


@dataclass
class Corpus:
    source: Path
    tables: dict[str, Any]  # the reference manifest's tables (paths, rows, sha256)
    seconds: float  # how long an undisturbed build takes here
    work_seconds: float  # of which workers exist


def _cmd(source: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kpcompile",
        "build",
        str(source),
        str(out),
        "--workers",
        "2",
        "--shard-files",
        str(SHARD_FILES),
        "--no-progress",
        "--full",  # the same source again would otherwise reuse every shard, with no work to kill
    ]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    base = tmp_path_factory.mktemp("kill")
    source = base / "dataset"
    synth(source, datapoints=60, cameras=2, layout="mixed", seed=11, extras=False)
    out = base / "reference"
    started = time.perf_counter()
    with _build_process(_cmd(source, out), stdout=subprocess.DEVNULL) as proc:
        while not _workers(proc.pid) and proc.poll() is None:
            time.sleep(0.002)
        working = time.perf_counter()
        assert proc.wait() == 0
    ended = time.perf_counter()
    return Corpus(
        source, open_store(out).manifest().tables, ended - started, max(0.05, ended - working)
    )


def _check_promises(out: Path, previous: str, corpus: Corpus, checked: set[str]) -> str:
    """What holds after any kill; returns the current snapshot id.

    ``checked``: snapshots verified after an earlier kill. A published snapshot
    is never written again, so each one is verified once (the checks of a long
    run stay linear in its kills); every folder is still checked to be published.
    """
    current = open_store(out).current_id()
    published = open_store(out).list_snapshots()
    assert previous in published
    # no partial snapshot is visible: every folder under snapshots/ is complete and sound
    for entry in (out / "snapshots").iterdir():
        assert entry.name in published, f"snapshot folder without a manifest: {entry}"
        if entry.name in checked:
            continue
        checked.add(entry.name)
        report = verify(out, snapshot=entry.name)
        assert report.ok, report.problems
        assert open_store(out).read_manifest(entry.name).tables == corpus.tables
    assert current == previous or current == published[-1]
    assert kpcompile.scan(out).select("kp_id").collect().height == 120 * 468
    return current


def _rerun(out: Path, corpus: Corpus) -> str:
    r = kpcompile.build(corpus.source, out, workers=1, shard_files=SHARD_FILES, full=True)
    assert list((out / ".staging").iterdir()) == []
    assert not list(out.glob(".CURRENT.*"))
    assert open_store(out).manifest().tables == corpus.tables
    return r.snapshot_id


def _kill_main_trials(corpus: Corpus, out: Path, trials: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    previous = _rerun(out, corpus)
    checked: set[str] = set()
    seen = {"published before the kill": 0, "killed before publishing": 0}
    for _ in range(trials):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        with _build_process(_cmd(corpus.source, out), **quiet) as proc:
            deadline = time.monotonic() + rng.uniform(0, corpus.seconds * 1.1)
            family: set[int] = set()
            while time.monotonic() < deadline and proc.poll() is None:
                family.update(_descendants(proc.pid))
                time.sleep(0.005)
            family.update(_descendants(proc.pid))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert _wait_gone(sorted(family)) == [], "processes of the killed build outlived it"
        current = _check_promises(out, previous, corpus, checked)
        seen[
            "published before the kill" if current != previous else "killed before publishing"
        ] += 1
        previous = _rerun(out, corpus)
    return seen


def _kill_worker_trials(corpus: Corpus, out: Path, trials: int, seed: int) -> dict[str, int]:
    """Kill one worker of each build at a random moment; every build must still succeed.

    The moment is random, so the kill may land mid-shard (the shard is retried),
    on an idle worker, or not at all (the worker had already finished and exited):
    each outcome is counted, none is an error. A kill that surely lands mid-shard
    is :func:`test_a_worker_killed_mid_shard_is_retried`.
    """
    rng = random.Random(seed)
    previous = _rerun(out, corpus)
    checked: set[str] = set()
    seen = {"retried": 0, "idle worker killed": 0, "nothing lost": 0, "worker had exited": 0}
    for _ in range(trials):
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        with _build_process(_cmd(corpus.source, out), **pipes) as proc:
            workers: list[int] = []
            while not workers and proc.poll() is None:
                workers = _workers(proc.pid)
                time.sleep(0.002)
            time.sleep(rng.uniform(0, corpus.work_seconds * 0.7))
            workers = _workers(proc.pid)
            landed = bool(workers) and _kill(rng.choice(workers))
            _, err = proc.communicate(timeout=120)  # raises TimeoutExpired if the build hangs
        # one dead worker is retried: the build succeeds with exactly the reference files
        assert proc.returncode == 0, err.decode()
        current = _check_promises(out, previous, corpus, checked)
        assert current != previous and current == open_store(out).list_snapshots()[-1]
        assert list((out / ".staging").iterdir()) == []
        assert b"Traceback" not in err, err.decode()
        if not landed:
            seen["worker had exited"] += 1
        elif b"retrying shard" in err:
            seen["retried"] += 1
        elif b"died while idle" in err:
            seen["idle worker killed"] += 1
        else:
            seen["nothing lost"] += 1  # killed after its last shard, before the pool stopped it
        previous = current
    return seen


def test_kill_the_build_at_random_moments(corpus: Corpus, tmp_path: Path, trials: Any) -> None:
    seen = _kill_main_trials(corpus, tmp_path / "out", trials=6, seed=1)
    trials(6, "SIGKILLs of the main process " + json.dumps(seen))


def test_kill_a_worker_at_random_moments(corpus: Corpus, tmp_path: Path, trials: Any) -> None:
    seen = _kill_worker_trials(corpus, tmp_path / "out", trials=5, seed=2)
    trials(5, "SIGKILLs of one worker " + json.dumps(seen))


# A build whose worker stops at the start of its first attempt at shard 1 and
# writes its pid where the test sees it: the test kills it there, mid-shard, for
# sure. Workers are forked (no polars, one thread), so they run the patched loop.
_MID_SHARD_DRIVER = """
import os, sys, time
import kpcompile
from kpcompile.compile import serve
marker, real = sys.argv[3], serve.compile_shard
def compile_shard(task):
    if task.index == 1 and not os.path.exists(marker):
        with open(marker + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(600)  # until killed
    return real(task)
serve.compile_shard = compile_shard
r = kpcompile.build(sys.argv[1], sys.argv[2], workers=2, shard_files=8, progress=False)
print(r.compiled)
"""


def test_a_worker_killed_mid_shard_is_retried(corpus: Corpus, tmp_path: Path) -> None:
    marker = tmp_path / "worker-pid"
    cmd = [sys.executable, "-c", _MID_SHARD_DRIVER, str(corpus.source), str(tmp_path / "out")]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with _build_process([*cmd, str(marker)], **pipes) as proc:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert marker.exists(), "the worker never started shard 1"
        pid = int(marker.read_text())
        assert pid in _workers(proc.pid)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "120"
    assert err.decode().count("a worker process died; retrying shard 1") == 1, err.decode()
    assert open_store(tmp_path / "out").manifest().tables == corpus.tables
    assert _wait_gone([pid]) == []


@pytest.mark.slow
def test_kill_the_build_many_times(corpus: Corpus, tmp_path: Path, trials: Any) -> None:
    seen = _kill_main_trials(corpus, tmp_path / "out", trials=60, seed=3)
    trials(60, "SIGKILLs of the main process " + json.dumps(seen))


@pytest.mark.slow
def test_kill_a_worker_many_times(corpus: Corpus, tmp_path: Path, trials: Any) -> None:
    seen = _kill_worker_trials(corpus, tmp_path / "out", trials=40, seed=4)
    trials(40, "SIGKILLs of one worker " + json.dumps(seen))


# A build that dies at each step of writing and publishing (os._exit, which like
# SIGKILL runs no cleanup) covers the short publish window that random kills rarely hit.
_STEP_DRIVER = """
import os, sys, threading
import kpcompile
from kpcompile.store import open_store, local
stop, count, lock = int(sys.argv[3]), [0], threading.Lock()
def step(f):
    def g(*a, **k):
        with lock:  # the snapshot's files are fsynced by several threads at once
            if count[0] == stop:
                os._exit(137)
            count[0] += 1
        return f(*a, **k)
    return g
for name in ("_write_staged", "_write_durably", "_fsync_tree", "_fsync_path", "_fsync_dir"):
    setattr(local, name, step(getattr(local, name)))
os.rename, os.replace = step(os.rename), step(os.replace)
kpcompile.build(sys.argv[1], sys.argv[2], workers=1, shard_files=4, progress=False, full=True)
print(count[0])
"""


def test_die_at_every_step_of_writing_and_publishing(tmp_path: Path, trials: Any) -> None:
    source = tmp_path / "dataset"
    synth(source, datapoints=5, cameras=2, layout="faces", seed=5, extras=False)
    out = tmp_path / "out"
    kpcompile.build(source, out, workers=1, shard_files=4)
    tables = open_store(out).manifest().tables

    def run(stop: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _STEP_DRIVER, str(source), str(out), str(stop)],
            capture_output=True,
            text=True,
        )

    steps = int(run(10**6).stdout)  # how many steps an undisturbed build takes
    assert steps > 10
    published = 0
    for stop in range(steps):
        previous = open_store(out).current_id()
        res = run(stop)
        assert res.returncode == 137, res.stderr
        current = open_store(out).current_id()
        # every snapshot folder is complete and sound; CURRENT is the old one or the new one
        assert (
            sorted(p.name for p in (out / "snapshots").iterdir())
            == open_store(out).list_snapshots()
        )
        for sid in open_store(out).list_snapshots():
            assert verify(out, snapshot=sid).ok
            assert open_store(out).read_manifest(sid).tables == tables
        assert current in (previous, open_store(out).list_snapshots()[-1])
        published += current != previous
        # the next build cleans every leftover and succeeds
        kpcompile.build(source, out, workers=1, shard_files=4, full=True)
        assert list((out / ".staging").iterdir()) == [] and not list(out.glob(".CURRENT.*"))
    assert published == 1  # only a death after replacing CURRENT (its final fsync) published
    trials(steps, "builds stopped dead at each write/fsync/rename step")
