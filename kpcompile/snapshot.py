"""Snapshots: staging, manifest, atomic publish, and finding the current one.

An output folder ``OUT`` looks like this::

    OUT/
      CURRENT                          id of the current snapshot, one line
      snapshots/<id>/manifest.json     what the snapshot holds, with checksums
      snapshots/<id>/keypoints/camera=<name>/part-00000.parquet
      snapshots/<id>/files/part-00000.parquet
      snapshots/<id>/errors/part-00000.parquet
      .staging/<id>/                   a build in progress; never read
      .lock                            held by the build writing to OUT

A build writes everything under ``.staging/<id>``, fsyncs it, renames the folder to
``snapshots/<id>`` and then replaces ``CURRENT`` with ``os.replace`` (atomic on
POSIX). A reader that reads ``CURRENT`` once and then only files of that snapshot
sees either the old snapshot or the new one, complete. Published snapshots are
never modified.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kpcompile import objstore
from kpcompile.errors import OutputError, SnapshotError

CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
STAGING = ".staging"
LOCK = ".lock"
MANIFEST = "manifest.json"
FORMAT = "kpcompile-snapshot/1"


def new_snapshot_id(now: dt.datetime | None = None) -> str:
    """A new id: UTC time of the build, then 8 hex digits against collisions.

    The first 4 hex digits are the fraction of the second (in 1/65536 s), the last
    4 are random, so ids of builds published one after the other sort in that
    order even within one second.

    Example:
        >>> new_snapshot_id(dt.datetime(2024, 5, 1, 12, 0, 0, 500000))[:21]
        '20240501T120000Z-8000'
    """
    now = now or dt.datetime.now(dt.UTC)
    fraction = now.microsecond * 65536 // 1_000_000
    return f"{now:%Y%m%dT%H%M%S}Z-{fraction:04x}{secrets.token_hex(2)}"


def _url(out: str | os.PathLike[str]) -> str | None:
    """``out`` as a URL when it is one (object storage, see :mod:`kpcompile.objstore`)."""
    text = os.fspath(out)
    return text if "://" in text else None


@contextlib.contextmanager
def locked(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``out`` if needed and hold its build lock; clean stale staging folders."""
    if url := _url(out):
        objstore.check_writable(url)
        yield url  # type: ignore[misc]  # object stores have no lock (see objstore)
        return
    root = Path(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(root / LOCK, "a+b")  # noqa: SIM115 - held for the with-block
    except OSError as exc:
        msg = f"cannot use output folder {str(out)!r}: {exc.strerror or exc}"
        raise OutputError(msg) from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            msg = f"another build is writing to {str(out)!r}; wait for it to finish"
            raise OutputError(msg) from None
        # Holding the lock, every staging folder is a leftover of a build that died,
        # and so is a temporary CURRENT (a build killed just before replacing it).
        shutil.rmtree(root / STAGING, ignore_errors=True)
        for tmp in root.glob(f".{CURRENT}.*.tmp"):
            tmp.unlink(missing_ok=True)
        yield root
    finally:
        fh.close()


def staging_dir(root: Path, snapshot_id: str) -> Path:
    """Create and return the staging folder of a build."""
    if url := _url(root):
        return objstore.snapshot_url(url, snapshot_id)  # type: ignore[return-value]
    path = root / STAGING / snapshot_id
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        msg = f"cannot create staging folder {str(path)!r}: {exc.strerror or exc}"
        raise OutputError(msg) from None
    return path


def publish(root: Path, staging: Path, snapshot_id: str, manifest: dict[str, Any]) -> Path:
    """Write the manifest, move the staged snapshot into place and make it current."""
    if url := _url(root):
        return objstore.publish(url, str(staging), snapshot_id, manifest)  # type: ignore[return-value]
    _write_durably(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _fsync_tree(staging)
    final = root / SNAPSHOTS / snapshot_id
    final.parent.mkdir(exist_ok=True)
    os.rename(staging, final)
    _fsync_dir(final.parent)
    _fsync_dir(staging.parent)
    tmp = root / f".{CURRENT}.{snapshot_id}.tmp"
    _write_durably(tmp, snapshot_id + "\n")
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)
    return final


def discard(staging: Path) -> None:
    """Remove a staging folder after a failed build."""
    if url := _url(staging):
        objstore.discard(url)
        return
    shutil.rmtree(staging, ignore_errors=True)


def current_id(out: str | os.PathLike[str]) -> str:
    """The id of ``out``'s current snapshot.

    Raises:
        OutputError: ``out`` holds no published snapshot.
    """
    if url := _url(out):
        return objstore.current_id(url)
    try:
        text = (Path(out) / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        msg = f"{str(out)!r} holds no snapshot; build one with `kpcompile build SOURCE {out}`"
        raise OutputError(msg) from None
    except OSError as exc:
        msg = f"cannot read {os.path.join(out, CURRENT)!r}: {exc.strerror or exc}"
        raise OutputError(msg) from None
    return text


def snapshot_path(out: str | os.PathLike[str], snapshot: str | None = None) -> Path:
    """Folder of snapshot ``snapshot`` (default: the current one) in ``out``."""
    sid = snapshot or current_id(out)
    path = Path(out) / SNAPSHOTS / sid
    if not (path / MANIFEST).is_file():
        available = ", ".join(list_snapshots(out)[-5:]) or "none"
        msg = f"no snapshot {sid!r} in {str(out)!r}; available: {available}"
        raise SnapshotError(msg)
    return path


def list_snapshots(out: str | os.PathLike[str]) -> list[str]:
    """Ids of every published snapshot in ``out``, oldest first."""
    if url := _url(out):
        return objstore.list_snapshots(url)
    folder = Path(out) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / MANIFEST).is_file())


def read_manifest(out: str | os.PathLike[str], snapshot: str | None = None) -> dict[str, Any]:
    """The manifest of a snapshot (default: the current one) as a dict."""
    if url := _url(out):
        return objstore.read_manifest(url, snapshot or objstore.current_id(url))
    path = snapshot_path(out, snapshot) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"cannot read manifest {str(path)!r}: {exc}"
        raise SnapshotError(msg) from None
    return manifest


def table_files(out: str | os.PathLike[str], table: str, snapshot: str | None = None) -> list[str]:
    """Absolute paths (or URLs) of a table's Parquet files, from the manifest (never a glob)."""
    base = snapshot_location(out, snapshot)
    manifest = read_manifest(out, base.rstrip("/").rsplit("/", 1)[-1])
    tables = manifest["tables"]
    if table not in tables:
        msg = f"unknown table {table!r}; tables in this snapshot: {', '.join(sorted(tables))}"
        raise SnapshotError(msg)
    return [os.path.join(base, f["path"]) for f in tables[table]["files"]]


def snapshot_location(out: str | os.PathLike[str], snapshot: str | None = None) -> str:
    """Folder (or URL, on object storage) of a snapshot, default the current one."""
    if url := _url(out):
        sid = snapshot or objstore.current_id(url)
        objstore.read_manifest(url, sid)  # fails, naming the available ones, if missing
        return objstore.snapshot_url(url, sid)
    return str(snapshot_path(out, snapshot))


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))
