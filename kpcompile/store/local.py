"""The snapshot store in a local folder: staging, fsync, atomic rename, a lock.

A build writes everything under ``OUT/.staging/<id>``, fsyncs it, renames the
folder to ``snapshots/<id>`` and then replaces ``CURRENT`` with ``os.replace``
(atomic on POSIX). ``OUT/.lock`` is held (``flock``) by the build or ``gc``
writing to OUT; holding it, any staging folder left over is from a build that
died, whatever its age: the next build that stages a snapshot removes them all,
and so does ``gc`` (which reports them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from kpcompile import manifest as mf
from kpcompile.compile.stage import Stage
from kpcompile.errors import OutputError, SnapshotError
from kpcompile.schema import polars_schema
from kpcompile.store.base import CURRENT, OWN_NAMES, REFUSED, SNAPSHOTS, Store

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

STAGING = ".staging"
LOCK = ".lock"


class LocalStage(Stage):
    """A snapshot being written in ``OUT/.staging/<id>``."""

    def __init__(self, root: str, snapshot: str) -> None:
        super().__init__(snapshot)
        self.root = root
        self.path = os.path.join(root, STAGING, snapshot)

    @contextlib.contextmanager
    def writing(self) -> Iterator[str]:
        yield self.path

    def remove_named(self, name: str, tables: Sequence[str]) -> int:
        removed = 0
        for table in tables:
            for folder, _, names in os.walk(os.path.join(self.path, table)):
                for n in names:
                    if n == name or n.startswith(name + "."):
                        os.remove(os.path.join(folder, n))
                        removed += 1
        return removed

    def link(self, snapshot: str, old: str, new: str) -> None:
        src = os.path.join(self.root, SNAPSHOTS, snapshot, old)
        dst = os.path.join(self.path, new)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(src, dst)

    def read_table(self, snapshot: str, rel: str) -> pa.Table:
        import pyarrow.parquet as pq

        # ParquetFile, not read_table: the latter imports pyarrow.dataset and, with
        # it, pandas (0.25 s of an incremental build)
        return pq.ParquetFile(os.path.join(self.root, SNAPSHOTS, snapshot, rel)).read()


class LocalStore(Store):
    """Snapshots in a local folder."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        super().__init__(os.fspath(location), os.path.realpath(location))
        self.root = Path(location)

    def _dir(self, snapshot: str) -> Path:
        return self.root / SNAPSHOTS / snapshot

    def current_id(self) -> str:
        try:
            return (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise self.no_snapshot() from None
        except OSError as exc:
            msg = f"cannot read {str(self.root / CURRENT)!r}: {exc.strerror or exc}"
            raise OutputError(msg) from None

    def holds_keypoint_files(self, most: int = 1000) -> bool:
        """Whether a keypoint file is among the first ``most`` folders under the root."""
        from kpcompile.ingest.discover import LANDMARK_NAMES

        for i, (_, _, names) in enumerate(os.walk(self.root)):
            if i >= most:
                break
            if not LANDMARK_NAMES.isdisjoint(names):
                return True
        return False

    def list_snapshots(self) -> list[str]:
        folder = self.root / SNAPSHOTS
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / mf.FILE_NAME).is_file())

    def read_head(self, snapshot: str) -> mf.Head:
        path = self._dir(snapshot) / mf.FILE_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise self.missing(snapshot) from None
        except OSError as exc:
            msg = f"cannot read manifest {str(path)!r}: {exc.strerror or exc}"
            raise SnapshotError(msg) from None
        return mf.decode_head(data, repr(str(path)))

    def read_bytes(self, snapshot: str, rel: str) -> bytes:
        return (self._dir(snapshot) / rel).read_bytes()

    def files(self, snapshot: str) -> list[str]:
        base = self._dir(snapshot)
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def uri(self, snapshot: str, rel: str = "") -> str:
        return str(self._dir(snapshot) / rel) if rel else str(self._dir(snapshot))

    def scan_parquet(self, snapshot: str, table: str, rels: list[str]) -> pl.LazyFrame:
        import polars as pl

        folder = os.path.join(self.uri(snapshot), "")
        paths = [folder + r for r in rels]
        return pl.scan_parquet(paths, hive_partitioning=False, schema=polars_schema(table))

    def parquet_file(
        self, snapshot: str, rel: str, *, read_dictionary: Sequence[str] = ()
    ) -> pq.ParquetFile:
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.uri(snapshot, rel), read_dictionary=list(read_dictionary))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        try:
            if self.root.is_dir():
                names = set(os.listdir(self.root))
                if names and not names & OWN_NAMES:
                    raise self.foreign()
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / LOCK, "a+b")  # noqa: SIM115 - held for the with-block
        except OSError as exc:
            msg = f"cannot use output folder {self.location!r}: {exc.strerror or exc}"
            raise OutputError(msg) from None
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                msg = f"another build is writing to {self.location!r}; wait for it to finish"
                raise OutputError(msg) from None
            # Holding the lock, a temporary CURRENT is a leftover of a build killed just
            # before replacing it (staging folders: see stage() and abandoned()).
            for tmp in self.root.glob(f".{CURRENT}.*.tmp"):
                tmp.unlink(missing_ok=True)
            yield
        finally:
            fh.close()

    def stage(self, snapshot: str) -> LocalStage:
        # Called holding the lock: every staging folder is a leftover of a build that died.
        shutil.rmtree(self.root / STAGING, ignore_errors=True)
        stage = LocalStage(os.fspath(self.root), snapshot)
        try:
            os.makedirs(stage.path)
        except OSError as exc:
            msg = f"cannot create staging folder {stage.path!r}: {exc.strerror or exc}"
            raise OutputError(msg) from None
        return stage

    def publish(self, stage: Stage, manifest: mf.Manifest) -> str:
        assert isinstance(stage, LocalStage)
        staging = Path(stage.path)
        for rel, data in mf.encode_snapshot(manifest):  # manifest.json last
            (staging / rel).parent.mkdir(exist_ok=True)
            _write_staged(staging / rel, data)
        _fsync_tree(staging)
        final = self._dir(stage.snapshot)
        final.parent.mkdir(exist_ok=True)
        os.rename(staging, final)
        _fsync_dir(final.parent)
        _fsync_dir(staging.parent)
        tmp = self.root / f".{CURRENT}.{stage.snapshot}.tmp"
        _write_durably(tmp, (stage.snapshot + "\n").encode())
        os.replace(tmp, self.root / CURRENT)
        _fsync_dir(self.root)
        self.record_refusal(None)
        return str(final)

    def discard(self, stage: Stage) -> None:
        assert isinstance(stage, LocalStage)
        shutil.rmtree(stage.path, ignore_errors=True)

    def abandoned(self, older_than: dt.timedelta) -> list[str]:
        # Holding the lock, no build is writing: every staging folder is abandoned,
        # whatever its age (``older_than`` is for stores without a real lock).
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            return sorted(p.name for p in (self.root / STAGING).iterdir())
        return []

    def remove_abandoned(self, name: str) -> None:
        path = self.root / STAGING / name
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        except OSError as exc:
            msg = f"cannot remove {str(path)!r}: {exc.strerror or exc}"
            raise OutputError(msg) from None

    def record_refusal(self, refusal: mf.Refusal | None) -> None:
        path = self.root / REFUSED
        if refusal is None:
            path.unlink(missing_ok=True)
            return
        tmp = self.root / f".{REFUSED}.tmp"
        _write_durably(tmp, mf.encode(refusal))
        os.replace(tmp, path)

    def last_refusal(self) -> mf.Refusal | None:
        path = self.root / REFUSED
        try:
            return mf.decode_refusal(path.read_bytes(), repr(str(path)))
        except FileNotFoundError:
            return None

    def freed_by(self, snapshots: Sequence[str]) -> int:
        # A file is freed when every one of its hard links is in a removed snapshot.
        found: dict[tuple[int, int], tuple[int, int, int]] = {}
        for sid in snapshots:
            for p in self._dir(sid).rglob("*"):
                st = p.stat()
                if p.is_file():
                    key = (st.st_dev, st.st_ino)
                    seen = found.get(key, (st.st_size, st.st_nlink, 0))[2]
                    found[key] = (st.st_size, st.st_nlink, seen + 1)
        return sum(size for size, links, seen in found.values() if seen >= links)

    def remove(self, snapshot: str) -> None:
        folder = self._dir(snapshot)
        trash = self.root / STAGING / f"gc-{snapshot}"
        try:
            trash.parent.mkdir(exist_ok=True)
            os.rename(folder, trash)  # one atomic step: never half-deleted under snapshots/
            shutil.rmtree(trash)
        except OSError as exc:
            msg = f"cannot remove snapshot {str(folder)!r}: {exc.strerror or exc}"
            raise OutputError(msg) from None


_FSYNC_THREADS = 16
"""Files fsynced at once when a snapshot is published."""


def _write_staged(path: Path, data: bytes) -> None:
    """Write a file of a staged snapshot: :func:`_fsync_tree` makes it durable with the
    rest, at once (an fsync here, one file after another, cost a build 20-40 ms)."""
    with open(path, "wb") as fh:
        fh.write(data)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``; returns when all are durable.

    The fsyncs run in a few threads at once (``fsync`` releases the GIL): a
    journaling filesystem commits concurrent ones together, where one at a time
    each waits for its own commit. Files before their folders is not needed: the
    caller renames the tree only after every one is done.

    A file with more than one link is a hard link to a published snapshot's file
    (an incremental build's reused shard): its bytes were made durable when that
    snapshot was published, and its new name is made durable by its folder's fsync.
    """
    paths = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.lstat(path).st_nlink == 1:
                paths.append(path)
        paths.append(folder)
    if len(paths) <= 2:
        for path in paths:
            _fsync_path(path)
        return
    with ThreadPoolExecutor(min(_FSYNC_THREADS, len(paths))) as pool:
        for _ in pool.map(_fsync_path, paths):
            pass  # re-raises the first failure


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
