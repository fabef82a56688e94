"""Split discovered files into shards as they are listed, one top-level prefix at a time.

Output order is, per partition (``--partition-by camera``: per camera; ``none``: one),
by top-level prefix (the *unit*, :func:`~kpcompile.ingest.units.unit_of`), then
datapoint, then path. Prefixes are listed and planned in that order
(:func:`~kpcompile.ingest.units.discover_units`), so each partition's files arrive in
order and a shard is planned from what has been listed so far: the coordinator holds
one batch of prefixes and, per partition, the one shard not yet closed (fewer than
``2 x shard_files`` files), whatever the size of the dataset.

Shard boundaries are *content-defined*: within a partition, a file starts a new shard
when a hash of its path is 0 modulo ``shard_files`` (and a shard that reaches
``2 x shard_files`` files is cut there). Whether a file starts a shard depends on
its path alone, not on its position, so adding or removing files only changes the
shard where that happens (and, rarely, the next one after a size cut); every other
shard holds exactly the same files as before, and an incremental build reuses it
(:mod:`kpcompile.compile.incremental`). No minimum size: a minimum would make a
boundary depend on the previous one, and one insertion could shift many.

A shard holds one partition's files, so it writes one Parquet file. Shards are
numbered in the order they close: the shards of one partition in output order,
those of different partitions interleaved as the prefixes holding them are listed
(the same numbers for any listing order, batching, worker count or executor).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from kpcompile.ingest import SourceFile
from kpcompile.ingest.listing import encode
from kpcompile.ingest.setfiles import TABLES, SetSource
from kpcompile.ingest.units import Batch, unit_of

# Names are hashed as UTF-8; a name that is not (it is rejected, but still counted)
# keeps its undecodable bytes as lone surrogates, which "surrogatepass" encodes.
_ENC, _ANY = "utf-8", "surrogatepass"
_TABLE_RANK = {t: i for i, t in enumerate(TABLES)}


@dataclass(frozen=True, slots=True)
class PlannedShard:
    """One shard, as it is handed out: its files as objects, its set files (``None``
    without ``--sets``), its digest and its partition's value (``""`` for none)."""

    index: int
    files: list[SourceFile]
    sets: tuple[SetSource, ...] | None
    digest: str
    partition: str

    @property
    def size(self) -> int:
        """Files (landmark and set files) of the shard."""
        return len(self.files) + len(self.sets or ())


@dataclass(slots=True)
class _Open:
    """A partition's shard not yet closed: its files and the set files each brings."""

    files: list[SourceFile] = field(default_factory=list)
    sets: list[tuple[SetSource, ...]] = field(default_factory=list)


class Planner:
    """Plans shards from units in order (see the module); :meth:`add` each unit, then
    :meth:`finish`. Holds per partition the shard not yet closed."""

    def __init__(self, shard_files: int, partition_by: str, *, sets: bool = False) -> None:
        self.target = shard_files
        self.by_camera = partition_by == "camera"
        self.sets = sets
        self.open: dict[str, _Open] = {}
        self.count = 0
        self.last_unit: str | None = None

    def add(self, batch: Batch) -> Iterator[PlannedShard]:
        """The shards that close with ``batch``'s files (batches in unit order)."""
        if self.last_unit is not None and encode(batch.first) <= encode(self.last_unit):
            msg = f"units out of order: {batch.first!r} after {self.last_unit!r}"
            raise ValueError(msg)
        self.last_unit = batch.last
        order, target, high = batch.order, self.target, 2 * self.target
        for lo in range(0, len(order), 1024):
            chunk = batch.files.take(order[lo : lo + 1024])
            mine: dict[tuple[str, str], list[SetSource]] = {}
            if batch.sets is not None:
                for s in batch.sets.of_shard(order, lo, chunk):
                    mine.setdefault((s.datapoint, s.camera), []).append(s)
            for f in chunk:
                key = f.camera if self.by_camera else ""
                shard = self.open.get(key)
                if shard is None:
                    shard = self.open[key] = _Open()
                elif shard.files and (
                    target <= 1
                    or len(shard.files) >= high
                    or zlib.crc32(f.path.encode(_ENC, _ANY)) % target == 0
                ):
                    yield self._close(key)
                    shard = self.open[key] = _Open()
                shard.files.append(f)
                shard.sets.append(tuple(mine.pop((f.datapoint, f.camera), ())))

    def finish(self) -> Iterator[PlannedShard]:
        """The shards still open, by partition."""
        for key in sorted(self.open, key=encode):
            if self.open[key].files:
                yield self._close(key)
        self.open = {}

    def _close(self, key: str) -> PlannedShard:
        shard = self.open.pop(key)
        sets = None
        if self.sets:  # by table, then in the shard's order
            sets = tuple(sorted((s for f in shard.sets for s in f), key=_table_rank))
        index, self.count = self.count, self.count + 1
        return PlannedShard(index, shard.files, sets, shard_digest(shard.files, sets), key)


def _table_rank(s: SetSource) -> int:
    return _TABLE_RANK[s.table]


def plan_units(
    units: Iterable[Batch], shard_files: int, partition_by: str, *, sets: bool = False
) -> Iterator[PlannedShard]:
    """Every shard of ``units`` (batches of units in name order), as each closes.

    Example:
        >>> from kpcompile.ingest import open_source
        >>> from kpcompile.ingest.discover import LANDMARK_NAMES
        >>> from kpcompile.ingest.units import discover_units
        >>> with open_source("dataset") as src:  # doctest: +SKIP
        ...     units = discover_units(src, LANDMARK_NAMES, "camera")
        ...     sum(len(s.files) for s in plan_units(units, 512, "camera"))
        20000
    """
    planner = Planner(shard_files, partition_by, sets=sets)
    for batch in units:
        yield from planner.add(batch)
        del batch  # not held while the next batch is listed
    yield from planner.finish()


def shard_digest(files: Iterable[SourceFile], sets: Sequence[SetSource] | None = None) -> str:
    """Identity of a shard's input: every file's names, size, mtime and duplicate marker,
    and with ``--sets`` (``sets`` not ``None``) every set file's table, path, size and mtime."""
    h = hashlib.sha256()
    # one string per shard, the same bytes as one update per field group
    text = "".join(
        f"{f.datapoint}\0{f.camera}\0{f.path}\0{f.size}\0{f.mtime_ns}\0{f.duplicate_of}\0{f.unsafe}\n"
        for f in files
    )
    h.update(text.encode(_ENC, _ANY))
    if sets is not None:
        h.update(b"sets\n")
        for s in sets:
            h.update(f"{s.table}\0{s.key}\0{s.path}\0{s.size}\0{s.mtime_ns}\n".encode(_ENC, _ANY))
    return h.hexdigest()


def order_key(f: SourceFile, partition_by: str) -> list[str]:
    """A file's key as the manifest records a shard's first and last files."""
    if partition_by == "camera":
        return [f.camera, f.datapoint, f.path]
    return [f.datapoint, f.camera, f.path]


def position(key: Sequence[str], partition_by: str) -> tuple[str, ...]:
    """A file's place in output order, from its :func:`order_key`: by partition, then
    by unit (top-level prefix), datapoint and path.

    Example:
        >>> position(["cam", "scene_7/frames", "scene_7/frames/cam/x.json"], "camera")
        ('cam', 'scene_7', 'scene_7/frames', 'scene_7/frames/cam/x.json')
    """
    if partition_by == "camera":
        camera, datapoint, path = key
        return (camera, unit_of(datapoint, camera), datapoint, path)
    datapoint, camera, path = key
    return (unit_of(datapoint, camera), datapoint, camera, path)
