"""Feeding PyTorch: a snapshot as an ``IterableDataset`` of batches of tensors.

The order of an epoch is global: one sequence of the selected files, fixed by the
seed and the epoch alone (the row groups permuted, then the files shuffled within
consecutive blocks of ``shuffle_buffer`` files, which bounds what a reader holds).
The sequence is cut into rounds of ``world_size`` batches: batch ``k`` goes to rank
``k % world_size``, and within a rank to DataLoader worker ``(k // world_size) %
workers``, whose round-robin hands them back in order. So the number of ranks and
workers changes only who reads what, never the order ("elastic determinism", as in
mosaicml-streaming), and a position in the sequence (the samples consumed) is the
whole state needed to resume mid-epoch, on any number of ranks and workers.

Every rank yields the same number of samples and batches per epoch, so
``DistributedDataParallel`` never waits on a rank that ran out: the sequence is
padded with its first files to a multiple of ``world_size`` (the last round split
evenly), or with ``drop_last`` cut to whole rounds of full batches.

The rank is fixed when the dataset is made, never looked up in a DataLoader worker
(a spawned worker sees no process group). Nothing here imports polars: DataLoader
workers may be forked, and polars' thread pool does not survive a fork.

Splits are assigned per split key (by default the scene: the folder above
``frames/NNN`` of in-cabin exports, else the datapoint) by a stable hash (BLAKE2b
of the key, 64 bits, as a fraction of 2**64, against the cumulative fractions), so
every camera and frame of a key lands in the same split, and a key never changes
split when files are added.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import IterableDataset, get_worker_info

from kpcompile.errors import QueryError
from kpcompile.feeding import rowgroups as rg
from kpcompile.feeding.rowgroups import Group, Parts, PixelOrder, RowGroup
from kpcompile.store import Store

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_BY: tuple[str, ...] = ("scene", "datapoint", "camera")
STATE_VERSION = 1
Batch = dict[str, Any]
Ids = npt.NDArray[np.int64]
_FRAME = re.compile(r"(?:(.+)/)?frames/[^/]+")


def split_of(key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """The split (``train``, ``val``, ``test``) a split key belongs to, for these fractions.

    The key is a scene (see :func:`scene_of`), a datapoint or a camera name.

    Example:
        >>> split_of("datapoint_00001", (0.5, 0.25, 0.25)) in SPLITS
        True
    """
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    edge = 0.0
    for name, share in zip(SPLITS, fractions, strict=True):
        edge += share
        if u < edge:
            return name
    return SPLITS[-1]


def scene_of(datapoint: str) -> str:
    """The scene of a datapoint: the folder above ``frames/NNN`` (in-cabin), else the datapoint.

    Example:
        >>> scene_of("in_cabin/scene_00001/frames/003")
        'in_cabin/scene_00001'
        >>> scene_of("datapoint_00001")
        'datapoint_00001'
    """
    m = _FRAME.fullmatch(datapoint)
    return datapoint if m is None else m.group(1) or ""


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
        batch_size: Files per batch (per rank); the last batch of an epoch may be
            smaller unless ``drop_last``.
        shuffle: Shuffle the epoch: the row groups, then the files within blocks
            of ``shuffle_buffer`` files.
        seed: Seed of the shuffle; with :meth:`set_epoch`, each epoch's order is
            the same for the same seed and epoch, whatever the ranks and workers.
        shuffle_buffer: Files per shuffle block (bounds what a reader holds).
        split: ``train``, ``val`` or ``test``; ``None`` for every file.
        fractions: Shares of ``train``, ``val``, ``test`` (non-negative, summing to 1).
        split_by: What a split keeps together: ``scene`` (default: the frames of an
            in-cabin scene; elsewhere the same as ``datapoint``), ``datapoint``, or
            ``camera`` (hold out whole cameras).
        dtype: ``float32`` (default) or ``float64`` for ``xyz`` and ``pixels``.
        pixel_order: ``as_stored`` (default; ``px``, ``py`` as written, row then
            column) or ``xy`` (image coordinates: x = column, y = row).
        drop_last: Cut the epoch to whole rounds of full batches (every rank
            alike; drops fewer than ``batch_size * world_size`` files), instead of
            padding it with repeated files to a multiple of ``world_size``.
        snapshot: A snapshot id; ``None`` for the current snapshot (resolved once, here).
        rank, world_size: This process's place among distributed processes; by
            default ``torch.distributed``'s when it is initialized, else the
            ``RANK`` and ``WORLD_SIZE`` variables, else 0 of 1. Fixed here.

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
        split_by: str = "scene",
        dtype: Any = "float32",
        pixel_order: PixelOrder = "as_stored",
        drop_last: bool = False,
        snapshot: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_args(batch_size, shuffle_buffer, split, fractions, split_by, rank, world_size)
        self.dtype = rg.check_dtype(dtype)
        rg.check_pixel_order(pixel_order)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.shuffle_buffer, self.split, self.fractions = shuffle_buffer, split, tuple(fractions)
        self.split_by, self.pixel_order, self.drop_last = split_by, pixel_order, drop_last
        self.rank, self.world_size = _place(rank, world_size)
        self.epoch = 0
        self._start = 0  # samples of the epoch consumed before this run (a resumed epoch)
        self._yielded = 0  # batches this process yielded since the epoch's run began
        # a DataLoader worker's resume point (worker, workers, its batches consumed),
        # from a worker state that torchdata's StatefulDataLoader saved
        self._worker_resume: tuple[int, int, int] | None = None
        self._parts = Parts(out, snapshot)
        self.row_groups: list[RowGroup] = self._parts.row_groups()
        sizes = np.array([g.files for g in self.row_groups], np.int64)
        self._starts: Ids = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._files: Ids = self._selected()

    @property
    def snapshot(self) -> str:
        """The snapshot id this dataset reads."""
        return self._parts.snapshot

    @property
    def samples(self) -> int:
        """Files of the epoch before padding or dropping (the split's, when one is chosen)."""
        return len(self._files)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (call before iterating; workers copy it when they start).

        A resume point from :meth:`load_state_dict` is kept for its own epoch only.
        """
        if epoch != self.epoch:
            self._start, self._worker_resume = 0, None
        self.epoch = epoch

    def order(self) -> Ids:
        """This epoch's global order: file numbers (positions in the snapshot's row
        groups, in storage order), the same in every process for any ranks and workers."""
        if not self.shuffle:
            return self._files
        rng = np.random.default_rng([self.seed, self.epoch])
        place = np.empty(len(self.row_groups), np.int64)
        place[rng.permutation(len(self.row_groups))] = np.arange(len(self.row_groups))
        group = np.searchsorted(self._starts, self._files, side="right") - 1
        seq = self._files[np.argsort(place[group], kind="stable")]
        block = np.arange(len(seq)) // self.shuffle_buffer
        return seq[np.lexsort((rng.random(len(seq)), block))]

    def batches(self, worker: int = 0, workers: int = 1) -> list[Ids]:
        """The file numbers of each batch worker ``worker`` of ``workers`` of this rank
        reads in this epoch (from the resume point), in order."""
        seq = self.order()
        rest, full = self._rest(seq)
        world, size, rank = self.world_size, self.batch_size, self.rank
        mine = [rest[s + rank * size : s + (rank + 1) * size] for s in range(0, full, world * size)]
        if len(rest) > full:
            share = (len(rest) - full) // world
            mine.append(rest[full + rank * share : full + (rank + 1) * share])
        return mine[worker::workers]

    def __len__(self) -> int:
        """Batches this rank yields this epoch (every rank alike)."""
        length, full = self._lengths()
        return full // (self.world_size * self.batch_size) + (length > full)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        self._yielded = 0
        held: dict[int, Group] = {}
        mine = self.batches(worker, workers)[self._skipped(worker, workers) :]
        self._parts.plan(self._reads(mine), (*rg.FLOATS, "visible"))
        for ids in mine:
            batch, held = self._read(ids, held)
            self._yielded += 1  # counted before the yield: a state taken now includes it
            yield batch

    def state_dict(self, batches: int | None = None) -> dict[str, Any]:
        """Where this epoch stands: a small dict of ints and strings for :meth:`load_state_dict`.

        Two ways to checkpoint:

        * Call it in the training process with ``batches``, the batches this rank's
          DataLoader has yielded since the epoch (or the resumed run) began. Every rank
          counts the same, so rank 0's state is everyone's, and any number of ranks and
          workers may resume it.
        * Or let torchdata's ``StatefulDataLoader`` call it (without ``batches``) in
          each of its workers: each worker's state then says how many of that worker's
          batches were consumed, and ``StatefulDataLoader.load_state_dict`` resumes it
          with the same number of workers (which torchdata requires).

        Without ``batches`` and outside a worker it counts the batches this process
        yielded, which is right when iterating without DataLoader workers.

        Example:
            >>> for i, batch in enumerate(loader):  # doctest: +SKIP
            ...     if i % 100 == 99:
            ...         torch.save(ds.state_dict(batches=i + 1), "ckpt.pt")
        """
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "order": self._fingerprint(),
            "epoch": self.epoch,
        }
        info = get_worker_info() if batches is None else None
        if info is not None:  # a StatefulDataLoader worker's own share
            done = self._skipped(info.id, info.num_workers) + self._yielded
            worker = {"worker": info.id, "workers": info.num_workers, "batches": done}
            return state | {"samples": self._start} | worker
        done = self._yielded if batches is None else batches
        if done < 0:
            msg = f"batches must be at least 0, got {done}"
            raise QueryError(msg)
        rounds = self.world_size * self.batch_size
        samples = self.samples if done >= len(self) else self._start + done * rounds
        return state | {"samples": samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (from :meth:`state_dict`): its epoch, after the samples it saw.

        Any number of ranks and DataLoader workers may resume a state saved with
        ``batches``: the order is theirs. A worker's state (saved by torchdata's
        ``StatefulDataLoader``) resumes in the worker of the same number, as
        ``StatefulDataLoader.load_state_dict`` does.

        Raises:
            QueryError: The state comes from another snapshot, seed, shuffle, split or
                batch order, or is not a state of this dataset; or a worker's state is
                loaded outside that worker.
        """
        if state.get("version") != STATE_VERSION or not isinstance(state.get("samples"), int):
            msg = f"state is not a KeypointDataset state (version {STATE_VERSION}): {state!r}"
            raise QueryError(msg)
        if state.get("order") != self._fingerprint():
            msg = (
                "state was saved with another snapshot, seed, shuffle, shuffle_buffer, "
                "split, fractions or split_by than this dataset's; resume with the same ones"
            )
            raise QueryError(msg)
        resume = None
        if "worker" in state:
            info = get_worker_info()
            if info is None or (info.id, info.num_workers) != (state["worker"], state["workers"]):
                msg = (
                    f"this state is DataLoader worker {state['worker']}'s of "
                    f"{state['workers']} (saved by torchdata's StatefulDataLoader): resume it "
                    "with StatefulDataLoader.load_state_dict and the same num_workers, or "
                    "save the dataset's state with state_dict(batches=...) instead"
                )
                raise QueryError(msg)
            resume = (int(state["worker"]), int(state["workers"]), int(state["batches"]))
        self.epoch, self._start = int(state["epoch"]), min(int(state["samples"]), self.samples)
        self._worker_resume = resume

    def _skipped(self, worker: int, workers: int) -> int:
        """Batches of worker ``worker``'s share consumed before this run (a worker state)."""
        resume = self._worker_resume
        return resume[2] if resume is not None and resume[:2] == (worker, workers) else 0

    def _fingerprint(self) -> str:
        what = (
            self.snapshot,
            self.shuffle,
            self.seed if self.shuffle else 0,
            self.shuffle_buffer if self.shuffle else 0,
            self.split,
            self.fractions if self.split else (),
            self.split_by if self.split else "",
        )
        return hashlib.blake2b(repr(what).encode(), digest_size=8).hexdigest()

    def _lengths(self) -> tuple[int, int]:
        """Samples this epoch still holds for all ranks (padded or cut), and those in
        whole rounds of full batches."""
        left = self.samples - self._start
        rounds = self.world_size * self.batch_size
        if self.drop_last or left == 0:
            full = left // rounds * rounds
            return full, full
        length = left + -left % self.world_size
        return length, length // rounds * rounds

    def _rest(self, seq: Ids) -> tuple[Ids, int]:
        length, full = self._lengths()
        rest = seq[self._start : self._start + length]
        if len(rest) < length:  # padding: the epoch's first files again
            rest = np.concatenate([rest, np.resize(seq, length - len(rest))])
        return rest, full

    def _selected(self) -> Ids:
        """The file numbers of the split, in storage order (every file without a split)."""
        total = int(self._starts[-1])
        if self.split is None:
            return np.arange(total, dtype=np.int64)
        keep = np.empty(total, np.bool_)
        decided: dict[str, bool] = {}
        self._parts.plan(self.row_groups)
        for g, start in zip(self.row_groups, self._starts, strict=False):
            group = self._parts.read(g)
            names = group.camera if self.split_by == "camera" else group.datapoint
            values, inverse = np.unique(names, return_inverse=True)
            mine = np.array([self._mine(str(v), decided) for v in values], np.bool_)
            keep[start : start + g.files] = mine[inverse]
        return np.flatnonzero(keep).astype(np.int64)

    def _mine(self, name: str, decided: dict[str, bool]) -> bool:
        found = decided.get(name)
        if found is None:
            key = scene_of(name) if self.split_by == "scene" else name
            found = decided[name] = split_of(key, self.fractions) == self.split
        return found

    def _reads(self, batches: list[Ids]) -> Iterator[RowGroup]:
        """The row groups :meth:`_read` reads for these batches, in order."""
        before: set[int] = set()
        for ids in batches:
            now = np.unique(np.searchsorted(self._starts, ids, side="right") - 1)
            yield from (self.row_groups[g] for g in map(int, now) if g not in before)
            before = set(map(int, now))

    def _read(self, ids: Ids, held: dict[int, Group]) -> tuple[Batch, dict[int, Group]]:
        """A batch of these files, reading their row groups unless ``held`` has them;
        returns the batch and the row groups it used (to keep for the next batch)."""
        where = np.searchsorted(self._starts, ids, side="right") - 1
        offset = ids - self._starts[where]
        cols = (*rg.FLOATS, "visible")
        used = {}
        for g in map(int, np.unique(where)):
            found = held.get(g)
            used[g] = self._parts.read(self.row_groups[g], cols) if found is None else found
        out = rg.empty_arrays(len(ids), self.dtype)
        datapoint = np.empty(len(ids), object)
        camera = np.empty(len(ids), object)
        for g, group in used.items():
            rows = np.flatnonzero(where == g)
            part = group.take(offset[rows])
            part.fill(out, rows, self.pixel_order)
            datapoint[rows], camera[rows] = part.datapoint, part.camera
        batch: Batch = {k: torch.from_numpy(v) for k, v in out.items()}
        batch["datapoint"] = [str(d) for d in datapoint]
        batch["camera"] = [str(c) for c in camera]
        return batch, used


