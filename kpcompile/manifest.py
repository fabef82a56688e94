"""The manifest of a snapshot: typed, versioned, encoded and decoded only here.

A snapshot's manifest says what the snapshot holds (every Parquet file with its
size and SHA-256), how it was built (source, options, tool version) and, per shard,
enough to reuse the shard in an incremental build without reading it. In memory it
is one :class:`Manifest`. On disk (format 3) it is two Parquet lists and a small
JSON head, so that opening a snapshot of a hundred million source files reads a
few kilobytes, not every shard's record::

    manifest.json                the head (:class:`Head`): counts, options, tables'
                                 totals and schemas, and each list's size and SHA-256
    _manifest/files.parquet      every Parquet file: table, path, rows, bytes, sha256
    _manifest/shards.parquet     every shard: index, digest, its first and last sort
                                 keys, and its whole record as JSON

``manifest.json`` is written last, so a snapshot without one is incomplete and
never read. The head holds the lists' sizes and checksums: they are checked when
read, and by ``verify``, as the data files are.

``format`` names the layout. Readers accept every format listed in
:data:`READABLE_FORMATS` (formats 1 and 2 were one JSON document holding the
lists) and refuse others with a message naming them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from kpcompile.errors import SnapshotError

if TYPE_CHECKING:
    import pyarrow as pa

FORMAT = "kpcompile-snapshot/3"
"""The format this version writes."""
READABLE_FORMATS: tuple[str, ...] = ("kpcompile-snapshot/1", "kpcompile-snapshot/2", FORMAT)
"""Formats this version reads (format 1 lacks fields that have defaults here)."""
ONE_DOCUMENT_FORMATS = READABLE_FORMATS[:2]
"""Formats whose ``manifest.json`` holds the file and shard lists itself."""
FILE_NAME = "manifest.json"
LISTS_FOLDER = "_manifest"
FILES_LIST = f"{LISTS_FOLDER}/files.parquet"
SHARDS_LIST = f"{LISTS_FOLDER}/shards.parquet"
LIST_ROW_GROUP = 4096
"""Rows per row group of a list: a range of shards (or one table's files) is read
by row group, skipping the others by their statistics."""


class ErrorRow(NamedTuple):
    """A rejected file: its path, its :class:`~kpcompile.errors.ErrorCode`, the message.

    The message is :attr:`FormatError.reason <kpcompile.errors.FormatError>`: what is
    wrong, without the path (the row has it); :func:`located` puts them together.
    """

    path: str
    code: str
    message: str


def located(path: str, message: str) -> str:
    """``path: message``, as a rejection is printed.

    Snapshots of earlier versions hold messages that start with the path already;
    those are returned as they are.

    Example:
        >>> located("dp/camera/key_points/face_dense_key_points.json", "invalid JSON")
        'dp/camera/key_points/face_dense_key_points.json: invalid JSON'
    """
    return message if message.startswith(f"{path}: ") else f"{path}: {message}"


class FileEntry(msgspec.Struct, frozen=True):
    """A Parquet file of a snapshot: path relative to the snapshot folder, and checks."""

    path: str
    rows: int
    bytes: int
    sha256: str


class Column(msgspec.Struct, frozen=True):
    """One column of a table's schema, as Arrow names its type."""

    name: str
    type: str
    nullable: bool


class TableEntry(msgspec.Struct, frozen=True):
    """One table: its files and their totals."""

    rows: int
    bytes: int
    partition_by: str
    schema: list[Column]
    files: list[FileEntry]


class ShardRecord(msgspec.Struct, frozen=True):
    """One shard of the build, enough to reuse it without reading it.

    ``digest`` identifies its input files (names, sizes, mtimes; with ``--sets``,
    its set files too); ``first`` and ``last`` are the sort keys of its first and
    last file; ``outputs`` the paths it wrote, per table; ``set_errors`` its
    rejected set files (``--sets``).
    """

    index: int
    digest: str
    first: list[str]
    last: list[str]
    files: int
    compiled: int
    rows: int
    visible: int
    source_bytes: int
    layouts: dict[str, int]
    versions: dict[str, int]
    errors: list[ErrorRow]
    outputs: dict[str, list[str]]
    set_errors: list[ErrorRow] = msgspec.field(default_factory=list)


class Tool(msgspec.Struct, frozen=True):
    """The program that wrote the snapshot."""

    name: str
    version: str


class SourceInfo(msgspec.Struct, frozen=True):
    """What the snapshot was built from: location, number of files, their bytes."""

    path: str
    files: int
    bytes: int


class Counts(msgspec.Struct, frozen=True):
    """Files and rows of the snapshot.

    ``sets_rejected`` counts rejected set files (``--sets``), which are in
    ``errors`` but are not landmark files.
    """

    files: int
    compiled: int
    rejected: int
    rows: int
    visible: int
    sets_rejected: int = 0
    datapoints: int = 0
    """Distinct datapoints among the compiled files."""
    cameras: int = 0
    """Distinct camera names among the compiled files."""


class Manifest(msgspec.Struct, frozen=True):
    """A snapshot's manifest (``manifest.json``)."""

    format: str
    snapshot: str
    created_at: str
    tool: Tool
    source: SourceInfo
    options: dict[str, Any]
    counts: Counts
    layouts: dict[str, int]
    versions: dict[str, int]
    output_bytes: int
    tables: dict[str, TableEntry]
    shards: list[ShardRecord] = msgspec.field(default_factory=list)
    inputs: str = ""
    """Digest of everything the build read: every file's path, size and mtime (and the
    set files'). A build whose inputs and recorded options equal the current
    snapshot's has nothing to publish."""

    def table(self, name: str) -> TableEntry:
        """A table's entry, or :class:`SnapshotError` naming the tables there are."""
        if name not in self.tables:
            msg = (
                f"unknown table {name!r}; tables in this snapshot: {', '.join(sorted(self.tables))}"
            )
            raise SnapshotError(msg)
        return self.tables[name]

    def all_files(self) -> list[FileEntry]:
        """Every Parquet file of every table."""
        return [f for t in self.tables.values() for f in t.files]


class ListFile(msgspec.Struct, frozen=True):
    """One Parquet list of a format-3 snapshot: where it is, its rows, and its checks."""

    path: str
    rows: int
    bytes: int
    sha256: str


class TableHead(msgspec.Struct, frozen=True):
    """One table as the head describes it: totals and schema; its files are in a list."""

    rows: int
    bytes: int
    partition_by: str
    schema: list[Column]
    files: int
    """How many Parquet files the table has."""


class Head(msgspec.Struct, frozen=True, omit_defaults=True):
    """What opening a snapshot reads: ``manifest.json`` of format 3 (a few KB).

    A manifest of format 1 or 2 is read whole and kept in :attr:`whole`; its head
    is derived from it (with no :attr:`lists`).
    """

    format: str
    snapshot: str
    created_at: str
    tool: Tool
    source: SourceInfo
    options: dict[str, Any]
    counts: Counts
    layouts: dict[str, int]
    versions: dict[str, int]
    output_bytes: int
    tables: dict[str, TableHead]
    lists: dict[str, ListFile] = msgspec.field(default_factory=dict)
    """``files`` and ``shards``: the Parquet lists (format 3)."""
    inputs: str = ""
    whole: Manifest | None = None
    """The whole manifest, when it was one document (formats 1 and 2); never written."""

    def table(self, name: str) -> TableHead:
        """A table's head, or :class:`SnapshotError` naming the tables there are."""
        if name not in self.tables:
            msg = (
                f"unknown table {name!r}; tables in this snapshot: {', '.join(sorted(self.tables))}"
            )
            raise SnapshotError(msg)
        return self.tables[name]


class Refusal(msgspec.Struct, frozen=True):
    """The last build that was refused (too many rejected files): what it found."""

    attempted_at: str
    source: str
    files: int
    rejected: int
    max_errors: int
    errors: list[ErrorRow]


def encode(manifest: Manifest | Head | Refusal) -> bytes:
    """A manifest, head or refusal as indented JSON with sorted keys, ending with a newline."""
    raw = msgspec.json.encode(manifest, order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"


def head_of(manifest: Manifest, lists: dict[str, ListFile] | None = None) -> Head:
    """The head of a whole manifest (format 3 with ``lists``; else it keeps ``manifest``)."""
    tables = {
        name: TableHead(t.rows, t.bytes, t.partition_by, t.schema, len(t.files))
        for name, t in manifest.tables.items()
    }
    return Head(
        format=manifest.format,
        snapshot=manifest.snapshot,
        created_at=manifest.created_at,
        tool=manifest.tool,
        source=manifest.source,
        options=manifest.options,
        counts=manifest.counts,
        layouts=manifest.layouts,
        versions=manifest.versions,
        output_bytes=manifest.output_bytes,
        tables=tables,
        lists=lists or {},
        inputs=manifest.inputs,
        whole=None if lists is not None else manifest,
    )


def encode_snapshot(manifest: Manifest) -> list[tuple[str, bytes]]:
    """A manifest as the files of a format-3 snapshot, in the order to write them:
    the two lists, then ``manifest.json`` (which names their checksums)."""
    files = _files_list(manifest)
    shards = _shards_list(manifest.shards)
    lists = {
        "files": ListFile(FILES_LIST, len(manifest.all_files()), len(files), _sha256(files)),
        "shards": ListFile(SHARDS_LIST, len(manifest.shards), len(shards), _sha256(shards)),
    }
    head = head_of(msgspec.structs.replace(manifest, format=FORMAT), lists)
    return [(FILES_LIST, files), (SHARDS_LIST, shards), (FILE_NAME, encode(head))]


def decode_head(data: bytes, where: str) -> Head:
    """Parse a ``manifest.json`` of any readable format into its head.

    Raises:
        SnapshotError: Not a manifest, or a format this version does not read.
    """
    found = _HEADS.get(data)
    if found is None:
        raw = _checked_format(data, where)
        if raw.get("format") in ONE_DOCUMENT_FORMATS:
            found = head_of(_convert(raw, Manifest, where))
        else:
            raw.pop("whole", None)
            found = _convert(raw, Head, where)
        _remember(_HEADS, data, found)
    return found


def check_list(head: Head, name: str, data: bytes) -> str | None:
    """What is wrong with the bytes read for list ``name`` (size, SHA-256), or ``None``."""
    want = head.lists[name]
    if len(data) != want.bytes:
        return f"{want.path}: {len(data)} bytes, manifest says {want.bytes}"
    digest = _sha256(data)
    if digest != want.sha256:
        return f"{want.path}: sha256 {digest}, manifest says {want.sha256}"
    return None


def decode_files(data: bytes, tables: Sequence[str] | None = None) -> dict[str, list[FileEntry]]:
    """The file list: each table's files (only those of ``tables`` if given), by path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(pa.BufferReader(data))
    wanted = None if tables is None else set(tables)
    groups = [
        i
        for i in range(pf.metadata.num_row_groups)
        if wanted is None or _may_hold(pf, i, "table", wanted)
    ]
    cols = pf.read_row_groups(groups).to_pydict() if groups else {}
    out: dict[str, list[FileEntry]] = {name: [] for name in (tables or ())}
    rows = zip(
        cols.get("table", []), cols.get("path", []), cols.get("rows", []),
        cols.get("bytes", []), cols.get("sha256", []), strict=True,
    )  # fmt: skip
    for table, path, n, size, sha in rows:
        if wanted is None or table in wanted:
            out.setdefault(table, []).append(FileEntry(path, n, size, sha))
    return out


def decode_paths(data: bytes, table: str) -> list[str]:
    """The paths of one table's files in the file list (only its row groups; the ``table``
    column only of row groups that also hold other tables' files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(pa.BufferReader(data))
    names, paths = [], []
    at = pf.schema_arrow.get_field_index("table")
    for i in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(i).column(at).statistics
        known = stats is not None and stats.has_min_max
        if known and not stats.min <= table <= stats.max:
            continue
        if known and stats.min == stats.max:  # every row is the table's
            paths += pf.read_row_group(i, columns=["path"], use_threads=False)[0].to_pylist()
            continue
        cols = pf.read_row_group(i, columns=["table", "path"], use_threads=False)
        names, more = cols[0].to_pylist(), cols[1].to_pylist()
        paths += [p for t, p in zip(names, more, strict=True) if t == table]
    return paths


def decode_shards(
    data: bytes, first: list[str] | None = None, last: list[str] | None = None
) -> list[ShardRecord]:
    """The shard list: every record, or those whose keys overlap ``[first, last]``.

    A shard overlaps when its last key is not before ``first`` and its first key is
    not after ``last`` (either bound may be ``None``: open). Row groups whose key
    statistics lie outside the range are not read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(pa.BufferReader(data))
    lo = None if first is None else sort_key(first)
    hi = None if last is None else sort_key(last)
    groups = [i for i in range(pf.metadata.num_row_groups) if _overlaps(pf, i, lo, hi)]
    if not groups:
        return []
    cols = pf.read_row_groups(groups, columns=["first_key", "last_key", "record"]).to_pydict()
    kept = [
        rec
        for f, la, rec in zip(cols["first_key"], cols["last_key"], cols["record"], strict=True)
        if (lo is None or la >= lo) and (hi is None or f <= hi)
    ]
    return msgspec.json.decode(b"[" + b",".join(kept) + b"]", type=list[ShardRecord])


def assemble(head: Head, files: dict[str, list[FileEntry]], shards: list[ShardRecord]) -> Manifest:
    """The whole manifest from its head and its two lists."""
    tables = {
        name: TableEntry(t.rows, t.bytes, t.partition_by, t.schema, files.get(name, []))
        for name, t in head.tables.items()
    }
    return Manifest(
        format=head.format, snapshot=head.snapshot, created_at=head.created_at,
        tool=head.tool, source=head.source, options=head.options, counts=head.counts,
        layouts=head.layouts, versions=head.versions, output_bytes=head.output_bytes,
        tables=tables, shards=shards, inputs=head.inputs,
    )  # fmt: skip


def sort_key(key: Sequence[str]) -> str:
    """A shard's first or last key as one string that sorts as the key does.

    The parts are joined by NUL, which sorts before every character a name holds.

    Example:
        >>> sort_key(["camera", "dp_1", "dp_1/camera/x.json"]) < sort_key(["camera", "dp_10"])
        True
    """
    return "\0".join(key)


def _files_list(manifest: Manifest) -> bytes:
    rows = [(name, f) for name, t in sorted(manifest.tables.items()) for f in t.files]
    return _parquet(
        {
            "table": _strings([name for name, _ in rows]),
            "path": _strings([f.path for _, f in rows]),
            "rows": _ints([f.rows for _, f in rows]),
            "bytes": _ints([f.bytes for _, f in rows]),
            "sha256": _strings([f.sha256 for _, f in rows]),
        }
    )


def _shards_list(shards: Sequence[ShardRecord]) -> bytes:
    shards = sorted(shards, key=lambda s: s.index)
    return _parquet(
        {
            "index": _ints([s.index for s in shards]),
            "digest": _strings([s.digest for s in shards]),
            "first_key": _strings([sort_key(s.first) for s in shards]),
            "last_key": _strings([sort_key(s.last) for s in shards]),
            "record": _strings([msgspec.json.encode(s) for s in shards], binary=True),
        }
    )


def _parquet(columns: dict[str, pa.Array]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    table = pa.Table.from_arrays(list(columns.values()), names=list(columns))
    pq.write_table(table, sink, compression="zstd", row_group_size=LIST_ROW_GROUP)
    return bytes(sink.getvalue())


def _strings(values: Sequence[str | bytes], *, binary: bool = False) -> pa.Array:
    """A ``large_string`` (or ``large_binary``) array built from buffers (``pa.array``
    imports pandas on its first call when it is installed)."""
    import numpy as np
    import pyarrow as pa

    raw = [v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass") for v in values]
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, raw), np.int64, len(raw)), out=offsets[1:])
    kind = pa.large_binary() if binary else pa.large_string()
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(raw))]
    return pa.Array.from_buffers(kind, len(raw), buffers)


def _ints(values: Sequence[int]) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    data = np.array(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _may_hold(pf: Any, group: int, column: str, values: set[str]) -> bool:
    """Whether row group ``group`` may hold one of ``values`` in ``column`` (statistics)."""
    col = pf.metadata.row_group(group).column(pf.schema_arrow.get_field_index(column))
    stats = col.statistics
    if stats is None or not stats.has_min_max:
        return True
    return any(stats.min <= v <= stats.max for v in values)


def _overlaps(pf: Any, group: int, lo: str | None, hi: str | None) -> bool:
    """Whether row group ``group`` may hold a shard overlapping ``[lo, hi]`` (statistics)."""
    meta = pf.metadata.row_group(group)
    names = pf.schema_arrow.names
    firsts = meta.column(names.index("first_key")).statistics
    lasts = meta.column(names.index("last_key")).statistics
    if hi is not None and firsts is not None and firsts.has_min_max and firsts.min > hi:
        return False
    return not (lo is not None and lasts is not None and lasts.has_min_max and lasts.max < lo)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, where: str) -> Manifest:
    """Parse a manifest, naming ``where`` it came from when it cannot be read.

    The last few manifests decoded are kept, keyed by their bytes: a snapshot is
    never modified, and a query helper reads its manifest on every call (decoding
    one of 20,000 files takes about 1 ms; comparing the bytes, microseconds).
    Treat the result as read-only: it may be shared.

    Raises:
        SnapshotError: Not a manifest, or a format this version does not read.
    """
    found = _DECODED.get(data)
    if found is None:
        found = _convert(_checked_format(data, where), Manifest, where)
        _remember(_DECODED, data, found)
    return found


_DECODED: dict[bytes, Manifest] = {}
_HEADS: dict[bytes, Head] = {}


def _remember(cache: dict[bytes, Any], data: bytes, value: Any) -> None:
    if len(cache) >= 8:
        cache.pop(next(iter(cache)))
    cache[data] = value


def _checked_format(data: bytes, where: str) -> dict[str, Any]:
    try:
        raw = msgspec.json.decode(data, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        msg = f"cannot read manifest {where}: {exc}"
        raise SnapshotError(msg) from None
    fmt = raw.get("format")
    if fmt not in READABLE_FORMATS:
        msg = (
            f"manifest {where} has format {fmt!r}; this kpcompile reads "
            f"{', '.join(READABLE_FORMATS)} (a newer kpcompile wrote it?)"
        )
        raise SnapshotError(msg)
    return raw


def _convert(raw: dict[str, Any], kind: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        msg = f"cannot read manifest {where}: {exc}"
        raise SnapshotError(msg) from None


def decode_refusal(data: bytes, where: str) -> Refusal:
    """Parse the record of a refused build.

    Raises:
        SnapshotError: It cannot be read.
    """
    try:
        return msgspec.json.decode(data, type=Refusal)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        msg = f"cannot read {where}: {exc}"
        raise SnapshotError(msg) from None
