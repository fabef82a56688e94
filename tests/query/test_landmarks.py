"""Tests for kpcompile.landmarks (MediaPipe face-mesh regions and canonical face)."""

import doctest
import math
from collections import Counter

import pytest

from kpcompile.query import landmarks
from kpcompile.query.landmarks import (
    CANONICAL_FACE,
    INTER_OCULAR,
    NUM_LANDMARKS,
    REGION_CONNECTIONS,
    REGION_NAMES,
    REGIONS,
    region_ids,
)

# Counts read from MediaPipe's published mediapipe/python/solutions/face_mesh_connections.py
# (google/mediapipe, now google-ai-edge/mediapipe; the six non-nose lists as in commit
# 33d683c67100ef3db37d9752fcf65d30bea440c4, FACEMESH_NOSE as shipped in the mediapipe 0.10.14
# wheel): number of connections, number of distinct landmark ids, and the sum of those
# distinct ids (a checksum of the id set). Counted from the source, not from the module.
PUBLISHED = {
    # region: (MediaPipe constant, connections, distinct ids, sum of distinct ids)
    "lips": ("FACEMESH_LIPS", 40, 40, 7806),
    "left_eye": ("FACEMESH_LEFT_EYE", 16, 16, 5948),
    "right_eye": ("FACEMESH_RIGHT_EYE", 16, 16, 2301),
    "left_eyebrow": ("FACEMESH_LEFT_EYEBROW", 8, 10, 2980),
    "right_eyebrow": ("FACEMESH_RIGHT_EYEBROW", 8, 10, 682),
    "face_oval": ("FACEMESH_FACE_OVAL", 36, 36, 8222),
    "nose": ("FACEMESH_NOSE", 25, 24, 3662),
}

# Regions whose published connection lists are closed contours (every id has degree 2).
CLOSED_CONTOURS = ("lips", "left_eye", "right_eye", "face_oval")


def test_num_landmarks() -> None:
    assert NUM_LANDMARKS == 468


def test_region_names() -> None:
    assert set(REGIONS) == set(PUBLISHED)
    assert set(REGION_CONNECTIONS) == set(PUBLISHED)
    assert list(REGION_NAMES) == sorted(PUBLISHED)


@pytest.mark.parametrize("region", sorted(PUBLISHED))
def test_region_matches_published_counts(region: str) -> None:
    constant, n_connections, n_ids, id_sum = PUBLISHED[region]
    connections = REGION_CONNECTIONS[region]
    assert getattr(landmarks, constant) is connections
    assert isinstance(connections, frozenset)
    assert len(connections) == n_connections
    assert len(REGIONS[region]) == n_ids
    assert sum(REGIONS[region]) == id_sum
    # REGIONS is exactly the set of ids appearing in the connection list.
    assert REGIONS[region] == {i for edge in connections for i in edge}


@pytest.mark.parametrize("region", sorted(PUBLISHED))
def test_ids_in_range_and_edges_well_formed(region: str) -> None:
    for a, b in REGION_CONNECTIONS[region]:
        assert isinstance(a, int)
        assert isinstance(b, int)
        assert a != b
    assert all(0 <= i < NUM_LANDMARKS for i in REGIONS[region])


def test_irises_not_included() -> None:
    assert not hasattr(landmarks, "FACEMESH_LEFT_IRIS")
    assert not hasattr(landmarks, "FACEMESH_RIGHT_IRIS")
    assert max(max(ids) for ids in REGIONS.values()) < NUM_LANDMARKS


@pytest.mark.parametrize("region", CLOSED_CONTOURS)
def test_closed_contours(region: str) -> None:
    degree = Counter(i for edge in REGION_CONNECTIONS[region] for i in edge)
    assert set(degree.values()) == {2}


