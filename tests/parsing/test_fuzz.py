"""Promise 4, hostile input: parse() either returns 468 landmarks equal to what ``json.loads``
reads, or raises FormatError with a code; never another exception, never a hang.

Documents are generated in every layout (hypothesis draws the layout, a seed for the
bulk of the values and the special values placed among them), then mutated: values
replaced by arbitrary JSON, keys dropped or added, bytes flipped, inserted, deleted,
duplicated or truncated.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpcompile import ErrorCode, FormatError, parse

# Documents are ~100 kB; hypothesis warns when it renders such an input's repr (for
# its own reporting), which is noise here, not a finding.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

LAYOUTS = ("faces", "in_cabin", "legacy", "documented")
PATH = "dp/cam/key_points/face_dense_key_points.json"

SPECIAL_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1e-300]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | SPECIAL_NUMBERS | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=6,
)


def _document(layout: str, seed: int, specials: list[Any]) -> dict[str, Any]:
    rng = random.Random(seed)
    pool = list(specials)

    def num() -> Any:
        if pool and rng.random() < 0.02:
            return pool.pop()
        return rng.choice(
            [rng.uniform(-2, 2), float(np.float32(rng.uniform(-1, 1))), rng.randint(0, 1023)]
        )

    if layout == "legacy":
        return {
            "keypoints_3d_coordinates": {str(i): [num(), num(), num()] for i in range(468)},
            "keypoints_2d_coordinates": {str(i): [num(), num()] for i in range(468)},
            "is_visible": {str(i): rng.random() < 0.5 for i in range(468)},
        }
    vis = rng.choice([["true", "false"], [True, False], None])
    lms = {}
    for i in range(468):
        lm: dict[str, Any] = {
            "global_3d": {"x": num(), "y": num(), "z": num()},
            "pixel_2d": {"x": num(), "y": num()},
        }
        if vis is not None:
            lm["is_visible"] = rng.choice(vis)
        lms[str(i)] = lm
    if layout == "in_cabin":
        return {"face": {"dense": lms}}
    key = "standard" if layout == "documented" else "dense"
    return {"version": rng.choice(["2.0.0", "2.0.1"]), "face": {key: lms}}


def _reference(data: bytes) -> list[tuple[float, float, float, float, float, Any]]:
    """What json.loads reads: (x3, y3, z3, px, py, visible) per id 0-467."""
    doc = json.loads(data.decode("utf-8"))
    if "keypoints_3d_coordinates" in doc:
        m3, m2, mv = (
            doc["keypoints_3d_coordinates"],
            doc["keypoints_2d_coordinates"],
            doc.get("is_visible", {}),
        )
        return [(*m3[str(i)], *m2[str(i)], mv.get(str(i))) for i in range(468)]
    face = doc["face"]
    lms = face["dense"] if "dense" in face else face["standard"]
    out = []
    for i in range(468):
        v = lms[str(i)]
        vis = v.get("is_visible")
        vis = (vis == "true") if isinstance(vis, str) else vis
        g, p = v["global_3d"], v["pixel_2d"]
        out.append((g["x"], g["y"], g["z"], p["x"], p["y"], vis))
    return out


def _same_float(a: float, b: Any) -> bool:
    return (
        isinstance(b, int | float)
        and not isinstance(b, bool)
        and math.isfinite(float(b))
        and (np.float64(a).tobytes() == np.float64(float(b)).tobytes())
    )


def _check(data: bytes) -> str:
    """The property; returns the outcome ("ok" or the error code)."""
    try:
        lm = parse(data, PATH)
    except FormatError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert str(exc).startswith(PATH + ": ") and exc.reason
        return str(exc.code)
    ref = _reference(data)
    got = zip(lm.x3, lm.y3, lm.z3, lm.px, lm.py, lm.visible_list(), strict=True)
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert all(_same_float(a, b) for a, b in zip(g[:5], r[:5], strict=True)), (i, g, r)
        assert g[5] == r[5], (i, g[5], r[5])
    return "ok"


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    layout = draw(st.sampled_from(LAYOUTS))
    seed = draw(st.integers(0, 2**32))
    specials = draw(st.lists(SPECIAL_NUMBERS, max_size=6))
    indent = draw(st.sampled_from([None, 3]))
    return json.dumps(_document(layout, seed, specials), indent=indent).encode()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in list(node.items())[:3] + list(node.items())[-2:]:
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = draw(documents())
    kind = draw(st.sampled_from(["value", "drop", "add", "bytes"]))
    if kind != "bytes":
        doc = json.loads(data)
        path = draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if kind == "value":
            parent[path[-1]] = draw(JSON_VALUES)
        elif kind == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=4))] = draw(JSON_VALUES)
        return json.dumps(doc).encode()
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        i = draw(st.integers(0, max(0, len(out) - 1)))
        if op == "flip" and out:
            out[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[i : i + draw(st.integers(1, 64))]
        elif op == "duplicate":
            out[i:i] = out[i : i + draw(st.integers(1, 200))]
        else:
            del out[i:]
    return bytes(out)


DEEP = "__deep__"


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    """A document with a value, anywhere, replaced by (or given) hundreds to thousands of
    nested arrays or objects: decoders that recurse must fail cleanly, not crash."""
    doc = json.loads(draw(documents()))
    path = draw(st.sampled_from(_paths(doc)))
    depth = draw(st.sampled_from([300, 1_000, 2_000, 5_000, 100_000]))
    kind = draw(st.sampled_from(["[", '{"a":']))
    close = "]" if kind == "[" else "}"
    if not path:
        doc = {"wrapper": DEEP} if draw(st.booleans()) else {**doc, "extra": DEEP}
    else:
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent["nested"] = DEEP  # beside the value, as an unknown field
        else:
            parent[path[-1]] = DEEP
    deep = kind * depth + "0" + close * depth
    return json.dumps(doc).replace(f'"{DEEP}"', deep, 1).encode()


def _run(strategy: st.SearchStrategy[bytes], examples: int) -> dict[str, int]:
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def prop(data: bytes) -> None:
        code = _check(data)
        outcomes[code] = outcomes.get(code, 0) + 1

    prop()
    return outcomes


def test_generated_documents_parse_to_the_json_values(trials: Any) -> None:
    seen = _run(documents(), 60)
    trials(sum(seen.values()), f"generated documents {json.dumps(seen, sort_keys=True)}")
    assert seen.get("ok", 0) > 0


def test_mutated_documents_parse_or_raise_format_error(trials: Any) -> None:
    seen = _run(mutated(), 300)
    trials(sum(seen.values()), f"mutated documents {json.dumps(seen, sort_keys=True)}")
    assert len(seen) >= 4  # the mutations reach several different rejections


@pytest.mark.slow
def test_fuzz_the_parser_longer(trials: Any) -> None:
    seen = _run(mutated(), 5000)
    trials(sum(seen.values()), f"mutated documents {json.dumps(seen, sort_keys=True)}")


def test_deep_nesting_anywhere_is_a_clean_rejection(trials: Any) -> None:
    """A file nesting 2,000 levels inside "face" once crashed a whole build with
    RecursionError from the fast path's decoder."""
    seen = _run(deeply_nested(), 120)
    trials(sum(seen.values()), f"deeply nested documents {json.dumps(seen, sort_keys=True)}")
    assert seen.get("too_deep", 0) > 0


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_the_fast_path_declines_deep_documents_without_raising(depth: int) -> None:
    from kpcompile.parsing.fast import parse_fast

    inner = "[" * depth + "]" * depth
    for doc in (
        f'{{"version": "2.0.0", "face": {{"dense": {inner}}}}}',
        f'{{"face": {{"dense": {{}}, "x": {inner}}}}}',
        f'{{"keypoints_3d_coordinates": {inner}}}',
    ):
        assert parse_fast(doc.encode()) is None
        with pytest.raises(FormatError) as info:
            parse(doc.encode(), PATH)
        assert info.value.code in (ErrorCode.TOO_DEEP, ErrorCode.BAD_STRUCTURE)
