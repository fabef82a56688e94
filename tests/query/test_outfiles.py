"""Every file the CLI writes (query -o in each format, plot -o, report -o): unwritable paths exit 5 with the path and the reason; missing folders are made."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli

Q = "SELECT camera, count(*) AS n FROM keypoints GROUP BY camera"

# (command arguments after OUT, file name); every output file the CLI writes
WRITERS = [
    (["query", Q, "--format", "csv"], "r.csv"),
    (["query", Q, "--format", "json"], "r.json"),
    (["query", Q, "--format", "ndjson"], "r.ndjson"),
    (["query", Q, "--format", "parquet"], "r.parquet"),
    (["query", Q, "--format", "table"], "r.txt"),
    (["query", Q], "r.csv"),
    (["plot", "--visibility"], "v.png"),
    (["plot", "--datapoint", "faces/datapoint_00001"], "f.svg"),
    (["report"], "r.html"),
]


def _run(compiled: Path, args: list[str], dest: Path) -> tuple[int, str, str]:
    command, *rest = args
    r = CliRunner().invoke(cli, [command, str(compiled), *rest, "-o", str(dest)])
    return r.exit_code, r.stdout, r.stderr


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A folder in which no file can be created (chmod, or chattr +i for root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        undo = ["chmod", "700", str(folder)]
    elif (
        shutil.which("chattr")
        and subprocess.run(["chattr", "+i", str(folder)], check=False).returncode == 0
    ):
        undo = ["chattr", "-i", str(folder)]
    else:
        pytest.skip("cannot make a folder unwritable here")
    try:
        try:
            (folder / "probe").touch()
        except OSError:
            yield folder
        else:
            pytest.skip("the locked folder is still writable")
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize(("args", "name"), WRITERS)
def test_under_a_file(compiled_sets: Path, tmp_path: Path, args: list[str], name: str) -> None:
    (tmp_path / "afile").write_text("x")
    dest = tmp_path / "afile" / name
    code, out, err = _run(compiled_sets, args, dest)
    assert (code, out) == (5, "")
    assert err == f"error: cannot write '{dest}': '{tmp_path / 'afile'}' is not a folder\n"
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize(("args", "name"), WRITERS)
def test_missing_folder_is_created(
    compiled_sets: Path, tmp_path: Path, args: list[str], name: str
) -> None:
    dest = tmp_path / "nodir" / "sub" / name
    code, _, err = _run(compiled_sets, args, dest)
    assert (code, err) == (0, "")
    assert _leftovers(dest.parent) == [name] and dest.stat().st_size > 0


@pytest.mark.parametrize(("args", "name"), WRITERS)
def test_folders_made_for_a_failed_write_are_removed(
    compiled_sets: Path, tmp_path: Path, args: list[str], name: str
) -> None:
    dest = tmp_path / "nodir" / "sub" / name
    code, _, err = _run(compiled_sets, [*args, "--snapshot", "20250101T120000Z-1a2b3c4d"], dest)
    assert code != 0 and err.startswith("error: no snapshot '20250101T120000Z-1a2b3c4d'")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("args", "name"), WRITERS)
def test_a_folder(compiled_sets: Path, tmp_path: Path, args: list[str], name: str) -> None:
    dest = tmp_path / name
    dest.mkdir()
    code, out, err = _run(compiled_sets, args, dest)
    assert (code, out) == (5, "")
    assert err == f"error: cannot write '{dest}': it is a folder\n"
    assert _leftovers(tmp_path) == [name] and _leftovers(dest) == []


@pytest.mark.parametrize(("args", "name"), WRITERS)
def test_permission_denied(
    compiled_sets: Path, unwritable: Path, args: list[str], name: str
) -> None:
    dest = unwritable / name
    code, out, err = _run(compiled_sets, args, dest)
    assert (code, out) == (5, "")
    assert err == f"error: cannot write '{dest}': permission denied\n"
    assert _leftovers(unwritable) == []


@pytest.mark.parametrize(("args", "name"), WRITERS[:1] + WRITERS[-1:])
def test_folder_cannot_be_made(
    compiled_sets: Path, unwritable: Path, args: list[str], name: str
) -> None:
    dest = unwritable / "new" / name
    code, out, err = _run(compiled_sets, args, dest)
    assert (code, out) == (5, "")
    assert err == (
        f"error: cannot write '{dest}': cannot create folder '{dest.parent}': permission denied\n"
    )
    assert _leftovers(unwritable) == []


def test_relative_paths_are_named_as_given(
    compiled_sets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")
    r = CliRunner().invoke(
        cli, ["query", str(compiled_sets), Q, "--format", "csv", "-o", "afile/x.csv"]
    )
    assert (
        r.exit_code == 5
        and r.stderr == "error: cannot write 'afile/x.csv': 'afile' is not a folder\n"
    )
    r = CliRunner().invoke(cli, ["plot", str(compiled_sets), "--visibility", "-o", "afile/vis.png"])
    assert (
        r.exit_code == 5
        and r.stderr == "error: cannot write 'afile/vis.png': 'afile' is not a folder\n"
    )


def test_the_library_raises_output_error(compiled_sets: Path, tmp_path: Path) -> None:
    from kpcompile.query.results import write_result

    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "afile" / "x"
    with pytest.raises(kpcompile.OutputError, match="is not a folder"):
        write_result(compiled_sets, Q, output=bad.with_suffix(".csv"))
    with pytest.raises(kpcompile.OutputError, match="is not a folder"):
        kpcompile.plot_visibility(compiled_sets, bad.with_suffix(".png"))
    with pytest.raises(kpcompile.OutputError, match="is not a folder"):
        kpcompile.plot_face(compiled_sets, "faces/datapoint_00001", bad.with_suffix(".png"))


def test_a_failed_query_leaves_no_file(compiled_sets: Path, tmp_path: Path) -> None:
    dest = tmp_path / "r.csv"
    r = CliRunner().invoke(
        cli, ["query", str(compiled_sets), "SELECT nope FROM keypoints", "-o", str(dest)]
    )
    assert r.exit_code == 2 and _leftovers(tmp_path) == []


def test_overwrites_a_file_and_keeps_the_usual_mode(compiled_sets: Path, tmp_path: Path) -> None:
    dest = tmp_path / "r.csv"
    dest.write_text("old")
    r = CliRunner().invoke(cli, ["query", str(compiled_sets), Q, "-o", str(dest)])
    assert r.exit_code == 0 and dest.read_text().startswith("camera,n\n")
    fresh = tmp_path / "fresh.csv"
    CliRunner().invoke(cli, ["query", str(compiled_sets), Q, "-o", str(fresh)])
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _leftovers(tmp_path) == ["fresh.csv", "r.csv"]
