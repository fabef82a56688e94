"""The manifest of a snapshot: typed, versioned, encoded and decoded only here.

A snapshot's ``manifest.json`` says what the snapshot holds (every Parquet file
with its size and SHA-256), how it was built (source, options, tool version) and,
per shard, enough to reuse the shard in an incremental build without reading it.
It is written last, so a snapshot without one is incomplete and never read.

``format`` names the layout of this document. Readers accept every format listed
in :data:`READABLE_FORMATS` and refuse others with a message naming them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from kpcompile.errors import SnapshotError

FORMAT = "kpcompile-snapshot/2"
"""The format this version writes."""
READABLE_FORMATS: tuple[str, ...] = ("kpcompile-snapshot/1", FORMAT)
"""Formats this version reads (format 1 lacks fields that have defaults here)."""
FILE_NAME = "manifest.json"


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


class Refusal(msgspec.Struct, frozen=True):
    """The last build that was refused (too many rejected files): what it found."""

    attempted_at: str
    source: str
    files: int
    rejected: int
    max_errors: int
    errors: list[ErrorRow]


def encode(manifest: Manifest | Refusal) -> bytes:
    """A manifest (or refusal) as indented JSON with sorted keys, ending with a newline."""
    raw = msgspec.json.encode(manifest, order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"


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
        found = _decode(data, where)
        if len(_DECODED) >= 8:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[data] = found
    return found


_DECODED: dict[bytes, Manifest] = {}


def _decode(data: bytes, where: str) -> Manifest:
    try:
        head = msgspec.json.decode(data, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        msg = f"cannot read manifest {where}: {exc}"
        raise SnapshotError(msg) from None
    fmt = head.get("format")
    if fmt not in READABLE_FORMATS:
        msg = (
            f"manifest {where} has format {fmt!r}; this kpcompile reads "
            f"{', '.join(READABLE_FORMATS)} (a newer kpcompile wrote it?)"
        )
        raise SnapshotError(msg)
    try:
        return msgspec.convert(head, Manifest)
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
