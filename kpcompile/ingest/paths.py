"""The rules for names inside a dataset: which are unsafe, how they are shown, and where
a landmark file's datapoint and camera are.

Shared by discovery (which rejects unsafe names unread), the workers and incremental
builds (which name files as the tables do) and ``verify`` (which matches the tables'
names with the source's).
"""

from __future__ import annotations

KEYPOINT_DIR = "key_points"
"""The folder of a camera folder that holds its keypoint files (Faces, in-cabin)."""

UNSAFE_REASONS: tuple[str, ...] = (
    "an absolute name",
    "a '..' component would leave the dataset",
    "an empty component ('//')",
    "a '.' component",
    "a name that is not valid UTF-8",
)
"""Why a name is unsafe, as :func:`unsafe_reason` says it (discovery stores the index)."""


def unsafe_reason(rel: str) -> str | None:
    """Why a relative name may not be used as a path inside the dataset, or ``None``.

    Example:
        >>> unsafe_reason("../x/dp/cam/key_points/face_dense_key_points.json")
        "a '..' component would leave the dataset"
    """
    if not rel.isascii() and not _utf8(rel):
        return "a name that is not valid UTF-8"
    if rel.startswith("/"):
        return "an absolute name"
    parts = rel.split("/")
    if ".." in parts:
        return "a '..' component would leave the dataset"
    if "" in parts:
        return "an empty component ('//')"
    if "." in parts:
        return "a '.' component"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` as valid UTF-8, for the tables and messages: the bytes of a name that
    is not UTF-8 (kept by the listing as lone surrogates, as ``os.fsdecode`` does)
    shown as ``\\xNN``.

    Example:
        >>> printable("dp_\udcff/cam")
        'dp_\\xff/cam'
    """
    if text.isascii() or _utf8(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def locate(rel: str, root_name: str) -> tuple[str, str]:
    """``(datapoint, camera)`` of a file from its path relative to the source root."""
    # string operations: PurePosixPath made this a tenth of an incremental build
    parts = rel.split("/")[:-1]
    if parts and parts[-1] == KEYPOINT_DIR:
        parts.pop()
    if not parts:
        return ".", root_name
    return "/".join(parts[:-1]) or ".", parts[-1]
