"""Split discovered files into shards, with boundaries that survive a growing dataset.

Shard boundaries are *content-defined*: in output order, a file starts a new shard
when a hash of its path is 0 modulo ``shard_files`` (and a shard that reaches
``2 x shard_files`` files is cut there). Whether a file starts a shard depends on
its path alone, not on its position, so adding or removing files only changes the
shard where that happens (and, rarely, the next one after a size cut); every other
shard holds exactly the same files as before, and an incremental build reuses it
(:mod:`kpcompile.compile.incremental`). No minimum size: a minimum would make a
boundary depend on the previous one, and one insertion could shift many.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kpcompile.ingest import SourceFile
from kpcompile.ingest.discover import Discovered
from kpcompile.ingest.setfiles import SetFiles, SetSource

# Names are hashed as UTF-8; a name that is not (it is rejected, but still counted)
# keeps its undecodable bytes as lone surrogates, which "surrogatepass" encodes.
_ENC, _ANY = "utf-8", "surrogatepass"


@dataclass(frozen=True, slots=True)
class Plan:
    """Every shard of a build, planned in one pass: where its files lie in output
    order, its digest and (``--sets``) how many set files it reads. About 8 bytes per
    file (the order) and one digest per shard; the files and set files become objects
    again a shard at a time (:meth:`files`, :meth:`set_files`)."""

    order: npt.NDArray[np.int64]
    ends: list[int]
    digests: list[str]
    sets: SetFiles | None = None
    set_counts: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def size(self, i: int) -> int:
        """Files (landmark and set files) of shard ``i``."""
        start = self.ends[i - 1] if i else 0
        return self.ends[i] - start + (self.set_counts[i] if self.set_counts is not None else 0)

    def files(self, files: Discovered, i: int) -> list[SourceFile]:
        """Shard ``i``'s landmark files, as objects."""
        start = self.ends[i - 1] if i else 0
        return files.take(self.order[start : self.ends[i]])

    def set_files(self, i: int, shard: Sequence[SourceFile]) -> tuple[SetSource, ...] | None:
        """Shard ``i``'s set files (``shard``: its :meth:`files`); ``None`` without ``--sets``."""
        if self.sets is None:
            return None
        return self.sets.of_shard(self.order, self.ends[i - 1] if i else 0, shard)

    def digest(self) -> str:
        """Identity of everything the build reads: every shard's digest (which covers
        its set files with ``--sets``)."""
        h = hashlib.sha256()
        for d in self.digests:
            h.update(f"{d}\n".encode())
        return h.hexdigest()


def plan_shards(
    files: Discovered, shard_files: int, partition_by: str, sets: SetFiles | None = None
) -> Plan:
    """Plan every shard in one pass over the files (a chunk of objects at a time).

    ``sets``: with ``--sets``, the set files, which go with the shard of their camera
    folder's first landmark file.
    """
    order = files.output_order(partition_by)
    ends: list[int] = []
    digests: list[str] = []
    counts: list[int] | None = [] if sets is not None else None
    n = 0
    stream = (f for lo in range(0, len(order), 1024) for f in files.take(order[lo : lo + 1024]))
    for shard in iter_chunks(stream, shard_files, partition_by):
        mine = sets.of_shard(order, n, shard) if sets is not None else None
        if counts is not None:
            counts.append(len(mine or ()))
        digests.append(shard_digest(shard, mine))
        n += len(shard)
        ends.append(n)
    return Plan(order, ends, digests, sets, counts)


def iter_chunks(
    ordered: Iterable[SourceFile], target: int, partition: str = "none"
) -> Iterator[list[SourceFile]]:
    """Split files (in output order) into shards of ``target`` files on average, one at
    a time.

    With ``partition="camera"`` a shard also ends where the camera changes, so files
    appended to one camera's run never change the next camera's first shard.
    """
    if target <= 1:
        yield from ([f] for f in ordered)
        return
    high = 2 * target
    current: list[SourceFile] = []
    by_camera = partition == "camera"
    for f in ordered:
        if current and (
            len(current) >= high
            or zlib.crc32(f.path.encode(_ENC, _ANY)) % target == 0
            or (by_camera and f.camera != current[-1].camera)
        ):
            yield current
            current = []
        current.append(f)
    if current:
        yield current


def shard_digest(files: Iterable[SourceFile], sets: Sequence[SetSource] | None = None) -> str:
    """Identity of a shard's input: every file's names, size, mtime and duplicate marker,
    and with ``--sets`` (``sets`` not ``None``) every set file's table, path, size and mtime."""
    h = hashlib.sha256()
    for f in files:
        h.update(
            f"{f.datapoint}\0{f.camera}\0{f.path}\0{f.size}\0{f.mtime_ns}\0".encode(_ENC, _ANY)
        )
        h.update(f"{f.duplicate_of}\0{f.unsafe}\n".encode(_ENC, _ANY))
    if sets is not None:
        h.update(b"sets\n")
        for s in sets:
            h.update(f"{s.table}\0{s.key}\0{s.path}\0{s.size}\0{s.mtime_ns}\n".encode(_ENC, _ANY))
    return h.hexdigest()


def order_key(f: SourceFile, partition_by: str) -> list[str]:
    """A file's place in output order (what shards are sorted by)."""
    if partition_by == "camera":
        return [f.camera, f.datapoint, f.path]
    return [f.datapoint, f.camera, f.path]
