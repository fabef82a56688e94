"""KeypointDataset at scale, with real torch: DDP ranks, elastic order, resumption, splits.

The DDP tests start two real processes with ``torch.multiprocessing.spawn`` that
join a gloo process group on 127.0.0.1 and train a tiny DistributedDataParallel
model; the resumption test SIGKILLs a real training loop.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile.synth import synth
from tests.helpers import free_port

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from kpcompile.torch import KeypointDataset, scene_of, split_of  # noqa: E402

Key = tuple[str, str]


@pytest.fixture(scope="module")
def even(mixed_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mixed_dataset`` (24 files) in 13 row groups of at most 2 files."""
    out = tmp_path_factory.mktemp("even") / "compiled"
    kpcompile.build(mixed_dataset, out, workers=1, shard_files=3, row_group_files=2)
    return out


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 files in row groups of 3 (the last holds 1): shares that do not divide."""
    root = tmp_path_factory.mktemp("odd")
    synth(root / "src", datapoints=25, cameras=1, layout="faces", seed=2, extras=False)
    kpcompile.build(root / "src", root / "compiled", workers=1, row_group_files=3)
    return root / "compiled"


def _every(out: Path) -> list[Key]:
    return sorted(kpcompile.tensors(out).index.rows())


def _keys(batch: dict[str, Any]) -> list[Key]:
    return list(zip(batch["datapoint"], batch["camera"], strict=True))


def _ddp_rank(rank: int, world: int, port: int, out: str, how: str, results: str) -> None:
    """One DDP rank: trains a tiny model for an epoch, writes its batches' keys."""
    kwargs: dict[str, Any] = {"rank": rank, "world_size": world} if how == "args" else {}
    if how == "args":  # made before the process group exists: the arguments suffice
        ds = KeypointDataset(out, batch_size=4, shuffle=True, seed=3, shuffle_buffer=6, **kwargs)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    if how == "dist":  # made after init_process_group: the group's rank is fixed here
        ds = KeypointDataset(out, batch_size=4, shuffle=True, seed=3, shuffle_buffer=6)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches: list[list[Key]] = []
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        loss = model(batch["xyz"].mean(dim=1)).pow(2).mean()  # gradients all-reduced
        opt.zero_grad()
        loss.backward()
        opt.step()
        batches.append(_keys(batch))
    dist.barrier()
    Path(results, f"{rank}.json").write_text(json.dumps({"batches": batches, "len": len(ds)}))
    dist.destroy_process_group()


