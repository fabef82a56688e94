"""The typed manifest: written and read in one place, with a format version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kpcompile
from kpcompile import manifest as mf
from kpcompile.store import open_store


def test_a_written_manifest_reads_back_equal(small_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(small_dataset, tmp_path / "out", workers=1)
    m = open_store(tmp_path / "out").manifest()
    assert m.format == mf.FORMAT and m.snapshot == r.snapshot_id
    assert mf.decode(mf.encode(m), "here") == m
    raw = (Path(r.path) / "manifest.json").read_bytes()
    assert raw == mf.encode(m)  # one encoder: sorted keys, indented, final newline
    assert list(json.loads(raw)) == sorted(json.loads(raw))


def test_a_format_1_manifest_is_still_read(small_dataset: Path, tmp_path: Path) -> None:
    r = kpcompile.build(small_dataset, tmp_path / "out", workers=1)
    path = Path(r.path) / "manifest.json"
    doc = json.loads(path.read_text())
    doc["format"] = "kpcompile-snapshot/1"
    del doc["counts"]["sets_rejected"]  # format 1 wrote it only with --sets
    path.write_text(json.dumps(doc))
    assert kpcompile.info(tmp_path / "out").files == 8
    assert kpcompile.verify(tmp_path / "out").ok


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"format": "kpcompile-snapshot/9"}',
            "has format 'kpcompile-snapshot/9'; this kpcompile reads",
        ),
        (b"{", "cannot read manifest where: "),
        (b'{"format": "kpcompile-snapshot/2", "snapshot": 1}', "cannot read manifest where: "),
    ],
)
def test_unreadable_manifests_are_named(content: bytes, message: str) -> None:
    with pytest.raises(kpcompile.SnapshotError, match=message):
        mf.decode(content, "where")
