"""The CLI: messages and exit codes, with click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpcompile import __version__
from kpcompile.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version_and_help() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out == f"kpcompile, version {__version__}\n"
    for command in ("build", "info", "synth"):
        code, out, _ = run(command, "-h")
        assert code == 0 and "Example:" in out


def test_synth_build_info(tmp_path: Path) -> None:
    code, out, _ = run("synth", str(tmp_path / "ds"), "-n", "3", "-c", "2", "--layout", "legacy")
    assert code == 0 and out.startswith("wrote 6 landmark files (12 files,")
    code, out, err = run("build", str(tmp_path / "ds"), str(tmp_path / "out"), "-j", "1")
    assert code == 0, err
    assert "6 files, 6 compiled, 0 rejected, 2,808 rows" in out
    code, out, _ = run("info", str(tmp_path / "out"))
    assert code == 0 and "files        6 (6 compiled, 0 rejected)" in out
    assert "layouts      legacy 6" in out and "versions     none 6" in out
    code, out, _ = run("info", str(tmp_path / "out"), "--json")
    data = json.loads(out)
    assert data["rows"] == 2808 and data["layouts"] == {"legacy": 6}


def test_rejected_files_exit_3_and_list_every_file(small_dataset: Path, tmp_path: Path) -> None:
    bad = small_dataset / "datapoint_00002/camera_00/key_points/face_dense_key_points.json"
    bad.write_text('{"version": "2.0.0", "face": {"dense": {"0": {}}}}')
    code, out, err = run("build", str(small_dataset), str(tmp_path / "out"), "-j", "1")
    assert code == 3 and out == ""
    assert err.splitlines() == [
        "rejected [landmark_count] datapoint_00002/camera_00/key_points/face_dense_key_points.json: "
        "1 landmarks under face.dense, expected 468 (ids 0-467); missing ids 1, 2, 3, 4, 5 and 462 more",
        "error: 1 file rejected, more than --max-errors 0; nothing was published",
    ]
    assert not (tmp_path / "out" / "CURRENT").exists()
    code, out, err = run(
        "build", str(small_dataset), str(tmp_path / "out"), "--max-errors", "1", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["rejected"] == 1 and result["errors"][0]["code"] == "landmark_count"
    rel = "datapoint_00002/camera_00/key_points/face_dense_key_points.json"
    reason = "1 landmarks under face.dense, expected 468 (ids 0-467); missing ids 1, 2, 3, 4, 5 and 462 more"
    # the path in its column, the message without it; printed together once
    assert result["errors"][0] == {"path": rel, "code": "landmark_count", "message": reason}
    code, out, _ = run("errors", str(tmp_path / "out"))
    assert code == 0 and out.splitlines()[1:] == [f"rejected [landmark_count] {rel}: {reason}"]
    code, out, _ = run("errors", str(tmp_path / "out"), "--json")
    assert json.loads(out)["errors"] == [result["errors"][0]]


def test_messages_of_earlier_snapshots_are_printed_with_their_path_once() -> None:
    from kpcompile.manifest import located

    # snapshots of earlier versions hold "path: reason" messages
    assert located("dp/c/f.json", "dp/c/f.json: invalid JSON") == "dp/c/f.json: invalid JSON"
    assert located("dp/c/f.json", "invalid JSON") == "dp/c/f.json: invalid JSON"


def test_source_error_exits_4(tmp_path: Path) -> None:
    code, _, err = run("build", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert code == 4
    assert err == f"error: source '{tmp_path / 'nope'}' does not exist\n"
    (tmp_path / "empty").mkdir()
    code, _, err = run("build", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert code == 4 and "no keypoint files under" in err


def test_output_errors_exit_5(tmp_path: Path) -> None:
    code, _, err = run("info", str(tmp_path))
    assert code == 5
    assert (
        err
        == f"error: '{tmp_path}' holds no snapshot; build one with `kpcompile build SOURCE {tmp_path}`\n"
    )
    code, _, err = run("info", str(tmp_path), "--snapshot", "x")
    assert code == 5


def test_a_source_given_as_output_gets_the_build_suggested(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(small_dataset.parent)
    name = small_dataset.name
    for command in ("info", "snapshots", "report"):
        code, out, err = run(command, name)
        assert (code, out) == (5, "")
        assert err == (
            f"error: '{name}' holds no snapshot: it holds keypoint files, so it is a source, "
            f"not a compiled output; compile it with `kpcompile build {name} compiled`, "
            "then `kpcompile info compiled`\n"
        )
    code, _, _ = run("build", name, "compiled", "-j", "1")
    assert code == 0 and run("info", "compiled")[0] == 0
    code, _, err = run("info", str(small_dataset))
    assert code == 5 and f"`kpcompile build {small_dataset} {tmp_path}/compiled`" in err


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = run("build", str(tmp_path), str(tmp_path / "o"), "--workers", "0")
    assert code == 2 and "Invalid value for '--workers'" in err
    code, _, err = run("synth", str(tmp_path), "--layout", "bogus")
    assert code == 2 and "'bogus' is not one of" in err


def test_output_under_a_file_exits_5(tmp_path: Path, small_dataset: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run("build", str(small_dataset), str(tmp_path / "file" / "out"))
    assert code == 5 and err.startswith("error: cannot use output folder")
