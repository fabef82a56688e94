"""The typed manifest: written and read in one place, with a format version.

Format 3 is a small JSON head and two Parquet lists; formats 1 and 2 (one JSON
document) are still read: they are written here by the one-document encoder that
wrote them, :func:`kpcompile.manifest.encode` of a whole manifest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

import kpcompile
from kpcompile import manifest as mf
from kpcompile.store import open_store


@pytest.fixture
def built(small_dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A format-3 snapshot of 8 files in a few shards: its output and its folder."""
    r = kpcompile.build(small_dataset, tmp_path / "out", workers=1, shard_files=2)
    return tmp_path / "out", Path(r.path)


def _as_one_document(folder: Path, fmt: str) -> mf.Manifest:
    """Rewrite a snapshot's manifest as format ``fmt`` (1 or 2) wrote it: one JSON document."""
    whole = open_store(folder.parent.parent).read_manifest(folder.name)
    old = msgspec.structs.replace(whole, format=fmt)
    (folder / mf.FILE_NAME).write_bytes(mf.encode(old))
    shutil.rmtree(folder / mf.LISTS_FOLDER)
    return old


def test_format_3_round_trip(built: tuple[Path, Path]) -> None:
    out, folder = built
    store = open_store(out)
    whole = store.manifest()
    head = store.head()
    assert whole.format == head.format == mf.FORMAT == "kpcompile-snapshot/3"
    assert (head.snapshot, head.counts, head.whole) == (whole.snapshot, whole.counts, None)
    # one encoder: the files on disk are exactly what encode_snapshot makes of the manifest
    for rel, data in mf.encode_snapshot(whole):
        assert (folder / rel).read_bytes() == data
    raw = (folder / mf.FILE_NAME).read_bytes()
    assert list(json.loads(raw)) == sorted(json.loads(raw))
    assert b'"digest"' not in raw and b'"outputs"' not in raw and b'"sha256"' in raw
    assert {n: t.files for n, t in head.tables.items()} == {
        n: len(t.files) for n, t in whole.tables.items()
    }
    assert len(whole.shards) == head.lists["shards"].rows > 2
    assert mf.decode(mf.encode(whole), "here") == whole  # the whole manifest as one document
    assert store.table_files(head, "files") == whole.table("files").files


def test_the_head_does_not_grow_with_the_shards(small_dataset: Path, tmp_path: Path) -> None:
    a = kpcompile.build(small_dataset, tmp_path / "a", workers=1, shard_files=8)
    b = kpcompile.build(small_dataset, tmp_path / "b", workers=1, shard_files=1)
    assert b.shards > a.shards
    size_a = (Path(a.path) / mf.FILE_NAME).stat().st_size
    size_b = (Path(b.path) / mf.FILE_NAME).stat().st_size
    assert abs(size_a - size_b) < 16  # digits of the counts only


@pytest.mark.parametrize("fmt", ["kpcompile-snapshot/1", "kpcompile-snapshot/2"])
def test_one_document_formats_are_still_read(
    built: tuple[Path, Path], small_dataset: Path, fmt: str
) -> None:
    out, folder = built
    before = kpcompile.read(out).sort("datapoint", "camera", "kp_id")
    old = _as_one_document(folder, fmt)
    if fmt.endswith("/1"):  # format 1 wrote sets_rejected only with --sets
        doc = json.loads((folder / mf.FILE_NAME).read_text())
        del doc["counts"]["sets_rejected"]
        (folder / mf.FILE_NAME).write_text(json.dumps(doc))
    store = open_store(out)
    assert store.head().whole == old
    assert store.manifest() == old
    assert kpcompile.info(out).files == 8
    assert kpcompile.read(out).sort("datapoint", "camera", "kp_id").equals(before)
    assert kpcompile.sql(out, "SELECT count(*) AS n FROM files")["n"][0] == 8
    assert len(kpcompile.files(out, "keypoints")) == len(old.table("keypoints").files)
    assert store.shard_records(old.snapshot) == old.shards
    lo = old.shards[2].first
    assert store.shard_records(old.snapshot, first=lo) == [s for s in old.shards if s.last >= lo]
    report = kpcompile.verify(out, small_dataset)
    assert report.ok, report.problems
    # an incremental build reads the old format and writes format 3
    r = kpcompile.build(small_dataset, out, workers=1, shard_files=2, full=False)
    assert r.up_to_date
    changed = sorted(small_dataset.rglob("face_dense_key_points.json"))[0]
    changed.write_bytes(changed.read_bytes() + b"\n")
    r = kpcompile.build(small_dataset, out, workers=1, shard_files=2)
    assert (r.base, r.reused_shards) == (old.snapshot, len(old.shards) - 1)
    assert store.head().format == mf.FORMAT
    assert kpcompile.diff(out, old.snapshot, r.snapshot_id).changed == [
        (changed.parent.parent.parent.name, "camera_00")
    ]