@pytest.mark.parametrize(("how", "data", "padding"), [("dist", "odd", 1), ("args", "even", 0)])
def test_ddp_ranks_get_equal_batches_and_every_file(
    how: str, data: str, padding: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out: Path = request.getfixturevalue(data)
    mp.spawn(_ddp_rank, args=(2, free_port(), str(out), how, str(tmp_path)), nprocs=2)  # type: ignore[attr-defined,no-untyped-call]
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    counts = [len(r["batches"]) for r in ranks]
    assert counts[0] == counts[1] == ranks[0]["len"] == ranks[1]["len"] > 0
    sizes = [[len(b) for b in r["batches"]] for r in ranks]
    assert sizes[0] == sizes[1]  # the same samples per batch on both ranks
    seen = Counter(tuple(k) for r in ranks for b in r["batches"] for k in b)
    every = _every(out)
    assert sorted(seen) == every  # every file, across both ranks
    assert sum(seen.values()) == len(every) + padding  # once each, plus the padding
    assert sum(n - 1 for n in seen.values()) == padding


def _global_order(out: Path, ranks: int, workers: int, **kwargs: Any) -> list[Key]:
    """Each rank's batches through a DataLoader, merged step by step in rank order."""
    per_rank = []
    for rank in range(ranks):
        ds = KeypointDataset(out, rank=rank, world_size=ranks, **kwargs)
        per_rank.append([_keys(b) for b in DataLoader(ds, batch_size=None, num_workers=workers)])
        assert len(per_rank[-1]) == len(ds)
    assert len({len(p) for p in per_rank}) == 1  # equal batches per rank
    return [k for step in zip(*per_rank, strict=True) for batch in step for k in batch]


def test_the_global_order_is_the_same_for_any_ranks_and_workers(odd: Path) -> None:
    kwargs = {"batch_size": 3, "shuffle": True, "seed": 11, "shuffle_buffer": 7}
    orders = {
        (ranks, workers): _global_order(odd, ranks, workers, **kwargs)
        for ranks, workers in [(1, 0), (1, 2), (2, 1), (2, 2)]
    }
    every = _every(odd)
    first = orders[(1, 0)]
    assert sorted(first) == every and first != every  # shuffled, each file once
    for (ranks, _), order in orders.items():
        assert order[: len(every)] == first  # the same order; padding only at the end
        assert len(order) == len(every) + (-len(every) % ranks)
    assert _global_order(odd, 2, 2, **{**kwargs, "seed": 12})[:25] != first


def test_uneven_row_groups_still_give_every_rank_the_same_work(odd: Path) -> None:
    for drop_last in (False, True):
        sizes = []
        for rank in range(4):  # 25 files in row groups of 3, 3, ..., 1
            ds = KeypointDataset(odd, batch_size=2, rank=rank, world_size=4, drop_last=drop_last)
            sizes.append([len(b["camera"]) for b in ds])
        assert all(s == sizes[0] for s in sizes)
        # padded: 25 -> 28 files, 3 rounds of 4 x 2, then 1 each; dropped: 3 full rounds
        assert sizes[0] == ([2, 2, 2] if drop_last else [2, 2, 2, 1])


def test_the_rank_is_fixed_when_the_dataset_is_made(
    even: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ds = KeypointDataset(even, batch_size=2)
    monkeypatch.setenv("RANK", "0")  # a worker that sees something else changes nothing
    assert (ds.rank, ds.world_size) == (1, 3)
    mine = [k for b in DataLoader(ds, batch_size=None, num_workers=2) for k in _keys(b)]
    whole = _global_order(even, 3, 0, batch_size=2)  # rounds of 3 ranks x 2 files
    assert mine == [k for s in range(0, 24, 6) for k in whole[s + 2 : s + 4]]
    assert KeypointDataset(even, rank=0, world_size=1).world_size == 1  # arguments win
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(kpcompile.QueryError, match="RANK and WORLD_SIZE must be integers"):
        KeypointDataset(even)


_RUN = """
import json, os, sys, time
from torch.utils.data import DataLoader
from kpcompile.torch import KeypointDataset

out, state = sys.argv[1], sys.argv[2]
ds = KeypointDataset(out, batch_size=2, shuffle=True, seed=4, shuffle_buffer=5)
ds.set_epoch(1)
seen = []
for i, batch in enumerate(DataLoader(ds, batch_size=None, num_workers=2)):
    seen += list(zip(batch["datapoint"], batch["camera"]))
    with open(state + ".tmp", "w") as f:
        json.dump({"state": ds.state_dict(batches=i + 1), "seen": seen}, f)
    os.replace(state + ".tmp", state)  # the keys seen and the state, saved together
    time.sleep(0.1)
"""


def test_a_killed_epoch_resumes_with_every_file_once(
    odd: Path, tmp_path: Path, trials: Any
) -> None:
    kwargs: dict[str, Any] = {"batch_size": 2, "shuffle": True, "seed": 4, "shuffle_buffer": 5}
    whole = KeypointDataset(odd, **kwargs)
    whole.set_epoch(1)
    epoch = [k for b in whole for k in _keys(b)]  # the uninterrupted epoch, 13 batches
    every = _every(odd)
    for trial, workers in enumerate((2, 0)):
        at = random.randrange(1, 11)  # the batch after which to kill, at least
        state = tmp_path / f"state{trial}.json"
        run = subprocess.Popen(
            [sys.executable, "-c", _RUN, str(odd), str(state)], start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            while not (state.exists() and len(json.loads(state.read_text())["seen"]) >= 2 * at):
                assert run.poll() is None and time.monotonic() < deadline, "run ended first"
                time.sleep(0.01)
            run.send_signal(signal.SIGKILL)
            run.wait()
        finally:
            os.killpg(run.pid, signal.SIGKILL)  # its DataLoader workers
        saved = json.loads(state.read_text())
        before = [tuple(k) for k in saved["seen"]]
        assert 0 < len(before) < len(every), f"killed after batch {at}"
        ds = KeypointDataset(odd, **kwargs)
        ds.load_state_dict(saved["state"])
        ds.set_epoch(1)  # the resumed epoch: keeps the resume point
        after = [k for b in DataLoader(ds, batch_size=None, num_workers=workers) for k in _keys(b)]
        assert sorted(before + after) == every, f"killed after batch {at}"  # each file once
        assert before + after == epoch  # and in the epoch's order
        ds.set_epoch(2)  # the next epoch starts at its beginning
        assert sorted(k for b in ds for k in _keys(b)) == every
    trials(2, "kills")


_STATEFUL = """
import os, pickle, sys, time
from torchdata.stateful_dataloader import StatefulDataLoader
from kpcompile.torch import KeypointDataset

out, state = sys.argv[1], sys.argv[2]
ds = KeypointDataset(out, batch_size=2, shuffle=True, seed=4, shuffle_buffer=5)
ds.set_epoch(1)
loader = StatefulDataLoader(ds, batch_size=None, num_workers=2)
seen = []
for batch in loader:
    seen += list(zip(batch["datapoint"], batch["camera"]))
    with open(state + ".tmp", "wb") as f:
        pickle.dump({"state": loader.state_dict(), "seen": seen}, f)
    os.replace(state + ".tmp", state)
    time.sleep(0.1)
"""


# torchdata 0.11 calls torch.set_vital, which torch 2.13 deprecates (harmless)
@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
def test_stateful_dataloader_resumes_a_killed_epoch(odd: Path, tmp_path: Path) -> None:
    """torchdata's StatefulDataLoader saves each worker's state (the dataset's
    ``state_dict`` called in the worker) and resumes them: every file once, in order."""
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    kwargs: dict[str, Any] = {"batch_size": 2, "shuffle": True, "seed": 4, "shuffle_buffer": 5}
    whole = KeypointDataset(odd, **kwargs)
    whole.set_epoch(1)
    epoch = [k for b in whole for k in _keys(b)]
    at = random.randrange(1, 11)
    state = tmp_path / "state.pickle"
    run = subprocess.Popen(
        [sys.executable, "-c", _STATEFUL, str(odd), str(state)], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (state.exists() and len(pickle.loads(state.read_bytes())["seen"]) >= 2 * at):
            assert run.poll() is None and time.monotonic() < deadline, "run ended first"
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
        run.wait()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
    saved = pickle.loads(state.read_bytes())
    before = [tuple(k) for k in saved["seen"]]
    assert 0 < len(before) < len(epoch), f"killed after batch {at}"
    ds = KeypointDataset(odd, **kwargs)
    ds.set_epoch(1)
    loader = stateful.StatefulDataLoader(ds, batch_size=None, num_workers=2)
    loader.load_state_dict(saved["state"])
    after = [k for b in loader for k in _keys(b)]
    assert before + after == epoch, f"killed after batch {at}"  # each file once, in order
    # a worker's state names its worker: outside it, the error says how to resume it
    worker_state = saved["state"]["_snapshot"]["_worker_snapshots"]["worker_0"]["dataset_state"]
    assert worker_state["worker"] == 0 and worker_state["workers"] == 2
    with pytest.raises(kpcompile.QueryError, match=r"StatefulDataLoader\.load_state_dict"):
        KeypointDataset(odd, **kwargs).load_state_dict(worker_state)


def test_a_state_resumes_only_the_same_order(even: Path) -> None:
    ds = KeypointDataset(even, batch_size=4, shuffle=True, seed=1)
    state = ds.state_dict(batches=2)
    assert state["samples"] == 8 and state["epoch"] == 0
    assert ds.state_dict(batches=len(ds))["samples"] == ds.samples == 24
    with pytest.raises(kpcompile.QueryError, match="state was saved with another snapshot, seed"):
        KeypointDataset(even, batch_size=4, shuffle=True, seed=2).load_state_dict(state)
    with pytest.raises(kpcompile.QueryError, match="state is not a KeypointDataset state"):
        ds.load_state_dict({"samples": 3})
    # another batch size and world size may resume it (elastic): the order is the same
    two = [
        KeypointDataset(even, batch_size=3, shuffle=True, seed=1, rank=r, world_size=2)
        for r in range(2)
    ]
    for d in two:
        d.load_state_dict(state)
    rest = [k for step in zip(*two, strict=True) for b in step for k in _keys(b)]
    assert rest == _global_order(even, 1, 0, batch_size=4, shuffle=True, seed=1)[8:]


@pytest.fixture(scope="module")
def cabins(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """In-cabin exports of 6 and 9 scenes of 10 frames, 2 cameras (the second adds 3)."""
    root = tmp_path_factory.mktemp("cabins")
    outs = []
    for n in (60, 90):
        synth(root / f"s{n}", datapoints=n, cameras=2, layout="in_cabin", seed=5, extras=False)
        kpcompile.build(root / f"s{n}", root / f"o{n}", workers=1, row_group_files=8)
        outs.append(root / f"o{n}")
    return outs


def _splits(out: Path, **kwargs: Any) -> dict[str, set[Key]]:
    return {
        s: {k for b in KeypointDataset(out, batch_size=16, split=s, **kwargs) for k in _keys(b)}
        for s in ("train", "val", "test")
    }


def test_in_cabin_scenes_stay_whole_in_one_split(cabins: list[Path]) -> None:
    fractions = (0.5, 0.25, 0.25)
    found = []
    for out in cabins:
        splits = _splits(out, fractions=fractions)  # split_by="scene" by default
        every = set(_every(out))
        assert set.union(*splits.values()) == every
        assert sum(map(len, splits.values())) == len(every)
        scenes = {name: {scene_of(d) for d, _ in keys} for name, keys in splits.items()}
        assert sum(map(len, scenes.values())) == len({scene_of(d) for d, _ in every})
        for name, keys in scenes.items():
            assert {split_of(s, fractions) for s in keys} <= {name}
        found.append(splits)
    for name in found[0]:
        assert found[0][name] <= found[1][name]  # added scenes move no scene
    by_frame = _splits(cabins[0], fractions=fractions, split_by="datapoint")
    leaked = [
        s
        for s in {scene_of(d) for d, _ in _every(cabins[0])}
        if sum(any(scene_of(d) == s for d, _ in keys) for keys in by_frame.values()) > 1
    ]
    assert leaked  # per frame, scenes leak across splits: why scene is the default
    by_camera = _splits(cabins[0], fractions=(0.5, 0.5, 0.0), split_by="camera")
    assert all(len({c for _, c in keys}) <= 1 for keys in by_camera.values())


def test_the_real_in_cabin_sample_is_one_scene(samples: Path, tmp_path: Path) -> None:
    kpcompile.build(samples / "hic_in_cabin", tmp_path / "out", workers=1)
    every = _every(tmp_path / "out")
    assert {scene_of(d) for d, _ in every} == {"scene_00001"}
    split = split_of("scene_00001")
    assert (
        sorted(k for b in KeypointDataset(tmp_path / "out", split=split) for k in _keys(b)) == every
    )