def _place(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's rank and world size, fixed when the dataset is made.

    Explicit arguments first, then an initialized ``torch.distributed``, then the
    ``RANK`` and ``WORLD_SIZE`` variables (torchrun's), else 0 of 1.
    """
    if rank is not None and world_size is not None:
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if env_rank is not None and env_world is not None:
        try:
            found = int(env_rank), int(env_world)
        except ValueError:
            found = (-1, 0)
        if not 0 <= found[0] < found[1]:
            msg = (
                "RANK and WORLD_SIZE must be integers, 0 <= RANK < WORLD_SIZE; "
                f"got RANK={env_rank!r}, WORLD_SIZE={env_world!r}"
            )
            raise QueryError(msg)
        return found
    return 0, 1


def _check_args(
    batch_size: int,
    shuffle_buffer: int,
    split: str | None,
    fractions: Sequence[float],
    split_by: str,
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
    if split_by not in SPLIT_BY:
        problems.append(f"split_by must be one of {', '.join(SPLIT_BY)}; got {split_by!r}")
    if (rank is None) != (world_size is None):
        problems.append("rank and world_size go together; give both or neither")
    elif rank is not None and world_size is not None and not 0 <= rank < world_size:
        problems.append(f"rank must be in 0..world_size-1; got rank {rank} of {world_size}")
    if problems:
        raise QueryError("; ".join(problems))
