"""The snapshot store on object storage (``s3://bucket/prefix`` or any fsspec URL).

Object stores have no rename and no lock, so publishing works differently from a
local folder while keeping the readers' guarantee:

1. When the build starts its snapshot it reads ``CURRENT`` and its version (S3's
   ETag); the new id must sort after the id ``CURRENT`` names (ids begin with the
   UTC build time), else this machine's clock is behind and the build stops.
2. Workers upload the snapshot's Parquet files straight to
   ``OUT/snapshots/<id>/`` (the id is new and random, so nothing else writes there).
3. The manifest is uploaded after every Parquet file: a snapshot without a
   manifest is incomplete, and no command lists or reads it.
4. ``CURRENT`` is uploaded last, with a *conditional* PUT: only if it is still the
   version read in step 1 (``If-Match: <etag>``; ``If-None-Match: *`` for the first
   snapshot). A single PUT is applied atomically, so a reader gets the old id or
   the new one, and the new id only names a snapshot whose files all exist.

Two builds publishing into one OUT at once: the first ``CURRENT`` PUT wins; the
other is refused by S3 (HTTP 412), removes its snapshot and raises an
:class:`~kpcompile.errors.OutputError` naming the winner. So ``CURRENT`` never goes
back to an older snapshot and no build says it published a snapshot that is not
current. Filesystems without conditional writes (fsspec ones other than S3) PUT
``CURRENT`` unconditionally: run one build per OUT at a time there.

``gc`` takes no lock either; it is kept safe by two rules (see
:mod:`kpcompile.store.retention`): it never removes a snapshot whose id sorts after
``CURRENT``'s (a build may be between its manifest and its ``CURRENT``: step 1
guarantees its id is newer), and it removes a manifest-less prefix (a build that
was killed) only when nothing under it was written for ``stale_after`` (24 hours by
default): a build that uploads nothing for that long is taken as dead.

A build that fails deletes what it uploaded; one that is killed leaves a prefix
without a manifest, which readers ignore and ``gc`` removes. Credentials and
endpoint come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kpcompile import manifest as mf
from kpcompile.compile.stage import Stage
from kpcompile.errors import OutputError, SnapshotError
from kpcompile.schema import SCHEMAS
from kpcompile.store.base import CURRENT, OWN_NAMES, REFUSED, SNAPSHOTS, Store, snapshot_time

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        msg = f"cannot use {url!r}: {exc}"
        raise OutputError(msg) from None
    return fs, str(path).rstrip("/")


def _conditional(fs: Any) -> bool:
    """Whether ``fs`` writes conditionally (S3's ``If-Match``/``If-None-Match`` PUTs)."""
    return hasattr(fs, "_call_s3")


async def _get_s3(fs: Any, path: str) -> tuple[bytes, str | None]:
    bucket, key, _ = fs.split_path(path)
    resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    try:
        return bytes(await resp["Body"].read()), resp.get("ETag")
    finally:
        resp["Body"].close()


def _read_versioned(fs: Any, path: str) -> tuple[bytes, str | None]:
    """An object's bytes and the version (ETag) they are from, in one request.

    The version is ``None`` on filesystems without conditional writes.
    ``FileNotFoundError`` when there is no such object.
    """
    if not _conditional(fs):
        return bytes(fs.cat_file(path)), None
    from fsspec.asyn import sync

    return sync(fs.loop, _get_s3, fs, path)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Base:
    """``CURRENT`` as a build found it when it started its snapshot.

    Attributes:
        snapshot: The id it named; ``None`` when there was no ``CURRENT``.
        etag: Its version, for the conditional PUT; ``None`` without conditional writes.
    """

    snapshot: str | None
    etag: str | None


class ObjectStage(Stage):
    """A snapshot being uploaded to ``OUT/snapshots/<id>/`` (not listed until published)."""

    def __init__(self, url: str, snapshot: str, base: Base | None = None) -> None:
        super().__init__(snapshot)
        self.url = url.rstrip("/")
        self.prefix = f"{self.url}/{SNAPSHOTS}/{snapshot}"
        self.base = base or Base(None, None)
        """What ``CURRENT`` was when the build began: publishing replaces only that."""
        self.uncertain = False
        """Whether ``CURRENT`` may name this snapshot although publishing failed: then
        :meth:`ObjectStore.discard` leaves it."""

    @contextlib.contextmanager
    def writing(self) -> Iterator[str]:
        local = tempfile.mkdtemp(prefix="kpcompile-stage-")
        try:
            yield local
            fs, base = _fs(self.prefix)
            for folder, _, names in os.walk(local):
                for n in sorted(names):
                    full = os.path.join(folder, n)
                    rel = os.path.relpath(full, local).replace(os.sep, "/")
                    fs.put_file(full, f"{base}/{rel}")
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def remove_named(self, name: str, tables: Sequence[str]) -> int:
        fs, base = _fs(self.prefix)
        removed = 0
        for table in tables:
            with contextlib.suppress(FileNotFoundError):
                for path in fs.find(f"{base}/{table}"):
                    n = path.rsplit("/", 1)[-1]
                    if n == name or n.startswith(name + "."):
                        fs.rm_file(path)
                        removed += 1
        return removed

    def link(self, snapshot: str, old: str, new: str) -> None:
        fs, base = _fs(self.url)
        fs.copy(f"{base}/{SNAPSHOTS}/{snapshot}/{old}", f"{base}/{SNAPSHOTS}/{self.snapshot}/{new}")

    def read_table(self, snapshot: str, rel: str) -> pa.Table:
        import pyarrow.parquet as pq

        fs, base = _fs(self.url)
        with fs.open(f"{base}/{SNAPSHOTS}/{snapshot}/{rel}", "rb") as fh:
            return pq.ParquetFile(fh).read()


class ObjectStore(Store):
    """Snapshots under an fsspec URL."""

    def __init__(self, url: str) -> None:
        super().__init__(url, url.rstrip("/"))
        self.url = url.rstrip("/")
        if not _fs(self.url)[1] or _fs(self.url)[1].startswith("/"):
            msg = f"cannot use output {url!r}: it names no bucket (s3://bucket/prefix)"
            raise OutputError(msg)

    def _path(self, *parts: str) -> str:
        return "/".join([_fs(self.url)[1], *parts])

    def current_id(self) -> str:
        fs, _ = _fs(self.url)
        try:
            return str(fs.cat_file(self._path(CURRENT)).decode().strip())
        except FileNotFoundError:
            raise self.no_snapshot() from None
        except Exception as exc:
            msg = f"cannot read {self.url}/{CURRENT}: {type(exc).__name__}: {exc}"
            raise OutputError(msg) from None

    def list_snapshots(self) -> list[str]:
        fs, _ = _fs(self.url)
        try:
            names = fs.glob(self._path(SNAPSHOTS, "*", mf.FILE_NAME))
        except FileNotFoundError:
            return []
        except Exception as exc:
            msg = f"cannot list {self.url}: {type(exc).__name__}: {exc}"
            raise OutputError(msg) from None
        return sorted(n.rstrip("/").split("/")[-2] for n in names)

    def read_head(self, snapshot: str) -> mf.Head:
        where = f"{self.url}/{SNAPSHOTS}/{snapshot}/{mf.FILE_NAME}"
        try:
            data = self.read_bytes(snapshot, mf.FILE_NAME)
        except FileNotFoundError:
            raise self.missing(snapshot) from None
        except OSError as exc:
            msg = f"cannot read manifest {where}: {exc}"
            raise SnapshotError(msg) from None
        return mf.decode_head(data, where)

    def read_bytes(self, snapshot: str, rel: str) -> bytes:
        fs, _ = _fs(self.url)
        try:
            return bytes(fs.cat_file(self._path(SNAPSHOTS, snapshot, rel)))
        except OSError:
            raise
        except Exception as exc:  # a client library's own error type
            raise OSError(f"{type(exc).__name__}: {exc}") from None

    def files(self, snapshot: str) -> list[str]:
        fs, _ = _fs(self.url)
        base = self._path(SNAPSHOTS, snapshot)
        try:
            found = fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(p[len(base) :].lstrip("/") for p in found)

    def uri(self, snapshot: str, rel: str = "") -> str:
        folder = f"{self.url}/{SNAPSHOTS}/{snapshot}"
        return f"{folder}/{rel}" if rel else folder

    def scan_parquet(self, snapshot: str, table: str, rels: list[str]) -> pl.LazyFrame:
        import polars as pl
        import pyarrow.dataset as ds
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, _ = _fs(self.url)
        paths = [self._path(SNAPSHOTS, snapshot, r) for r in rels]
        filesystem = PyFileSystem(FSSpecHandler(fs))
        dataset = ds.dataset(paths, schema=SCHEMAS[table], format="parquet", filesystem=filesystem)
        return pl.scan_pyarrow_dataset(dataset)

    def parquet_file(
        self, snapshot: str, rel: str, *, read_dictionary: Sequence[str] = ()
    ) -> pq.ParquetFile:
        import pyarrow.parquet as pq

        fs, path = self.object(snapshot, rel)
        fh = fs.open(path, "rb")
        return pq.ParquetFile(fh, read_dictionary=list(read_dictionary))

    def object(self, snapshot: str, rel: str) -> tuple[Any, str]:
        """The fsspec filesystem holding a snapshot's file and the file's path on it
        (for readers that fetch byte ranges themselves)."""
        fs, _ = _fs(self.url)
        return fs, self._path(SNAPSHOTS, snapshot, rel)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        fs, path = _fs(self.url)
        try:
            fs.ls(path.split("/", 1)[0])
            names = (
                {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path)}
                if fs.exists(path)
                else set()
            )
        except Exception as exc:
            msg = f"cannot use output {self.url!r}: {type(exc).__name__}: {exc}"
            raise OutputError(msg) from None
        if names and not names & OWN_NAMES:
            raise self.foreign()
        yield  # object stores have no lock (see the module docstring)

    def _base(self) -> Base:
        fs, _ = _fs(self.url)
        try:
            data, etag = _read_versioned(fs, self._path(CURRENT))
        except FileNotFoundError:
            return Base(None, None)
        except Exception as exc:
            msg = f"cannot read {self.url}/{CURRENT}: {type(exc).__name__}: {exc}"
            raise OutputError(msg) from None
        return Base(data.decode().strip(), etag)

    def stage(self, snapshot: str) -> ObjectStage:
        base = self._base()
        if base.snapshot is not None and base.snapshot >= snapshot:
            msg = (
                f"cannot build snapshot {snapshot} in {self.url!r}: its current snapshot "
                f"{base.snapshot} is newer (ids begin with the UTC build time); is this "
                "machine's clock behind? Fix the clock and build again"
            )
            raise OutputError(msg)
        return ObjectStage(self.url, snapshot, base)

    def publish(self, stage: Stage, manifest: mf.Manifest) -> str:
        assert isinstance(stage, ObjectStage)
        fs, _ = _fs(self.url)
        try:
            for rel, data in mf.encode_snapshot(manifest):  # manifest.json last
                fs.pipe_file(self._path(SNAPSHOTS, stage.snapshot, rel), data)
        except Exception as exc:
            msg = f"cannot publish snapshot {stage.snapshot} to {self.url!r}: {exc}"
            raise OutputError(msg) from None
        self._make_current(stage)
        self.record_refusal(None)
        return stage.prefix

    def _make_current(self, stage: ObjectStage) -> None:
        """Point ``CURRENT`` at ``stage``'s snapshot if it still is what the build began from.

        Raises:
            OutputError: Another build published meanwhile (the message names its
                snapshot; this one's manifest is removed), or the PUT failed.
        """
        fs, _ = _fs(self.url)
        data = (stage.snapshot + "\n").encode()
        if not _conditional(fs):
            condition = {}
        elif stage.base.etag is None:
            condition = {"IfNoneMatch": "*"}
        else:
            condition = {"IfMatch": stage.base.etag}
        try:
            fs.pipe_file(self._path(CURRENT), data, **condition)
            return
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
        # Refused or failed: what CURRENT names now tells which (a PUT whose answer was
        # lost and retried is refused although it was applied).
        try:
            now: str | None = self._base().snapshot
        except OutputError as exc:
            stage.uncertain = True
            msg = (
                f"cannot tell whether snapshot {stage.snapshot} was published to "
                f"{self.url!r} ({failure}; then {exc}); `kpcompile info {self.url}` names "
                "the current snapshot"
            )
            raise OutputError(msg) from None
        if now == stage.snapshot:
            return
        if now != stage.base.snapshot:
            with contextlib.suppress(Exception):  # unlisted from now on; discard does the rest
                fs.rm_file(self._path(SNAPSHOTS, stage.snapshot, mf.FILE_NAME))
            msg = (
                f"snapshot {stage.snapshot} was not published: another build published "
                f"snapshot {now} to {self.url!r} while this one ran, and it stays current; "
                "build again to publish over it"
            )
            raise OutputError(msg)
        msg = f"cannot publish snapshot {stage.snapshot} to {self.url!r}: {failure}"
        raise OutputError(msg)

    def record_refusal(self, refusal: mf.Refusal | None) -> None:
        fs, _ = _fs(self.url)
        if refusal is None:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(self._path(REFUSED))
            return
        fs.pipe_file(self._path(REFUSED), mf.encode(refusal))

    def last_refusal(self) -> mf.Refusal | None:
        fs, _ = _fs(self.url)
        try:
            data = fs.cat_file(self._path(REFUSED))
        except FileNotFoundError:
            return None
        return mf.decode_refusal(data, f"{self.url}/{REFUSED}")

    def discard(self, stage: Stage) -> None:
        assert isinstance(stage, ObjectStage)
        if stage.uncertain:
            return  # CURRENT may name it; gc removes it once a newer snapshot is current
        fs, path = _fs(stage.prefix)
        with contextlib.suppress(Exception):  # nothing uploaded yet, or unreachable
            fs.rm_file(f"{path}/{mf.FILE_NAME}")  # unlisted first, then removed
        with contextlib.suppress(Exception):
            fs.rm(path, recursive=True)

    def publishing(self, current: str, snapshots: Sequence[str]) -> list[str]:
        # A build between its manifest and its CURRENT has an id newer than CURRENT's
        # (stage() refuses any other), so gc keeps every such snapshot.
        return [sid for sid in snapshots if sid > current]

    def abandoned(self, older_than: dt.timedelta) -> list[str]:
        fs, _ = _fs(self.url)
        folder = self._path(SNAPSHOTS)
        fs.invalidate_cache(folder)
        try:
            prefixes = fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        published = set(self.list_snapshots())
        cutoff = dt.datetime.now(dt.UTC) - older_than
        found = []
        for prefix in sorted(p.rstrip("/") for p in prefixes):
            sid = prefix.rsplit("/", 1)[-1]
            if sid in published:
                continue
            started = snapshot_time(sid)
            if started is not None and started > cutoff:
                continue
            objects = fs.find(prefix, detail=True).values()
            written = [m["LastModified"] for m in objects if m.get("LastModified")]
            if all(_utc(t) <= cutoff for t in written):
                found.append(sid)
        return found

    def remove_abandoned(self, snapshot: str) -> None:
        fs, _ = _fs(self.url)
        try:
            fs.rm(self._path(SNAPSHOTS, snapshot), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:
            msg = f"cannot remove {self.uri(snapshot)}: {type(exc).__name__}: {exc}"
            raise OutputError(msg) from None

    def freed_by(self, snapshots: Sequence[str]) -> int:
        fs, _ = _fs(self.url)  # objects are copied between snapshots, never shared
        found = [fs.find(self._path(SNAPSHOTS, sid), detail=True) for sid in snapshots]
        return sum(int(meta.get("size") or 0) for f in found for meta in f.values())

    def remove(self, snapshot: str) -> None:
        fs, _ = _fs(self.url)
        # The manifest goes first: from then on the snapshot is not listed, whatever
        # happens to the rest of the removal.
        fs.rm_file(self._path(SNAPSHOTS, snapshot, mf.FILE_NAME))
        fs.rm(self._path(SNAPSHOTS, snapshot), recursive=True)


def _utc(t: dt.datetime | str) -> dt.datetime:
    """A listing's modification time as an aware UTC datetime."""
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