def test_shard_records_of_a_key_range(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mf, "LIST_ROW_GROUP", 2)  # several row groups, some skipped
    out = tmp_path / "out"
    kpcompile.build(small_dataset, out, workers=1, shard_files=1, partition_by="none")
    store = open_store(out)
    whole = store.manifest()
    every = whole.shards
    assert store.shard_records(store.head()) == every and len(every) >= 6
    for name, table in whole.tables.items():  # row groups of one table, and of several
        assert store.table_paths(store.head(), name) == [f.path for f in table.files]
        assert store.table_files(store.head(), name) == table.files
    keys = sorted({tuple(s.first) for s in every} | {tuple(s.last) for s in every})
    bounds: list[Any] = [None, *map(list, keys), ["datapoint_00002"], ["zz"], [""]]
    for lo in bounds:
        for hi in bounds:
            want = [
                s for s in every if (lo is None or s.last >= lo) and (hi is None or s.first <= hi)
            ]
            assert store.shard_records(store.current_id(), first=lo, last=hi) == want


def test_a_damaged_list_is_named(built: tuple[Path, Path]) -> None:
    out, folder = built
    shards = folder / mf.SHARDS_LIST
    data = bytearray(shards.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shards.write_bytes(bytes(data))
    problems = kpcompile.verify(out).problems
    assert len(problems) == 1 and problems[0].startswith(f"{mf.SHARDS_LIST}: sha256 ")
    with pytest.raises(kpcompile.SnapshotError, match=f"{mf.SHARDS_LIST}: sha256 "):
        open_store(out).manifest()
    assert kpcompile.scan(out).select(pl.len()).collect().item() == 8 * 468  # files list sound


def test_a_damaged_file_list_is_named(built: tuple[Path, Path]) -> None:
    out, folder = built
    (folder / mf.FILES_LIST).write_bytes(b"PAR1")
    assert any(p.startswith(f"{mf.FILES_LIST}: 4 bytes,") for p in kpcompile.verify(out).problems)
    with pytest.raises(kpcompile.SnapshotError, match=f"{mf.FILES_LIST}: 4 bytes"):
        kpcompile.scan(out)
    (folder / mf.FILES_LIST).unlink()
    assert f"{mf.FILES_LIST}: cannot read: No such file or directory" in (
        kpcompile.verify(out).problems
    )


def test_a_stray_file_among_the_lists_is_named(built: tuple[Path, Path]) -> None:
    out, folder = built
    (folder / mf.LISTS_FOLDER / "extra.parquet").write_bytes(b"x")
    assert kpcompile.verify(out).problems == [
        f"{mf.LISTS_FOLDER}/extra.parquet: file not listed in the manifest"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"format": "kpcompile-snapshot/9"}',
            "has format 'kpcompile-snapshot/9'; this kpcompile reads",
        ),
        (b"{", "cannot read manifest where: "),
        (b'{"format": "kpcompile-snapshot/2", "snapshot": 1}', "cannot read manifest where: "),
        (b'{"format": "kpcompile-snapshot/3", "snapshot": 1}', "cannot read manifest where: "),
    ],
)
def test_unreadable_manifests_are_named(content: bytes, message: str) -> None:
    with pytest.raises(kpcompile.SnapshotError, match=message):
        mf.decode_head(content, "where")
