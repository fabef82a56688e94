"""The snapshot store on object storage (``s3://bucket/prefix`` or any fsspec URL).

Object stores have no rename and no lock, so publishing works differently from a
local folder while keeping the readers' guarantee:

1. Workers upload the snapshot's Parquet files straight to
   ``OUT/snapshots/<id>/`` (the id is new and random, so nothing else writes there).
2. The manifest is uploaded after every Parquet file: a snapshot without a
   manifest is incomplete, and no command lists or reads it.
3. ``CURRENT`` is uploaded last. It is one small object written with a single PUT,
   which S3 applies atomically: a reader gets the old id or the new one, never a
   torn write, and the new id only names a snapshot whose files all exist.

A build that fails deletes what it uploaded; one that is killed leaves a folder
without a manifest, which readers ignore. There is no lock: run one build per OUT
at a time (two concurrent builds each publish a complete snapshot; the last
``CURRENT`` wins). Credentials and endpoint come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kpcompile import manifest as mf
from kpcompile.compile.stage import Stage
from kpcompile.errors import OutputError, SnapshotError
from kpcompile.schema import SCHEMAS
from kpcompile.store.base import CURRENT, OWN_NAMES, REFUSED, SNAPSHOTS, Store

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


class ObjectStage(Stage):
    """A snapshot being uploaded to ``OUT/snapshots/<id>/`` (not listed until published)."""

    def __init__(self, url: str, snapshot: str) -> None:
        super().__init__(snapshot)
        self.url = url.rstrip("/")
        self.prefix = f"{self.url}/{SNAPSHOTS}/{snapshot}"

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

    def read_manifest(self, snapshot: str) -> mf.Manifest:
        where = f"{self.url}/{SNAPSHOTS}/{snapshot}/{mf.FILE_NAME}"
        try:
            data = self.read_bytes(snapshot, mf.FILE_NAME)
        except FileNotFoundError:
            raise self.missing(snapshot) from None
        except OSError as exc:
            msg = f"cannot read manifest {where}: {exc}"
            raise SnapshotError(msg) from None
        return mf.decode(data, where)

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

        fs, _ = _fs(self.url)
        fh = fs.open(self._path(SNAPSHOTS, snapshot, rel), "rb")
        return pq.ParquetFile(fh, read_dictionary=list(read_dictionary))

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

    def stage(self, snapshot: str) -> ObjectStage:
        return ObjectStage(self.url, snapshot)

    def publish(self, stage: Stage, manifest: mf.Manifest) -> str:
        assert isinstance(stage, ObjectStage)
        fs, _ = _fs(self.url)
        try:
            fs.pipe_file(self._path(SNAPSHOTS, stage.snapshot, mf.FILE_NAME), mf.encode(manifest))
            fs.pipe_file(self._path(CURRENT), (stage.snapshot + "\n").encode())
        except Exception as exc:
            msg = f"cannot publish snapshot {stage.snapshot} to {self.url!r}: {exc}"
            raise OutputError(msg) from None
        self.record_refusal(None)
        return stage.prefix

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
        fs, path = _fs(stage.prefix)
        with contextlib.suppress(Exception):  # nothing uploaded yet, or unreachable
            fs.rm(path, recursive=True)

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
