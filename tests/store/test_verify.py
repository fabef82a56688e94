"""verify(): a sound snapshot passes; each kind of damage or source change is named."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile import manifest as mf
from kpcompile.cli import cli
from kpcompile.store import open_store
from kpcompile.store.verify import verify


@pytest.fixture
def built(small_dataset: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    out = tmp_path / "out"
    r = kpcompile.build(small_dataset, out, workers=1, shard_files=3)
    return small_dataset, out, Path(r.path)


def test_a_fresh_snapshot_verifies(built: tuple[Path, Path, Path]) -> None:
    source, out, path = built
    report = verify(out, source)
    assert report.ok, report.problems
    assert report.files_checked == len([p for p in path.rglob("*.parquet")])
    assert report.source_files_checked == 8
    assert report.notes == []


def _first(path: Path, table: str) -> Path:
    return sorted((path / table).rglob("*.parquet"))[0]


def test_a_changed_byte_is_a_checksum_difference(built: tuple[Path, Path, Path]) -> None:
    _, out, path = built
    f = _first(path, "keypoints")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    rel = f.relative_to(path).as_posix()
    assert [p.split(": sha256")[0] for p in verify(out).problems] == [f"keypoints: {rel}"]


def test_a_missing_file_and_a_stray_file(built: tuple[Path, Path, Path]) -> None:
    _, out, path = built
    gone = _first(path, "files")
    os.remove(gone)
    stray = gone.parent / "part-99999.parquet"
    stray.write_bytes(b"PAR1")
    problems = verify(out).problems
    assert (
        f"files: {gone.relative_to(path).as_posix()}: cannot read: No such file or directory"
        in problems
    )
    assert "files/part-99999.parquet: file not listed in the manifest" in problems
    assert len(problems) == 2, problems


def test_manifest_counts_are_checked(built: tuple[Path, Path, Path]) -> None:
    _, out, path = built
    m = json.loads((path / "manifest.json").read_text())
    m["counts"]["rows"] += 468
    m["counts"]["compiled"] += 1
    (path / "manifest.json").write_text(json.dumps(m))
    assert verify(out).problems == [
        "counts: compiled is 8, expected 9",
        "counts: rows is 3744, expected 4212",
    ]
    # a file's rows, in the file list (rewritten whole, with the checksums the head names)
    whole = open_store(out).manifest()
    keypoints = whole.tables["keypoints"]
    first = msgspec.structs.replace(keypoints.files[0], rows=keypoints.files[0].rows + 1)
    tables = {**whole.tables, "keypoints": msgspec.structs.replace(
        keypoints, files=[first, *keypoints.files[1:]]
    )}  # fmt: skip
    for rel, data in mf.encode_snapshot(msgspec.structs.replace(whole, tables=tables)):
        (path / rel).write_bytes(data)
    problems = verify(out).problems
    assert any(
        p.endswith("rows, manifest says 469") or "rows, manifest says" in p for p in problems
    )
    assert any(p.startswith("keypoints: files hold") for p in problems), problems


def test_source_changes_are_named(built: tuple[Path, Path, Path]) -> None:
    source, out, _ = built
    files = sorted(source.rglob("face_dense_key_points.json"))
    files[0].write_bytes(files[0].read_bytes().replace(b"1", b"2", 1))  # same size, new content
    shutil.rmtree(files[1].parent.parent)  # the whole camera folder
    st = files[2].stat()
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched only
    extra = source / "datapoint_09999" / "camera_00" / "key_points"
    extra.mkdir(parents=True)
    (extra / "face_dense_key_points.json").write_bytes(files[3].read_bytes())
    report = verify(out, source)
    rel = [f.relative_to(source).as_posix() for f in files]
    assert [p.split(" (")[0] for p in report.problems] == [
        "source: datapoint_09999/camera_00/key_points/face_dense_key_points.json: not in the snapshot",
        f"source: {rel[1]}: in the snapshot, no longer in the source",
        f"source: {rel[0]}: content changed",
    ]
    assert report.notes == ["1 source file have a new modification time but the same content"]


def test_cli_exit_codes_and_messages(built: tuple[Path, Path, Path]) -> None:
    source, out, path = built
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", str(out), str(source)])
    assert ok.exit_code == 0, ok.output
    n = len(list(path.rglob("*.parquet")))
    assert (
        ok.output
        == f"snapshot {path.name} verified: {n} Parquet files, 8 source files checked, no difference\n"
    )
    os.remove(_first(path, "errors"))
    bad = runner.invoke(cli, ["verify", str(out)])
    assert bad.exit_code == 6
    assert "differs: errors: errors/part-00000.parquet: cannot read" in bad.output
    assert f"snapshot {path.name}: 1 difference ({n - 1} Parquet files, 0 source" in bad.output
    none = runner.invoke(cli, ["verify", str(out.parent / "nothing")])
    assert none.exit_code == 5


def test_verify_defaults_to_the_recorded_source(built: tuple[Path, Path, Path]) -> None:
    """`verify OUT` once ignored the source the manifest records."""
    source, out, _ = built
    report = verify(out)
    assert (report.source, report.source_files_checked) == (str(source.resolve()), 8)
    changed = source / "datapoint_00002/camera_01/key_points/face_dense_key_points.json"
    changed.write_bytes(changed.read_bytes().replace(b"0", b"1", 1))
    res = CliRunner().invoke(cli, ["verify", str(out)])
    assert res.exit_code == 6 and "content changed" in res.stderr
    res = CliRunner().invoke(cli, ["verify", str(out), "--no-source"])
    assert res.exit_code == 0 and "source files" not in res.stdout


def test_a_recorded_source_that_is_gone_is_a_note(built: tuple[Path, Path, Path]) -> None:
    source, out, _ = built
    shutil.rmtree(source)
    report = verify(out)
    assert report.ok and report.source_files_checked == 0
    assert report.notes == [
        f"the recorded source {str(source.resolve())!r} cannot be read (source "
        f"{str(source.resolve())!r} does not exist); checked the snapshot only"
    ]
    with pytest.raises(kpcompile.SourceError, match="does not exist"):
        verify(out, source)  # given explicitly, it must be there


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_verify_a_snapshot_built_from_an_archive(
    small_dataset: Path, tmp_path: Path, suffix: str
) -> None:
    """`verify OUT data.tar.gz` once said: Directory 'data.tar.gz' is a file."""
    archive = Path(
        shutil.make_archive(
            str(tmp_path / "data"), "gztar" if suffix == ".tar.gz" else "zip", small_dataset
        )
    )
    assert archive.name == "data" + suffix
    kpcompile.build(archive, tmp_path / "out", workers=1)
    res = CliRunner().invoke(cli, ["verify", str(tmp_path / "out"), str(archive)])
    assert res.exit_code == 0, res.output
    assert "8 source files checked, no difference" in res.stdout
    res = CliRunner().invoke(cli, ["verify", str(tmp_path / "out")])  # the recorded archive
    assert res.exit_code == 0 and "8 source files checked" in res.stdout


VERIFY_MEMORY = """
import sys, tracemalloc
import pyarrow as pa
from kpcompile.store.verify import verify
tracemalloc.start()
report = verify(sys.argv[1])
assert report.ok, report.problems
print(tracemalloc.get_traced_memory()[1] + pa.default_memory_pool().max_memory())
"""


def test_verify_memory_does_not_grow_with_the_landmarks(tmp_path: Path) -> None:
    """Issue 17.4: verify read every table whole (about 116 KB per file, 468 rows each);
    it now checks a Parquet file, and counts a row group, at a time."""
    import subprocess
    import sys

    from kpcompile.synth import synth

    peaks = {}
    for n in (40, 320):
        source, out = tmp_path / f"ds{n}", tmp_path / f"out{n}"
        synth(source, datapoints=n // 2, cameras=2, extras=False)
        kpcompile.build(source, out, workers=1, shard_files=16, row_group_files=8)
        done = subprocess.run(
            [sys.executable, "-c", VERIFY_MEMORY, str(out)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        peaks[n] = int(done.stdout)
    per_file = (peaks[320] - peaks[40]) / 280
    # what grows: the source's listing (columnar) and 9 bytes per file; 468 landmark
    # rows are about 30 KB as Arrow columns, so rows read whole would show here
    assert per_file < 2_000, (peaks, per_file)
