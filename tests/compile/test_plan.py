"""Planning one top-level prefix at a time: the same shards as the oracle's planning over
the whole listing (``tests/oracles.py``), for any listing order and batching of prefixes;
set files in the shard of their camera folder's first landmark file."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from kpcompile.compile.plan import PlannedShard, order_key, plan_units, position, shard_digest
from kpcompile.errors import SourceError
from kpcompile.ingest import FolderSource
from kpcompile.ingest.base import Entry, Source
from kpcompile.ingest.discover import LANDMARK_NAMES, SourceFile
from kpcompile.ingest.listing import Listing
from kpcompile.ingest.setfiles import SET_NAMES
from kpcompile.ingest.units import discover_units
from tests.helpers import LISTED_NAMES, SET_FOLDERS, random_listing
from tests.helpers import SET_NAMES as LISTED_SET_NAMES
from tests.oracles import assign_sets, discover_sets, plan, select

# folders that exercise units: the root's own camera folder named three ways, a
# datapoint sorting before "/" ("a-1" before "a/b"), key_points/ at the top and deeper
FOLDERS = ["dp1/cam", "dp1/cam/key_points", "dp2/c2/key_points", "key_points", "", "root"]
FOLDERS += ["root/key_points", "root/x/cam", "a/b/cam", "a-1/cam", "a/cam", "key_points/x/cam"]
FOLDERS += ["../up/cam", "/abs/cam", "a//b/cam", "./c/cam", "é/cam", "cam", "cam/key_points"]


class Listed(Source):
    """Entries in memory, listed in the order given; the default per-prefix listing."""

    kind = "listed"

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__("/where", "root")
        self.entries = list(entries)

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        return [e for e in self.entries if e.path.rsplit("/", 1)[-1] in names]

    def read(self, rel: str, max_bytes: int) -> bytes:
        raise AssertionError("not read")


def planned(
    src: Source, target: int, partition: str, *, sets: bool = False, batch: int = 1 << 18
) -> list[PlannedShard]:
    names = LANDMARK_NAMES | SET_NAMES if sets else LANDMARK_NAMES
    units = discover_units(src, names, partition, sets=sets, batch_files=batch)
    return list(plan_units(units, target, partition, sets=sets))


def in_output_order(shards: list[PlannedShard], partition: str) -> list[list[SourceFile]]:
    def first(s: PlannedShard) -> tuple[str, ...]:
        return position(order_key(s.files[0], partition), partition)

    return [s.files for s in sorted(shards, key=first)]


def test_planning_per_prefix_gives_the_oracle_s_shards() -> None:
    rng = random.Random(19)
    checked = 0
    for _ in range(300):
        entries = random_listing(rng, FOLDERS, LISTED_NAMES)
        try:
            expected = select(entries, "root", "where")
        except SourceError:
            with pytest.raises(SourceError, match="no keypoint files"):
                planned(Listed(entries), 2, "camera")
            continue
        for partition in ("none", "camera"):
            for target in (1, 2, 3):
                want = plan(expected, target, partition)
                got = planned(Listed(entries), target, partition)
                assert [s.index for s in got] == list(range(len(want)))
                assert in_output_order(got, partition) == want
                assert sorted(s.digest for s in got) == sorted(shard_digest(w) for w in want)
                if partition == "none":  # one partition: numbered in output order
                    assert [s.files for s in got] == want
                # any listing order, any batching: the same shards, numbered alike
                shuffled = rng.sample(entries, len(entries))
                assert planned(Listed(shuffled), target, partition, batch=1) == got
        checked += 1
    assert checked > 200


def test_set_files_go_with_the_first_landmark_file_of_their_camera_folder() -> None:
    rng = random.Random(23)
    checked = 0
    for _ in range(300):
        items = random_listing(rng, SET_FOLDERS + FOLDERS, LISTED_SET_NAMES)
        try:
            expected = select(items, "root", "where")
        except SourceError:
            continue
        sets = discover_sets(items, expected, "root")
        for partition in ("none", "camera"):
            for target in (1, 3):
                want_shards = plan(expected, target, partition)
                want = dict(
                    zip(
                        (tuple(s) for s in want_shards),
                        assign_sets(want_shards, sets),
                        strict=True,
                    )
                )
                got = planned(Listed(items), target, partition, sets=True, batch=1)
                assert {tuple(s.files): s.sets for s in got} == want
                assert sum(s.size for s in got) == len(expected) + len(sets)
        checked += 1
    assert checked > 200


def test_a_partition_s_shards_are_numbered_in_output_order() -> None:
    """Shards of several cameras interleave; one camera's are in output order, so its
    Parquet files (named by shard) list its rows in order."""
    entries = [
        Entry(f"dp{i:03d}/cam{c}/key_points/face_dense_key_points.json", 1, 1)
        for i in range(200)
        for c in range(3)
    ]
    got = planned(Listed(entries), 8, "camera", batch=16)
    assert len({s.partition for s in got}) == 3
    for camera in ("cam0", "cam1", "cam2"):
        mine = [s for s in got if s.partition == camera]
        paths = [f.path for s in mine for f in s.files]
        assert paths == sorted(paths) and len(paths) == 200


def test_folder_prefix_listings_make_up_the_whole_listing(tmp_path: Path) -> None:
    names = LANDMARK_NAMES
    for rel in [
        "face_dense_key_points.json",
        "key_points/face_dense_key_points.json",
        "a/cam/key_points/face_dense_key_points.json",
        "a/cam2/dense_keypoints.json",
        "b/deep/er/cam/all_key_points.json",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    (tmp_path / "empty").mkdir()
    src = FolderSource(tmp_path)
    prefixes = src.prefixes(names)
    assert prefixes == ("", "a", "b", "empty", "key_points")
    whole = sorted(src.listing(names).entries(), key=str)
    assert sorted(src.prefix_listing(prefixes, names).entries(), key=str) == whole
    one = Listing.concat([src.prefix_listing([p], names) for p in prefixes])
    assert sorted(one.entries(), key=str) == whole
    assert len(whole) == 5


def test_shard_digest_is_the_digest_of_every_file_s_fields() -> None:
    """The digest is what earlier snapshots recorded: a changed definition would make
    every shard of the next incremental build look changed."""
    import hashlib

    from kpcompile.compile.plan import shard_digest
    from kpcompile.ingest import SourceFile

    files = [
        SourceFile("dp_\udcff", "cam", f"dp/cam/{i}.json", i, 7 * i,
                   None if i % 3 else "dp/cam/0.json", None if i % 5 else "a '.' component")
        for i in range(40)
    ]  # fmt: skip
    h = hashlib.sha256()
    for f in files:
        fields = f"{f.datapoint}\0{f.camera}\0{f.path}\0{f.size}\0{f.mtime_ns}\0"
        h.update(fields.encode("utf-8", "surrogatepass"))
        h.update(f"{f.duplicate_of}\0{f.unsafe}\n".encode("utf-8", "surrogatepass"))
    assert shard_digest(files) == h.hexdigest()
