"""A dataset under a URL: an object-store prefix (``s3://bucket/dataset``) or any fsspec URL.

Credentials and endpoint come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ...), as the client library reads them.

Each object costs one request: a ranged ``GET`` of its first ``max_file_bytes + 1``
bytes (no ``HEAD`` for its size: the listing gave it, and a longer answer is
``too_large``). An object listed larger than ``max_file_bytes`` is rejected without
a request. On an asynchronous filesystem (s3fs, gcsfs, adlfs, HTTP), a worker keeps
many such requests in flight as coroutines on fsspec's event loop
(:func:`~kpcompile.ingest.readahead.async_reads`); other filesystems read in threads.

Listing is concurrent: the prefix's first level is listed (one request per
thousand names), then each folder of it is listed recursively, :data:`LIST_THREADS`
at once; on S3 by pyarrow's C++ client (``KPCOMPILE_S3_LISTING=fsspec``: by s3fs,
as other stores are). An object store returns a thousand keys per request, one page
after the other, so a single recursive listing of ten million keys is ten thousand
round trips in a row; split by folder, the pages of different folders come at once.
Beyond :data:`MAX_SPLIT` first-level folders, each holds few keys, a listing per
folder costs more requests than it saves, and the prefix is listed in one go.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from kpcompile.errors import FormatError, SourceError
from kpcompile.ingest.base import READ_AHEAD, READ_TIMEOUT, Entry, Source, too_large, unreadable

if TYPE_CHECKING:
    from kpcompile.ingest.listing import Listing
    from kpcompile.ingest.readahead import ReadAhead

LIST_THREADS = 16
"""Folders of an object-store prefix listed at once."""
MAX_SPLIT = 256
"""First-level folders beyond which a prefix is listed in one recursive listing."""


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it (no trailing slash)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, str(path).rstrip("/")


class UrlSource(Source):
    """Files under an fsspec URL, listed with one recursive listing."""

    kind = "url"
    listable_anywhere = True

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

    def list(self, names: frozenset[str], threads: int = LIST_THREADS) -> Iterable[Entry]:
        try:
            fs, path = filesystem(self.location)
            find = _arrow_find(fs, path) or _fsspec_find(fs)
            for listing in _find_concurrently(fs, path, threads, find):
                yield from _entries(listing, path, names)
        except Exception as exc:
            msg = f"cannot list source {self.location!r}: {type(exc).__name__}: {exc}"
            raise SourceError(msg) from None

    def prefixes(self, names: frozenset[str]) -> tuple[str, ...]:
        """The prefix's first-level folders, and ``""`` if named objects lie in it."""
        try:
            fs, path = filesystem(self.location)
            found = set()
            for meta in fs.ls(path, detail=True):
                name = meta["name"].rstrip("/").rsplit("/", 1)[-1]
                if meta.get("type") == "directory":
                    found.add(name)
                elif name in names:
                    found.add("")
        except Exception as exc:
            msg = f"cannot list source {self.location!r}: {type(exc).__name__}: {exc}"
            raise SourceError(msg) from None
        from kpcompile.ingest.listing import encode

        return tuple(sorted(found, key=encode))

    def prefix_listing(
        self, prefixes: Sequence[str], names: frozenset[str], threads: int = LIST_THREADS
    ) -> Listing:
        """Each prefix listed recursively, :data:`LIST_THREADS` at once (the root's own
        objects by one listing of its first level)."""
        from kpcompile.ingest.listing import Listing

        try:
            fs, path = filesystem(self.location)
            find = _arrow_find(fs, path) or _fsspec_find(fs)

            def one(prefix: str) -> Listing:
                if not prefix:
                    top = fs.ls(path, detail=True)
                    listed = [_fsspec_entry(m) for m in top if m.get("type") != "directory"]
                else:
                    listed = list(find(f"{path}/{prefix}"))
                return Listing.of(_entries(listed, path, names))

            if len(prefixes) <= 1 or threads <= 1:
                return Listing.concat([one(p) for p in prefixes])
            with ThreadPoolExecutor(threads, thread_name_prefix="kpcompile-list") as pool:
                return Listing.concat(list(pool.map(one, prefixes)))
        except Exception as exc:
            msg = f"cannot list source {self.location!r}: {type(exc).__name__}: {exc}"
            raise SourceError(msg) from None

    def list_serial(self, names: frozenset[str]) -> Iterator[Entry]:
        """One recursive listing with fsspec: the reference the concurrent listing must equal."""
        fs, path = filesystem(self.location)
        yield from _entries(_fsspec_find(fs)(path), path, names)

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


