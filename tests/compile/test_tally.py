"""The distinct datapoints and cameras of a build, counted through a temporary file."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kpcompile.compile import tally as tally_module
from kpcompile.compile.tally import Tally


def add(t: Tally, pairs: dict[tuple[str, str], int]) -> None:
    """One unit's (datapoint, camera) counts, as :meth:`Tally.add` takes them."""
    datapoints: Counter[str] = Counter()
    cameras: Counter[str] = Counter()
    for (d, c), n in pairs.items():
        datapoints[d] += n
        cameras[c] += n
    t.add(datapoints, cameras)


def brute_force(files: list[tuple[str, str]], excluded: list[tuple[str, str]]) -> dict[str, int]:
    left = Counter(files)
    left.subtract(Counter(excluded))
    kept = [pair for pair, n in left.items() if n > 0]
    return {"datapoints": len({d for d, _ in kept}), "cameras": len({c for _, c in kept})}


@pytest.mark.parametrize("seed", range(30))
def test_counts_equal_a_count_over_every_file(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(tally_module, "CHUNK_RECORDS", rng.choice([1, 3, 1 << 20]))
    files: list[tuple[str, str]] = []
    units: list[dict[tuple[str, str], int]] = []
    for u in range(rng.randint(1, 6)):
        pairs: Counter[tuple[str, str]] = Counter()
        for _ in range(rng.randint(1, 20)):
            # "." (camera folders at the top) may turn up in any unit
            datapoint = "." if rng.random() < 0.1 else f"u{u}/dp{rng.randint(0, 5)}"
            pair = (datapoint, f"cam{rng.randint(0, 3)}")
            pairs[pair] += 1
            files.append(pair)
        units.append(dict(pairs))
    excluded = rng.sample(files, rng.randint(0, len(files)))
    with Tally() as t:
        for pairs in units:
            add(t, pairs)
        assert t.distinct(excluded) == brute_force(files, excluded)
        assert t.distinct([]) == brute_force(files, [])


def test_nothing_rejected_reads_nothing_back() -> None:
    with Tally() as t:
        add(t, {("a/1", "cam"): 2, ("a/2", "cam"): 1, (".", "top"): 1})
        add(t, {("b/1", "cam"): 1, (".", "other"): 3})
        assert t.distinct([]) == {"datapoints": 4, "cameras": 3}
        # every file of "." and of a/2 rejected
        gone = [(".", "top"), (".", "other"), (".", "other"), (".", "other"), ("a/2", "cam")]
        assert t.distinct(gone) == {"datapoints": 2, "cameras": 1}
