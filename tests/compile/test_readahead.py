"""Read-ahead in builds: the same bytes for any window and worker count, for every
source kind; a read that stalls is that file's rejection; one request per object."""

from __future__ import annotations

import tarfile
import threading
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile.ingest.folder import FolderSource
from tests.helpers import manifest_dict

# (read_ahead MiB, workers): no read-ahead, a window smaller than two files, the default
VARIANTS = [(0, 1), (0, 2), (16, 1), (16, 2)]
TINY = 1  # MiB: with files of ~0.1-0.2 MiB, a handful in flight


def _tables(out: Any) -> dict[str, Any]:
    tables: dict[str, Any] = manifest_dict(out)["tables"]
    return tables


def _sources(dataset: Path, tmp: Path) -> dict[str, Path]:
    tgz = tmp / "dataset.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(dataset, arcname="dataset")
    zipped = tmp / "dataset.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(dataset.rglob("*")):
            zf.write(p, "dataset/" + p.relative_to(dataset).as_posix())
    return {"folder": dataset, "tar.gz": tgz, "zip": zipped}


def test_same_bytes_with_and_without_read_ahead_for_every_source_kind(
    mixed_dataset: Path, tmp_path: Path, trials: Any
) -> None:
    n = 0
    for kind, source in _sources(mixed_dataset, tmp_path).items():
        ref = None
        for window, workers in [*VARIANTS, (TINY, 2)]:
            out = tmp_path / f"{kind}-{window}-{workers}"
            kpcompile.build(
                source, out, workers=workers, read_ahead=window, shard_files=7, max_errors=100
            )
            tables = _tables(out)
            ref = ref or tables
            assert tables == ref, (kind, window, workers)
            n += 1
    trials(
        n, "builds compared byte for byte (folder, tar.gz, zip; read-ahead 0/1/16 MiB; 1-2 workers)"
    )


def test_same_bytes_with_and_without_read_ahead_from_object_storage(
    s3: Any, small_dataset: Path
) -> None:
    s3.put(str(small_dataset), "bucket/ra1/dataset", recursive=True)
    ref = None
    for window, workers in VARIANTS:
        out = f"s3://bucket/ra1/out-{window}-{workers}"
        kpcompile.build(
            "s3://bucket/ra1/dataset", out, workers=workers, read_ahead=window, shard_files=3
        )
        tables = _tables(out)
        ref = ref or tables
        assert tables == ref, (window, workers)


def test_object_storage_reads_make_one_request_per_object(
    s3: Any, s3_requests: list[tuple[str, str, str | None]], small_dataset: Path
) -> None:
    s3.put(str(small_dataset), "bucket/ra2/dataset", recursive=True)
    keys = {"/" + k for k in s3.find("bucket/ra2/dataset") if k.endswith(".json")}
    s3_requests.clear()
    r = kpcompile.build("s3://bucket/ra2/dataset", "s3://bucket/ra2/out", workers=2, max_errors=100)
    on_files = Counter((m, p) for m, p, _ in s3_requests if p in keys)
    paths = kpcompile.read("s3://bucket/ra2/out", "files")["path"].to_list()
    landmark = {"/bucket/ra2/dataset/" + p for p in paths}
    assert r.discovered == len(landmark) > 0 and landmark <= keys
    assert on_files == Counter({("GET", p): 1 for p in landmark})
    ranges = {rng for m, p, rng in s3_requests if p in keys}
    assert ranges == {f"bytes=0-{64 << 20}"}  # a longer object would be too_large


def test_a_stalled_read_is_that_files_rejection_and_the_build_goes_on(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = threading.Event()
    files = small_dataset.rglob("face_dense_key_points.json")
    target = sorted(p.relative_to(small_dataset).as_posix() for p in files)[3]
    real = FolderSource.read

    def read(self: FolderSource, rel: str, max_bytes: int) -> bytes:
        if rel == target:
            stuck.wait()  # an NFS read that never answers
        return real(self, rel, max_bytes)

    monkeypatch.setattr(FolderSource, "read", read)
    # a network filesystem: no page-cache read without waiting (RWF_NOWAIT unsupported)
    monkeypatch.setattr(FolderSource, "read_cached", lambda *a: None)
    try:
        r = kpcompile.build(
            small_dataset, tmp_path / "out", workers=1, read_timeout=1, max_errors=1
        )
    finally:
        stuck.set()
    assert r.rejected == 1
    [(path, code, message)] = r.errors
    assert (path, code) == (target, "unreadable")
    assert "no answer within 1 s (read_timeout)" in message
    assert r.compiled == r.discovered - 1
