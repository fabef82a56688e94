"""`kpcompile report`: the page's numbers, its sections without --sets or with rejections,
the streaming pass against polars, exit codes and messages, and the packaged template."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import kpcompile
from kpcompile.cli import cli
from kpcompile.reporting import data as report_data
from kpcompile.reporting.stream import COORDS
from kpcompile.store import open_store
from kpcompile.synth import synth

ROOT = Path(__file__).resolve().parents[2]


def make_rejected(root: Path) -> Path:
    """A mixed dataset with three broken landmark files (empty, truncated, no landmarks)."""
    synth(root, datapoints=6, cameras=2, layout="mixed", seed=11)
    dense = sorted(root.glob("faces/*/*/key_points/face_dense_key_points.json"))
    dense[0].write_bytes(b"")
    dense[1].write_bytes(dense[1].read_bytes()[:300])
    dense[2].write_text('{"a": 1}')
    return root


@pytest.fixture(scope="module")
def rejected_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --sets snapshot whose source had three broken files (read-only)."""
    base = tmp_path_factory.mktemp("rejected")
    out = base / "compiled"
    kpcompile.build(make_rejected(base / "dataset"), out, sets=True, max_errors=10, workers=1)
    return out


@pytest.fixture(scope="module")
def plain_out(mixed_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mixed_dataset`` built without --sets (read-only)."""
    out = tmp_path_factory.mktemp("plain") / "compiled"
    kpcompile.build(mixed_dataset, out, workers=1)
    return out


def _text(html: str) -> str:
    """The page's visible text, tags dropped, whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>|<[^>]+>", " ", html, flags=re.S)
    return " ".join(body.replace("&#39;", "'").replace("&amp;", "&").split())


def test_report_holds_the_snapshots_numbers(compiled_sets: Path, tmp_path: Path) -> None:
    r = kpcompile.report(compiled_sets, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    info = kpcompile.info(compiled_sets)
    assert r.snapshot == info.snapshot and r.path == tmp_path / "r.html"
    assert r.bytes == len(html.encode()) and r.seconds > 0
    assert r.missing == {}
    assert r.sections == [
        "Snapshot",
        "Files, datapoints and landmarks",
        "Rejected files",
        "Visibility",
        "Coordinates",
        "3D consistency across cameras",
        "Reprojection error",
        "Sizes",
        "Sample faces",
    ]
    for card, value in [
        ("files", info.files),
        ("compiled", info.compiled),
        ("rejected", info.rejected),
        ("datapoints", info.datapoints),
        ("cameras", info.cameras),
        ("landmarks", info.rows),
    ]:
        assert re.search(rf'id="headline-{card}".*?class="value">{value:,}<', html), card
    text = _text(html)
    assert f'<code id="snapshot-id">{info.snapshot}</code>' in html
    assert f"kpcompile {info.tool_version}" in text and info.source in text
    for layout, n in info.layouts.items():
        assert re.search(rf"\b{layout} {n} {n} 0 \d+ {n * 468:,}", text), layout
    assert "No file was rejected" in text
    assert "all cameras hold exactly the same 3D landmarks" in text
    assert f"{info.source_bytes / info.output_bytes:.1f}x smaller" in text


def test_report_is_self_contained(compiled_sets: Path, tmp_path: Path) -> None:
    kpcompile.report(compiled_sets, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(ref.startswith(("data:", "#")) for ref in refs), refs
    assert "<script" not in html and "url(" not in html and "@import" not in html
    pictures = re.findall(r'<img src="data:image/svg\+xml;base64,', html)
    assert len(pictures) == 3  # visibility, coordinates, sample faces


def test_report_without_sets_says_what_is_missing(plain_out: Path, tmp_path: Path) -> None:
    r = kpcompile.report(plain_out, tmp_path / "r.html")
    assert set(r.missing) == {"Reprojection error"}
    assert "kpcompile build --sets" in r.missing["Reprojection error"]
    text = _text((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "Pixels outside the image: unknown" in text
    assert "No cameras table: build with kpcompile build --sets" in text


def test_report_lists_rejections_by_code(rejected_out: Path, tmp_path: Path) -> None:
    kpcompile.report(rejected_out, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    text = _text(html)
    errors = kpcompile.read(rejected_out, "errors").sort("path")
    assert sorted(errors["code"]) == ["empty", "invalid_json", "unknown_layout"]
    assert "3 rejected files, by code" in text
    for path, code, message in errors.select("path", "code", "message").rows():
        assert re.search(rf"\b{code} 1 33.3% ", text), code
        assert f"{path}: {message}".replace("'", "&#39;") in html
    assert 'id="headline-rejected"><div class="label">rejected</div><div class="value">3<' in html


def test_a_single_camera_snapshot_has_no_consistency_to_show(
    small_dataset: Path, tmp_path: Path
) -> None:
    for folder in small_dataset.glob("datapoint_*/camera_01"):
        for f in sorted(folder.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        folder.rmdir()
    kpcompile.build(small_dataset, tmp_path / "out", workers=1)
    r = kpcompile.report(tmp_path / "out", tmp_path / "r.html")
    assert r.missing == {
        "3D consistency across cameras": "No datapoint has compiled files from two cameras, "
        "so there is nothing to compare.",
        "Reprojection error": "No cameras table: build with `kpcompile build --sets` to compile "
        "camera_metadata.json and measure the reprojection error.",
    }


def test_a_snapshot_without_compiled_files(tmp_path: Path) -> None:
    bad = tmp_path / "dataset/datapoint_00001/camera/key_points/face_dense_key_points.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"a": 1}')
    kpcompile.build(tmp_path / "dataset", tmp_path / "out", max_errors=1, workers=1)
    r = kpcompile.report(tmp_path / "out", tmp_path / "r.html")
    none = "The snapshot holds no compiled file."
    assert r.missing["Visibility"] == none and r.missing["Sample faces"] == none
    assert r.missing["Coordinates"] == "The snapshot holds no landmark."
    assert "unknown_layout 1 100.0%" in _text((tmp_path / "r.html").read_text(encoding="utf-8"))


def test_cameras_that_disagree_are_found(small_dataset: Path, tmp_path: Path) -> None:
    path = small_dataset / "datapoint_00002/camera_01/key_points/face_dense_key_points.json"
    doc = json.loads(path.read_text())
    doc["face"]["dense"]["5"]["global_3d"]["x"] += 0.25
    path.write_text(json.dumps(doc))
    kpcompile.build(small_dataset, tmp_path / "out", workers=1)
    store = open_store(tmp_path / "out")
    data = report_data.gather(store, store.manifest())
    assert data.multi_camera == 4
    got = data.consistency.rows()
    assert [(d, c, n) for d, c, n, _ in got] == [("datapoint_00002", 2, 1)]
    assert got[0][3] == pytest.approx(0.25)
    assert got == kpcompile.inconsistent_3d(kpcompile.scan(tmp_path / "out")).collect().rows()
    kpcompile.report(tmp_path / "out", tmp_path / "r.html")
    text = _text((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "4 datapoints have files from two or more cameras; 1 of them differ" in text
    assert "datapoint_00002 2 1 0.25" in text


def test_the_streaming_pass_agrees_with_polars(compiled_sets: Path) -> None:
    """Every per-camera and per-file number of the report, recomputed with polars."""
    store = open_store(compiled_sets)
    data = report_data.gather(store, store.manifest())
    kp = kpcompile.scan(compiled_sets)
    stats = (
        kp.group_by("camera")
        .agg(
            pl.len().alias("n"),
            *(
                getattr(pl.col(c), f)().alias(f"{c}:{f}")
                for c in COORDS
                for f in ("min", "mean", "std", "max")
            ),
        )
        .collect()
    )
    for row in data.coords.iter_rows(named=True):
        want = stats.filter(pl.col("camera") == row["camera"]).row(0, named=True)
        assert row["n"] == want["n"]
        for f in ("min", "mean", "std", "max"):
            assert row[f] == pytest.approx(want[f"{row['coord']}:{f}"], rel=1e-12, abs=1e-12)
    vis = (
        kp.group_by("camera", "kp_id")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("visible").count().cast(pl.Int64).alias("flagged"),
            pl.col("visible").sum().cast(pl.Int64).alias("visible"),
        )
        .sort("camera", "kp_id")
        .collect()
    )
    assert data.visibility.sort("camera", "kp_id").equals(vis)
    for model in ("matrices", "pose"):
        want = kpcompile.reprojection_error(compiled_sets, model=model)
        got = data.reprojection.filter(pl.col("model") == model).sort("datapoint", "camera")
        assert got["datapoint"].to_list() == want["datapoint"].to_list()
        assert got["convention"].to_list() == want["convention"].to_list()
        for a, b in (("mean_err", "mean_err"), ("max_err", "max_err")):
            assert got[a].to_list() == pytest.approx(want[b].to_list(), rel=1e-9, abs=1e-9)
    sizes = kpcompile.scan(compiled_sets, "cameras").select(
        "datapoint", "camera", "width", "height"
    )
    outside = (
        kp.join(sizes, on=["datapoint", "camera"])
        .group_by("camera")
        .agg(
            ((pl.col("px") < 0) | (pl.col("px") > pl.col("height")))
            .or_((pl.col("py") < 0) | (pl.col("py") > pl.col("width")))
            .sum()
            .cast(pl.Int64)
            .alias("outside"),
            pl.len().cast(pl.Int64).alias("landmarks"),
        )
        .sort("camera")
        .collect()
    )
    assert data.outside is not None
    assert data.outside.select("camera", "outside", "landmarks").equals(
        outside.select("camera", "outside", "landmarks")
    )
    totals = data.histograms.group_by("coord", "camera").agg(pl.col("n").sum())
    per_camera = dict(data.coords.select("camera", "n").unique().rows())
    assert all(n == per_camera[cam] for _coord, cam, n in totals.rows())


def test_column_ranges_come_from_the_parquet_footers(compiled_sets: Path) -> None:
    store = open_store(compiled_sets)
    ranges = report_data.column_ranges(store, store.manifest())
    kp = kpcompile.scan(compiled_sets)
    for c in COORDS:
        lo, hi = kp.select(pl.col(c).min(), pl.col(c).max().alias("hi")).collect().row(0)
        assert ranges[c] == (lo, hi)


def test_report_on_object_storage(
    s3: Any, mixed_dataset: Path, compiled_sets: Path, tmp_path: Path
) -> None:
    kpcompile.build(mixed_dataset, "s3://bucket/report", sets=True, workers=1)
    r = kpcompile.report("s3://bucket/report", tmp_path / "r.html")
    assert r.missing == {}
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    rows = kpcompile.info(compiled_sets).rows
    assert re.search(rf'id="headline-landmarks".*?class="value">{rows:,}<', html)


def test_cli_report(compiled_sets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["report", str(compiled_sets)])
    assert r.exit_code == 0, r.output
    sid = kpcompile.info(compiled_sets).snapshot
    assert re.fullmatch(
        rf"wrote report\.html: snapshot {sid}, 9 sections, [\d,]+ bytes in [\d.]+ s\n", r.output
    )
    assert (tmp_path / "report.html").stat().st_size > 100_000
    r = CliRunner().invoke(
        cli, ["report", str(compiled_sets), "-o", "sub.htm", "--snapshot", sid, "--json"]
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["path"] == "sub.htm" and got["snapshot"] == sid and got["missing"] == {}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["-o", "{tmp}"],
            2,
            "error: the report is an HTML page, but '{tmp}' has no suffix; name it with .html (e.g. -o report.html)\n",
        ),
        (["-o", "{tmp}/d.html"], 5, "error: cannot write '{tmp}/d.html': it is a folder\n"),
        (
            ["-o", "{tmp}/r.pdf"],
            2,
            "error: the report is an HTML page, but '{tmp}/r.pdf' has suffix '.pdf'; name it with .html (e.g. -o report.html)\n",
        ),
        (
            ["--snapshot", "nope", "-o", "{tmp}/r.html"],
            5,
            "error: no snapshot 'nope' in '{out}'; available: {sid}\n",
        ),
    ],
)
def test_cli_report_errors(
    compiled_sets: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "d.html").mkdir()
    sid = kpcompile.info(compiled_sets).snapshot
    fill = {"tmp": str(tmp_path), "out": str(compiled_sets), "sid": sid}
    r = CliRunner().invoke(cli, ["report", str(compiled_sets), *(a.format(**fill) for a in args)])
    assert (r.exit_code, r.output) == (code, message.format(**fill))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.html"]  # nothing left behind


def test_cli_report_of_an_output_without_snapshots(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "none"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 5 and "holds no snapshot" in r.output
    assert not (tmp_path / "r.html").exists()


def test_the_template_is_package_data() -> None:
    meta = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"kpcompile.reporting" = ["templates/*.j2"]' in meta
    from importlib.resources import files

    assert (files("kpcompile.reporting") / "templates" / "report.html.j2").is_file()


def test_the_wheel_ships_the_template_and_every_subpackage(tmp_path: Path) -> None:
    """What ``pip install`` installs: the report's template, every subpackage, the C
    extension where it builds (the editable install of the tests reads the source tree,
    so only a wheel shows what a user gets). The build backend of the test's own venv,
    without isolation: a few seconds, so it runs in ``make test``."""
    src = tmp_path / "src"  # a copy: no build/ folder left by an earlier build to ship
    shutil.copytree(ROOT / "kpcompile", src / "kpcompile", ignore=shutil.ignore_patterns(
        "__pycache__", "*.so", "*.pyc"))  # fmt: skip
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("kpcompile-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kpcompile/reporting/templates/report.html.j2" in names
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    want = {str(p.parent.relative_to(src)) for p in (src / "kpcompile").rglob("__init__.py")}
    assert packages == want
    if sys.platform == "linux":
        assert any(n.startswith("kpcompile/ingest/_native") and n.endswith(".so") for n in names)
