"""Files the query stage writes (query results, pictures): the format from the file name.

A destination's format comes from its suffix unless one is given, and a given
format may not contradict a suffix that means another one: ``-o q.csv`` is CSV,
``--format json -o q.csv`` is refused, ``--format csv -o q.txt`` is the user's
choice (``.txt`` means no format).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kpcompile.errors import OptionsError

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
