"""Ctrl-C: one line, exit 130, the previous snapshot current, no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import kpcompile
from kpcompile.store import open_store
from kpcompile.synth import synth
from tests.compile.test_kill import _descendants, _wait_gone


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupt") / "dataset"
    synth(root, datapoints=300, cameras=2, layout="faces", seed=4, extras=False)
    return root


def _interrupt(
    args: list[str], ready: Callable[[], bool]
) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Run ``kpcompile ARGS`` in its own process group; press Ctrl-C once ``ready()``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpcompile", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    family = [proc.pid, *_descendants(proc.pid)]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole foreground group
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err), family


@pytest.mark.parametrize("shards_done", [1, 5])
def test_ctrl_c_during_a_build(big: Path, tmp_path: Path, shards_done: int) -> None:
    out = tmp_path / "out"
    before = kpcompile.build(big, out, workers=1, shard_files=600).snapshot_id
    args = ["build", str(big), str(out), "--workers", "2", "--full", "--shard-files", "20"]

    def ready() -> bool:
        try:  # staging folders come and go under the walk
            return len(list(out.glob(".staging/*/files/part-*.parquet"))) >= shards_done
        except FileNotFoundError:
            return False

    res, family = _interrupt(args, ready)
    assert (res.returncode, res.stderr, res.stdout) == (130, "interrupted; nothing published\n", "")
    assert len(family) > 1  # workers were running
    assert _wait_gone(family) == []
    assert open_store(out).current_id() == before
    assert open_store(out).list_snapshots() == [before]
    assert not list((out / ".staging").glob("*"))


def test_ctrl_c_while_an_archive_is_spooled(big: Path, tmp_path: Path) -> None:
    archive = tmp_path / "big.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        tf.add(big, arcname="big")
    spools = set(Path(tempfile.gettempdir()).glob("kpcompile-spool-*"))

    def spooling() -> bool:  # a new spool file holds some of the archive's members
        new = set(Path(tempfile.gettempdir()).glob("kpcompile-spool-*")) - spools
        return any(p.stat().st_size > 0 for p in new if p.exists())

    res, family = _interrupt(["build", str(archive), str(tmp_path / "out"), "-j", "2"], spooling)
    assert (res.returncode, res.stderr) == (130, "interrupted; nothing published\n"), res.stderr
    assert _wait_gone(family) == []
    assert set(Path(tempfile.gettempdir()).glob("kpcompile-spool-*")) <= spools  # spool gone
    assert not (tmp_path / "out" / "CURRENT").exists()
