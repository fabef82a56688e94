"""The coordinator's memory per discovered file (issue 11: at most 200 bytes), and the
columnar discovery choosing exactly the files the object form chooses.

Memory is measured in a fresh interpreter over discovery and planning of a synthetic
listing: Python's allocations (tracemalloc peak) plus Arrow's (its memory pool's
peak), both counted in full, so the figure is an upper bound. A bound, not a timing.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from kpcompile.compile.plan import plan, plan_shards, shard_digest, shards
from kpcompile.compile.sets import assign_sets
from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry
from kpcompile.ingest.discover import select, select_listing
from kpcompile.ingest.listing import Listing
from kpcompile.ingest.sets import discover_sets, find_set_files

MAX_BYTES_PER_FILE = 200
"""Issue 11's target: not met yet (about 260 measured), see the xfail below."""
MEASURED_BOUND = 300
"""What this branch holds to: a quarter of the object form's 1,100 bytes."""

_MEASURE = r"""
import json, sys, tracemalloc
import pyarrow as pa
from kpcompile.compile.incremental import ShardInput
from kpcompile.compile.plan import plan_shards
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.discover import discover_files

CAMERAS = 2

class Synthetic(Source):
    kind = "synthetic"
    def list(self, names):
        for i in range(N // CAMERAS):
            for c in range(CAMERAS):
                folder = f"datapoint_{i:07d}/camera_{c:02d}/key_points/"
                yield Entry(folder + "face_dense_key_points.json", 300_000 + i, 10**18 + i)
                yield Entry(folder + "all_key_points.json", 900_000 + i, 10**18 + i)
    def read(self, rel, max_bytes):
        raise AssertionError("not read")

def coordinate():
    files, listing = discover_files(Synthetic("/synthetic", "synthetic"))
    planned = plan_shards(files, 100, "camera")
    digest = planned.digest()
    records = [
        ShardInput.of(planned.files(files, i), d, "camera") for i, d in enumerate(planned.digests)
    ]
    return files, listing, records, files.distinct(set())

import kpcompile.ingest.discover as discover
discover.SORT_IN_PYTHON = 0  # the warm-up takes the path of large listings (Arrow's sort)
N = 10
coordinate()  # imports what discovery and planning use: code, not memory per file
N = int(sys.argv[1])
pool = pa.default_memory_pool()
arrow_before = pool.max_memory()
tracemalloc.start()
files, listing, records, distinct = coordinate()
_, py_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
arrow_peak = pool.max_memory() - arrow_before
print(json.dumps({"files": len(files), "listed": len(listing), "shards": len(records),
                  "python_peak": py_peak, "arrow_peak": arrow_peak, "distinct": distinct}))
"""


def _bytes_per_file(n: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(n)], check=True, capture_output=True, text=True
    )
    got = json.loads(done.stdout)
    assert got["files"] == n and got["listed"] == 2 * n  # all_key_points.json: listed, not used
    assert got["shards"] > n // 200 and got["distinct"] == [n // 2, 2]
    return float(got["python_peak"] + got["arrow_peak"]) / n


@pytest.mark.slow
def test_coordinator_memory_per_discovered_file_is_bounded() -> None:
    assert _bytes_per_file(100_000) <= MEASURED_BOUND


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="about 260 B/file measured (Python 130 + Arrow 130 peaks): the listing holds "
    "24 B per listed entry and each folder's path once; sorting adds a key per folder",
)
def test_coordinator_holds_at_most_200_bytes_per_discovered_file() -> None:
    assert _bytes_per_file(100_000) <= MAX_BYTES_PER_FILE


def _random_listing(rng: random.Random) -> list[Entry]:
    names = [
        "face_dense_key_points.json",
        "dense_keypoints.json",
        "all_key_points.json",
        "camera_metadata.json",
    ]
    folders = ["dp1/cam", "dp1/cam/key_points", "dp2/cam", "dp2/c2/key_points", "key_points"]
    folders += ["", "../up/cam", "/abs/cam", "a//b/cam", "./c/cam", "é/cam"]
    entries = {}
    for _ in range(rng.randrange(1, 40)):
        folder, name = rng.choice(folders), rng.choice(names)
        path = f"{folder}/{name}" if folder else name
        entries[path] = Entry(path, rng.randrange(-1, 5), rng.randrange(0, 3))
    items = list(entries.values())
    rng.shuffle(items)
    return items


def test_columnar_discovery_chooses_the_files_the_object_form_chooses() -> None:
    rng = random.Random(11)
    checked = 0
    for _ in range(300):
        entries = _random_listing(rng)
        try:
            expected = select(entries, "root", "where")
        except Exception as exc:
            with pytest.raises(type(exc)):
                select_listing(Listing.of(entries), "root", "where")
            continue
        files = select_listing(Listing.of(entries), "root", "where")
        assert list(files) == expected
        for partition in ("none", "camera"):
            for target in (1, 2, 3):
                expected_shards = plan(expected, target, partition)
                assert list(shards(files, target, partition)) == expected_shards
                planned = plan_shards(files, target, partition)
                got = [planned.files(files, i) for i in range(len(planned))]
                assert got == expected_shards
                assert planned.digests == [shard_digest(s) for s in expected_shards]
        checked += 1
    assert checked > 200


_SET_NAMES = [
    "face_standard_key_points.json",
    "standard_keypoints.json",
    "head_key_points.json",
    "ears_key_points.json",
    "camera_metadata.json",
    "all_key_points.json",
    "face_dense_key_points.json",
]
_SET_FOLDERS = ["dp1/cam", "dp1/cam/key_points", "dp2/c2", "dp2/c2/key_points", "key_points"]
_SET_FOLDERS += ["", "root", "root/key_points", "../up/cam", "../up/cam/key_points", "é/cam"]
_SET_FOLDERS += ["dp3/key_points", "dp3/key_points/key_points"]


def test_columnar_set_files_are_the_object_form_s() -> None:
    """Which set files each shard reads: the columns (what builds use) choose what the
    object form (one object per listed file) chooses, in the same order, including
    camera folders named twice ("" and "root/" are both the root's), unsafe names and
    all_key_points.json as the landmark file."""
    rng = random.Random(17)
    checked = 0
    for _ in range(300):
        entries: dict[str, Entry] = {}
        for _ in range(rng.randrange(1, 40)):
            folder, name = rng.choice(_SET_FOLDERS), rng.choice(_SET_NAMES)
            path = f"{folder}/{name}" if folder else name
            entries[path] = Entry(path, rng.randrange(-1, 5), rng.randrange(0, 3))
        items = list(entries.values())
        rng.shuffle(items)
        try:
            expected = select(items, "root", "where")
        except SourceError:
            continue
        files = select_listing(Listing.of(items), "root", "where")
        sets = discover_sets(items, expected, "root")
        columns = find_set_files(files)
        assert len(columns) == len(sets)
        for partition in ("none", "camera"):
            for target in (1, 3):
                want = assign_sets(plan(expected, target, partition), sets)
                planned = plan_shards(files, target, partition, columns)
                got = [planned.set_files(i, planned.files(files, i)) for i in range(len(planned))]
                assert got == want
                assert planned.set_counts == [len(w) for w in want]
                assert sum(planned.size(i) for i in range(len(planned))) == len(files) + len(sets)
        checked += 1
    assert checked > 200
