"""Verify a published snapshot against its manifest and, optionally, its source.

:func:`verify` re-reads everything a snapshot's manifest promises:

* every listed Parquet file exists, has the listed size and SHA-256, decodes, and
  holds the listed number of rows with the table's schema;
* no other file sits among the tables' folders (a stray ``*.parquet`` would be
  read by a glob such as the README's DuckDB recipe);
* the counts agree: ``keypoints`` rows = 468 x compiled files, one ``files`` row
  per discovered file, one ``errors`` row per rejected file, and every compiled
  file has exactly its 468 landmark rows;
* given the source folder: every source file is in the snapshot and every file of
  the snapshot is still in the source, with the same size and CRC-32 of its bytes.
  A file whose content is unchanged but whose modification time differs (a copied
  dataset) is reported as a note, not a difference; a file the build rejected as
  unreadable (a stalled or failed read) that reads now is a difference: building
  again includes it.

Memory does not grow with the landmarks: Parquet files are checked one at a time
and the landmark counts a shard at a time (a row group's two name columns at a
time), so verifying takes about what building takes; what grows with the dataset
is the source's listing (columnar, as a build holds it) and 9 bytes per file.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from kpcompile import manifest as mf
from kpcompile.errors import TRANSIENT_CODES, FormatError, SourceError
from kpcompile.ingest import Source, open_source
from kpcompile.ingest.checksum import checksum
from kpcompile.ingest.discover import Discovered, discover_files
from kpcompile.ingest.paths import printable
from kpcompile.manifest import FileEntry, Head, Manifest, ShardRecord
from kpcompile.parsing import NUM_LANDMARKS
from kpcompile.schema import SCHEMAS
from kpcompile.store import open_store
from kpcompile.store.base import Store


@dataclass(slots=True)
class Verification:
    """What :func:`verify` found.

    Attributes:
        snapshot: Id of the snapshot checked.
        source: The source compared with, ``None`` when none was.
        files_checked: Parquet files re-read and checksummed.
        source_files_checked: Source files re-read (0 without a source).
        problems: One line per difference; empty when the snapshot is sound.
        notes: Differences that do not make the snapshot wrong (modification
            times of unchanged source files).
    """

    snapshot: str
    source: str | None = None
    files_checked: int = 0
    source_files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify(
    out: str | os.PathLike[str] | Store,
    source: str | os.PathLike[str] | None = None,
    *,
    snapshot: str | None = None,
    check_source: bool = True,
) -> Verification:
    """Re-read a snapshot and check it against its manifest and its source.

    Args:
        out: Output folder or URL of ``kpcompile build``.
        source: The dataset the snapshot was built from (a folder, an archive or a
            URL, as ``build`` takes); every source file must be in the snapshot,
            unchanged. ``None``: the source the manifest records; if that one
            cannot be read any more, a note says so and only the snapshot is checked.
        snapshot: A snapshot id; ``None`` for the current one.
        check_source: ``False`` checks the snapshot only.

    Returns:
        The problems found; :attr:`Verification.ok` when there are none.

    Raises:
        OutputError: ``out`` holds no such snapshot, or its manifest is unreadable.
        SourceError: ``source`` is given but cannot be listed.

    Example:
        >>> kpcompile.verify("compiled").ok  # doctest: +SKIP
        True
    """
    store = open_store(out)
    head = store.head(snapshot)
    recorded = source is None
    if check_source:
        source = head.source.path if source is None else os.fspath(source)
    report = Verification(head.snapshot, None if source is None else os.fspath(source))
    if not _lists_sound(store, head, report):
        return report  # what the snapshot holds is unknown: nothing else can be checked
    manifest = store.read_manifest(head.snapshot)
    for name in REQUIRED_TABLES:
        if name not in manifest.tables:  # the --sets tables exist only when asked for
            report.problems.append(f"manifest lists no table {name!r}")
    src = _open(source, report, from_manifest=recorded) if source is not None else None
    try:
        _Check(store, manifest, report, src).run()
    finally:
        if src is not None:
            src.close()
    return report


REQUIRED_TABLES = ("keypoints", "files", "errors")


def _lists_sound(store: Store, head: Head, report: Verification) -> bool:
    """Check the manifest's Parquet lists (format 3) against the head's sizes and SHA-256."""
    for name, listed in sorted(head.lists.items()):
        try:
            data = store.read_bytes(head.snapshot, listed.path)
        except OSError as exc:
            report.problems.append(f"{listed.path}: cannot read: {exc.strerror or exc}")
            continue
        report.files_checked += 1
        problem = mf.check_list(head, name, data)
        if problem is not None:
            report.problems.append(problem)
    return not report.problems


def _open(
    source: str | os.PathLike[str], report: Verification, *, from_manifest: bool
) -> Source | None:
    try:
        return open_source(source)
    except SourceError as exc:
        if not from_manifest:
            raise
        report.source = None
        report.notes.append(
            f"the recorded source {os.fspath(source)!r} cannot be read ({exc}); "
            "checked the snapshot only"
        )
        return None


class _Check:
    """One pass over a snapshot, a shard at a time.

    Every Parquet file is read once: its bytes are checksummed, then, if sound, the
    shard's landmark rows are counted and compared with its ``files`` rows. Counts are
    reported, and the source compared (the ``files`` tables read again, a shard at a
    time), only when every file is intact, so one damaged file is reported once rather
    than as a cascade of count mismatches.
    """

    def __init__(
        self, store: Store, manifest: Manifest, report: Verification, src: Source | None
    ) -> None:
        self.store, self.manifest, self.report, self.src = store, manifest, report, src
        self.damaged = False
        self.later: list[str] = []  # count problems, reported if nothing is damaged
        self.totals: Counter[str] = Counter()
        self.path_hashes: list[npt.NDArray[np.int64]] = []
        self.index = _SourceIndex.of(src) if src is not None else None
        self.transient: dict[str, str] = {}
        self.changed: list[str] = []
        self.gone: list[str] = []
        self.touched = 0

    def run(self) -> None:
        m, sid = self.manifest, self.manifest.snapshot
        by_shard = {p for s in m.shards for paths in s.outputs.values() for p in paths}
        entries = {name: {f.path: f for f in t.files} for name, t in m.tables.items()}
        for name, table in m.tables.items():
            if name not in SCHEMAS:
                continue
            total = sum(f.rows for f in table.files)
            if total != table.rows:
                self.report.problems.append(
                    f"{name}: files hold {total} rows, manifest says {table.rows}"
                )
                self.damaged = True
            for f in table.files:
                if f.path not in by_shard:  # the errors table, written apart
                    table_ = self._read(name, f)
                    if name == "errors" and table_ is not None:
                        self._errors(table_)
        _check_strays(self.store, sid, m, self.report)
        for shard in m.shards:
            self._shard(shard, entries)
        if not self.damaged and set(REQUIRED_TABLES) <= set(m.tables):
            self._counts()
            self.report.problems.extend(self.later)
            if self.index is not None:
                # a second, small pass: the files tables only (about 100 bytes a row)
                for shard in m.shards:
                    for path in shard.outputs.get("files", []):
                        data = self.store.read_bytes(sid, path)
                        self._source(pq.read_table(pa.BufferReader(data)).to_pylist())
                self._source_end()

    def _read(self, name: str, f: FileEntry) -> pq.ParquetFile | None:
        """Check one file against the manifest; its Parquet reader if it is sound."""
        where, report = f"{name}: {f.path}", self.report
        try:
            data = self.store.read_bytes(self.manifest.snapshot, f.path)
        except OSError as exc:
            report.problems.append(f"{where}: cannot read: {exc.strerror or exc}")
            self.damaged = True
            return None
        report.files_checked += 1
        before = len(report.problems)
        if len(data) != f.bytes:
            report.problems.append(f"{where}: {len(data)} bytes, manifest says {f.bytes}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != f.sha256:
            report.problems.append(f"{where}: sha256 {digest}, manifest says {f.sha256}")
            self.damaged = True
            return None
        try:
            pf = pq.ParquetFile(pa.BufferReader(data))
            schema = pf.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            report.problems.append(f"{where}: not readable as Parquet: {exc}")
            self.damaged = True
            return None
        if pf.metadata.num_rows != f.rows:
            report.problems.append(f"{where}: {pf.metadata.num_rows} rows, manifest says {f.rows}")
        if not schema.remove_metadata().equals(SCHEMAS[name]):
            report.problems.append(f"{where}: schema differs from the {name} table's schema")
        if len(report.problems) > before:
            self.damaged = True
            return None
        self.totals[f"{name} rows"] += f.rows
        return pf

    def _errors(self, pf: pq.ParquetFile) -> None:
        """Note the rejections that a new read may clear, to retry them from the source."""
        for batch in pf.iter_batches(columns=["path", "code"]):
            for path, code in zip(*batch.to_pydict().values(), strict=True):
                if code in TRANSIENT_CODES:
                    self.transient[path] = code

    def _shard(self, shard: ShardRecord, entries: dict[str, dict[str, FileEntry]]) -> None:
        landmarks: Counter[tuple[str, str]] = Counter()
        rows: list[dict[str, object]] = []
        sound = True
        for table, paths in sorted(shard.outputs.items()):
            if table not in SCHEMAS:
                continue
            for path in paths:
                f = entries.get(table, {}).get(path)
                if f is None:
                    self.report.problems.append(
                        f"manifest: shard {shard.index} lists {path}, which no table lists"
                    )
                    self.damaged, sound = True, False
                    continue
                pf = self._read(table, f)
                if pf is None:
                    sound = False
                elif table == "keypoints":
                    _count(pf, landmarks)
                elif table == "files":
                    rows.extend(pf.read().to_pylist())
                elif table == "errors":
                    self._errors(pf)
        if sound:
            self._per_file(rows, landmarks)

    def _per_file(self, rows: list[dict[str, object]], landmarks: Counter[tuple[str, str]]) -> None:
        ok = {(str(r["datapoint"]), str(r["camera"])) for r in rows if r["status"] == "ok"}
        self.totals["compiled"] += sum(r["status"] == "ok" for r in rows)
        self.totals["rejected"] += sum(r["status"] == "rejected" for r in rows)
        self.path_hashes.append(np.array([hash(r["path"]) for r in rows], dtype=np.int64))
        for dp, cam in sorted(ok - set(landmarks)):
            self.later.append(f"keypoints: no rows for compiled file {dp}/{cam}")
        for (dp, cam), n in sorted(landmarks.items()):
            if (dp, cam) not in ok:
                self.later.append(f"keypoints: {n} rows for {dp}/{cam}, not a compiled file")
            elif n != NUM_LANDMARKS:
                self.later.append(f"keypoints: {n} rows for {dp}/{cam}, expected 468")

    def _counts(self) -> None:
        counts, t = self.manifest.counts, self.totals
        checks = [
            ("files", t["files rows"], counts.files),
            ("compiled", t["compiled"], counts.compiled),
            ("rejected", t["rejected"], counts.rejected),
            ("rows", t["keypoints rows"], counts.rows),
            ("errors rows", t["errors rows"], counts.rejected + counts.sets_rejected),
            ("keypoints rows / 468", t["keypoints rows"] / NUM_LANDMARKS, t["compiled"]),
        ]
        for label, got, want in checks:
            if got != want:
                self.report.problems.append(f"counts: {label} is {got:g}, expected {want}")
        hashes = np.sort(np.concatenate(self.path_hashes)) if self.path_hashes else None
        if hashes is not None and bool(np.any(hashes[1:] == hashes[:-1])):
            # equal hashes: the same path twice, or (rarely) a collision; tell them apart
            self.report.problems.extend(self._twice())

    def _twice(self) -> list[str]:
        seen: set[str] = set()
        for shard in self.manifest.shards:
            for path in shard.outputs.get("files", []):
                pf = pq.ParquetFile(
                    pa.BufferReader(self.store.read_bytes(self.manifest.snapshot, path))
                )
                for batch in pf.iter_batches(columns=["path"]):
                    for p in batch.column(0).to_pylist():
                        if p in seen:
                            return ["files: a source path is listed twice"]
                        seen.add(p)
        return []

    # --- the source ---------------------------------------------------------------------

    def _source(self, rows: list[dict[str, object]]) -> None:
        """Compare a shard's ``files`` rows with the source files of the same names."""
        assert self.index is not None and self.src is not None
        both: list[tuple[dict[str, object], int]] = []
        for row in rows:
            at = self.index.find(str(row["path"]))
            if at is None:
                self.gone.append(f"source: {row['path']}: in the snapshot, no longer in the source")
            else:
                both.append((row, at))
        if not both:
            return
        lst = self.index.files.listing
        where = np.array([i for _, i in both], dtype=np.int64)
        raw, sizes = lst.paths(where), lst.sizes[where].tolist()
        mtimes = lst.mtimes[where].tolist()
        with self.src.read_many(raw, max_bytes=2**62, sizes=sizes) as reads:
            for k, (_name, data) in enumerate(reads):
                row = both[k][0]
                rel = str(row["path"])
                if isinstance(data, FormatError):
                    if row["checksum"] is not None:
                        self.changed.append(f"source: {data}")
                    continue
                self.report.source_files_checked += 1
                if row["checksum"] is None and rel in self.transient:
                    self.changed.append(
                        f"source: {rel}: rejected as {self.transient[rel]} by the build, "
                        "reads now: build again to include it"
                    )
                    continue
                problem = _compare(rel, data, row)
                if problem:
                    self.changed.append(problem)
                elif mtimes[k] != row["mtime_ns"]:
                    self.touched += 1

    def _source_end(self) -> None:
        assert self.index is not None
        added = [
            f"source: {rel}: not in the snapshot (added since the build)"
            for rel in self.index.unseen()
        ]
        self.report.problems.extend([*added, *sorted(self.gone), *self.changed])
        if self.touched:
            n = self.touched
            self.report.notes.append(
                f"{n} source file{'s' if n != 1 else ''} have a new modification time "
                "but the same content"
            )


