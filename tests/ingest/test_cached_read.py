"""Reading a file from the page cache in the worker's thread: the C read and the Python
read give the file's bytes, or ``None`` for anything a read-ahead thread must decide."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kpcompile.ingest.folder import FolderSource, native, read_local_cached


def _c_read(path: str, max_bytes: int) -> bytes | None:
    c = native()
    if c is None:
        pytest.skip("the C extension is not built")
    data: bytes | None = c.read_cached(os.fsencode(path), max_bytes)
    return data


@pytest.fixture(params=["python", "c"])
def read(request: pytest.FixtureRequest) -> Any:
    return read_local_cached if request.param == "python" else _c_read


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 300_001])
def test_a_file_in_memory_is_read_whole(tmp_path: Path, read: Any, size: int) -> None:
    path = tmp_path / "f.json"
    data = os.urandom(size)
    path.write_bytes(data)
    path.read_bytes()  # in the page cache now
    got = read(str(path), 1 << 20)
    assert got == data and type(got) is bytes


def test_anything_else_is_none(tmp_path: Path, read: Any) -> None:
    (tmp_path / "big").write_bytes(b"x" * 100)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert read(str(tmp_path / "big"), 99) is None  # too large: the thread names it
    for name in ("fifo", "dir", "link", "missing"):
        assert read(str(tmp_path / name), 1 << 20) is None, name


def test_the_source_reads_the_same_bytes_either_way(
    small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = FolderSource(small_dataset)
    rels = sorted(str(p.relative_to(small_dataset)) for p in small_dataset.rglob("*.json"))
    expected = [(small_dataset / r).read_bytes() for r in rels]
    assert [src.read_cached(r, 1 << 26) for r in rels] == expected
    monkeypatch.setenv("KPCOMPILE_PURE_PYTHON", "1")
    assert [src.read_cached(r, 1 << 26) for r in rels] == expected
