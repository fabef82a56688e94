"""The coordinator's memory per discovered file, with and without ``--sets``, and the
columnar discovery choosing exactly the files the object form chooses.

Memory is measured in a fresh interpreter over discovery and planning of a synthetic
listing (no disk): Python's allocations (tracemalloc peak) plus Arrow's (its memory
pool's peak), both counted in full, so the figure is an upper bound. A bound, not a
timing. Small listings, so that the tests run with the others: fixed costs weigh more
there than at scale (a plain build measures about 250 bytes per file at 100,000 files,
405 at 20,000), so the bounds hold what is measured at these sizes, with a margin of
about 10% for allocator and library noise.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest

from kpcompile.compile.plan import plan_shards, shard_digest
from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry
from kpcompile.ingest.discover import select_listing
from kpcompile.ingest.listing import Listing
from kpcompile.ingest.setfiles import find_set_files
from tests.oracles import assign_sets, discover_sets, plan, select, shards

PLAIN_FILES = 20_000
PLAIN_BOUND = 450
"""Bytes per landmark file of a plain build of 20,000 (405 measured; 250 at 100,000)."""
SETS_FILES = 10_000
SETS_BOUND = 190
"""Bytes per file read (landmark and set files: five per camera folder) of a ``--sets``
build of 10,000 landmark files (169 measured; 94 at 100,000). Under the plain build's
bound per file: a set file costs one listing row (24 bytes) and one index (8)."""
SETS_BOUND_PER_LANDMARK_FILE = 950
"""The same per landmark file (847 measured; 468 at 100,000): the listing holds six
files per camera folder, and the camera folder's path beside its key_points/ folder's."""

_MEASURE = r"""
import json, sys, tracemalloc
import pyarrow as pa
from kpcompile.compile.incremental import ShardInput
from kpcompile.compile.plan import plan_shards
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.discover import LANDMARK_NAMES, discover_files
from kpcompile.ingest.setfiles import SET_NAMES, find_set_files

CAMERAS = 2
SETS = sys.argv[2] == "sets"
KEYPOINTS = ["face_dense_key_points.json", "all_key_points.json"]
if SETS:  # a Faces export: every set file, and the camera's metadata beside key_points/
    KEYPOINTS += ["ears_key_points.json", "face_standard_key_points.json", "head_key_points.json"]

class Synthetic(Source):
    kind = "synthetic"
    def list(self, names):
        for i in range(N // CAMERAS):
            for c in range(CAMERAS):
                folder = f"datapoint_{i:07d}/camera_{c:02d}/"
                if SETS:
                    yield Entry(folder + "camera_metadata.json", 4_000 + i, 10**18 + i)
                for k, name in enumerate(KEYPOINTS):
                    yield Entry(f"{folder}key_points/{name}", 300_000 + k + i, 10**18 + i)
    def read(self, rel, max_bytes):
        raise AssertionError("not read")

def coordinate():
    names = LANDMARK_NAMES | SET_NAMES if SETS else LANDMARK_NAMES
    files, listing = discover_files(Synthetic("/synthetic", "synthetic"), names)
    sets = find_set_files(files) if SETS else None
    planned = plan_shards(files, 100, "camera", sets)
    digest = planned.digest()
    records, set_files = [], 0
    for i, d in enumerate(planned.digests):  # as the build hands shards out
        shard = planned.files(files, i)
        set_files += len(planned.set_files(i, shard) or ())
        records.append(ShardInput.of(shard, d, "camera"))
    return files, listing, records, files.distinct(set()), set_files

import kpcompile.ingest.discover as discover
discover.SORT_IN_PYTHON = 0  # the warm-up takes the path of large listings (Arrow's sort)
N = 10
coordinate()  # imports what discovery and planning use: code, not memory per file
N = int(sys.argv[1])
pool = pa.default_memory_pool()
arrow_before = pool.max_memory()
tracemalloc.start()
files, listing, records, distinct, set_files = coordinate()
_, py_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
arrow_peak = pool.max_memory() - arrow_before
print(json.dumps({"files": len(files), "listed": len(listing), "shards": len(records),
                  "python_peak": py_peak, "arrow_peak": arrow_peak, "distinct": distinct,
                  "set_files": set_files}))
"""


def measure(n: int, *, sets: bool = False) -> dict[str, Any]:
    """Discovery and planning of ``n`` landmark files in a fresh interpreter: the peaks
    of Python's and Arrow's allocations, and what was found."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(n), "sets" if sets else "plain"],
        check=True,
        capture_output=True,
        text=True,
    )
    got: dict[str, Any] = json.loads(done.stdout)
    return got


def test_coordinator_memory_per_file_plain() -> None:
    got = measure(PLAIN_FILES)
    assert got["files"] == PLAIN_FILES and got["listed"] == 2 * PLAIN_FILES
    assert got["shards"] > PLAIN_FILES // 200 and got["distinct"] == [PLAIN_FILES // 2, 2]
    assert (got["python_peak"] + got["arrow_peak"]) / PLAIN_FILES <= PLAIN_BOUND


def test_coordinator_memory_per_file_with_sets() -> None:
    got = measure(SETS_FILES, sets=True)
    n = SETS_FILES
    assert got["files"] == n and got["listed"] == 6 * n and got["set_files"] == 4 * n
    peak = got["python_peak"] + got["arrow_peak"]
    assert peak / (n + got["set_files"]) <= min(SETS_BOUND, PLAIN_BOUND)
    assert peak / n <= SETS_BOUND_PER_LANDMARK_FILE


_NAMES = [
    "face_dense_key_points.json",
    "dense_keypoints.json",
    "all_key_points.json",
    "camera_metadata.json",
]
_FOLDERS = ["dp1/cam", "dp1/cam/key_points", "dp2/cam", "dp2/c2/key_points", "key_points"]
_FOLDERS += ["", "../up/cam", "/abs/cam", "a//b/cam", "./c/cam", "é/cam"]


def _random_listing(
    rng: random.Random, folders: list[str] = _FOLDERS, names: list[str] = _NAMES
) -> list[Entry]:
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
        items = _random_listing(rng, _SET_FOLDERS, _SET_NAMES)
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
