"""The virtual source: N files in P prefixes, listed the same way every time, read as one template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kpcompile
from kpcompile.errors import FormatError, SourceError
from kpcompile.ingest import open_source
from kpcompile.ingest.discover import LANDMARK_NAMES, discover_files
from kpcompile.ingest.virtual import FILE_NAME, VirtualSource, default_template
from kpcompile.parsing import parse
from kpcompile.synth import synth


@pytest.mark.parametrize(("files", "prefixes"), [(1, 1), (10, 3), (1000, 7), (70_001, 16)])
def test_lists_n_files_in_p_prefixes(files: int, prefixes: int) -> None:
    src = VirtualSource(files, prefixes)
    listing = src.listing(LANDMARK_NAMES)
    paths = listing.paths(np.arange(len(listing)))
    assert len(paths) == files
    assert paths == sorted(paths)
    assert len(set(paths)) == files
    tops = [p.split("/", 1)[0] for p in paths]
    assert sorted(set(tops)) == [src.prefix_name(i) for i in range(prefixes)]
    for i in range(prefixes):
        start, stop = src.prefix_bounds(i)
        assert tops[start:stop] == [src.prefix_name(i)] * (stop - start)
        one = src.prefix_listing([src.prefix_name(i)], LANDMARK_NAMES)
        assert one.paths(np.arange(stop - start)) == paths[start:stop]
    assert src.prefixes(LANDMARK_NAMES) == tuple(sorted(set(tops)))
    every = src.prefix_listing(src.prefixes(LANDMARK_NAMES), LANDMARK_NAMES)
    assert every.paths(np.arange(files)) == paths
    assert [src.path(i) for i in (0, files - 1)] == [paths[0], paths[-1]]
    assert set(listing.sizes.tolist()) == {len(src.template)}


def test_listing_is_deterministic() -> None:
    a = VirtualSource(5000, 5).listing(LANDMARK_NAMES)
    b = open_source("virtual://5000/5").listing(LANDMARK_NAMES)
    assert a.paths(np.arange(5000)) == b.paths(np.arange(5000))
    assert np.array_equal(a.mtimes, b.mtimes)
    assert np.array_equal(a.sizes, b.sizes)
    assert len(np.unique(a.mtimes)) == 5000


def test_list_equals_listing_and_names_filter() -> None:
    src = VirtualSource(30, 2)
    entries = list(src.list(LANDMARK_NAMES))
    assert [e.path for e in entries] == [src.path(i) for i in range(30)]
    assert len(src.listing(frozenset({"all_key_points.json"}))) == 0


def test_discovered_as_faces_files() -> None:
    files, _ = discover_files(VirtualSource(6, 2))
    found = list(files)
    assert [(f.datapoint, f.camera) for f in found[:2]] == [
        ("batch_0000/datapoint_000000000", "camera"),
        ("batch_0000/datapoint_000000001", "camera"),
    ]
    assert len(found) == 6


def test_reads_the_template_and_refuses_other_names(tmp_path: Path) -> None:
    synth(tmp_path / "ds", datapoints=1, layout="faces", extras=False)
    real = next((tmp_path / "ds").rglob(FILE_NAME)).read_bytes()
    src = VirtualSource(4, 2, template=real)
    assert src.read(src.path(3), 1 << 20) == real
    assert src.read_cached(src.path(3), 1 << 20) == real
    assert src.read_cached("nope.json", 1 << 20) is None
    with pytest.raises(FormatError, match="no such file"):
        src.read(src.path(3).replace("batch_0001", "batch_0000"), 1 << 20)
    with pytest.raises(FormatError, match="no such file"):
        src.read("batch_0000/datapoint_000000009/camera/key_points/" + FILE_NAME, 1 << 20)
    with pytest.raises(FormatError, match="too large"):
        src.read(src.path(0), 100)


def test_default_template_is_a_valid_faces_file() -> None:
    data = default_template()
    found = parse(data, FILE_NAME)
    assert (found.layout, found.version, len(found.x3)) == ("faces", "2.0.0", 468)
    assert data.startswith(b'{\n   "version": "2.0.0",\n   "face": {\n      "dense": {')


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("virtual://10", "virtual://FILES/PREFIXES"),
        ("virtual://x/1", "virtual://FILES/PREFIXES"),
        ("virtual://0/1", "at least 1 file"),
        ("virtual://3/4", "1 to 3 prefixes"),
    ],
)
def test_bad_locations(location: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(location)


def test_a_virtual_build_is_a_valid_snapshot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = kpcompile.build("virtual://2000/4", out, workers=1, progress=False, shard_files=256)
    assert (r.discovered, r.compiled, r.rejected) == (2000, 2000, 0)
    assert kpcompile.verify(out).ok
    assert kpcompile.info(out).source == "virtual://2000/4"
    assert kpcompile.scan(out).select("datapoint").unique().collect().height == 2000


def test_plan_only_hands_out_every_shard_and_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = kpcompile.build("virtual://3000/3", out, workers=2, progress=False, plan_only=True)
    assert (r.snapshot_id, r.discovered, r.compiled) == ("", 3000, 0)
    assert r.shards >= 3000 // 512
    assert "nothing was published" in r.notes[0]
    assert not (out / "snapshots").exists() or not list((out / "snapshots").iterdir())
    assert not (out / "CURRENT").exists()
