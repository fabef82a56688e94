"""A file's rejection when it cannot be read: the errors every source and reader raise."""

from __future__ import annotations

from kpcompile.errors import ErrorCode, FormatError


def unreadable(rel: str, reason: str) -> FormatError:
    """The rejection of a file that cannot be read."""
    return FormatError(ErrorCode.UNREADABLE, rel, f"cannot read: {reason}")


def internal_error(rel: str, exc: Exception) -> FormatError:
    """The rejection of a file whose read raised something unexpected (a bug)."""
    reason = (
        f"internal error while reading this file: {type(exc).__name__}: {exc}; "
        "please report it with the file"
    )
    return FormatError(ErrorCode.INTERNAL_ERROR, rel, reason)


def too_large(rel: str, size: int | None, max_bytes: int) -> FormatError:
    """The rejection of a file beyond ``max_file_bytes`` (``size`` None: still growing)."""
    what = f"{size} bytes, more than" if size is not None else "growing beyond"
    return FormatError(
        ErrorCode.TOO_LARGE, rel, f"file too large: {what} max_file_bytes {max_bytes}"
    )
