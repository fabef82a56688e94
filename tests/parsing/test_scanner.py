"""The compiled scanner (kpcompile/parsing/_scan.c) against the pure-Python fast path.

The scanner must accept exactly what the msgspec path accepts, with bit-identical
values, and defer (``None``) on everything else, which the Python parsers then
decide. Checked on the real samples, every synthetic layout, hand-picked number and
structure corner cases, and hypothesis' generated and mutated documents (the
hostile corpus of tests/parsing/test_fuzz.py: truncations, flipped and inserted
bytes, deep nesting, huge numbers, duplicated keys); and a build is byte-identical
with and without it.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kpcompile
from kpcompile.ingest.discover import DENSE_NAMES
from kpcompile.parsing import fast
from kpcompile.parsing.model import Landmarks
from kpcompile.synth import synth
from tests.parsing.test_fuzz import _document, deeply_nested, documents, mutated

SCANNER = fast.scanner()
pytestmark = [
    pytest.mark.skipif(SCANNER is None, reason="the compiled scanner is not built"),
    pytest.mark.filterwarnings(
        "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
    ),
]
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "datagen-samples"
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def _same(a: Landmarks | None, b: Landmarks | None) -> bool:
    if a is None or b is None:
        return a is b
    if (a.layout, a.version) != (b.layout, b.version):
        return False
    for name in ("x3", "y3", "z3", "px", "py"):  # bits: -0.0 is not 0.0
        if not np.array_equal(getattr(a, name).view(np.uint64), getattr(b, name).view(np.uint64)):
            return False
    for name in ("visible", "visible_missing"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
            return False
    return True


def agree(data: bytes) -> bool:
    """Scanner and msgspec path agree on ``data``; True when the scanner accepted it."""
    assert SCANNER is not None
    found = SCANNER.scan(data)
    pure = fast.parse_msgspec(data)
    scanned = None if found is None else fast._scanned(*found)
    if scanned is not None:
        assert _same(scanned, pure), "the scanner and the msgspec path disagree"
    return scanned is not None


def _template(layout: str = "faces") -> dict[str, Any]:
    return _document(layout, 7, [])


def _with_number(literal: str) -> bytes:
    """A plain faces document whose first x is ``literal``, verbatim."""
    doc = json.dumps(_template()).replace('"x": ', '"x": @@', 1)
    head, tail = doc.split("@@", 1)
    number_end = len(tail) - len(tail.lstrip("-+.0123456789eE"))
    return (head + literal + tail[number_end:]).encode()


def test_every_real_sample_agrees() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("no ../shared/datagen-samples here")
    accepted = 0
    for path in sorted(SAMPLES.rglob("*.json")):
        accepted += agree(path.read_bytes())
    assert accepted >= 11  # the dense files of faces_1 and hic_in_cabin, and legacy


@pytest.mark.parametrize("layout", ["faces", "in_cabin", "legacy", "documented"])
def test_every_synthetic_layout_is_scanned(tmp_path: Path, layout: str) -> None:
    synth(tmp_path, datapoints=4, cameras=2, layout=layout, seed=3, extras=False)
    files = [p for p in tmp_path.rglob("*.json") if p.name in DENSE_NAMES]
    assert files
    for path in files:
        assert agree(path.read_bytes()), f"{path}: deferred, the fast path accepts it"


@pytest.mark.parametrize(
    "literal",
    [
        "0", "-0", "0.0", "-0.0", "0e0", "-0e0", "1E5", "1e+05", "1e-05", "123456789",
        "9007199254740991", "9007199254740992", "9007199254740993", "-9007199254740993",
        "9007199254740991.0", "1e15", "1e16", "1e22", "1e23", "0.1", "0.0865631103515625",
        "0.14459228515625", "-0.023928720504045486", "0.050783731043338776",
        "2.2250738585072011e-308", "2.2250738585072014e-308", "4.9e-324", "1e-400",
        "1e400", "1e-5000000000", "123456789012345678", "1234567890123456789",
        "12345678901234567890", "0.12345678901234567890123", "1.0000000000000002",
        "0.30000000000000004", "7.0e-10", "5e-324", "1." , ".5", "+1", "01", "-", "1e",
        "1e+", "--1", "NaN", "Infinity", "-Infinity", "0x10", "1_0", "\u0661",
    ],
)  # fmt: skip
def test_number_corner_cases(literal: str) -> None:
    check_number(literal)


@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.floats(allow_nan=False, allow_infinity=False, width=32).map(
            lambda f: repr(float(np.float32(f)))
        ),
        st.integers(-(2**60), 2**60).map(str),
        st.from_regex(r"\A-?(0|[1-9][0-9]{0,21})(\.[0-9]{1,22})?([eE][-+]?[0-9]{1,3})?\Z"),
    )
)
@settings(max_examples=2000, deadline=None, database=None)
def test_numbers_are_bit_exact(literal: str) -> None:
    check_number(literal)


def check_number(literal: str) -> None:
    """The scanner and the msgspec path agree on a file holding ``literal``, and a value
    the scanner reads is bit for bit Python's own (ints as int, then float)."""
    data = _with_number(literal)
    if agree(data):
        assert SCANNER is not None
        x3 = np.frombuffer(SCANNER.scan(data)[2], np.float64, 1)[0]
        exact = float(int(literal)) if literal.lstrip("-").isdigit() else float(literal)
        assert x3.tobytes() == np.float64(exact).tobytes(), literal