def test_left_right_are_subject_sides() -> None:
    # MediaPipe: 263 is the subject's left outer eye corner, 33 the right one.
    assert 263 in REGIONS["left_eye"]
    assert 33 in REGIONS["right_eye"]
    assert 362 in REGIONS["left_eye"]  # inner corners
    assert 133 in REGIONS["right_eye"]
    assert REGIONS["left_eye"].isdisjoint(REGIONS["right_eye"])
    assert REGIONS["left_eyebrow"].isdisjoint(REGIONS["right_eyebrow"])
    assert INTER_OCULAR == (33, 263)


def test_region_ids_sorted_copy() -> None:
    for name in REGION_NAMES:
        ids = region_ids(name)
        assert ids == sorted(REGIONS[name])
        ids.append(-1)  # a fresh list: mutating it must not touch the table
        assert -1 not in REGIONS[name]
    assert region_ids("left_eye")[:4] == [249, 263, 362, 373]


@pytest.mark.parametrize("bad", ["lip", "Left_Eye", "", "left eye", "iris"])
def test_unknown_region_raises(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown region ") as excinfo:
        region_ids(bad)
    message = str(excinfo.value)
    assert repr(bad) in message
    assert "expected one of: " + ", ".join(sorted(PUBLISHED)) in message


def test_canonical_face_shape_and_finite() -> None:
    assert isinstance(CANONICAL_FACE, tuple)
    assert len(CANONICAL_FACE) == NUM_LANDMARKS
    for vertex in CANONICAL_FACE:
        assert isinstance(vertex, tuple)
        assert len(vertex) == 3
        assert all(isinstance(c, float) and math.isfinite(c) for c in vertex)
    # Published values, first and last vertices (canonical_face_model.obj, cm).
    assert CANONICAL_FACE[0] == (0.0, -3.406404, 5.979507)
    assert CANONICAL_FACE[467] == (4.53, 2.91, 3.339685)
    assert len(set(CANONICAL_FACE)) == NUM_LANDMARKS  # no duplicated vertices


def test_canonical_axes() -> None:
    x = [v[0] for v in CANONICAL_FACE]
    y = [v[1] for v in CANONICAL_FACE]
    z = [v[2] for v in CANONICAL_FACE]
    # +x is the subject's left: every left eye/eyebrow vertex has x > 0, every right one x < 0.
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for region in (f"{side}_eye", f"{side}_eyebrow"):
            assert all(sign * x[i] > 0 for i in REGIONS[region]), region
    assert x[263] > x[33]
    # +y is up: forehead (10) above chin (152); eyes above the mouth.
    assert y[10] > y[152]
    assert min(y[i] for i in REGIONS["left_eye"]) > max(y[i] for i in REGIONS["lips"])
    # +z points out of the face: nose tip (1) in front of the cheek/ear contour (234, 454).
    assert z[1] > z[234]
    assert z[1] > z[454]
    # Outer-eye-corner distance of an adult face, in centimetres.
    a, b = (CANONICAL_FACE[i] for i in INTER_OCULAR)
    assert 8.0 < math.dist(a, b) < 10.0


def test_canonical_mirror_symmetry() -> None:
    index = {v: i for i, v in enumerate(CANONICAL_FACE)}

    def mirror(i: int) -> int:
        x, y, z = CANONICAL_FACE[i]
        return index[(-x, y, z)]

    assert mirror(33) == 263
    assert mirror(133) == 362
    for left, right in (("left_eye", "right_eye"), ("left_eyebrow", "right_eyebrow")):
        assert {mirror(i) for i in REGIONS[left]} == REGIONS[right]
        assert {(mirror(a), mirror(b)) for a, b in REGION_CONNECTIONS[left]} == (
            REGION_CONNECTIONS[right]
        )
    for region in ("lips", "face_oval", "nose"):
        assert {mirror(i) for i in REGIONS[region]} == REGIONS[region]


def test_docstring_examples() -> None:
    result = doctest.testmod(landmarks)
    assert result.attempted > 0
    assert result.failed == 0
