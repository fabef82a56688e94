"""The ML readers on object storage: row groups fetched ahead, read as from a folder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kpcompile
from kpcompile.feeding import readahead
from kpcompile.feeding.readahead import ReadAhead
from kpcompile.feeding.rowgroups import Parts

torch = pytest.importorskip("torch")

from kpcompile.torch import KeypointDataset  # noqa: E402


@pytest.fixture(params=["camera", "none"])
def both(
    request: pytest.FixtureRequest, s3: Any, mixed_dataset: Path, tmp_path: Path
) -> Iterator[tuple[Path, str]]:
    """``mixed_dataset`` in row groups of 2 files, built into a folder and into s3://."""
    options: dict[str, Any] = dict(
        workers=1, shard_files=3, row_group_files=2, partition_by=request.param
    )
    local = tmp_path / "compiled"
    kpcompile.build(mixed_dataset, local, **options)
    remote = f"s3://bucket/{request.param}/compiled"
    kpcompile.build(mixed_dataset, remote, **options)
    yield local, remote


@pytest.fixture(params=[readahead.MAX_BYTES, 1])
def budget(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The default read-ahead budget, and one so small a row group at a time goes."""
    monkeypatch.setattr(readahead, "MAX_BYTES", request.param)
    return int(request.param)


def _same(a: kpcompile.Tensors, b: kpcompile.Tensors) -> None:
    assert a.index.equals(b.index) and a.ids.tolist() == b.ids.tolist()
    for name in ("xyz", "pixels", "visible", "has_visibility"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for every ReadAhead.take, whether the bytes were fetched ahead."""
    taken: list[bool] = []
    take = ReadAhead.take

    def counted(self: ReadAhead, key: Any) -> Any:
        held = take(self, key)
        taken.append(held is not None)
        return held

    monkeypatch.setattr(ReadAhead, "take", counted)
    return taken


def test_tensors_from_s3_equal_the_folder_and_are_read_ahead(
    both: tuple[Path, str], budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, remote = both
    taken = _counting(monkeypatch)
    want = kpcompile.tensors(local)
    assert not taken  # a folder is read directly
    got = kpcompile.tensors(remote)
    _same(got, want)
    assert len(want) == 24
    groups = len(Parts(local).row_groups())
    assert len(taken) == 2 * groups  # keys, then the coordinates
    assert sum(taken) >= groups  # most of them fetched ahead (the rest read directly)
    for batch_size in (1, 5, 24):
        mine = list(kpcompile.iter_tensors(remote, batch_size=batch_size, dtype="float32"))
        theirs = list(kpcompile.iter_tensors(local, batch_size=batch_size, dtype="float32"))
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            _same(a, b)


def _batches(ds: KeypointDataset) -> list[dict[str, Any]]:
    return list(ds)


def test_keypoint_dataset_from_s3_equals_the_folder(
    both: tuple[Path, str], budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, remote = both
    options: dict[str, Any] = dict(batch_size=5, shuffle=True, seed=3, shuffle_buffer=4)
    for extra in ({}, {"split": "train", "fractions": (0.5, 0.25, 0.25)}):
        taken = _counting(monkeypatch)
        mine = KeypointDataset(remote, **options, **extra)
        theirs = KeypointDataset(local, **options, **extra)
        assert mine.samples == theirs.samples > 0
        for epoch in (0, 1):
            mine.set_epoch(epoch)
            theirs.set_epoch(epoch)
            a, b = _batches(mine), _batches(theirs)
            assert len(a) == len(b) == len(mine)
            for x, y in zip(a, b, strict=True):
                assert x.keys() == y.keys()
                for k in x:
                    if isinstance(x[k], torch.Tensor):
                        assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k
                    else:
                        assert x[k] == y[k], k
        assert taken and all(taken)  # every read was planned and waited for


def test_read_ahead_stays_within_its_budget() -> None:
    """At most max_requests fetches at once, max_bytes fetched and not taken; in plan order."""
    lock = threading.Lock()
    running, peak, order = [0], [0], []
    blob = bytes(range(256)) * 40

    def fetch(rel: str, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(rel)
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return [blob[a:b] for a, b in spans]

    ahead = ReadAhead(fetch, max_bytes=3000, max_requests=2)
    plan = [((f"f{i}", 0, ("x",)), [(i * 10, i * 10 + 1000)]) for i in range(10)]
    ahead.plan(plan)
    time.sleep(0.1)
    assert order == ["f0", "f1", "f2"]  # 3 x 1000 bytes: the budget
    for key, spans in plan:
        assert ahead._bytes <= 3000
        held = ahead.take(key)
        assert held == [(spans[0][0], blob[spans[0][0] : spans[0][1]])]
    assert order == [f"f{i}" for i in range(10)] and peak[0] <= 2
    assert ahead.take(plan[0][0]) is None  # taken already: read directly
    ahead.close()


def test_a_row_group_over_the_budget_still_goes_alone() -> None:
    ahead = ReadAhead(lambda rel, spans: [b"x" * (b - a) for a, b in spans], max_bytes=10)
    key = ("f", 0, ("x",))
    ahead.plan([(key, [(0, 100)]), (("f", 1, ("x",)), [(100, 200)])])
    assert ahead.take(("g", 0, ("x",))) is None  # not planned
    assert ahead.take(key) == [(0, b"x" * 100)]
    assert ahead.take(("f", 1, ("x",))) == [(100, b"x" * 100)]
    ahead.close()


def test_dataloader_workers_read_s3_as_the_folder(both: tuple[Path, str]) -> None:
    """Forked workers open their own files and read ahead for their own batches."""
    from torch.utils.data import DataLoader

    local, remote = both

    def keys_and_xyz(out: Path | str) -> tuple[list[Any], Any]:
        ds = KeypointDataset(out, batch_size=3, shuffle=True, seed=5)
        batches = list(DataLoader(ds, batch_size=None, num_workers=2))
        keys = [k for b in batches for k in zip(b["datapoint"], b["camera"], strict=True)]
        return keys, torch.cat([b["xyz"] for b in batches])

    mine, theirs = keys_and_xyz(remote), keys_and_xyz(local)
    assert mine[0] == theirs[0] and len(mine[0]) == 24
    assert torch.equal(mine[1], theirs[1])


def test_local_row_groups_are_decoded_ahead_in_plan_order() -> None:
    """DecodeAhead: two at most in flight, each on a thread with its own files; a row
    group out of plan is the caller's to read; ones the reader passed over are dropped."""
    started: list[readahead.Key] = []
    threads: dict[int, dict[str, Any]] = {}
    gate = threading.Event()

    def decode(key: readahead.Key, files: dict[str, Any]) -> str:
        started.append(key)
        threads.setdefault(threading.get_ident(), files)
        assert files is threads[threading.get_ident()]  # one dict per thread, kept
        gate.wait(5)
        if key[1] == 99:
            raise kpcompile.SnapshotError(f"{key[0]}: row group 99 is broken")
        return f"{key[0]}#{key[1]}"

    keys = [("a.parquet", i, ("x3",)) for i in (*range(6), 99)]
    ahead = readahead.DecodeAhead(decode)
    try:
        ahead.plan(keys)
        time.sleep(0.1)
        assert started == keys[:2]  # depth 2: no more before the reader takes one
        gate.set()
        assert ahead.take(keys[0]) == "a.parquet#0"
        assert ahead.take(("b.parquet", 0, ("x3",))) is None  # not planned: read it yourself
        assert ahead.take(keys[2]) == "a.parquet#2"  # 1 passed over, dropped
        assert ahead.take(keys[1]) is None
        assert ahead.take(keys[5]) is None  # ahead of the decoding: read it yourself
        assert ahead.take(keys[3]) is None  # 3 and 4 passed over
        with pytest.raises(kpcompile.SnapshotError, match="row group 99 is broken"):
            ahead.take(keys[6])  # decoded ahead too; its error is the reader's, as a direct read's
        assert len(threads) <= 2
    finally:
        ahead.close()
