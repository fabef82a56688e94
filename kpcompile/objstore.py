"""Snapshots on object storage (``s3://bucket/prefix`` or any fsspec URL).

Object stores have no rename and no lock, so publishing works differently from a
local folder while keeping the readers' guarantee:

1. Workers upload the snapshot's Parquet files straight to
   ``OUT/snapshots/<id>/`` (the id is new and random, so nothing else writes there).
2. The manifest is uploaded after every Parquet file: a snapshot without a
   manifest is incomplete, and no command lists or reads it.
3. ``CURRENT`` is uploaded last. It is one small object written with a single PUT,
   which S3 applies atomically: a reader gets the old id or the new one, never a
   torn write, and the new id only names a snapshot whose files all exist.

A reader following the README recipe (read ``CURRENT`` once, then only that
snapshot's files) therefore never sees a partial snapshot. A build that fails
deletes what it uploaded; one that is killed leaves a folder without a manifest,
which readers ignore. There is no lock: run one build per OUT at a time (two
concurrent builds each publish a complete snapshot; the last ``CURRENT`` wins).
Credentials and endpoint come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...), as the client library reads them.
"""

from __future__ import annotations

import json
from typing import Any

from kpcompile.errors import OutputError, SnapshotError

CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
MANIFEST = "manifest.json"


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        msg = f"cannot use {url!r}: {exc}"
        raise OutputError(msg) from None
    return fs, path.rstrip("/")


def snapshot_url(out: str, snapshot_id: str) -> str:
    """URL of a snapshot's folder."""
    return f"{out.rstrip('/')}/{SNAPSHOTS}/{snapshot_id}"


def check_writable(out: str) -> None:
    """Fail early, naming ``out``, when the bucket cannot be reached."""
    fs, path = _fs(out)
    try:
        fs.ls(path.split("/", 1)[0])
    except Exception as exc:
        msg = f"cannot use output {out!r}: {type(exc).__name__}: {exc}"
        raise OutputError(msg) from None


def publish(out: str, staging: str, snapshot_id: str, manifest: dict[str, Any]) -> str:
    """Upload the manifest, then ``CURRENT`` (one atomic PUT)."""
    fs, _ = _fs(out)
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    try:
        fs.pipe_file(_fs(f"{staging}/{MANIFEST}")[1], text.encode())
        fs.pipe_file(_fs(f"{out.rstrip('/')}/{CURRENT}")[1], (snapshot_id + "\n").encode())
    except Exception as exc:
        msg = f"cannot publish snapshot {snapshot_id} to {out!r}: {type(exc).__name__}: {exc}"
        raise OutputError(msg) from None
    return staging


def discard(staging: str) -> None:
    """Delete what a failed build uploaded."""
    fs, path = _fs(staging)
    try:
        fs.rm(path, recursive=True)
    except Exception:
        return  # nothing uploaded yet, or unreachable: readers ignore it either way


def current_id(out: str) -> str:
    """The id named by ``OUT/CURRENT``."""
    fs, path = _fs(out)
    try:
        return str(fs.cat_file(f"{path}/{CURRENT}").decode().strip())
    except FileNotFoundError:
        msg = f"{out!r} holds no snapshot; build one with `kpcompile build SOURCE {out}`"
        raise OutputError(msg) from None
    except Exception as exc:
        msg = f"cannot read {out.rstrip('/')}/{CURRENT}: {type(exc).__name__}: {exc}"
        raise OutputError(msg) from None


def list_snapshots(out: str) -> list[str]:
    """Ids of every complete (manifest present) snapshot, oldest first."""
    fs, path = _fs(out)
    try:
        names = fs.glob(f"{path}/{SNAPSHOTS}/*/{MANIFEST}")
    except FileNotFoundError:
        return []
    return sorted(n.rstrip("/").split("/")[-2] for n in names)


def read_manifest(out: str, snapshot_id: str) -> dict[str, Any]:
    """A snapshot's manifest."""
    fs, path = _fs(out)
    where = f"{path}/{SNAPSHOTS}/{snapshot_id}/{MANIFEST}"
    try:
        manifest: dict[str, Any] = json.loads(fs.cat_file(where))
    except FileNotFoundError:
        available = ", ".join(list_snapshots(out)[-5:]) or "none"
        msg = f"no snapshot {snapshot_id!r} in {out!r}; available: {available}"
        raise SnapshotError(msg) from None
    except Exception as exc:
        msg = f"cannot read manifest of {snapshot_id} in {out!r}: {exc}"
        raise SnapshotError(msg) from None
    return manifest
