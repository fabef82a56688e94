"""Which files of a camera folder hold the other keypoint sets and its camera (``--sets``).

=================  ==========================================================  ============
table              source (first one found)                                    ``part``
=================  ==========================================================  ============
``face_standard``  ``key_points/face_standard_key_points.json`` (``face.standard``,  null
                   68 points, ids ``"01".."68"`` or ``"1".."68"``), else the
                   early export's ``standard_keypoints.json`` (three maps), else
                   ``key_points/all_key_points.json`` (``face.standard``)
``head``           ``key_points/head_key_points.json`` (``head.<part>["1"..]``),  ``top``,
                   else ``all_key_points.json`` (``head``)                      ``left``, ...
``ears``           ``key_points/ears_key_points.json`` (``ears.<part>["0"..]``),  ``left``,
                   else ``all_key_points.json`` (``ear``)                       ``right``
``cameras``        ``camera_metadata.json`` beside ``key_points/``               --
=================  ==========================================================  ============

Only camera folders that hold a landmark file (:mod:`kpcompile.ingest.discover`)
are looked at; a missing set file is not an error. A camera folder's set files go
into the shard of its landmark file (:func:`kpcompile.compile.sets.assign_sets`),
so the workers compile them with the landmarks, and an incremental build reuses
them with the shard.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kpcompile.ingest.base import Entry
from kpcompile.ingest.discover import FALLBACK_NAME, KEYPOINT_DIR, SourceFile, camera_folder

CAMERA_METADATA = "camera_metadata.json"
# table -> (file in key_points/, key of its document, key of the same set in all_key_points.json)
_SET_FILES: dict[str, tuple[str, str, str]] = {
    "face_standard": ("face_standard_key_points.json", "face.standard", "face.standard"),
    "head": ("head_key_points.json", "head", "head"),
    "ears": ("ears_key_points.json", "ears", "ear"),
}
_LEGACY_STANDARD = "standard_keypoints.json"
SET_NAMES: frozenset[str] = frozenset(
    {*(v[0] for v in _SET_FILES.values()), _LEGACY_STANDARD, FALLBACK_NAME, CAMERA_METADATA}
)
"""Base names of every file the ``--sets`` tables are read from."""


@dataclass(frozen=True, slots=True)
class SetSource:
    """Where one table's rows for one camera folder come from.

    ``key`` is where the set sits in the document (``face.standard``, ``head``,
    ``ears``, ``ear``, ``legacy`` for the early export's maps, ``""`` for a camera);
    ``size`` and ``mtime_ns`` are the file's as listed (what an incremental build
    compares).
    """

    table: str
    datapoint: str
    camera: str
    path: str
    key: str
    size: int = -1
    mtime_ns: int = 0


def discover_sets(listed: Iterable[Entry], files: Iterable[SourceFile]) -> list[SetSource]:
    """The set files of every camera folder of ``files``, among the ``listed`` files; sorted.

    Example:
        >>> f = SourceFile("dp", "cam", "dp/cam/key_points/face_dense_key_points.json")
        >>> [s.table for s in discover_sets([Entry("dp/cam/camera_metadata.json", 9, 0)], [f])]
        ['cameras']
    """
    exists = {e.path: e for e in listed}
    found: list[SetSource] = []
    seen: set[str] = set()
    for sf in files:
        folder = camera_folder(sf.path)
        if folder in seen:
            continue
        seen.add(folder)
        kp = _join(folder, KEYPOINT_DIR)
        for table, (name, key, all_key) in _SET_FILES.items():
            candidates = [(_join(kp, name), key)]
            if table == "face_standard":
                candidates.append((_join(folder, _LEGACY_STANDARD), "legacy"))
            candidates.append((_join(kp, FALLBACK_NAME), all_key))
            rel, k = next(((r, k) for r, k in candidates if r in exists), ("", ""))
            if rel:
                e = exists[rel]
                found.append(SetSource(table, sf.datapoint, sf.camera, rel, k, e.size, e.mtime_ns))
        meta = exists.get(_join(folder, CAMERA_METADATA))
        if meta is not None:
            dp, cam = sf.datapoint, sf.camera
            found.append(SetSource("cameras", dp, cam, meta.path, "", meta.size, meta.mtime_ns))
    found.sort(key=lambda s: (s.table, s.datapoint, s.camera, s.path))
    return found


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name
