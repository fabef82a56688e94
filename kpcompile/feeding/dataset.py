"""Feeding PyTorch: a snapshot as an ``IterableDataset`` of batches of tensors.

The unit of work is a Parquet row group (whole landmark files): each epoch the
row groups are dealt out to the distributed ranks and their DataLoader workers,
round-robin, after an optional seeded shuffle that every process computes alike,
so every file is read exactly once per epoch by exactly one worker. Within a
worker, files may pass through a bounded shuffle buffer, and are cut into
batches. Nothing here imports polars: DataLoader workers are forked, and polars'
thread pool does not survive a fork.

Splits are assigned per datapoint by a stable hash (BLAKE2b of the datapoint
name, 64 bits, as a fraction of 2**64, against the cumulative fractions), so
every camera of a datapoint lands in the same split, and a datapoint never
changes split when files are added.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from kpcompile.errors import QueryError
from kpcompile.feeding import rowgroups as rg
from kpcompile.feeding.rowgroups import Group, Parts, PixelOrder, RowGroup
from kpcompile.store import Store

SPLITS: tuple[str, ...] = ("train", "val", "test")
Batch = dict[str, Any]


def split_of(datapoint: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """The split (``train``, ``val``, ``test``) a datapoint belongs to, for these fractions.

    Example:
        >>> split_of("datapoint_00001", (0.5, 0.25, 0.25)) in SPLITS
        True
    """
    digest = hashlib.blake2b(datapoint.encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    edge = 0.0
    for name, share in zip(SPLITS, fractions, strict=True):
        edge += share
        if u < edge:
            return name
    return SPLITS[-1]


class KeypointDataset(IterableDataset[Batch]):
    """A snapshot's keypoints as batches of torch tensors, for a ``DataLoader``.

    Each item is a batch (a dict): ``xyz`` ``(B, 468, 3)``, ``pixels`` ``(B, 468, 2)``,
    ``visible`` ``(B, 468)`` bool, ``has_visibility`` ``(B,)`` bool, and the keys
    ``datapoint`` and ``camera`` (lists of B strings). Batches are made here, so
    give the DataLoader ``batch_size=None``::

        ds = KeypointDataset("compiled", batch_size=256, shuffle=True, seed=0, split="train")
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        for epoch in range(10):
            ds.set_epoch(epoch)
            for batch in loader: ...

    Args:
        out: Output folder or URL of ``kpcompile build``.
        batch_size: Files per batch; the last batch of each worker may be smaller
            unless ``drop_last``.
        shuffle: Shuffle the row groups (the same permutation in every process),
            then the files through a buffer of ``shuffle_buffer`` files per worker.
        seed: Seed of the shuffles; with :meth:`set_epoch`, each epoch's order is
            the same for the same seed, epoch and number of workers and ranks.
        shuffle_buffer: Files a worker holds to shuffle (bounds its memory).
        split: ``train``, ``val`` or ``test``; ``None`` for every file.
        fractions: Shares of ``train``, ``val``, ``test`` (non-negative, summing to 1).
        dtype: ``float32`` (default) or ``float64`` for ``xyz`` and ``pixels``.
        pixel_order: ``as_stored`` (default; ``px``, ``py`` as written, row then
            column) or ``xy`` (image coordinates: x = column, y = row).
        drop_last: Drop each worker's last batch when it is smaller than ``batch_size``.
        snapshot: A snapshot id; ``None`` for the current snapshot (resolved once, here).
        rank, world_size: This process's place among distributed processes;
            default: ``torch.distributed``'s when it is initialized, else 0 of 1.

    Raises:
        QueryError: An invalid argument (the message names it and the valid values).

    Example:
        >>> ds = KeypointDataset("compiled", batch_size=64, split="val")  # doctest: +SKIP
        >>> next(iter(ds))["xyz"].shape  # doctest: +SKIP
        torch.Size([64, 468, 3])
    """

    def __init__(
        self,
        out: str | os.PathLike[str] | Store,
        *,
        batch_size: int = 256,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 4096,
        split: str | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        dtype: Any = "float32",
        pixel_order: PixelOrder = "as_stored",
        drop_last: bool = False,
        snapshot: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_args(batch_size, shuffle_buffer, split, fractions, rank, world_size)
        self.dtype = rg.check_dtype(dtype)
        rg.check_pixel_order(pixel_order)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.shuffle_buffer, self.split, self.fractions = shuffle_buffer, split, tuple(fractions)
        self.pixel_order, self.drop_last = pixel_order, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._parts = Parts(out, snapshot)
        self.row_groups: list[RowGroup] = self._parts.row_groups()
        self._splits: dict[str, str] = {}

    @property
    def snapshot(self) -> str:
        """The snapshot id this dataset reads."""
        return self._parts.snapshot

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (call before iterating; workers copy it when they start)."""
        self.epoch = epoch

    def assigned(self, worker: int = 0, workers: int = 1) -> list[RowGroup]:
        """The row groups worker ``worker`` of ``workers`` (per rank) reads this epoch, in order."""
        rank, world = self._place()
        order = np.arange(len(self.row_groups))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        shard, shards = rank * workers + worker, world * workers
        return [self.row_groups[i] for i in order[shard::shards]]

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        groups: Iterable[Group] = (
            self._selected(self._parts.read(g, (*rg.FLOATS, "visible")))
            for g in self.assigned(worker, workers)
        )
        if self.shuffle:
            rank, _ = self._place()
            rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
            groups = rg.shuffled(groups, self.shuffle_buffer, rng)
        for batch in rg.regroup(groups, self.batch_size):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield self._batch(batch)

    def _place(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _selected(self, group: Group) -> Group:
        if self.split is None:
            return group
        names, inverse = np.unique(group.datapoint, return_inverse=True)
        mine = np.array([self._split(str(n)) == self.split for n in names], np.bool_)
        return group.take(mine[inverse])

    def _split(self, datapoint: str) -> str:
        found = self._splits.get(datapoint)
        if found is None:
            found = self._splits[datapoint] = split_of(datapoint, self.fractions)
        return found

    def _batch(self, group: Group) -> Batch:
        arrays = group.arrays(self.dtype, self.pixel_order)
        batch: Batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        batch["datapoint"] = group.datapoint.tolist()
        batch["camera"] = group.camera.tolist()
        return batch


def _check_args(
    batch_size: int,
    shuffle_buffer: int,
    split: str | None,
    fractions: Sequence[float],
    rank: int | None,
    world_size: int | None,
) -> None:
    problems = []
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if shuffle_buffer < 1:
        problems.append(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
    if split is not None and split not in SPLITS:
        problems.append(f"split must be one of {', '.join(SPLITS)} or None; got {split!r}")
    shares = list(fractions)
    if len(shares) != 3 or min(shares) < 0 or not math.isclose(sum(shares), 1.0):
        problems.append(
            "fractions must be 3 non-negative shares (train, val, test) summing to 1; "
            f"got {fractions!r}"
        )
    if (rank is None) != (world_size is None):
        problems.append("rank and world_size go together; give both or neither")
    elif rank is not None and world_size is not None and not 0 <= rank < world_size:
        problems.append(f"rank must be in 0..world_size-1; got rank {rank} of {world_size}")
    if problems:
        raise QueryError("; ".join(problems))
