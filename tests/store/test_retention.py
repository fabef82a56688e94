"""gc(): keeps the newest N and always the current snapshot; explicit; atomic per snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile import OptionsError, OutputError
from kpcompile.cli import cli
from kpcompile.store import open_store
from kpcompile.store.retention import gc


@pytest.fixture
def four(small_dataset: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    out = tmp_path / "out"
    ids = [kpcompile.build(small_dataset, out, workers=1).snapshot_id for _ in range(4)]
    # ids sort in build order, even for builds within one second
    assert open_store(out).list_snapshots() == ids
    return out, ids


def test_builds_never_remove_snapshots(four: tuple[Path, list[str]]) -> None:
    out, _ = four
    assert len(open_store(out).list_snapshots()) == 4


def test_keep_the_newest(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    r = gc(out, keep=2)
    assert (r.removed, r.kept, r.current) == (ids[:2], ids[2:], ids[3])
    assert r.bytes_freed > 0
    assert open_store(out).list_snapshots() == ids[2:]
    assert list((out / ".staging").iterdir()) == []
    assert kpcompile.scan(out).collect().height == 8 * 468


def test_the_current_snapshot_is_never_removed(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    (out / "CURRENT").write_text(ids[0] + "\n")  # rolled back to the oldest
    r = gc(out, keep=1)
    assert r.kept == [ids[0], ids[3]] and r.removed == ids[1:3]
    assert gc(out, keep=0).removed == [ids[3]]
    assert open_store(out).list_snapshots() == [ids[0]]
    assert kpcompile.scan(out).collect().height == 8 * 468


def test_dry_run_removes_nothing(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    assert gc(out, keep=1, dry_run=True).removed == ids[:3]
    assert open_store(out).list_snapshots() == ids


def test_refusals(four: tuple[Path, list[str]], tmp_path: Path) -> None:
    out, _ = four
    with pytest.raises(OptionsError, match="keep must be 0 or more"):
        gc(out, keep=-1)
    with open_store(out).lock(), pytest.raises(OutputError, match="another build is writing"):
        gc(out, keep=1)
    with pytest.raises(OutputError, match="holds no snapshot"):
        gc(tmp_path / "nothing", keep=1)
    assert not (tmp_path / "nothing").exists()


def test_cli(four: tuple[Path, list[str]]) -> None:
    out, ids = four
    runner = CliRunner()
    res = runner.invoke(cli, ["gc", str(out), "--keep", "3", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"would remove {ids[0]}\nwould remove 1 snapshot (")
    res = runner.invoke(cli, ["gc", str(out), "--keep", "3"])
    assert res.exit_code == 0 and f"kept 3, current {ids[3]}" in res.output
    assert open_store(out).list_snapshots() == ids[1:]
    assert runner.invoke(cli, ["gc", str(out)]).exit_code == 2  # --keep is required
