"""The columnar folder locator against the one-folder-at-a-time rules, and discovery of
large listings (Arrow's sorts) against small ones (Python's)."""

from __future__ import annotations

import dataclasses
import importlib
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from kpcompile.ingest import folders as folders_module
from kpcompile.ingest.discover import LANDMARK_NAMES, select_listing
from kpcompile.ingest.folders import locate_all
from kpcompile.ingest.listing import Listing, ListingBuilder, binary_array, binary_take, encode
from kpcompile.ingest.paths import UNSAFE_REASONS, locate, printable, unsafe_reason

discover_module = importlib.import_module("kpcompile.ingest.discover")

COMPONENTS = [
    "dp_1", "dp_2", "scene", "cam", "camera_01", "key_points", "key_point", "key_pointsx",
    ".", "..", "", "é", "\udcff", "a b", "k", "x.json", "...", ".hidden",
]  # fmt: skip


def random_folder(rng: random.Random) -> str:
    depth = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5])
    parts = [rng.choice(COMPONENTS) if rng.random() < 0.3 else rng.choice(COMPONENTS[:7])
             for _ in range(depth)]  # fmt: skip
    folder = "".join(p + "/" for p in parts)
    return ("/" + folder) if rng.random() < 0.03 else folder


def expected(folder: str, root: str) -> tuple[str, str, str, int]:
    path = folder + "x"
    d, c = locate(path, root)
    why = unsafe_reason(path)
    unit = d.split("/", 1)[0] if d != "." else c
    return d, c, unit, (UNSAFE_REASONS.index(why) if why is not None else -1)


def column(values: list[bytes], chunk: int) -> pa.ChunkedArray:
    chunks = [binary_array(values[i : i + chunk]) for i in range(0, len(values), chunk)]
    return pa.chunked_array(chunks, type=pa.large_binary())


@pytest.mark.parametrize("seed", range(40))
def test_locate_all_equals_locate_per_folder(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(folders_module, "BLOCK", rng.choice([1, 2, 7, 1 << 16]))
    folders = [random_folder(rng) for _ in range(rng.randint(1, 300))]
    root = rng.choice(["dataset", "key_points", "é"])
    col = column([encode(f) for f in folders], rng.choice([1, 5, 1000]))
    if rng.random() < 0.5:  # a sliced chunk: offsets not starting at 0
        col = pa.chunked_array([c.slice(0) for c in col.chunks] + [binary_array([b"zz/"]).slice(1)])
    got = locate_all(col, root)
    idx = np.arange(len(folders))
    rows = zip(
        binary_take(got.datapoint, idx), binary_take(got.camera, idx), binary_take(got.unit, idx),
        got.unsafe.tolist(), strict=True,
    )  # fmt: skip
    want = [expected(f, root) for f in folders]
    assert [(d, c, u, w) for d, c, u, w in rows] == [
        (encode(d), encode(c), encode(u), w) for d, c, u, w in want
    ]


def test_plain_folders_are_not_left_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    slow = folders_module._python

    def counted(folder: bytes, root: str) -> tuple[bytes, bytes, bytes, int]:
        calls.append(folder)
        return slow(folder, root)

    monkeypatch.setattr(folders_module, "_python", counted)
    plain = [b"dp_1/cam/key_points/", b"a/b/c/cam/", b"dp_2/key_points/key_points/"]
    odd = [b"", b"cam/", b"cam/key_points/", b"a/../cam/", b"/abs/cam/", b"\xc3\xa9/cam/"]
    got = locate_all(column(plain + odd, 4), "root")
    assert calls == odd
    assert binary_take(got.datapoint, np.arange(3)) == [b"dp_1", b"a/b/c", b"dp_2"]
    assert binary_take(got.camera, np.arange(3)) == [b"cam", b"cam", b"key_points"]


def random_listing(rng: random.Random) -> Listing:
    builder = ListingBuilder()
    names = [*sorted(LANDMARK_NAMES), "other.json"]
    for _ in range(rng.randint(1, 400)):
        folder = random_folder(rng)
        for name in rng.sample(names, rng.randint(1, 3)):
            builder.add(folder + name, rng.randint(0, 9), rng.randint(0, 9))
    return builder.finish()


@pytest.mark.parametrize("seed", range(25))
def test_large_listings_are_discovered_as_small_ones(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    listing = random_listing(rng)
    small = select_listing(listing, "root", "here", required=False)
    monkeypatch.setattr(discover_module, "SORT_IN_PYTHON", 0)
    large = select_listing(listing, "root", "here", required=False)
    assert small.names is None and large.names is not None
    for field in dataclasses.fields(small):
        if field.name == "names":
            continue
        a, b = getattr(small, field.name), getattr(large, field.name)
        if isinstance(a, np.ndarray):
            assert a.tolist() == b.tolist(), field.name
        else:
            assert a == b, field.name
    assert list(small.ordered("camera")) == list(large.ordered("camera"))
    every = small.order
    assert small.counts(every) == large.counts(every)
    files = list(small.ordered())
    datapoints = Counter(printable(f.datapoint) for f in files)
    assert small.counts(every) == (datapoints, Counter(printable(f.camera) for f in files))


def test_discovery_of_a_large_listing_does_not_import_pandas() -> None:
    """``pa.array`` and ``take`` with numpy indices import pandas when it is installed
    (0.1-0.4 s of a build); the path of large listings builds its arrays from buffers."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kpcompile.ingest.virtual import VirtualSource\n"
        "from kpcompile.ingest.discover import LANDMARK_NAMES, select_listing\n"
        "src = VirtualSource(40_000, 4)\n"
        "found = select_listing(src.listing(LANDMARK_NAMES), src.name, src.location)\n"
        "assert found.names is not None and len(found) == 40_000\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
