"""Incremental builds: reuse what the previous snapshot already compiled.

A build of the same source with the same output options (:func:`~kpcompile.options.reuse_keys`)

1. reuses every shard whose files (path, size, mtime, duplicate marker) are all as
   the previous snapshot recorded them: its Parquet files are hard-linked (copied
   on object storage) into the new snapshot, nothing is read or parsed; except a
   shard holding a rejection that a new read may clear (``unreadable``,
   ``internal_error``: :data:`~kpcompile.errors.TRANSIENT_CODES`), which is
   recompiled as a changed shard is, its rejected files read again;
2. recompiles the other shards, where each file is
   * *unchanged* (same size and mtime): not read; its landmarks are taken from the
     previous snapshot's Parquet;
   * *touched* (size or mtime differ, same size and ``crc32`` checksum): read and
     checksummed, not parsed;
   * *new or changed*: read and parsed.

Compiling is deterministic and every shard is written from the same values, so
the snapshot is the one a full rebuild would publish, byte for byte. Each snapshot
stays self-contained (hard links, not references), so removing an older snapshot
never breaks a newer one.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kpcompile._version import __version__
from kpcompile.compile.plan import order_key, position
from kpcompile.compile.shard import PreviousFile, ShardResult, part_name
from kpcompile.compile.stage import Stage
from kpcompile.errors import TRANSIENT_CODES
from kpcompile.ingest import SourceFile
from kpcompile.ingest.listing import encode
from kpcompile.ingest.paths import printable
from kpcompile.manifest import ErrorRow, FileEntry, Manifest, ShardRecord
from kpcompile.options import BuildOptions, reuse_keys
from kpcompile.schema import partition_dir

_FILES_COLUMNS = ["path", "camera", "status", "layout", "version", "visible", "bytes"]
_FILES_COLUMNS += ["mtime_ns", "checksum"]


RecordReader = Callable[[str | None, str], list[ShardRecord]]
"""``read(after, upto)``: the previous snapshot's shard records whose first file lies
in a unit (top-level prefix) after ``after`` (``None``: from the first) up to ``upto``."""


def previous_records(manifest: Manifest, partition_by: str) -> RecordReader:
    """A reader of the previous snapshot's shard records, a few units at a time.

    The one place that knows where the records come from: today the manifest's
    records in memory, sorted once by the unit of their first file; a per-prefix
    reader of records stored apart can take its place without changing its callers.
    """
    at = 1 if partition_by == "camera" else 0  # where the unit is in a position
    keyed = sorted(
        ((encode(position(r.first, partition_by)[at]), r) for r in manifest.shards),
        key=lambda kr: kr[0],
    )
    keys = [k for k, _ in keyed]

    def read(after: str | None, upto: str) -> list[ShardRecord]:
        lo = 0 if after is None else bisect.bisect_right(keys, encode(after))
        return [r for _, r in keyed[lo : bisect.bisect_right(keys, encode(upto))]]

    return read


@dataclass(slots=True)
class Previous:
    """What a new build may reuse from the current snapshot of OUT, a window at a time.

    Records enter as the build reaches the unit of their first file (:meth:`advance`)
    and leave once their partition's shards have passed their last file
    (:meth:`passed`), so the coordinator holds the records (and ``files`` rows) of the
    prefixes being planned, not the whole previous table. ``files`` is filled
    lazily: only the ``files`` Parquet files of previous shards whose key range
    overlaps a changed shard are read.
    """

    snapshot: str
    stage: Callable[[], Stage]
    """The new snapshot's stage (made on first use), which reads the previous one's files."""
    read_records: RecordReader
    written: dict[str, FileEntry]
    partition_by: str
    shards: dict[str, ShardRecord] = field(default_factory=dict)
    """Reusable records of the window, by digest."""
    transient: dict[str, ShardRecord] = field(default_factory=dict)
    """Records of the window holding a rejection that a new read may clear, by digest."""
    window: dict[str, list[ShardRecord]] = field(default_factory=dict)
    """The window's records by partition, in output order."""
    files: dict[str, PreviousFile] = field(default_factory=dict)
    loaded: dict[int, list[str]] = field(default_factory=dict)
    """Previous shards whose rows are in ``files``: their paths."""
    reached: str | None = None

    @classmethod
    def of(
        cls,
        manifest: Manifest,
        source: str,
        options: BuildOptions,
        stage: Callable[[], Stage],
    ) -> Previous | None:
        """``manifest``'s snapshot if it was built from ``source`` with the same output options.

        ``None`` when there is nothing to reuse: another source, other options, or
        another kpcompile version (whose parser may differ).
        """
        if (
            manifest.source.path != source
            or manifest.tool.version != __version__
            or not manifest.shards
            or any(manifest.options.get(k) != getattr(options, k) for k in reuse_keys())
        ):
            return None
        written = {f.path: f for f in manifest.all_files()}
        reader = previous_records(manifest, options.partition_by)
        return cls(manifest.snapshot, stage, reader, written, options.partition_by)

    def advance(self, unit: str) -> None:
        """Take in the records whose first file lies in a unit up to ``unit``."""
        for r in self.read_records(self.reached, unit):
            # a shard holding a rejection that a new read may clear is compiled again
            (self.transient if transient_errors(r) else self.shards)[r.digest] = r
            self.window.setdefault(self._partition(r.first), []).append(r)
        self.reached = unit

    def passed(self, shard: ShardInput) -> None:
        """A shard was handed out: drop the records (and rows) of its partition that end
        at or before its last file (no later shard of the partition can use them)."""
        part = self._partition(shard.last)
        last = position(shard.last, self.partition_by)
        keep = []
        for r in self.window.get(part, ()):
            if position(r.last, self.partition_by) > last:
                keep.append(r)
                continue
            self.shards.pop(r.digest, None)
            self.transient.pop(r.digest, None)
            for path in self.loaded.pop(r.index, ()):
                self.files.pop(path, None)
        self.window[part] = keep

    def _partition(self, key: Sequence[str]) -> str:
        return key[0] if self.partition_by == "camera" else ""

    def load_overlapping(self, first: list[str], last: list[str]) -> None:
        """Read the previous rows of every record of the window overlapping [first, last]."""
        lo, hi = position(first, self.partition_by), position(last, self.partition_by)
        for r in self.window.get(self._partition(first), ()):
            if r.index in self.loaded:
                continue
            if position(r.last, self.partition_by) < lo:
                continue
            if position(r.first, self.partition_by) > hi:
                continue
            rows = self._files_of(r)
            self.loaded[r.index] = list(rows)
            self.files.update(rows)

    def _files_of(self, shard: ShardRecord) -> dict[str, PreviousFile]:
        out: dict[str, PreviousFile] = {}
        for part in shard.outputs.get("files", []):
            name = part.rsplit("/", 1)[-1]
            table = self.stage().read_table(self.snapshot, part)
            cols = table.select(_FILES_COLUMNS).to_pydict()
            for i, path in enumerate(cols["path"]):
                if cols["status"][i] != "ok":
                    continue  # rejected files are read again: they are few, and cheap to reject
                folder = "keypoints"
                if self.partition_by == "camera":
                    folder += "/" + partition_dir("camera", cols["camera"][i])
                out[path] = PreviousFile(
                    size=cols["bytes"][i],
                    mtime_ns=cols["mtime_ns"][i],
                    checksum=cols["checksum"][i],
                    layout=cols["layout"][i],
                    version=cols["version"][i],
                    visible=cols["visible"][i],
                    snapshot=self.snapshot,
                    part=f"{folder}/{name}",
                )
        return out


