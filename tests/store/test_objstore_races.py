"""Object storage has no lock: publish, a second publisher and gc, run against each other.

Against moto's S3 server (the ``s3`` fixture). A build's window between uploading its
manifest and its ``CURRENT`` is held open by a store whose ``_make_current`` waits
on a threading event or barrier; the other party runs in a real thread meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile import OutputError
from kpcompile.cli import cli
from kpcompile.store import open_store
from kpcompile.store.base import new_snapshot_id
from kpcompile.store.objstore import ObjectStage, ObjectStore
from kpcompile.store.retention import gc

WAIT = 60.0
"""Seconds a test waits for the other thread before failing."""


class HeldStore(ObjectStore):
    """An ObjectStore that waits, manifest uploaded, before it uploads ``CURRENT``."""

    def __init__(self, url: str, hold: Callable[[], object]) -> None:
        super().__init__(url)
        self.hold = hold
        self.snapshot: str | None = None

    def _make_current(self, stage: ObjectStage) -> None:
        self.snapshot = stage.snapshot
        self.hold()
        super()._make_current(stage)


def _objects(s3: Any, out: str, snapshot: str) -> list[str]:
    prefix = f"{out.removeprefix('s3://')}/snapshots/{snapshot}"
    s3.invalidate_cache()
    return list(s3.find(prefix))


def test_gc_during_a_publish_keeps_the_snapshot_being_published(
    s3: Any, small_dataset: Path
) -> None:
    """gc --keep 0 between a build's manifest and its CURRENT once removed the new
    snapshot: the build said it published, CURRENT named it, info found nothing."""
    out = "s3://bucket/r1/compiled"
    a = kpcompile.build(small_dataset, out, workers=1)
    in_window, go = threading.Event(), threading.Event()
    result: list[kpcompile.GcResult] = []

    def gc_in_the_window() -> None:
        in_window.wait(WAIT)  # the build has uploaded its manifest, not yet CURRENT
        try:
            result.append(gc(out, keep=0))
        finally:
            go.set()  # let the build upload CURRENT

    def hold() -> None:
        in_window.set()
        go.wait(WAIT)

    store = HeldStore(out, hold)
    thread = threading.Thread(target=gc_in_the_window)
    thread.start()
    try:
        b = kpcompile.build(small_dataset, store, workers=1, full=True)
    finally:
        thread.join(WAIT)
    assert result and result[0].current == a.snapshot_id
    assert result[0].kept == [a.snapshot_id, b.snapshot_id] and result[0].removed == []
    assert open_store(out).current_id() == b.snapshot_id
    assert kpcompile.info(out).snapshot == b.snapshot_id
    assert kpcompile.verify(out).ok
    # once it is current, the older one goes
    assert gc(out, keep=0).removed == [a.snapshot_id]
    assert open_store(out).list_snapshots() == [b.snapshot_id]


@pytest.mark.parametrize("first", [False, True], ids=["over-a-snapshot", "first-snapshot"])
def test_two_concurrent_publishers_one_wins_the_other_says_it_lost(
    s3: Any, small_dataset: Path, first: bool
) -> None:
    """Two builds once both said "published" while CURRENT named only one of them
    (possibly the older). Both hold their CURRENT upload until both have reached it."""
    out = f"s3://bucket/r2-{first}/compiled"
    before = None if first else kpcompile.build(small_dataset, out, workers=1).snapshot_id
    both = threading.Barrier(2)
    stores = [HeldStore(out, lambda: both.wait(WAIT)) for _ in range(2)]
    outcomes: list[Any] = [None, None]

    def run(i: int) -> None:
        try:
            outcomes[i] = kpcompile.build(small_dataset, stores[i], workers=1, full=True)
        except OutputError as exc:
            outcomes[i] = exc

    thread = threading.Thread(target=run, args=(1,))
    thread.start()
    run(0)
    thread.join(WAIT)
    won = [o for o in outcomes if isinstance(o, kpcompile.BuildResult)]
    lost = [i for i, o in enumerate(outcomes) if isinstance(o, OutputError)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    winner, loser = won[0].snapshot_id, stores[lost[0]].snapshot
    assert loser is not None and loser != winner
    assert str(outcomes[lost[0]]) == (
        f"snapshot {loser} was not published: another build published snapshot "
        f"{winner} to {out!r} while this one ran, and it stays current; "
        "build again to publish over it"
    )
    assert open_store(out).current_id() == winner
    assert open_store(out).list_snapshots() == sorted(filter(None, [before, winner]))
    assert _objects(s3, out, loser) == []  # nothing left behind
    assert kpcompile.verify(out).ok


def test_a_build_whose_clock_is_behind_the_current_snapshot_is_refused(
    s3: Any, small_dataset: Path
) -> None:
    """gc keeps snapshots newer than CURRENT, which covers a publishing build only if
    its id is newer than the CURRENT it replaces: a build that cannot say so stops."""
    out = "s3://bucket/r3/compiled"
    kpcompile.build(small_dataset, out, workers=1)
    store = open_store(out)
    late = new_snapshot_id(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(OutputError, match=r"is this machine's clock behind\?") as info:
        store.stage(late)
    assert f"cannot build snapshot {late} in {out!r}: its current snapshot " in str(info.value)


def test_gc_on_object_storage_keeps_snapshots_newer_than_current(
    s3: Any, small_dataset: Path
) -> None:
    out = "s3://bucket/r4/compiled"
    a = kpcompile.build(small_dataset, out, workers=1).snapshot_id
    b = kpcompile.build(small_dataset, out, workers=1, full=True).snapshot_id
    s3.pipe_file("bucket/r4/compiled/CURRENT", f"{a}\n".encode())  # rolled back
    r = gc(out, keep=0)
    assert (r.current, r.kept, r.removed) == (a, [a, b], [])
    assert open_store(out).list_snapshots() == [a, b]


def _killed_build(out: str, snapshot: str) -> None:
    """What a build killed before its manifest leaves: uploaded Parquet, no manifest."""
    stage = ObjectStage(out, snapshot)  # as staged when it began (maybe long ago)
    with stage.writing() as folder:
        part = Path(folder, "files", "part-00000.parquet")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"PAR1 not really")


def test_gc_removes_prefixes_left_by_killed_builds_once_stale(s3: Any, small_dataset: Path) -> None:
    """A killed build's prefix has no manifest, so gc never saw it and it stayed forever."""
    out = "s3://bucket/r5/compiled"
    a = kpcompile.build(small_dataset, out, workers=1).snapshot_id
    old = "20200101T000000Z-0000dead"  # started long ago, but written to just now
    _killed_build(out, old)
    r = gc(out, keep=0, stale_after=dt.timedelta(hours=1))
    assert (r.kept, r.removed, r.abandoned) == ([a], [], [])
    assert _objects(s3, out, old) != []
    dry = gc(out, keep=0, stale_after=dt.timedelta(0), dry_run=True)
    assert dry.abandoned == [old] and _objects(s3, out, old) != []
    r = gc(out, keep=0, stale_after=dt.timedelta(0))
    assert (r.kept, r.removed, r.abandoned) == ([a], [], [old])
    assert _objects(s3, out, old) == []
    assert open_store(out).list_snapshots() == [a] and kpcompile.verify(out).ok


def test_gc_cli_reports_abandoned_builds(s3: Any, small_dataset: Path) -> None:
    out = "s3://bucket/r6/compiled"
    a = kpcompile.build(small_dataset, out, workers=1).snapshot_id
    dead = new_snapshot_id()
    _killed_build(out, dead)
    res = CliRunner().invoke(cli, ["gc", out, "--keep", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["abandoned"] == []  # written just now: maybe still running
    res = CliRunner().invoke(cli, ["gc", out, "--keep", "1", "--stale-after", "0"])
    assert res.exit_code == 0, res.output
    assert res.stdout == (
        f"removed abandoned build {dead}\nremoved 0 snapshots (0.0 MB); kept 1, current {a}\n"
    )
    res = CliRunner().invoke(cli, ["gc", out, "--keep", "1", "--stale-after", "-1"])
    assert res.exit_code == 2 and "--stale-after" in res.stderr
