"""Every `Example:` of the CLI's help runs as written on the README's quick-start data.

The quick-start dataset (``kpcompile synth dataset --datapoints N --cameras 2 --layout
mixed``, smaller here) is built twice into ``compiled`` (the second time with
``--sets``), so two snapshots exist; ``dataset.tar.gz`` is a tarball of ``dataset``.
Each command's example block runs, line after line, in a fresh copy of that folder
(a block that starts with ``kpcompile synth`` makes its dataset, so it starts in an
empty folder). The only changes to a line: placeholder snapshot ids become real
ones (the older placeholder the older snapshot), and ``> FILE`` is done by the test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import tarfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from kpcompile.synth import synth

SNAPSHOT_ID = re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{8}\b")

# Examples that need a server; each says which.
NEEDS_A_SERVER = {
    # an S3 bucket and a dask scheduler
    "kpcompile build dataset.tar.gz s3://bucket/compiled --executor dask",
    # an S3 bucket (gc on object storage is tested against moto in tests/store/)
    "kpcompile gc s3://bucket/compiled --keep 3 --stale-after 6",
}


def _examples(help_text: str) -> list[str]:
    """The command lines of the `Example:` block of one help text."""
    lines = help_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Example:"]
    out = []
    for start in starts:
        for line in lines[start + 1 :]:
            if not line.strip() or not line[:1].isspace():
                break
            out.append(line.strip())
    return out


def _blocks() -> list[tuple[str, list[str]]]:
    assert isinstance(cli, click.Group)
    commands: list[tuple[str, click.Command]] = [("kpcompile", cli)]
    commands += sorted(cli.commands.items())
    return [(name, _examples(cmd.help or "")) for name, cmd in commands]


BLOCKS = _blocks()
RUNNABLE = [(name, lines) for name, lines in BLOCKS if lines]


def test_every_command_has_an_example() -> None:
    assert len(BLOCKS) > 10
    assert [name for name, lines in BLOCKS if not lines] == []
    assert all(line.startswith("kpcompile ") for _, lines in BLOCKS for line in lines)


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A folder with `dataset`, `dataset.tar.gz` and `compiled` (two snapshots)."""
    root = tmp_path_factory.mktemp("quick_start")
    synth(root / "dataset", datapoints=20, cameras=2, layout="mixed")
    kpcompile.build(root / "dataset", root / "compiled", workers=1)
    kpcompile.build(root / "dataset", root / "compiled", workers=1, sets=True)
    with tarfile.open(root / "dataset.tar.gz", "w:gz") as tar:
        tar.add(root / "dataset", arcname=".")
    ids = [s.snapshot for s in kpcompile.snapshots(root / "compiled")]
    assert len(ids) == 2
    return root, ids


def _run(line: str, snapshots: dict[str, str]) -> None:
    words = shlex.split(SNAPSHOT_ID.sub(lambda m: snapshots[m.group()], line))
    assert words[0] == "kpcompile"
    args, redirect = words[1:], None
    if ">" in args:
        at = args.index(">")
        args, redirect = args[:at], args[at + 1]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, f"{line}\n{r.output}\n{r.exception!r}"
    if redirect is not None:
        Path(redirect).write_bytes(r.stdout_bytes)


@pytest.mark.parametrize(("command", "lines"), RUNNABLE, ids=[name for name, _ in RUNNABLE])
def test_example_runs(
    command: str,
    lines: list[str],
    quick_start: tuple[Path, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, ids = quick_start
    work = tmp_path / "work"
    if lines[0].startswith("kpcompile synth "):
        work.mkdir()
    else:
        shutil.copytree(root, work)
    monkeypatch.chdir(work)
    placeholders = sorted(set(SNAPSHOT_ID.findall("\n".join(lines))))
    assert len(placeholders) <= len(ids)
    snapshots = dict(zip(placeholders, ids, strict=False))
    ran = 0
    for line in lines:
        if line in NEEDS_A_SERVER:
            continue
        _run(line, snapshots)
        ran += 1
    assert ran > 0
