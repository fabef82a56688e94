"""Promise 3, determinism: the same input gives byte-identical Parquet files whatever the
worker count and whatever order the filesystem lists files in; the manifest differs only
in its build time (the fields ``snapshot`` and ``created_at``).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

import kpcompile
from kpcompile import manifest as mf
from tests.helpers import manifest_dict

BUILD_TIME_FIELDS = ("snapshot", "created_at")


class _Listing:
    """``os.scandir`` stand-in that returns the real entries in another order."""

    def __init__(self, entries: list[os.DirEntry[str]]) -> None:
        self.it = iter(entries)

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self) -> _Listing:
        return self

    def __next__(self) -> os.DirEntry[str]:
        return next(self.it)

    def close(self) -> None:
        return None


def _reorder(monkeypatch: pytest.MonkeyPatch, how: str, seed: int = 0) -> None:
    real = os.scandir
    rng = random.Random(seed)

    def scandir(path: Any = ".") -> _Listing:
        with real(path) as it:
            entries = list(it)
        if how == "reversed":
            entries.sort(key=lambda e: e.name, reverse=True)
        else:
            rng.shuffle(entries)
        return _Listing(entries)

    monkeypatch.setattr(os, "scandir", scandir)


def _snapshot_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*.parquet"))}


def _manifest_without_build_time(out: Path, sid: str) -> dict[str, Any]:
    m = manifest_dict(out, sid)
    for name in BUILD_TIME_FIELDS:
        del m[name]
    return m


@pytest.mark.parametrize("partition_by", ["camera", "none"])
def test_same_bytes_whatever_workers_and_listing_order(
    mixed_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    partition_by: str,
    trials: Any,
) -> None:
    out = tmp_path / "out"
    opts = {"shard_files": 5, "partition_by": partition_by}
    ref = kpcompile.build(mixed_dataset, out, workers=1, **opts)
    ref_bytes = _snapshot_bytes(Path(ref.path))
    ref_manifest = _manifest_without_build_time(out, ref.snapshot_id)
    assert len(ref_bytes) > 5
    # the listing order is changed in the Python walk (os.scandir); the native walk
    # (the reference, where built) and the Python walk must give the same bytes
    variants = [(2, None), (3, None), (2, "python"), (2, "reversed"), (1, "shuffled")]
    for workers, order in variants:
        with monkeypatch.context() as m:
            if order:
                m.setenv("KPCOMPILE_PURE_PYTHON", "1")
            if order in ("reversed", "shuffled"):
                _reorder(m, order, seed=workers)
            r = kpcompile.build(mixed_dataset, out, workers=workers, full=True, **opts)
        assert _snapshot_bytes(Path(r.path)) == ref_bytes, (workers, order)
        full = manifest_dict(out, r.snapshot_id)
        assert {k: v for k, v in full.items() if k not in BUILD_TIME_FIELDS} == ref_manifest
        assert full["snapshot"] != ref.snapshot_id
    trials(
        len(variants),
        "rebuilds compared byte for byte (workers 1-3, native and Python walks, "
        "listing reversed/shuffled)",
    )


def test_the_listing_order_really_changed(
    mixed_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # guards the test above against a stand-in that does nothing
    _reorder(monkeypatch, "reversed")
    with os.scandir(mixed_dataset) as it:
        names = [e.name for e in it]
    assert names == sorted(names, reverse=True) and len(names) > 1


def test_rows_are_written_in_order_not_in_thread_order(mixed_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(mixed_dataset, tmp_path / "out", workers=2, shard_files=4)
    for f in sorted((Path(r.path) / "keypoints").rglob("*.parquet")):
        df = pl.from_arrow(pq.read_table(f, use_threads=True))
        assert isinstance(df, pl.DataFrame)
        assert df.equals(df.sort("datapoint", "camera", "kp_id")), f


def test_a_copied_dataset_differs_only_in_mtime(mixed_dataset: Path, tmp_path: Path) -> None:
    """``files.mtime_ns`` is real data: a copy with new modification times changes the
    ``files`` table (and its checksum in the manifest), nothing else."""
    copy = tmp_path / "copy"
    shutil.copytree(mixed_dataset, copy, copy_function=shutil.copy)  # new mtimes
    a = kpcompile.build(mixed_dataset, tmp_path / "a", workers=1)
    b = kpcompile.build(copy, tmp_path / "b", workers=1)
    ab, bb = _snapshot_bytes(Path(a.path)), _snapshot_bytes(Path(b.path))
    assert ab.keys() == bb.keys()
    files_parts = {k for k in ab if k.startswith("files/")}
    # and the manifest's lists: the files list holds their checksums, the shard list
    # the digests of the shards' inputs (mtimes included)
    lists = {mf.FILES_LIST, mf.SHARDS_LIST}
    assert files_parts and {k for k in ab if ab[k] != bb[k]} == files_parts | lists
    fa = kpcompile.read(tmp_path / "a", "files")
    fb = kpcompile.read(tmp_path / "b", "files")
    assert fa.drop("mtime_ns").equals(fb.drop("mtime_ns"))
    assert not fa["mtime_ns"].equals(fb["mtime_ns"])
