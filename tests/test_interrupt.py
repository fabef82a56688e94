"""Ctrl-C: one line, exit 130, the previous snapshot current, no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
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


def _interrupt(args: list[str], when: float) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Run ``kpcompile ARGS`` in its own process group and press Ctrl-C after ``when`` s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpcompile", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(when)
    family = [proc.pid, *_descendants(proc.pid)]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole foreground group
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err), family


@pytest.mark.parametrize("when", [0.6, 1.2])
def test_ctrl_c_during_a_build(big: Path, tmp_path: Path, when: float) -> None:
    out = tmp_path / "out"
    before = kpcompile.build(big, out, workers=1, shard_files=600).snapshot_id
    args = ["build", str(big), str(out), "--workers", "2", "--full", "--shard-files", "20"]
    res, family = _interrupt(args, when)
    if res.returncode == 0:
        pytest.skip("the build finished before Ctrl-C; the machine is faster than assumed")
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
    spools = set(Path("/tmp").glob("kpcompile-spool-*"))
    res, family = _interrupt(["build", str(archive), str(tmp_path / "out"), "-j", "2"], 0.8)
    if res.returncode == 0:
        pytest.skip("the build finished before Ctrl-C")
    assert (res.returncode, res.stderr) == (130, "interrupted; nothing published\n")
    assert _wait_gone(family) == []
    assert set(Path("/tmp").glob("kpcompile-spool-*")) <= spools  # the spool is gone
    assert not (tmp_path / "out" / "CURRENT").exists()
