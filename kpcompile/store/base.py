"""The one interface of the snapshot store, whatever holds it (a folder, an object store).

An output ``OUT`` holds snapshots, each published whole and never modified::

    OUT/
      CURRENT                          id of the current snapshot, one line
      snapshots/<id>/manifest.json     what the snapshot holds: its head, with checksums
      snapshots/<id>/_manifest/files.parquet   its Parquet files, with checksums
      snapshots/<id>/_manifest/shards.parquet  its shards (for incremental builds)
      snapshots/<id>/keypoints/camera=<name>/part-00000.parquet
      snapshots/<id>/files/part-00000.parquet
      snapshots/<id>/errors/part-00000.parquet

A reader that reads ``CURRENT`` once and then only files of that snapshot sees
either the old snapshot or the new one, complete. Every command holds a
:class:`Store` and never asks where it lives; :func:`kpcompile.store.open_store`
is the one place that does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import posixpath
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from kpcompile import manifest as mf
from kpcompile.compile.stage import Stage
from kpcompile.errors import OutputError, SnapshotError
from kpcompile.manifest import FileEntry, Head, Manifest, Refusal, ShardRecord

if TYPE_CHECKING:
    import polars as pl
    import pyarrow.parquet as pq

CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
REFUSED = "REFUSED.json"
"""What the last refused build found; removed by the next build that publishes."""
OWN_NAMES = frozenset({CURRENT, SNAPSHOTS, REFUSED, ".lock", ".staging"})
"""Names kpcompile writes at the top of an output: an output holding none is not ours."""


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    """A new id: UTC time of the build, then 8 hex digits against collisions.

    The first 4 hex digits are the fraction of the second (in 1/65536 s), the last
    4 are random, so ids of builds published one after the other sort in that
    order even within one second.

    Example:
        >>> new_snapshot_id(dt.datetime(2024, 5, 1, 12, 0, 0, 500000))[:21]
        '20240501T120000Z-8000'
    """
    now = now or dt.datetime.now(dt.UTC)
    fraction = now.microsecond * 65536 // 1_000_000
    return f"{now:%Y%m%dT%H%M%S}Z-{fraction:04x}{secrets.token_hex(2)}"


def snapshot_time(snapshot: str) -> dt.datetime | None:
    """The UTC build time an id begins with (to the second); ``None`` if it has none.

    Example:
        >>> snapshot_time("20240501T120000Z-80001a2b")
        datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    """
    try:
        return dt.datetime.strptime(snapshot[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


_LISTS: dict[str, bytes] = {}
"""The last lists read, by SHA-256."""


class Store(ABC):
    """The snapshots of one output location.

    Attributes:
        location: The output folder or URL, as given.
    """

    def __init__(self, location: str, canonical: str) -> None:
        self.location = location
        self.canonical = canonical
        """The output's absolute real path or its URL, to compare with other locations."""

    # --- reading ------------------------------------------------------------------------

    @abstractmethod
    def current_id(self) -> str:
        """The id in ``CURRENT``.

        Raises:
            OutputError: The store holds no published snapshot.
        """

    @abstractmethod
    def list_snapshots(self) -> list[str]:
        """Ids of every published (manifest present) snapshot, oldest first."""

    @abstractmethod
    def read_bytes(self, snapshot: str, rel: str) -> bytes:
        """The bytes of one file of a snapshot; ``OSError`` if it cannot be read."""

    @abstractmethod
    def files(self, snapshot: str) -> list[str]:
        """Every file under a snapshot's folder, relative to it, sorted."""

    @abstractmethod
    def uri(self, snapshot: str, rel: str = "") -> str:
        """Where a snapshot's file (or, with ``rel=""``, its folder) is, for other engines."""

    @abstractmethod
    def read_head(self, snapshot: str) -> Head:
        """A snapshot's ``manifest.json``: what opening it reads (a few KB).

        Raises:
            SnapshotError: No such snapshot (the message names the available ones),
                or its manifest cannot be read.
        """

    def head(self, snapshot: str | None = None) -> Head:
        """The head of ``snapshot``'s manifest, default the current one's."""
        return self.read_head(snapshot or self.current_id())

    def read_manifest(self, snapshot: str) -> Manifest:
        """A snapshot's whole manifest: its head and both lists (every file and shard).

        Raises:
            SnapshotError: As :meth:`read_head`, or a list is missing or damaged.
        """
        head = self.read_head(snapshot)
        if head.whole is not None:
            return head.whole
        return mf.assemble(head, self._files(head), self._shards(head))

    def manifest(self, snapshot: str | None = None) -> Manifest:
        """The whole manifest of ``snapshot``, default the current one."""
        return self.read_manifest(snapshot or self.current_id())

    def table_files(self, head: Head, table: str) -> list[FileEntry]:
        """The Parquet files of one table of a snapshot (only that table's part of the
        file list is read).

        Raises:
            SnapshotError: No such table, or the file list is missing or damaged.
        """
        head.table(table)
        if head.whole is not None:
            return head.whole.table(table).files
        return self._files(head, (table,)).get(table, [])

    def table_paths(self, head: Head, table: str) -> list[str]:
        """The paths of one table's Parquet files, relative to the snapshot: what a scan
        needs (only the ``table`` and ``path`` columns of that table's part of the list).

        Raises:
            SnapshotError: No such table, or the file list is missing or damaged.
        """
        head.table(table)
        if head.whole is not None:
            return [f.path for f in head.whole.table(table).files]
        return mf.decode_paths(self.read_list(head, "files"), table)

    def shard_records(
        self,
        snapshot: str | Head,
        *,
        first: list[str] | None = None,
        last: list[str] | None = None,
    ) -> list[ShardRecord]:
        """The shards of a snapshot whose sort keys overlap ``[first, last]`` (``None``:
        unbounded), in order; only the part of the shard list that may hold them is read.

        A shard's keys are its first and last file's
        :func:`~kpcompile.compile.plan.order_key`: ``[camera, datapoint, path]`` when
        the snapshot is partitioned by camera, else ``[datapoint, camera, path]``. For
        an incremental comparison of one part of the source, pass the keys of that
        part's first and last files.

        Example:
            >>> store.shard_records(sid, first=["dp_0100"], last=["dp_0199~"])  # doctest: +SKIP
        """
        head = snapshot if isinstance(snapshot, Head) else self.read_head(snapshot)
        if head.whole is not None:
            lo, hi = first, last
            return [
                s
                for s in head.whole.shards
                if (lo is None or s.last >= lo) and (hi is None or s.first <= hi)
            ]
        return mf.decode_shards(self.read_list(head, "shards"), first, last)

    def read_list(self, head: Head, name: str) -> bytes:
        """The bytes of list ``name`` (``files``, ``shards``) of a format-3 snapshot,
        checked against the head's size and SHA-256 (cached: a snapshot never changes).

        Raises:
            SnapshotError: The list cannot be read or is not what the head says.
        """
        want = head.lists.get(name)
        if want is None:
            msg = f"snapshot {head.snapshot}: its manifest names no {name} list"
            raise SnapshotError(msg)
        found = _LISTS.get(want.sha256)
        if found is not None:
            return found
        try:
            data = self.read_bytes(head.snapshot, want.path)
        except OSError as exc:
            msg = f"snapshot {head.snapshot}: cannot read {want.path}: {exc}"
            raise SnapshotError(msg) from None
        problem = mf.check_list(head, name, data)
        if problem is not None:
            msg = f"snapshot {head.snapshot}: {problem}; `kpcompile verify` checks the rest"
            raise SnapshotError(msg)
        if len(_LISTS) >= 4:
            _LISTS.pop(next(iter(_LISTS)))
        _LISTS[want.sha256] = data
        return data

    def _files(self, head: Head, tables: Sequence[str] | None = None) -> dict[str, list[FileEntry]]:
        return mf.decode_files(self.read_list(head, "files"), tables)

    def _shards(self, head: Head) -> list[ShardRecord]:
        return mf.decode_shards(self.read_list(head, "shards"))

    def missing(self, snapshot: str) -> SnapshotError:
        """The error for a snapshot id that is not in the store."""
        available = ", ".join(self.list_snapshots()[-5:]) or "none"
        msg = f"no snapshot {snapshot!r} in {self.location!r}; available: {available}"
        return SnapshotError(msg)

    def foreign(self) -> OutputError:
        """The error for an output that holds other things than kpcompile's."""
        msg = (
            f"output folder {self.location!r} is not empty and holds no kpcompile "
            "snapshots; choose a new or empty folder"
        )
        return OutputError(msg)

    def no_snapshot(self) -> OutputError:
        """The error for a store that holds no snapshot at all.

        A source dataset given where an output is expected (``kpcompile info
        dataset``) is named as one, with the build that makes an output beside it.
        """
        if self.holds_keypoint_files():
            norm = posixpath.normpath(self.location.replace(os.sep, "/"))
            out = (
                "../compiled"
                if norm == "."
                else posixpath.join(posixpath.dirname(norm), "compiled")
            )
            msg = (
                f"{self.location!r} holds no snapshot: it holds keypoint files, so it is a "
                f"source, not a compiled output; compile it with `kpcompile build "
                f"{self.location} {out}`, then `kpcompile info {out}`"
            )
            return OutputError(msg)
        msg = (
            f"{self.location!r} holds no snapshot; "
            f"build one with `kpcompile build SOURCE {self.location}`"
        )
        return OutputError(msg)

    def holds_keypoint_files(self) -> bool:
        """Whether the location holds Datagen keypoint files (is a source); False if unknown."""
        return False

    @abstractmethod
    def scan_parquet(self, snapshot: str, table: str, rels: list[str]) -> pl.LazyFrame:
        """A polars scan of some of a table's Parquet files, read the fastest way there is."""

    @abstractmethod
    def parquet_file(
        self, snapshot: str, rel: str, *, read_dictionary: Sequence[str] = ()
    ) -> pq.ParquetFile:
        """One Parquet file of a snapshot opened with pyarrow, to read row group by row group.

        ``read_dictionary`` names string columns to read as dictionary arrays.
        """

    # --- writing ------------------------------------------------------------------------

    @abstractmethod
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the right to write (create the output if needed; fail if another build has it)."""

    @abstractmethod
    def stage(self, snapshot: str) -> Stage:
        """A staging area for new snapshot ``snapshot``."""

    @abstractmethod
    def publish(self, stage: Stage, manifest: Manifest) -> str:
        """Write the manifest, make the staged snapshot current; return where it is."""

    @abstractmethod
    def discard(self, stage: Stage) -> None:
        """Remove what a failed build staged."""

    @abstractmethod
    def record_refusal(self, refusal: Refusal | None) -> None:
        """Keep what a refused build found (``None``: forget it, a build published)."""

    @abstractmethod
    def last_refusal(self) -> Refusal | None:
        """What the last build found if it was refused, else ``None``."""

    @abstractmethod
    def remove(self, snapshot: str) -> None:
        """Remove a published snapshot (the caller never asks for the current one)."""

    def publishing(self, current: str, snapshots: Sequence[str]) -> list[str]:
        """Which of ``snapshots`` a build may be making current right now; gc keeps them.

        Called holding :meth:`lock`. None by default: the lock excludes builds.
        """
        return []

    @abstractmethod
    def abandoned(self, older_than: dt.timedelta) -> list[str]:
        """Staging areas left by builds that died, oldest first (called holding :meth:`lock`).

        A store whose lock excludes builds returns them all; one without a real lock
        only those where nothing was written for ``older_than``.
        """

    @abstractmethod
    def remove_abandoned(self, name: str) -> None:
        """Remove one staging area that :meth:`abandoned` returned."""

    @abstractmethod
    def freed_by(self, snapshots: Sequence[str]) -> int:
        """Bytes that removing ``snapshots`` would free: files no other snapshot shares."""
