"""The coordinator's memory per discovered file, with and without ``--sets``, bounded by
the batch of prefixes it lists at a time, and the columnar discovery choosing exactly
the files the object form chooses.

Memory is measured in a fresh interpreter over discovery and planning of a synthetic
listing (no disk): Python's allocations (tracemalloc peak) plus Arrow's (its memory
pool's peak), both counted in full, so the figure is an upper bound. A bound, not a
timing. Small listings, so that the tests run with the others: fixed costs weigh more
there than at scale, so the bounds hold what is measured at these sizes, with a margin
of about 10% for allocator and library noise.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest

from kpcompile.errors import SourceError
from kpcompile.ingest.discover import select_listing
from kpcompile.ingest.listing import Listing
from kpcompile.ingest.setfiles import find_set_files
from tests.helpers import SET_FOLDERS, SET_NAMES, random_listing
from tests.oracles import discover_sets, select

PLAIN_FILES = 20_000
PLAIN_BOUND = 270
"""Bytes per landmark file of a plain build of 20,000, on the path of large listings
(242 measured: the folder locator's blocks and Arrow's sorts of the largest batch, 8,192
files; 288 while each layer of the pipeline held the last batch as the next was listed,
405 before planning per prefix, which held the whole listing and the plan's order).
Until 2026-12-04 this measured the path of small listings by mistake (``import
kpcompile.ingest.discover as discover`` bound the package's ``discover`` function, so
setting ``SORT_IN_PYTHON`` on it changed nothing)."""
SETS_FILES = 10_000
SETS_BOUND = 110
"""Bytes per file read (landmark and set files: five per camera folder) of a ``--sets``
build of 10,000 landmark files (103 measured). Under the plain build's
bound per file: a set file costs one listing row (24 bytes) and one index (8)."""
SETS_BOUND_PER_LANDMARK_FILE = 540
"""The same per landmark file (515 measured): the listing holds six files per camera
folder, and the camera folder's path beside its key_points/ folder's."""
SMALL_BATCH = 2_048
GROWTH_BOUND = 55
"""Bytes per landmark file that four times the files add when prefixes are listed
:data:`SMALL_BATCH` files at a time (46 measured, 20,000 -> 80,000 files): what grows is not
the batch but one record per shard (digest, first and last file: ~12 bytes per file)
and the names of the top-level prefixes (a prefix per datapoint of two files here,
~37 bytes per file)."""

_MEASURE = r"""
import json, sys, tracemalloc
import pyarrow as pa
from kpcompile.compile.incremental import ShardInput
from kpcompile.compile.plan import plan_units
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.discover import LANDMARK_NAMES
from kpcompile.ingest.listing import Listing
from kpcompile.ingest.setfiles import SET_NAMES
from kpcompile.ingest.units import discover_units

CAMERAS = 2
SETS = sys.argv[2] == "sets"
BATCH = int(sys.argv[3])
KEYPOINTS = ["face_dense_key_points.json", "all_key_points.json"]
if SETS:  # a Faces export: every set file, and the camera's metadata beside key_points/
    KEYPOINTS += ["ears_key_points.json", "face_standard_key_points.json", "head_key_points.json"]

class Synthetic(Source):
    # a top-level prefix per datapoint, listed natively (no whole listing held)
    kind = "synthetic"
    def prefixes(self, names):
        return tuple(f"datapoint_{i:07d}" for i in range(N // CAMERAS))
    def prefix_listing(self, prefixes, names):
        return Listing.of(e for p in prefixes for e in self._entries(p))
    def _entries(self, prefix):
        i = int(prefix.rsplit("_", 1)[1])
        for c in range(CAMERAS):
            folder = f"{prefix}/camera_{c:02d}/"
            if SETS:
                yield Entry(folder + "camera_metadata.json", 4_000 + i, 10**18 + i)
            for k, name in enumerate(KEYPOINTS):
                yield Entry(f"{folder}key_points/{name}", 300_000 + k + i, 10**18 + i)
    def list(self, names):
        raise AssertionError("listed per prefix")
    def read(self, rel, max_bytes):
        raise AssertionError("not read")

def coordinate():
    names = LANDMARK_NAMES | SET_NAMES if SETS else LANDMARK_NAMES
    source = Synthetic("/synthetic", "synthetic")
    records, files, set_files, listed = [], 0, 0, 0
    units = discover_units(source, names, "camera", sets=SETS, batch_files=BATCH)
    for shard in plan_units(units, 100, "camera", sets=SETS):  # as the build hands shards out
        files += len(shard.files)
        set_files += len(shard.sets or ())
        records.append(ShardInput.of(shard.files, shard.digest, "camera"))
    return files, records, set_files

import importlib
discover = importlib.import_module("kpcompile.ingest.discover")
discover.SORT_IN_PYTHON = 0  # the warm-up takes the path of large listings (Arrow's sort)
N = 10
coordinate()  # imports what discovery and planning use: code, not memory per file
N = int(sys.argv[1])
pool = pa.default_memory_pool()
arrow_before = pool.max_memory()
tracemalloc.start()
files, records, set_files = coordinate()
_, py_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
arrow_peak = pool.max_memory() - arrow_before
print(json.dumps({"files": files, "shards": len(records), "python_peak": py_peak,
                  "arrow_peak": arrow_peak, "set_files": set_files}))
"""


def measure(n: int, *, sets: bool = False, batch: int = 1 << 18) -> dict[str, Any]:
    """Discovery and planning of ``n`` landmark files in a fresh interpreter, a batch of
    about ``batch`` listed files at a time: the peaks of Python's and Arrow's
    allocations, and what was found."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(n), "sets" if sets else "plain", str(batch)],
        check=True,
        capture_output=True,
        text=True,
    )
    got: dict[str, Any] = json.loads(done.stdout)
    return got


def test_coordinator_memory_per_file_plain() -> None:
    got = measure(PLAIN_FILES)
    assert got["files"] == PLAIN_FILES and got["shards"] > PLAIN_FILES // 200
    assert (got["python_peak"] + got["arrow_peak"]) / PLAIN_FILES <= PLAIN_BOUND


def test_coordinator_memory_per_file_with_sets() -> None:
    got = measure(SETS_FILES, sets=True)
    n = SETS_FILES
    assert got["files"] == n and got["set_files"] == 4 * n
    peak = got["python_peak"] + got["arrow_peak"]
    assert peak / (n + got["set_files"]) <= min(SETS_BOUND, PLAIN_BOUND)
    assert peak / n <= SETS_BOUND_PER_LANDMARK_FILE


def test_coordinator_memory_is_bounded_by_the_batch() -> None:
    """Listed a batch of prefixes at a time, four times the files do not cost four times
    the memory: only a record per shard and a name per prefix grow with the dataset."""
    small = measure(PLAIN_FILES, batch=SMALL_BATCH)
    large = measure(4 * PLAIN_FILES, batch=SMALL_BATCH)
    assert large["files"] == 4 * PLAIN_FILES
    peak = {k: g["python_peak"] + g["arrow_peak"] for k, g in (("s", small), ("l", large))}
    assert (peak["l"] - peak["s"]) / (3 * PLAIN_FILES) <= GROWTH_BOUND
    assert peak["l"] / (4 * PLAIN_FILES) <= PLAIN_BOUND / 4


def test_columnar_discovery_chooses_the_files_the_object_form_chooses() -> None:
    rng = random.Random(11)
    checked = 0
    for _ in range(300):
        entries = random_listing(rng)
        try:
            expected = select(entries, "root", "where")
        except Exception as exc:
            with pytest.raises(type(exc)):
                select_listing(Listing.of(entries), "root", "where")
            continue
        files = select_listing(Listing.of(entries), "root", "where")
        assert list(files) == expected
        checked += 1
    assert checked > 200


def test_columnar_set_files_are_the_object_form_s() -> None:
    """Which set files the columns (what builds use) choose: what the object form (one
    object per listed file) chooses, including camera folders named twice ("" and
    "root/" are both the root's), unsafe names and all_key_points.json as the landmark
    file. Which shard reads them: ``tests/compile/test_plan.py``."""
    rng = random.Random(17)
    checked = 0
    for _ in range(300):
        items = random_listing(rng, SET_FOLDERS, SET_NAMES)
        try:
            expected = select(items, "root", "where")
        except SourceError:
            continue
        files = select_listing(Listing.of(items), "root", "where")
        sets = discover_sets(items, expected, "root")
        columns = find_set_files(files)
        assert len(columns) == len(sets)
        got = columns.of_shard(files.order, 0, list(files))
        assert sorted(got, key=lambda s: (s.table, s.datapoint, s.camera, s.path)) == sets
        checked += 1
    assert checked > 200
