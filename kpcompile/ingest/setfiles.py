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

A camera folder is a (datapoint, camera) pair, as for the landmark files
(:mod:`kpcompile.ingest.discover`): only those holding a landmark file are looked at,
each table takes at most one file per camera folder (the first of the list above; the
path decides between two equal candidates), and a missing set file is not an error.
Files of a folder whose name is unsafe (``..``, absolute, ...) are not read: its
landmark file is rejected as ``unsafe_path``.

A camera folder's set files go into the shard of its first landmark file in output
order, so the workers compile them with the landmarks, and an incremental build
reuses them with the shard. The coordinator holds them in columns
(:class:`SetFiles`: one listing index per table and camera folder, 32 bytes) and
makes :class:`SetSource` objects a shard at a time, as it does the landmark files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kpcompile.ingest.discover import FALLBACK_NAME, Discovered, SourceFile
from kpcompile.ingest.listing import CHUNK
from kpcompile.ingest.paths import KEYPOINT_DIR

CAMERA_METADATA = "camera_metadata.json"
_LEGACY_STANDARD = "standard_keypoints.json"
TABLES: tuple[str, ...] = ("face_standard", "head", "ears", "cameras")
"""The tables of :class:`SetFiles`' columns, in the order a shard lists its set files."""
# base name -> (table, preference: lowest first, file in key_points/?, key of the set)
_CANDIDATES: dict[str, tuple[tuple[int, int, bool, str], ...]] = {
    "face_standard_key_points.json": ((0, 0, True, "face.standard"),),
    _LEGACY_STANDARD: ((0, 1, False, "legacy"),),
    FALLBACK_NAME: ((0, 2, True, "face.standard"), (1, 1, True, "head"), (2, 1, True, "ear")),
    "head_key_points.json": ((1, 0, True, "head"),),
    "ears_key_points.json": ((2, 0, True, "ears"),),
    CAMERA_METADATA: ((3, 0, False, ""),),
}
_KEY = {(t, name): key for name, cands in _CANDIDATES.items() for t, _, _, key in cands}
SET_NAMES: frozenset[str] = frozenset(_CANDIDATES)
"""Base names of every file the ``--sets`` tables are read from."""


@dataclass(frozen=True, slots=True)
class SetSource:
    """Where one table's rows for one camera folder come from.

    ``key`` is where the set sits in the document (``face.standard``, ``head``,
    ``ears``, ``ear``, ``legacy`` for the early export's maps, ``""`` for a camera);
    ``size`` and ``mtime_ns`` are the file's as listed (what an incremental build
    compares). ``landmarks``: the file is also the camera folder's landmark file
    (``all_key_points.json``), whose bytes the shard already counts.
    """

    table: str
    datapoint: str
    camera: str
    path: str
    key: str
    size: int = -1
    mtime_ns: int = 0
    landmarks: bool = False


@dataclass(frozen=True, slots=True)
class SetFiles:
    """The set files of a build in columns: per camera folder (a group of
    :class:`~kpcompile.ingest.discover.Discovered`) and table (:data:`TABLES`), the listing
    index of its file, or -1."""

    files: Discovered
    index: npt.NDArray[np.int64]
    """Shape ``(groups, 4)``."""

    def __len__(self) -> int:
        return int(np.count_nonzero(self.index >= 0))

    def count(self, order: npt.NDArray[np.int64]) -> int:
        """Set files of the camera folders of the files at these listing indices."""
        groups = np.unique(self.files.group[self.files.listing.folder[order]])
        return int(np.count_nonzero(self.index[groups] >= 0))

    def nbytes(self) -> int:
        """Bytes held by the array."""
        return int(self.index.nbytes)

    def of_shard(
        self, order: npt.NDArray[np.int64], start: int, shard: Sequence[SourceFile]
    ) -> tuple[SetSource, ...]:
        """The set files of the shard whose files are ``order[start : start + len(shard)]``
        (``shard``, as objects): those of each camera folder whose first file in ``order``
        it holds; by table, then in the shard's order.
        """
        lst = self.files.listing
        lo = max(start - 1, 0)
        idx = order[lo : start + len(shard)]
        groups = self.files.group[lst.folder[idx]]
        first = np.ones(len(shard), dtype=bool)
        first[int(start == 0) :] = groups[1:] != groups[:-1]
        owners = np.flatnonzero(first)
        rows = self.index[groups[owners + (start - lo)]]
        table, at = np.nonzero(rows.T >= 0)  # by table, then by place in the shard
        chosen = rows[at, table]
        if not len(chosen):
            return ()
        counted = {
            int(i)
            for i, f in zip(idx[start - lo :].tolist(), shard, strict=True)
            if f.unsafe is None and f.duplicate_of is None
        }
        paths = lst.paths(chosen)
        sizes, mtimes = lst.sizes[chosen].tolist(), lst.mtimes[chosen].tolist()
        out = []
        places = owners[at].tolist()
        for k, (t, i) in enumerate(zip(table.tolist(), chosen.tolist(), strict=True)):
            f, path = shard[places[k]], paths[k]
            key = _KEY[t, path.rpartition("/")[2]]
            landmarks = i in counted
            out.append(
                SetSource(
                    TABLES[t], f.datapoint, f.camera, path, key, sizes[k], mtimes[k], landmarks
                )
            )
        return tuple(out)


