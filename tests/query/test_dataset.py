"""kpcompile.torch.KeypointDataset with real torch: workers, ranks, seeds, splits, batches."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kpcompile
from kpcompile.synth import synth

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from kpcompile.torch import KeypointDataset, split_of  # noqa: E402


@pytest.fixture(scope="module")
def groups_of_two(mixed_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mixed_dataset`` (24 files) in 13 row groups of at most 2 files."""
    out = tmp_path_factory.mktemp("groups_of_two") / "compiled"
    kpcompile.build(mixed_dataset, out, workers=1, shard_files=3, row_group_files=2)
    return out


def _keys(batches: Any) -> list[tuple[str, str]]:
    return [k for b in batches for k in zip(b["datapoint"], b["camera"], strict=True)]


def _epoch(ds: KeypointDataset, epoch: int, workers: int) -> list[tuple[str, str]]:
    ds.set_epoch(epoch)
    return _keys(DataLoader(ds, batch_size=None, num_workers=workers))


def test_every_file_once_per_epoch_same_order_for_the_same_seed(groups_of_two: Path) -> None:
    every = sorted(kpcompile.tensors(groups_of_two).index.rows())
    ds = KeypointDataset(groups_of_two, batch_size=3, shuffle=True, seed=5, shuffle_buffer=4)
    first = _epoch(ds, 0, workers=2)
    assert sorted(first) == every and len(first) == 24  # each file exactly once
    assert _epoch(ds, 0, workers=2) == first  # same seed and epoch: same order
    second = _epoch(ds, 1, workers=2)
    assert sorted(second) == every and second != first  # another epoch: another order
    other = KeypointDataset(groups_of_two, batch_size=3, shuffle=True, seed=6, shuffle_buffer=4)
    assert _epoch(other, 0, workers=2) != first
    plain = KeypointDataset(groups_of_two, batch_size=3)
    assert _epoch(plain, 0, workers=0) == _epoch(plain, 3, workers=0)  # no shuffle: storage order


def test_ranks_and_workers_split_the_files(groups_of_two: Path) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for rank in range(2):
        ds = KeypointDataset(groups_of_two, batch_size=4, shuffle=True, rank=rank, world_size=2)
        mine = np.concatenate([ids for w in range(2) for ids in ds.batches(w, 2)])
        assert len(mine) == len(set(mine.tolist())) == 12
        seen.update(_epoch(ds, 2, workers=2))
    assert sorted(seen) == sorted(kpcompile.tensors(groups_of_two).index.rows())
    assert set(seen.values()) == {1}


def test_batches_hold_the_snapshots_values(groups_of_two: Path) -> None:
    full = kpcompile.tensors(groups_of_two, pixel_order="xy")
    where = {k: i for i, k in enumerate(full.index.rows())}
    ds = KeypointDataset(groups_of_two, batch_size=5, dtype="float64", pixel_order="xy")
    sizes = []
    for batch in ds:
        rows = [where[k] for k in zip(batch["datapoint"], batch["camera"], strict=True)]
        sizes.append(len(rows))
        assert batch["xyz"].dtype == torch.float64 and batch["visible"].dtype == torch.bool
        assert np.array_equal(batch["xyz"].numpy(), full.xyz[rows])
        assert np.array_equal(batch["pixels"].numpy(), full.pixels[rows])
        assert np.array_equal(batch["visible"].numpy(), full.visible[rows])
        assert np.array_equal(batch["has_visibility"].numpy(), full.has_visibility[rows])
    assert sizes == [5, 5, 5, 5, 4]
    f32 = next(iter(KeypointDataset(groups_of_two, batch_size=7, drop_last=True)))
    assert f32["xyz"].dtype == torch.float32 and tuple(f32["pixels"].shape) == (7, 468, 2)
    assert [
        len(b["camera"]) for b in KeypointDataset(groups_of_two, batch_size=7, drop_last=True)
    ] == [7] * 3


def test_splits_are_disjoint_whole_datapoints_and_stable(tmp_path: Path) -> None:
    fractions = (0.5, 0.25, 0.25)
    outs = []
    for n in (20, 30):  # the second dataset adds 10 datapoints to the first
        synth(tmp_path / f"d{n}", datapoints=n, cameras=2, layout="faces", seed=1, extras=False)
        kpcompile.build(tmp_path / f"d{n}", tmp_path / f"o{n}", workers=1, row_group_files=4)
        outs.append(tmp_path / f"o{n}")
    found: list[dict[str, set[tuple[str, str]]]] = []
    for out in outs:
        splits = {
            s: set(_keys(KeypointDataset(out, batch_size=8, split=s, fractions=fractions)))
            for s in ("train", "val", "test")
        }
        every = set(kpcompile.tensors(out).index.rows())
        assert set.union(*splits.values()) == every
        assert sum(len(v) for v in splits.values()) == len(every)  # disjoint
        for name, keys in splits.items():
            assert {split_of(d, fractions) for d, _ in keys} <= {name}
            datapoints = {d for d, _ in keys}
            assert keys == {k for k in every if k[0] in datapoints}  # every camera alike
        found.append(splits)
    small, grown = found
    for name in small:
        assert small[name] <= grown[name]  # adding files moves no datapoint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"split": "dev"}, "split must be one of train, val, test or None; got 'dev'"),
        ({"fractions": (0.5, 0.5)}, "fractions must be 3 non-negative shares"),
        ({"fractions": (0.7, 0.2, 0.2)}, "summing to 1; got"),
        ({"split_by": "frame"}, "split_by must be one of scene, datapoint, camera; got 'frame'"),
        ({"rank": 1}, "rank and world_size go together"),
        ({"rank": 2, "world_size": 2}, "rank must be in 0..world_size-1"),
        ({"dtype": "float16"}, "dtype must be one of float32, float64"),
        ({"pixel_order": "rc"}, "pixel_order must be one of as_stored, xy"),
    ],
)
def test_invalid_arguments(groups_of_two: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(kpcompile.QueryError, match=message):
        KeypointDataset(groups_of_two, **kwargs)


def test_without_torch_the_error_says_how_to_install_it() -> None:
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    from kpcompile.torch import KeypointDataset\n"
        "except ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (
        "kpcompile.torch.KeypointDataset needs PyTorch, which is not installed: pip install torch"
    )
