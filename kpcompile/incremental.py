"""Incremental builds: stable shard boundaries and reuse of the previous snapshot.

Shard boundaries are *content-defined*: in output order, a file starts a new shard
when a hash of its path is 0 modulo ``shard_files`` (and a shard that reaches
``2 x shard_files`` files is cut there). Whether a file starts a shard depends on
its path alone, not on its position, so adding or removing files only changes the
shard where that happens (and, rarely, the next one after a size cut); every other
shard holds exactly the same files as before. No minimum size: a minimum would make
a boundary depend on the previous one, and one insertion could shift many.

A build of the same source with the same options then

1. reuses every shard whose files (path, size, mtime, duplicate marker) are all as
   the previous snapshot recorded them: its Parquet files are hard-linked (copied
   on object storage) into the new snapshot, nothing is read or parsed;
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

import hashlib
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kpcompile import snapshot as snap
from kpcompile._version import __version__
from kpcompile.errors import OutputError
from kpcompile.options import BuildOptions
from kpcompile.shard import PreviousFile, ShardResult, read_parquet
from kpcompile.sources import SourceFile, is_url, join
from kpcompile.writer import WrittenFile, partition_dir

REUSE_OPTIONS: tuple[str, ...] = (
    "partition_by",
    "compression",
    "compression_level",
    "shard_files",
    "max_file_bytes",
)
"""Options that must equal the previous snapshot's for it to be reused."""


def chunk(
    ordered: Sequence[SourceFile], target: int, partition: str = "none"
) -> list[list[SourceFile]]:
    """Split files (in output order) into shards of ``target`` files on average.

    With ``partition="camera"`` a shard also ends where the camera changes, so files
    appended to one camera's run never change the next camera's first shard.

    Example:
        >>> files = [SourceFile(f"dp{i:03d}", "cam", f"dp{i:03d}/cam/x.json") for i in range(100)]
        >>> sum(len(s) for s in chunk(files, 10))
        100
    """
    if target <= 1:
        return [[f] for f in ordered]
    high = 2 * target
    shards: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    by_camera = partition == "camera"
    for f in ordered:
        if current and (
            len(current) >= high
            or zlib.crc32(f.path.encode()) % target == 0
            or (by_camera and f.camera != current[-1].camera)
        ):
            shards.append(current)
            current = []
        current.append(f)
    if current:
        shards.append(current)
    return shards


def shard_digest(files: Sequence[SourceFile]) -> str:
    """Identity of a shard's input: every file's names, size, mtime and duplicate marker."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.datapoint}\0{f.camera}\0{f.path}\0{f.size}\0{f.mtime_ns}\0".encode())
        h.update(f"{f.duplicate_of}\n".encode())
    return h.hexdigest()


def order_key(f: SourceFile, partition_by: str) -> list[str]:
    """A file's place in output order (what shards are sorted by)."""
    if partition_by == "camera":
        return [f.camera, f.datapoint, f.path]
    return [f.datapoint, f.camera, f.path]


@dataclass(slots=True)
class Previous:
    """What a new build may reuse from the current snapshot of OUT.

    ``files`` is filled lazily: only the ``files`` Parquet files of previous shards
    whose key range overlaps a changed shard are read.
    """

    snapshot: str
    base: str
    shards: dict[str, dict[str, Any]]
    written: dict[str, WrittenFile]
    partition_by: str
    files: dict[str, PreviousFile] = field(default_factory=dict)
    loaded: set[int] = field(default_factory=set)

    def load_overlapping(self, first: list[str], last: list[str]) -> None:
        """Read the previous rows of every previous shard overlapping [first, last]."""
        for entry in self.shards.values():
            if entry["index"] in self.loaded or entry["last"] < first or entry["first"] > last:
                continue
            self.loaded.add(entry["index"])
            self.files.update(_previous_files(self.base, entry, self.partition_by))