def find_set_files(files: Discovered) -> SetFiles:
    """The set files of the camera folders of ``files``, chosen from its listing as
    the object form (``tests/oracles.py``) chooses them, without one object per
    listed file.

    One table at a time, so that what is held besides the result is a few integers
    per candidate file of one table.
    """
    lst = files.listing
    groups = len(files.camera_rank)
    index = np.full((groups, len(TABLES)), -1, dtype=np.int64)
    wanted = np.zeros(groups, dtype=bool)
    wanted[files.group[lst.folder[files.order]]] = True
    # per folder: whether its files may be read (safe, of a camera folder with a
    # landmark file), and whether it is a key_points/ folder
    usable = wanted[files.group] & (files.unsafe < 0)
    in_kp = _keypoint_folders(files, usable)
    for t in range(len(TABLES)):
        rank = np.full(len(lst.names) + 1, -1, dtype=np.int8)  # by name: -1 not a candidate
        kp = np.zeros(len(lst.names) + 1, dtype=bool)
        for n, name in enumerate(lst.names):
            for table, r, k, _ in _CANDIDATES.get(name, ()):
                if table == t:
                    rank[n], kp[n] = r, k
        cand = np.flatnonzero(rank[lst.name] >= 0)
        folders = lst.folder[cand]
        keep = usable[folders] & (in_kp[folders] == kp[lst.name[cand]])
        cand, folders = cand[keep], folders[keep]
        del keep
        ranks, group = rank[lst.name[cand]], files.group[folders]
        del folders
        by = np.lexsort((ranks, group))
        cand, ranks, group = cand[by], ranks[by], group[by]
        del by
        first = np.ones(len(cand), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        index[group[first], t] = cand[first]
        # equal preference within a camera folder (several folders name one pair, such
        # as "" and "<root name>/"): the path decides, as in the object form
        tied = np.flatnonzero(~first[1:] & (ranks[1:] == ranks[:-1])) + 1
        for g in np.unique(group[tied]).tolist():
            at = np.searchsorted(group, g)
            run = at + np.flatnonzero(ranks[at : np.searchsorted(group, g, "right")] == ranks[at])
            paths = lst.paths(cand[run])
            index[g, t] = cand[run][paths.index(min(paths))]
    return SetFiles(files, index)


def _keypoint_folders(files: Discovered, usable: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Per folder of the listing, whether it is a ``key_points/`` folder (only the
    ``usable`` ones are looked at)."""
    kp = np.zeros(len(usable), dtype=bool)
    tail = f"/{KEYPOINT_DIR}/"
    for lo in range(0, len(usable), CHUNK):
        at = lo + np.flatnonzero(usable[lo : lo + CHUNK])
        for k, path in zip(at.tolist(), files.listing.folder_paths(at), strict=True):
            kp[k] = path.endswith(tail) or path == tail[1:]
    return kp
