"""A dataset under a URL: an object-store prefix (``s3://bucket/dataset``) or any fsspec URL.

Credentials and endpoint come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ...), as the client library reads them.

Each object costs one request: a ranged ``GET`` of its first ``max_file_bytes + 1``
bytes (no ``HEAD`` for its size: the listing gave it, and a longer answer is
``too_large``). An object listed larger than ``max_file_bytes`` is rejected without
a request. On an asynchronous filesystem (s3fs, gcsfs, adlfs, HTTP), a worker keeps
many such requests in flight as coroutines on fsspec's event loop
(:func:`~kpcompile.ingest.readahead.async_reads`); other filesystems read in threads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from kpcompile.errors import FormatError, SourceError
from kpcompile.ingest.base import READ_AHEAD, READ_TIMEOUT, Entry, Source, too_large, unreadable

if TYPE_CHECKING:
    from kpcompile.ingest.readahead import ReadAhead


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it (no trailing slash)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, str(path).rstrip("/")


class UrlSource(Source):
    """Files under an fsspec URL, listed with one recursive listing."""

    kind = "url"

    def __init__(self, url: str) -> None:
        super().__init__(url, PurePosixPath(url.rstrip("/")).name)
        try:
            fs, self._path = filesystem(url)
            if not self._path or self._path.startswith("/"):
                msg = f"source {url!r} names no bucket or folder (s3://bucket/prefix)"
                raise SourceError(msg)
            if not fs.isdir(self._path):
                what = "does not exist" if not fs.exists(self._path) else "is not a folder"
                msg = f"source {url!r} {what}"
                raise SourceError(msg)
        except SourceError:
            raise
        except Exception as exc:
            msg = f"cannot list source {url!r}: {type(exc).__name__}: {exc}"
            raise SourceError(msg) from None

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        try:
            fs, path = filesystem(self.location)
            listing = fs.find(path, detail=True, withdirs=False)
        except Exception as exc:
            msg = f"cannot list source {self.location!r}: {type(exc).__name__}: {exc}"
            raise SourceError(msg) from None
        for name, meta in listing.items():
            rel = name[len(path) :].lstrip("/")
            if rel.rsplit("/", 1)[-1] not in names:
                continue
            size = int(meta.get("size") or 0) if meta.get("type", "file") == "file" else -1
            yield Entry(rel, size, mtime_ns(meta))

    def read(self, rel: str, max_bytes: int) -> bytes:
        fs, path = filesystem(self.location)
        try:
            data: bytes = fs.cat_file(f"{path}/{rel}", start=0, end=max_bytes + 1)
        except Exception as exc:
            return _checked(rel, _empty_or_raise(rel, exc), max_bytes)
        return _checked(rel, data, max_bytes)

    def read_many(
        self,
        rels: Sequence[str],
        max_bytes: int,
        *,
        window: int = READ_AHEAD,
        timeout: float = READ_TIMEOUT,
        sizes: Sequence[int] | None = None,
    ) -> ReadAhead:
        """Concurrent requests on fsspec's event loop, one per object (see the module)."""
        from kpcompile.ingest.readahead import async_reads

        fs, path = filesystem(self.location)
        if not getattr(fs, "async_impl", False):
            return super().read_many(rels, max_bytes, window=window, timeout=timeout, sizes=sizes)
        listed = dict(zip(rels, sizes, strict=True)) if sizes is not None else {}

        async def fetch(rel: str) -> bytes:
            size = listed.get(rel, -1)
            if size > max_bytes:
                raise too_large(rel, size, max_bytes)
            try:
                data = await fs._cat_file(f"{path}/{rel}", start=0, end=max_bytes + 1)
            except Exception as exc:
                data = _empty_or_raise(rel, exc)
            return _checked(rel, data, max_bytes)

        return async_reads(
            fetch, fs.loop, rels, max_bytes, window=window, timeout=timeout, sizes=sizes
        )


def _checked(rel: str, data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise too_large(rel, None, max_bytes)
    return data


def _empty_or_raise(rel: str, exc: Exception) -> bytes:
    """``b""`` for an empty object (a range of it is unsatisfiable, HTTP 416), else the error."""
    if isinstance(exc, FormatError):
        raise exc
    text = str(exc)
    if "not satisfiable" in text or "InvalidRange" in text or " 416" in text:
        return b""
    if isinstance(exc, OSError):
        raise unreadable(rel, exc.strerror or text) from None
    raise unreadable(rel, f"{type(exc).__name__}: {exc}") from None


def mtime_ns(meta: dict[str, Any]) -> int:
    """Modification time from an fsspec listing, whatever the backend calls it."""
    for key in ("LastModified", "last_modified", "mtime", "created"):
        value = meta.get(key)
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000
        if isinstance(value, int | float):
            return int(value * 1_000_000_000)
    return 0