def _structures() -> dict[str, bytes]:
    doc = _template()
    lms = doc["face"]["dense"]
    text = json.dumps(doc)
    shuffled = dict(random.Random(1).sample(list(lms.items()), len(lms)))
    reordered = {k: dict(reversed(list(v.items()))) for k, v in lms.items()}
    one_null = json.loads(text)
    one_null["face"]["dense"]["5"]["is_visible"] = None
    return {
        "compact": json.dumps(doc, separators=(",", ":")).encode(),
        "indented": json.dumps(doc, indent=3).encode(),
        "tabs and CRLF": json.dumps(doc, indent="\t").replace("\n", "\r\n").encode(),
        "ids shuffled": json.dumps({**doc, "face": {"dense": shuffled}}).encode(),
        "fields reversed": json.dumps({**doc, "face": {"dense": reordered}}).encode(),
        "face first": json.dumps({"face": doc["face"], "version": doc["version"]}).encode(),
        "version twice": text.replace('"face":', '"version": "2.0.0", "face":').encode(),
        "x twice": text.replace('"x": ', '"x": 1, "x": ', 1).encode(),
        "id twice": text.replace('"1": {', '"0": {', 1).encode(),
        "id 467 missing": text.replace('"467": {', '"468": {').encode(),
        "leading zero id": text.replace('"7": {', '"07": {').encode(),
        "escaped key": text.replace('"global_3d"', '"global\\u005f3d"', 1).encode(),
        "unknown field": text.replace('"pixel_2d"', '"extra": 1, "pixel_2d"', 1).encode(),
        "unknown version": text.replace(doc["version"], "3.0.0").encode(),
        "null is_visible": json.dumps(one_null).encode(),
        "dense and standard": text.replace('"dense":', '"standard": {}, "dense":').encode(),
        "trailing garbage": text.encode() + b" x",
        "trailing whitespace": text.encode() + b" \n\t\r",
        "BOM": b"\xef\xbb\xbf" + text.encode(),
        "NUL inside": text.replace('"is_visible"', '"is_\x00visible"', 1).encode(),
        "invalid UTF-8": text.replace('"is_visible"', '"is_visible\udcff"', 1).encode(
            "utf-8", "surrogateescape"
        ),
        "empty": b"",
        "array": b"[]",
        "legacy late": json.dumps(
            {"version": "2.0.0", "pad": "x" * 300, **_document("legacy", 1, [])}
        ).encode(),
        "legacy": json.dumps(_document("legacy", 1, [])).encode(),
        "legacy without is_visible": json.dumps(
            {k: v for k, v in _document("legacy", 1, []).items() if k != "is_visible"}
        ).encode(),
        "legacy string flags": json.dumps(_document("legacy", 1, []))
        .replace("true", '"true"')
        .encode(),
        "legacy 4 numbers": json.dumps(_document("legacy", 1, [])).replace("]", ", 1]", 1).encode(),
    }


@pytest.mark.parametrize("name", list(_structures()))
def test_structure_corner_cases(name: str) -> None:
    agree(_structures()[name])


def test_truncated_anywhere() -> None:
    data = json.dumps(_template(), indent=1).encode()
    for cut in [*range(0, 200), *range(len(data) - 300, len(data)), *range(1000, len(data), 997)]:
        assert not agree(data[:cut])


@given(documents())
@FUZZ
def test_generated_documents_agree(data: bytes) -> None:
    agree(data)


@given(mutated())
@FUZZ
def test_mutated_documents_agree(data: bytes) -> None:
    agree(data)


@given(deeply_nested())
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_deeply_nested_documents_agree(data: bytes) -> None:
    agree(data)


def test_threads_scan_at_once() -> None:
    """The GIL is released while scanning: threads give the same results."""
    docs = [json.dumps(_document("faces", seed, [])).encode() for seed in range(8)]
    expected = [fast.parse_msgspec(d) for d in docs]
    failures: list[int] = []

    def work(k: int) -> None:
        for _ in range(20):
            for i, d in enumerate(docs):
                assert SCANNER is not None
                if not _same(fast._scanned(*SCANNER.scan(d)), expected[i]):
                    failures.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_builds_are_byte_identical_without_the_scanner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synth(tmp_path / "src", datapoints=12, cameras=2, layout="mixed", seed=5)
    kpcompile.build(tmp_path / "src", tmp_path / "scanned", workers=2)
    monkeypatch.setenv("KPCOMPILE_PURE_PYTHON", "1")
    assert fast.scanner() is None
    kpcompile.build(tmp_path / "src", tmp_path / "pure", workers=2)

    def tables(out: Path) -> dict[str, bytes]:
        snap = out / "snapshots" / (out / "CURRENT").read_text().strip()
        return {str(p.relative_to(snap)): p.read_bytes() for p in sorted(snap.rglob("*.parquet"))}

    scanned, pure = tables(tmp_path / "scanned"), tables(tmp_path / "pure")
    assert scanned and scanned == pure
