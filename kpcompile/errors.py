"""The exception tree of kpcompile, and the codes of rejected files.

Every error the library raises on purpose derives from :class:`KpcompileError`.
The CLI turns them into one-line messages and documented exit codes; anything
else reaching the CLI is a bug and keeps its traceback.

Rejected *input files* are not exceptions that stop a build: :func:`kpcompile.parse`
raises :class:`FormatError` for one file, and the build records it as a row of the
``errors`` table with its :class:`ErrorCode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """The exit codes of the ``kpcompile`` command; see :data:`EXIT_CODE_MEANINGS`."""

    OK = 0
    BUG = 1
    USAGE = 2
    REJECTED = 3
    SOURCE = 4
    OUTPUT = 5
    VERIFY_FAILED = 6
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.BUG: "unexpected failure: a bug, reported with its traceback",
    ExitCode.USAGE: "usage error: unknown option, invalid value, or an invalid query",
    ExitCode.REJECTED: "more files rejected than `--max-errors`; nothing was published",
    ExitCode.SOURCE: "source error: SOURCE missing, unreadable, or holding no keypoint file",
    ExitCode.OUTPUT: "output error: OUT unusable, busy, holding no snapshot, or not writable",
    ExitCode.VERIFY_FAILED: "`verify` found a difference (each one is printed)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, SIGINT): nothing published, OUT as before",
}
"""What each exit code means (the CLI reference's table is generated from this)."""


class ErrorCode(StrEnum):
    """Why a source file was rejected (the ``code`` column of the ``errors`` table)."""

    UNREADABLE = "unreadable"
    """The file could not be read (permissions, I/O error, not a regular file: a folder or
    FIFO named like a keypoint file, a link inside an archive)."""
    TOO_LARGE = "too_large"
    """The file is larger than ``max_file_bytes`` (64 MiB by default); it is not read."""
    EMPTY = "empty"
    """The file has no content (zero bytes or only whitespace)."""
    INVALID_ENCODING = "invalid_encoding"
    """Not UTF-8 without a byte-order mark, as JSON requires (RFC 8259 section 8.1)."""
    INVALID_JSON = "invalid_json"
    """Not well-formed JSON (truncated, syntax error)."""
    TOO_DEEP = "too_deep"
    """JSON nested deeper than the JSON parser allows (far deeper than any keypoint layout)."""
    DUPLICATE_KEY = "duplicate_key"
    """An object repeats a key, so the value a reader sees depends on the reader."""
    UNKNOWN_LAYOUT = "unknown_layout"
    """Valid JSON but not one of the keypoint layouts kpcompile knows: not an object, or
    no ``face.dense``, ``face.standard`` or ``keypoints_3d_coordinates``."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """The ``version`` field names a version kpcompile does not support (it reads 2.0.0 and
    2.0.1), or the documented ``face.standard`` layout has no ``version``."""
    LANDMARK_COUNT = "landmark_count"
    """Not exactly 468 landmarks (the message lists the missing or unexpected ids)."""
    LANDMARK_IDS = "landmark_ids"
    """468 landmarks, but their ids are not exactly "0" to "467"."""
    BAD_STRUCTURE = "bad_structure"
    """A landmark is not shaped as the layout says (missing or misplaced field, such as a
    missing ``global_3d.z``, or wrong nesting)."""
    NON_NUMERIC = "non_numeric"
    """A coordinate is a string, boolean, null or container instead of a number."""
    NON_FINITE = "non_finite"
    """A coordinate is NaN or infinite (including numbers beyond the float64 range)."""
    OUT_OF_RANGE = "out_of_range"
    """An integer that float64 cannot hold exactly (beyond 2**53, or beyond 64 bits)."""
    BAD_VISIBILITY = "bad_visibility"
    """``is_visible`` is neither a JSON boolean nor the string "true"/"false"."""
    DUPLICATE_CAMERA = "duplicate_camera"
    """Another file already provides the landmarks of the same camera folder."""
    UNSAFE_PATH = "unsafe_path"
    """The file's name in an archive or object store is absolute or has a ``..``, ``.``
    or empty component: its datapoint would name a folder outside the dataset. Such
    files are rejected unread, as Python's tarfile ``data`` extraction filter does.
    So is a name that is not valid UTF-8 (shown with ``\\x`` escapes)."""
    INTERNAL_ERROR = "internal_error"
    """kpcompile failed unexpectedly on this file (a bug: please report it with the file);
    the message names the exception. The build goes on with the other files."""


TRANSIENT_CODES: frozenset[ErrorCode] = frozenset({ErrorCode.UNREADABLE, ErrorCode.INTERNAL_ERROR})
"""Rejections whose cause may lie outside the file's bytes (a stalled or failed read, a
bug), so that reading the same file again may succeed. The next build retries them: a
snapshot holding one is never "up to date" unless a new read fails the same way, and
the shard holding one is recompiled, never reused as it is."""


class KpcompileError(Exception):
    """Base class of every error kpcompile raises on purpose."""

    exit_code = ExitCode.BUG


class OptionsError(KpcompileError, ValueError):
    """An option has an invalid value (the message names the option and valid values)."""

    exit_code = ExitCode.USAGE


class SourceError(KpcompileError):
    """The source cannot be used: missing, unreadable, or holding no keypoint file."""

    exit_code = ExitCode.SOURCE


class OutputError(KpcompileError):
    """The output folder cannot be used or written, or holds no snapshot."""

    exit_code = ExitCode.OUTPUT


class SnapshotError(OutputError):
    """A snapshot is missing, corrupt or not the one asked for."""


class QueryError(KpcompileError, ValueError):
    """A query over a snapshot is invalid (bad SQL, unknown column or region)."""

    exit_code = ExitCode.USAGE


class FormatError(KpcompileError):
    """One source file is not a valid keypoint file.

    Attributes:
        code: Why the file was rejected.
        path: The file, as given to :func:`kpcompile.parse`.
        reason: The explanation without the path.
    """

    def __init__(self, code: ErrorCode, path: str, reason: str) -> None:
        self.code = code
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type[FormatError], tuple[ErrorCode, str, str]]:
        return (FormatError, (self.code, self.path, self.reason))


class RejectedFilesError(KpcompileError):
    """More files were rejected than ``max_errors`` allows; nothing was published.

    Attributes:
        errors: One ``(path, code, message)`` tuple per rejected file, sorted by path.
        max_errors: The budget that was exceeded.
    """

    exit_code = ExitCode.REJECTED

    def __init__(self, errors: Sequence[tuple[str, str, str]], max_errors: int) -> None:
        self.errors = list(errors)
        self.max_errors = max_errors
        n = len(errors)
        super().__init__(
            f"{n} file{'s' if n != 1 else ''} rejected, more than --max-errors {max_errors}; "
            "nothing was published"
        )