def transient_errors(shard: ShardRecord) -> list[ErrorRow]:
    """The shard's rejections that a new read may clear (:data:`TRANSIENT_CODES`)."""
    return [e for e in (*shard.errors, *shard.set_errors) if e.code in TRANSIENT_CODES]


def previous_of(
    prev: Previous | None, files: Sequence[SourceFile], partition_by: str
) -> tuple[PreviousFile | None, ...] | None:
    """Per file of a shard to recompile, its previous row (``None`` for new files)."""
    if prev is None or not files:
        return None
    first, last = order_key(files[0], partition_by), order_key(files[-1], partition_by)
    prev.load_overlapping([printable(k) for k in first], [printable(k) for k in last])
    found = tuple(prev.files.get(f.path) if f.duplicate_of is None else None for f in files)
    return found if any(p is not None for p in found) else None


def reuse_shard(prev: Previous, entry: ShardRecord, index: int, stage: Stage) -> ShardResult:
    """Link an unchanged shard's files (``entry``: its previous record) from the previous
    snapshot under the new index."""
    name = part_name(index)
    result = ShardResult(index)
    for table, paths in entry.outputs.items():
        items = []
        for old in paths:
            new = old.rsplit("/", 1)[0] + "/" + name
            stage.link(prev.snapshot, old, new)
            w = prev.written[old]
            items.append(FileEntry(new, w.rows, w.bytes, w.sha256))
        result.written[table] = items
    for name in COUNTS:
        setattr(result, name, getattr(entry, name))
    for name in TALLIES:
        setattr(result, name, Counter(getattr(entry, name)))
    for name in REJECTIONS:
        setattr(result, name, list(getattr(entry, name)))
    result.reused = entry.files
    return result


COUNTS = ("compiled", "rows", "visible", "source_bytes")
"""Fields a :class:`ShardResult` and its manifest :class:`ShardRecord` share as they are."""
TALLIES = ("layouts", "versions")
"""Shared fields that are a Counter in the result and a sorted dict in the record."""
REJECTIONS = ("errors", "set_errors")
"""Shared fields that are rejected files, sorted in the record."""


@dataclass(frozen=True, slots=True)
class ShardInput:
    """What the manifest records of a shard's input, kept once its files are handed out."""

    digest: str
    first: list[str]
    last: list[str]
    files: int

    @classmethod
    def of(cls, files: Sequence[SourceFile], digest: str, partition_by: str) -> ShardInput:
        """The record of a shard's files."""
        first, last = order_key(files[0], partition_by), order_key(files[-1], partition_by)
        # the manifest is UTF-8: a name that is not (its file is rejected) is escaped
        first, last = [printable(k) for k in first], [printable(k) for k in last]
        return cls(digest, first, last, len(files))

    @classmethod
    def reused(cls, record: ShardRecord) -> ShardInput:
        """The record of a shard reused as it is (the same digest: the same files)."""
        return cls(record.digest, list(record.first), list(record.last), record.files)


def shard_record(result: ShardResult, shard: ShardInput) -> ShardRecord:
    """The manifest's record of one shard, enough to reuse it without reading it."""
    shared: dict[str, Any] = {name: getattr(result, name) for name in COUNTS}
    shared.update({name: dict(sorted(getattr(result, name).items())) for name in TALLIES})
    shared.update({name: sorted(getattr(result, name)) for name in REJECTIONS})
    return ShardRecord(
        index=result.index,
        digest=shard.digest,
        first=shard.first,
        last=shard.last,
        files=shard.files,
        outputs={t: [w.path for w in ws] for t, ws in sorted(result.written.items())},
        **shared,
    )