Listed = Iterable[tuple[str, int, int]]
"""A listing's files: (full path, size or -1 for what is not a file, mtime in ns)."""


def _find_concurrently(
    fs: Any, path: str, threads: int, find: Callable[[str], Listed]
) -> Iterator[Listed]:
    """Every file under ``path``, in parts: the first level's files, then per folder."""
    top = fs.ls(path, detail=True)
    folders = [m["name"] for m in top if m.get("type") == "directory"]
    if len(folders) > MAX_SPLIT or threads <= 1:
        yield find(path)
        return
    yield [_fsspec_entry(m) for m in top if m.get("type", "file") != "directory"]
    with ThreadPoolExecutor(threads, thread_name_prefix="kpcompile-list") as pool:
        yield from pool.map(find, folders)


def _fsspec_find(fs: Any) -> Callable[[str], Listed]:
    def find(folder: str) -> Listed:
        return [_fsspec_entry(m) for m in fs.find(folder, detail=True, withdirs=False).values()]

    return find


def _fsspec_entry(meta: dict[str, Any]) -> tuple[str, int, int]:
    size = int(meta.get("size") or 0) if meta.get("type", "file") == "file" else -1
    return meta["name"], size, mtime_ns(meta)


def _arrow_find(fs: Any, path: str) -> Callable[[str], Listed] | None:
    """A recursive listing by pyarrow's S3 client, configured as ``fs`` is; ``None``
    where ``fs`` is not plain S3 (another store, versioned or requester-pays reads).

    Measured against s3fs's ``find`` (the benchmarks' README, object storage): the
    same requests, but the keys are decoded in C++ with the GIL released instead of
    one Python dict per key, so the listing threads of a large prefix run at once.
    """
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if not {"s3", "s3a"} & set(protocols) or os.environ.get("KPCOMPILE_S3_LISTING") == "fsspec":
        return None
    if getattr(fs, "version_aware", False) or getattr(fs, "requester_pays", False):
        return None
    try:
        import pyarrow.fs as pafs
    except ImportError:
        return None
    client = dict(getattr(fs, "client_kwargs", None) or {})
    options: dict[str, Any] = {}
    endpoint = (
        getattr(fs, "endpoint_url", None)
        or client.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    region = client.get("region_name") or os.environ.get("AWS_REGION")
    region = region or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    elif not endpoint:
        options["region"] = pafs.resolve_s3_region(path.split("/", 1)[0])
    if getattr(fs, "anon", False):
        options["anonymous"] = True
    elif getattr(fs, "key", None) and getattr(fs, "secret", None):
        options.update(access_key=fs.key, secret_key=fs.secret, session_token=fs.token)
    arrow = pafs.S3FileSystem(**options)
    file_type = pafs.FileType.File

    def find(folder: str) -> Listed:
        infos = arrow.get_file_info(pafs.FileSelector(folder, recursive=True))
        return [(i.path, i.size, i.mtime_ns or 0) for i in infos if i.type == file_type]

    return find


def _entries(listing: Listed, path: str, names: frozenset[str]) -> Iterator[Entry]:
    for name, size, mtime in listing:
        rel = name[len(path) :].lstrip("/")
        if rel.rsplit("/", 1)[-1] in names:
            yield Entry(rel, size, mtime)


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
