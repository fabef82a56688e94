"""Files the query stage writes (query results, pictures): format and safe writing.

A destination's format comes from its suffix unless one is given, and a given
format may not contradict a suffix that means another one: ``-o q.csv`` is CSV,
``--format json -o q.csv`` is refused, ``--format csv -o q.txt`` is the user's
choice (``.txt`` means no format).

:func:`writing` creates the destination's missing folders (as ``mkdir -p``) and a
temporary file next to the destination *before* any work is done, so an
unwritable destination (a file where a folder should be, a folder given as the
file, no permission) is an :class:`~kpcompile.errors.OutputError` naming the path
and the reason, and the destination appears, whole, only when writing succeeded
(folders it created are removed again when it did not).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from kpcompile.errors import OptionsError, OutputError

RESULT_SUFFIXES: Mapping[str, str] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "ndjson",
    ".ndjson": "ndjson",
    ".parquet": "parquet",
}
"""Query result formats by file suffix (compared in lower case)."""

PICTURE_SUFFIXES: Mapping[str, str] = {".pdf": "pdf", ".png": "png", ".svg": "svg"}
"""Picture formats by file suffix (compared in lower case)."""


def output_format(
    path: str | os.PathLike[str], fmt: str | None, suffixes: Mapping[str, str]
) -> str:
    """The format to write ``path`` in: ``fmt``, or the one its suffix means.

    Raises:
        OptionsError: ``fmt`` is None and the suffix means no format, or ``fmt``
            contradicts the suffix.

    Example:
        >>> output_format("q.csv", None, RESULT_SUFFIXES)
        'csv'
        >>> output_format("q.txt", "csv", RESULT_SUFFIXES)
        'csv'
    """
    suffix = Path(path).suffix
    implied = suffixes.get(suffix.lower())
    if fmt is None:
        if implied is None:
            what = f"suffix {suffix!r}" if suffix else "no suffix"
            msg = (
                f"cannot tell the format of {os.fspath(path)!r} from its name ({what}); "
                f"give --format, or use one of the suffixes {', '.join(sorted(suffixes))}"
            )
            raise OptionsError(msg)
        return implied
    if implied is not None and implied != fmt:
        msg = (
            f"--format {fmt} does not match the file name {os.fspath(path)!r} "
            f"({suffix} means {implied}); drop --format or rename the file"
        )
        raise OptionsError(msg)
    return fmt


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a path to write ``path``'s content to; it becomes ``path`` on success.

    The content goes to a new temporary file in ``path``'s folder (mode 0666
    less the umask, like any new file), renamed over ``path`` when the block
    ends without an exception and removed otherwise. Missing folders on the way
    are created first, and removed again when writing fails. A destination that
    is not a regular file (``/dev/stdout``, a named pipe) is written directly.

    Raises:
        OutputError: ``path`` cannot be written; the message names it and why.

    Example:
        >>> with writing("result.csv") as tmp:  # doctest: +SKIP
        ...     frame.write_csv(tmp)
    """
    dest = Path(path)
    if dest.is_dir():
        raise _cannot_write(path, "it is a folder")
    if dest.exists() and not dest.is_file():
        yield dest
        return
    if dest.is_symlink():
        dest = dest.resolve()
    if dest.exists() and not os.access(dest, os.W_OK):
        raise _cannot_write(path, "permission denied")
    created = _make_folders(path, dest.parent)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        _remove_folders(created)
        raise _cannot_write(path, _reason(dest, exc)) from None
    try:
        yield tmp
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _remove_folders(created)
        raise _cannot_write(path, _reason(dest, exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_folders(created)
        raise


def _make_folders(path: str | os.PathLike[str], folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, outermost first."""
    created: list[Path] = []
    for p in [p for p in (folder, *folder.parents) if not p.exists()][::-1]:
        try:
            p.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        except OSError as exc:
            _remove_folders(created)
            if exc.errno in (errno.ENOTDIR, errno.ENOENT):
                return []  # a file on the way: the temporary file's error names it
            why = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM) else None
            why = why or (exc.strerror or str(exc)).lower()
            raise _cannot_write(path, f"cannot create folder {os.fspath(p)!r}: {why}") from None
        created.append(p)
    return created


def _remove_folders(created: list[Path]) -> None:
    """Remove the folders :func:`_make_folders` created, innermost first, if still empty."""
    for p in reversed(created):
        try:
            p.rmdir()
        except OSError:
            return


def _cannot_write(path: str | os.PathLike[str], reason: str) -> OutputError:
    return OutputError(f"cannot write {os.fspath(path)!r}: {reason}")


def _reason(dest: Path, exc: OSError) -> str:
    """Why a file cannot be created at ``dest``, in words."""
    if exc.errno == errno.ENOTDIR:
        blocker = next(
            (p for p in reversed(dest.parents) if p.exists() and not p.is_dir()), dest.parent
        )
        return f"{os.fspath(blocker)!r} is not a folder"
    if exc.errno == errno.ENOENT and not dest.parent.is_dir():
        return f"folder {os.fspath(dest.parent)!r} does not exist"
    if exc.errno == errno.ENOENT:
        return f"no file can be created in {os.fspath(dest.parent)!r}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EISDIR:
        return "it is a folder"
    return (exc.strerror or str(exc)).lower()