def load_previous(out: str, source: str, opts: BuildOptions) -> Previous | None:
    """The current snapshot of ``out`` if it was built from ``source`` with the same options.

    ``None`` when there is none to reuse: no snapshot, another source, other options
    or another kpcompile version (whose parser may differ).
    """
    try:
        sid = snap.current_id(out)
        manifest = snap.read_manifest(out, sid)
    except (OutputError, KeyError, ValueError):
        return None
    options = manifest.get("options", {})
    if (
        manifest.get("source", {}).get("path") != source
        or manifest.get("tool", {}).get("version") != __version__
        or "shards" not in manifest
        or any(options.get(k) != getattr(opts, k) for k in REUSE_OPTIONS)
        or any("first" not in s for s in manifest["shards"])
    ):
        return None
    base = snap.snapshot_location(out, sid)
    written = {
        f["path"]: WrittenFile(f["path"], f["rows"], f["bytes"], f["sha256"])
        for t in manifest["tables"].values()
        for f in t["files"]
    }
    shards = {s["digest"]: s for s in manifest["shards"]}
    return Previous(sid, base, shards, written, opts.partition_by)


def _previous_files(base: str, shard: dict[str, Any], partition_by: str) -> dict[str, PreviousFile]:
    out: dict[str, PreviousFile] = {}
    for part in shard["outputs"].get("files", []):
        name = part.rsplit("/", 1)[-1]
        table = read_parquet(join(base, part))
        cols = table.select(
            [
                "path",
                "camera",
                "status",
                "layout",
                "version",
                "visible",
                "bytes",
                "mtime_ns",
                "checksum",
            ]
        ).to_pydict()
        for i, path in enumerate(cols["path"]):
            if cols["status"][i] != "ok":
                continue  # rejected files are read again: they are few, and cheap to reject
            folder = (
                f"keypoints/{partition_dir('camera', cols['camera'][i])}"
                if partition_by == "camera"
                else "keypoints"
            )
            out[path] = PreviousFile(
                size=cols["bytes"][i],
                mtime_ns=cols["mtime_ns"][i],
                checksum=cols["checksum"][i],
                layout=cols["layout"][i],
                version=cols["version"][i],
                visible=cols["visible"][i],
                part=join(base, f"{folder}/{name}"),
            )
    return out


def previous_of(
    prev: Previous | None, files: Sequence[SourceFile], partition_by: str
) -> tuple[PreviousFile | None, ...] | None:
    """Per file of a shard to recompile, its previous row (``None`` for new files)."""
    if prev is None or not files:
        return None
    prev.load_overlapping(order_key(files[0], partition_by), order_key(files[-1], partition_by))
    found = tuple(prev.files.get(f.path) if f.duplicate_of is None else None for f in files)
    return found if any(p is not None for p in found) else None


def reuse_shard(prev: Previous | None, digest: str, index: int, staging: str) -> ShardResult | None:
    """Link an unchanged shard's files from the previous snapshot under the new index."""
    if prev is None or digest not in prev.shards:
        return None
    entry = prev.shards[digest]
    name = f"part-{index:05d}.parquet"
    result = ShardResult(index)
    for table, paths in entry["outputs"].items():
        items = []
        for old in paths:
            new = old.rsplit("/", 1)[0] + "/" + name
            _link(join(prev.base, old), join(staging, new))
            w = prev.written[old]
            items.append(WrittenFile(new, w.rows, w.bytes, w.sha256))
        result.written[table] = items
    result.errors = [(e[0], e[1], e[2]) for e in entry["errors"]]
    result.compiled = entry["compiled"]
    result.rows = entry["rows"]
    result.visible = entry["visible"]
    result.source_bytes = entry["source_bytes"]
    result.layouts = Counter(entry["layouts"])
    result.versions = Counter(entry["versions"])
    result.reused = entry["files"]
    return result


def _link(src: str, dst: str) -> None:
    if is_url(dst):
        import fsspec

        fs, dst_path = fsspec.core.url_to_fs(dst)
        fs.copy(fsspec.core.url_to_fs(src)[1], dst_path)
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(src, dst)


def shard_entry(
    result: ShardResult, files: Sequence[SourceFile], digest: str, partition_by: str
) -> dict[str, Any]:
    """The manifest's record of one shard, enough to reuse it without reading it."""
    return {
        "index": result.index,
        "digest": digest,
        "first": order_key(files[0], partition_by),
        "last": order_key(files[-1], partition_by),
        "files": len(files),
        "compiled": result.compiled,
        "rows": result.rows,
        "visible": result.visible,
        "source_bytes": result.source_bytes,
        "layouts": dict(sorted(result.layouts.items())),
        "versions": dict(sorted(result.versions.items())),
        "errors": [list(e) for e in sorted(result.errors)],
        "outputs": {t: [w.path for w in ws] for t, ws in sorted(result.written.items())},
    }