def _count(pf: pq.ParquetFile, into: Counter[tuple[str, str]]) -> None:
    """Landmark rows per (datapoint, camera), a row group at a time."""
    for i in range(pf.num_row_groups):
        t = pf.read_row_group(i, columns=["datapoint", "camera"])
        grouped = t.group_by(["datapoint", "camera"]).aggregate([([], "count_all")]).to_pydict()
        for dp, cam, n in zip(
            grouped["datapoint"], grouped["camera"], grouped["count_all"], strict=True
        ):
            into[(dp, cam)] += n


@dataclass(slots=True)
class _SourceIndex:
    """The source's files by their names as the tables write them (printable), in
    9 bytes per file: a sorted array of the names' hashes, the files at those places,
    and which were found in the snapshot."""

    files: Discovered
    hashes: npt.NDArray[np.int64]
    where: npt.NDArray[np.int64]
    seen: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, src: Source) -> _SourceIndex:
        files = discover_files(src)[0]
        idx = files.order
        hashes = np.empty(len(idx), dtype=np.int64)
        step = 1 << 14
        for lo in range(0, len(idx), step):
            chunk = files.listing.paths(idx[lo : lo + step])
            hashes[lo : lo + len(chunk)] = [hash(printable(p)) for p in chunk]
        order = np.argsort(hashes, kind="stable")
        return cls(files, hashes[order], idx[order], np.zeros(len(idx), dtype=bool))

    def find(self, rel: str) -> int | None:
        """The listing index of the source file named ``rel``; marks it seen."""
        h = hash(rel)
        lo = int(np.searchsorted(self.hashes, h, side="left"))
        hi = int(np.searchsorted(self.hashes, h, side="right"))
        for k in range(lo, hi):
            at = int(self.where[k])
            if printable(self.files.listing.paths(np.array([at]))[0]) == rel:
                self.seen[k] = True
                return at
        return None

    def unseen(self) -> Iterator[str]:
        """Names of the source files no ``files`` row named, sorted."""
        at = self.where[~self.seen]
        names = sorted(printable(p) for p in self.files.listing.paths(at)) if len(at) else []
        yield from names


def _check_strays(store: Store, sid: str, manifest: Manifest, report: Verification) -> None:
    listed = {f.path for f in manifest.all_files()}
    if manifest.format not in mf.ONE_DOCUMENT_FORMATS:
        listed |= {mf.FILES_LIST, mf.SHARDS_LIST}
    for rel in store.files(sid):
        top = rel.split("/", 1)[0]
        if (top in SCHEMAS or top == mf.LISTS_FOLDER) and rel not in listed:
            report.problems.append(f"{rel}: file not listed in the manifest")


def _compare(rel: str, data: bytes, row: dict[str, object]) -> str | None:
    if row["bytes"] is not None and len(data) != row["bytes"]:
        return f"source: {rel}: {len(data)} bytes, {row['bytes']} when the snapshot was built"
    now = checksum(data)
    if row["checksum"] is not None and now != row["checksum"]:
        return f"source: {rel}: content changed ({now}, {row['checksum']} at build time)"
    return None
