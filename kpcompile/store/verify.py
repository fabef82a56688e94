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
  dataset) is reported as a note, not a difference.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from kpcompile.errors import FormatError, SourceError
from kpcompile.ingest import discover, open_source
from kpcompile.ingest.discover import printable
from kpcompile.manifest import Manifest, TableEntry
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
    manifest = store.manifest(snapshot)
    sid = manifest.snapshot
    recorded = source is None
    if check_source:
        source = manifest.source.path if source is None else os.fspath(source)
    report = Verification(sid, None if source is None else os.fspath(source))
    tables = manifest.tables
    read: dict[str, pa.Table] = {}
    for name in SCHEMAS:
        if name not in tables:
            if name in REQUIRED_TABLES:  # the --sets tables exist only when asked for
                report.problems.append(f"manifest lists no table {name!r}")
            continue
        table = _check_table(store, sid, name, tables[name], report)
        if table is not None:
            read[name] = table
    _check_strays(store, sid, manifest, report)
    # Counts and the source are compared only when every file is intact, so one
    # damaged file is reported once rather than as a cascade of count mismatches.
    if set(read) == set(SCHEMAS) & set(tables) and set(REQUIRED_TABLES) <= set(read):
        _check_counts(manifest, read, report)
        if source is not None:
            _check_source(source, read["files"], report, from_manifest=recorded)
    return report


REQUIRED_TABLES = ("keypoints", "files", "errors")


def _check_table(
    store: Store, sid: str, name: str, entry: TableEntry, report: Verification
) -> pa.Table | None:
    """Check a table's files; return its rows, or ``None`` if a file is damaged."""
    schema = SCHEMAS[name]
    parts: list[pa.Table] = []
    before = len(report.problems)
    for f in entry.files:
        where = f"{name}: {f.path}"
        try:
            data = store.read_bytes(sid, f.path)
        except OSError as exc:
            report.problems.append(f"{where}: cannot read: {exc.strerror or exc}")
            continue
        report.files_checked += 1
        if len(data) != f.bytes:
            report.problems.append(f"{where}: {len(data)} bytes, manifest says {f.bytes}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != f.sha256:
            report.problems.append(f"{where}: sha256 {digest}, manifest says {f.sha256}")
            continue
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (OSError, pa.ArrowException) as exc:
            report.problems.append(f"{where}: not readable as Parquet: {exc}")
            continue
        if table.num_rows != f.rows:
            report.problems.append(f"{where}: {table.num_rows} rows, manifest says {f.rows}")
        if not table.schema.remove_metadata().equals(schema):
            report.problems.append(f"{where}: schema differs from the {name} table's schema")
            continue
        parts.append(table)
    total = sum(f.rows for f in entry.files)
    if total != entry.rows:
        report.problems.append(f"{name}: files hold {total} rows, manifest says {entry.rows}")
    if len(report.problems) > before:
        return None
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _check_strays(store: Store, sid: str, manifest: Manifest, report: Verification) -> None:
    listed = {f.path for f in manifest.all_files()}
    for rel in store.files(sid):
        if rel.split("/", 1)[0] in SCHEMAS and rel not in listed:
            report.problems.append(f"{rel}: file not listed in the manifest")


def _check_counts(manifest: Manifest, read: dict[str, pa.Table], report: Verification) -> None:
    import pyarrow.compute as pc  # imports pandas when installed: only when verifying

    counts = manifest.counts
    kp, files, errors = read["keypoints"], read["files"], read["errors"]
    status = files.column("status").to_pylist()
    compiled, rejected = status.count("ok"), status.count("rejected")
    checks = [
        ("files", files.num_rows, counts.files),
        ("compiled", compiled, counts.compiled),
        ("rejected", rejected, counts.rejected),
        ("rows", kp.num_rows, counts.rows),
        ("errors rows", errors.num_rows, counts.rejected + counts.sets_rejected),
        ("keypoints rows / 468", kp.num_rows / NUM_LANDMARKS, compiled),
    ]
    for label, got, want in checks:
        if got != want:
            report.problems.append(f"counts: {label} is {got:g}, expected {want}")
    if len(set(files.column("path").to_pylist())) != files.num_rows:
        report.problems.append("files: a source path is listed twice")
    per_file: dict[tuple[str, str], int] = {}
    for dp, cam in zip(
        kp.column("datapoint").to_pylist(), kp.column("camera").to_pylist(), strict=True
    ):
        per_file[(dp, cam)] = per_file.get((dp, cam), 0) + 1
    ok = files.filter(pc.equal(files.column("status"), "ok"))
    want_keys = set(
        zip(ok.column("datapoint").to_pylist(), ok.column("camera").to_pylist(), strict=True)
    )
    for key in sorted(want_keys - set(per_file)):
        report.problems.append(f"keypoints: no rows for compiled file {key[0]}/{key[1]}")
    for key, n in sorted(per_file.items()):
        if key not in want_keys:
            report.problems.append(
                f"keypoints: {n} rows for {key[0]}/{key[1]}, not a compiled file"
            )
        elif n != NUM_LANDMARKS:
            report.problems.append(f"keypoints: {n} rows for {key[0]}/{key[1]}, expected 468")


def _check_source(
    source: str | os.PathLike[str], files: pa.Table, report: Verification, *, from_manifest: bool
) -> None:
    try:
        src = open_source(source)
    except SourceError as exc:
        if not from_manifest:
            raise
        report.source = None
        report.notes.append(
            f"the recorded source {os.fspath(source)!r} cannot be read ({exc}); "
            "checked the snapshot only"
        )
        return
    with src:
        # the tables name files as printable() does (UTF-8, \x escapes for other bytes)
        found = {printable(f.path): f for f in discover(src)}
        recorded = {row["path"]: row for row in files.to_pylist()}
        for rel in sorted(set(found) - set(recorded)):
            report.problems.append(f"source: {rel}: not in the snapshot (added since the build)")
        for rel in sorted(set(recorded) - set(found)):
            report.problems.append(f"source: {rel}: in the snapshot, no longer in the source")
        both = sorted(set(found) & set(recorded))
        touched = 0
        sizes = [found[rel].size for rel in both]
        raw = [found[rel].path for rel in both]
        with src.read_many(raw, max_bytes=2**62, sizes=sizes) as reads:
            for name, data in reads:
                rel = printable(name)
                row = recorded[rel]
                if isinstance(data, FormatError):
                    if row["checksum"] is not None:
                        report.problems.append(f"source: {data}")
                    continue
                report.source_files_checked += 1
                problem = _compare(rel, data, row)
                if problem:
                    report.problems.append(problem)
                elif found[rel].mtime_ns != row["mtime_ns"]:
                    touched += 1
    if touched:
        report.notes.append(
            f"{touched} source file{'s' if touched != 1 else ''} have a new modification time "
            "but the same content"
        )


def _compare(rel: str, data: bytes, row: dict[str, object]) -> str | None:
    if row["bytes"] is not None and len(data) != row["bytes"]:
        return f"source: {rel}: {len(data)} bytes, {row['bytes']} when the snapshot was built"
    checksum = f"crc32:{zlib.crc32(data):08x}"
    if row["checksum"] is not None and checksum != row["checksum"]:
        return f"source: {rel}: content changed ({checksum}, {row['checksum']} at build time)"
    return None
