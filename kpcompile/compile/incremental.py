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

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kpcompile._version import __version__
from kpcompile.compile.plan import order_key
from kpcompile.compile.shard import PreviousFile, ShardResult, part_name
from kpcompile.compile.stage import Stage
from kpcompile.errors import TRANSIENT_CODES
from kpcompile.ingest import SourceFile
from kpcompile.ingest.paths import printable
from kpcompile.manifest import ErrorRow, FileEntry, Manifest, ShardRecord
from kpcompile.options import BuildOptions, reuse_keys
from kpcompile.schema import partition_dir

_FILES_COLUMNS = ["path", "camera", "status", "layout", "version", "visible", "bytes"]
_FILES_COLUMNS += ["mtime_ns", "checksum"]


@dataclass(slots=True)
class Previous:
    """What a new build may reuse from the current snapshot of OUT.

    ``files`` is filled lazily: only the ``files`` Parquet files of previous shards
    whose key range overlaps a changed shard are read.
    """

    snapshot: str
    stage: Stage
    shards: dict[str, ShardRecord]
    written: dict[str, FileEntry]
    partition_by: str
    files: dict[str, PreviousFile] = field(default_factory=dict)
    loaded: dict[int, list[str]] = field(default_factory=dict)
    """Previous shards whose rows are in ``files``: their paths."""

    @classmethod
    def of(
        cls, manifest: Manifest, source: str, options: BuildOptions, stage: Stage
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
        # a shard holding a rejection that a new read may clear is compiled again
        shards = {s.digest: s for s in manifest.shards if not transient_errors(s)}
        return cls(manifest.snapshot, stage, shards, written, options.partition_by)

    def load_overlapping(self, first: list[str], last: list[str]) -> None:
        """Read the previous rows of every previous shard overlapping [first, last].

        Shards are planned in order, so the rows of previous shards ending before
        ``first`` are no longer needed: they are dropped, and the coordinator holds
        the rows of a few shards at a time, however large the dataset.
        """
        for entry in self.shards.values():
            if entry.index in self.loaded and entry.last < first:
                for path in self.loaded.pop(entry.index):
                    self.files.pop(path, None)
            if entry.index in self.loaded or entry.last < first or entry.first > last:
                continue
            rows = self._files_of(entry)
            self.loaded[entry.index] = list(rows)
            self.files.update(rows)

    def _files_of(self, shard: ShardRecord) -> dict[str, PreviousFile]:
        out: dict[str, PreviousFile] = {}
        for part in shard.outputs.get("files", []):
            name = part.rsplit("/", 1)[-1]
            cols = self.stage.read_table(self.snapshot, part).select(_FILES_COLUMNS).to_pydict()
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
    prev.load_overlapping(order_key(files[0], partition_by), order_key(files[-1], partition_by))
    found = tuple(prev.files.get(f.path) if f.duplicate_of is None else None for f in files)
    return found if any(p is not None for p in found) else None


def reuse_shard(prev: Previous | None, digest: str, index: int, stage: Stage) -> ShardResult | None:
    """Link an unchanged shard's files from the previous snapshot under the new index."""
    if prev is None or digest not in prev.shards:
        return None
    entry = prev.shards[digest]
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
