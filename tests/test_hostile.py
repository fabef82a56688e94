"""Promise 4, hostile input, nothing lost: a corpus of valid files and every kind of bad
file compiles with discovered = compiled + rejected, rows = 468 x compiled, and each
rejection carrying its specific code; no crash, no hang.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from kpcompile import ErrorCode
from kpcompile.store.verify import verify
from kpcompile.synth import synth
from tests.parsing.test_parse import BAD, _doc

DENSE = "key_points/face_dense_key_points.json"
HUNDRED_MB = 100 * 1000 * 1000
VALID = 13  # 6 datapoints x 2 cameras, and the first file of the duplicate camera folder


def _hostile_corpus(root: Path, *, big: bool) -> dict[str, ErrorCode]:
    """Valid files plus one bad file per kind; returns the expected code per bad path."""
    synth(root, datapoints=6, cameras=2, layout="mixed", seed=9)
    expected: dict[str, ErrorCode] = {}
    for i, (name, data, code, _) in enumerate(BAD):
        rel = f"bad_{i:02d}_{name.replace(' ', '_')}/camera/{DENSE}"
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(data)
        expected[rel] = code
    folder = f"bad_folder/camera/{DENSE}"
    (root / folder).mkdir(parents=True)
    expected[folder] = ErrorCode.UNREADABLE
    fifo = f"bad_fifo/camera/{DENSE}"
    (root / fifo).parent.mkdir(parents=True)
    os.mkfifo(root / fifo)
    expected[fifo] = ErrorCode.UNREADABLE
    # a second landmark file in a camera folder that already has one
    dup = "bad_duplicate/camera/dense_keypoints.json"
    (root / dup).parent.mkdir(parents=True)
    (root / dup).write_bytes(BAD[0][1] or b"{}")
    (root / f"bad_duplicate/camera/{DENSE}").parent.mkdir(parents=True)
    (root / f"bad_duplicate/camera/{DENSE}").write_text(json.dumps(_doc()))
    expected[dup] = ErrorCode.DUPLICATE_CAMERA
    # a 100 MB file: a valid document followed by 100 MB of whitespace
    huge = f"bad_huge/camera/{DENSE}"
    (root / huge).parent.mkdir(parents=True)
    with open(root / huge, "wb") as fh:
        fh.write(json.dumps(_doc()).encode())
        if big:
            fh.write(b" " * HUNDRED_MB)
        else:
            fh.truncate(HUNDRED_MB)  # sparse: same size, nothing written; rejected unread
    expected[huge] = ErrorCode.TOO_LARGE
    (root / "bad_loop").symlink_to(".")
    return expected


def _build_with_deadline(source: Path, out: Path, **opts: Any) -> Any:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(kpcompile.build(source, out, **opts))
        except BaseException as exc:  # reported below with the deadline
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(300)
    assert not t.is_alive(), "the build hangs"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def _check(out: Path, r: Any, expected: dict[str, ErrorCode], valid: int) -> None:
    assert r.discovered == r.compiled + r.rejected == valid + len(expected)
    assert r.rows == 468 * r.compiled
    assert {p: c for p, c, _ in r.errors} == {p: str(c) for p, c in expected.items()}
    files = kpcompile.read(out, "files")
    assert files.height == r.discovered and files["path"].n_unique() == r.discovered
    assert sorted(files.filter(status="rejected")["path"]) == sorted(expected)
    errors = kpcompile.read(out, "errors")
    assert dict(zip(errors["path"], errors["code"], strict=True)) == {
        p: str(c) for p, c in expected.items()
    }
    assert not any(
        p in m for p, m in zip(errors["path"], errors["message"], strict=True)
    )  # the path has its own column
    assert kpcompile.scan(out).collect().height == r.rows
    assert verify(out).ok


def test_hostile_corpus_nothing_lost(tmp_path: Path, trials: Any) -> None:
    source = tmp_path / "dataset"
    expected = _hostile_corpus(source, big=False)
    kinds = {c for c in expected.values()}
    assert len(expected) >= 12 and len(kinds) >= 12
    r = _build_with_deadline(source, tmp_path / "out", workers=2, shard_files=7, max_errors=10**6)
    _check(tmp_path / "out", r, expected, valid=VALID)
    trials(len(expected), f"kinds of bad file among {VALID} valid ones ({len(kinds)} codes)")


@pytest.mark.slow
def test_hostile_corpus_with_a_real_100_mb_file(tmp_path: Path, trials: Any) -> None:
    source = tmp_path / "dataset"
    expected = _hostile_corpus(source, big=True)
    r = _build_with_deadline(source, tmp_path / "out", workers=2, shard_files=7, max_errors=10**6)
    _check(tmp_path / "out", r, expected, valid=VALID)
    # read and parsed when the limit allows it: 100 MB of whitespace is still valid JSON
    del expected[f"bad_huge/camera/{DENSE}"]
    r = _build_with_deadline(
        source, tmp_path / "out", workers=2, max_errors=10**6, max_file_bytes=2 * HUNDRED_MB
    )
    _check(tmp_path / "out", r, expected, valid=VALID + 1)
    trials(2, "builds of the hostile corpus with a 100 MB file")
