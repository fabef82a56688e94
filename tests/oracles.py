"""Test oracles: the object forms of what the package does in columns, one object per
file. The columnar code (discovery, set files, shard planning) is tested against them;
nothing in the package uses them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

from kpcompile.compile.plan import order_key, position
from kpcompile.compile.settables import ALL_SET_TABLES
from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry
from kpcompile.ingest.discover import _RANK as RANK
from kpcompile.ingest.discover import FALLBACK_NAME, LANDMARK_NAMES, SourceFile
from kpcompile.ingest.paths import KEYPOINT_DIR, locate, unsafe_reason
from kpcompile.ingest.setfiles import _CANDIDATES, _KEY, TABLES, SetSource


def select(entries: Iterable[Entry], root_name: str, where: str) -> list[SourceFile]:
    """The object form of discovery (one object per listed file): the reference
    :func:`kpcompile.ingest.discover.select_listing` is tested against; sorted.

    Raises:
        SourceError: No keypoint file is among ``entries``.
    """
    by_camera: dict[tuple[str, str], list[tuple[int, Entry]]] = {}
    found: list[SourceFile] = []
    for e in entries:
        name = e.path.rsplit("/", 1)[-1]
        if name not in RANK:
            continue
        datapoint, camera = locate(e.path, root_name)
        reason = unsafe_reason(e.path)
        if reason is not None:
            found.append(SourceFile(datapoint, camera, e.path, e.size, e.mtime_ns, None, reason))
        else:
            by_camera.setdefault((datapoint, camera), []).append((RANK[name], e))
    for (datapoint, camera), candidates in by_camera.items():
        candidates.sort(key=lambda c: (c[0], c[1].path))
        best_rank = candidates[0][0]
        first: str | None = None
        for rank, e in candidates:
            if rank == RANK[FALLBACK_NAME] and best_rank != rank:
                continue  # all_key_points.json only stands in for a missing dense file
            found.append(SourceFile(datapoint, camera, e.path, e.size, e.mtime_ns, first))
            first = first or e.path
    if not found:
        msg = f"no keypoint files under {where!r}: looked for " + ", ".join(sorted(LANDMARK_NAMES))
        raise SourceError(msg)
    found.sort()
    return found


def discover_sets(
    listed: Iterable[Entry], files: Iterable[SourceFile], root_name: str
) -> list[SetSource]:
    """The set files of every camera folder of ``files``, among the ``listed`` files; sorted.

    The object form, one object per listed file: the reference :func:`find_set_files`
    (which the builds use) is tested against.

    """
    files = list(files)
    groups = {(f.datapoint, f.camera) for f in files}
    landmarks = {f.path for f in files if f.unsafe is None and f.duplicate_of is None}
    best: dict[tuple[int, str, str], tuple[int, str, Entry]] = {}
    for e in listed:
        folder, _, name = e.path.rpartition("/")
        in_kp = folder == KEYPOINT_DIR or folder.endswith("/" + KEYPOINT_DIR)
        group = locate(e.path, root_name)
        if group not in groups or unsafe_reason(e.path) is not None:
            continue
        for table, rank, kp, _key in _CANDIDATES.get(name, ()):
            at = (table, *group)
            if kp == in_kp and (at not in best or (rank, e.path) < best[at][:2]):
                best[at] = (rank, e.path, e)
    found = []
    for (t, dp, cam), (_, path, e) in best.items():
        key = _KEY[t, path.rpartition("/")[2]]
        found.append(
            SetSource(TABLES[t], dp, cam, path, key, e.size, e.mtime_ns, path in landmarks)
        )
    found.sort(key=lambda s: (s.table, s.datapoint, s.camera, s.path))
    return found


def plan(
    files: Sequence[SourceFile], shard_files: int, partition_by: str
) -> list[list[SourceFile]]:
    """Split the files into shards in output order: by partition, then top-level prefix
    (unit), datapoint and path.

    Before builds planned one top-level prefix at a time, the order was by partition,
    then datapoint: the unit comes before the datapoint now, which reorders only
    datapoints whose first component is a prefix of another's followed by a character
    sorting before ``/`` (datapoint ``a-1`` came before ``a/b``, now after it). Shards are the
    same runs of files otherwise; the package numbers them as they close
    (:mod:`kpcompile.compile.plan`), this oracle in output order.
    """
    ordered = sorted(files, key=lambda f: position(order_key(f, partition_by), partition_by))
    return chunk(ordered, shard_files, partition_by)


def chunk(
    ordered: Sequence[SourceFile], target: int, partition: str = "none"
) -> list[list[SourceFile]]:
    """Split files (in output order) into shards of ``target`` files on average: a file
    starts a shard when the CRC-32 of its path is 0 modulo ``target``, a shard is cut at
    ``2 x target`` files, and (``partition="camera"``) where the camera changes.
    """
    return list(iter_chunks(ordered, target, partition))


def iter_chunks(
    ordered: Iterable[SourceFile], target: int, partition: str = "none"
) -> Iterator[list[SourceFile]]:
    """:func:`chunk`, one shard at a time."""
    if target <= 1:
        yield from ([f] for f in ordered)
        return
    high = 2 * target
    current: list[SourceFile] = []
    by_camera = partition == "camera"
    for f in ordered:
        if current and (
            len(current) >= high
            or zlib.crc32(f.path.encode("utf-8", "surrogatepass")) % target == 0
            or (by_camera and f.camera != current[-1].camera)
        ):
            yield current
            current = []
        current.append(f)
    if current:
        yield current


def assign_sets(
    shards: Iterable[Sequence[SourceFile]], sets: Sequence[SetSource]
) -> list[tuple[SetSource, ...]]:
    """Per shard, the set files of the camera folders whose landmark file it holds."""
    assign = SetAssigner(sets)
    return [assign(shard) for shard in shards]


class SetAssigner:
    """Hands each shard, as shards are planned one after the other, its set files.

    A camera folder's set files go with its first landmark file in output order
    (a folder holding a duplicate landmark file is not counted twice). Within a
    shard they are in the shard's order, so each set table's rows follow the
    ``keypoints`` table's order.
    """

    def __init__(self, sets: Sequence[SetSource]) -> None:
        self._by_folder: dict[tuple[str, str], list[SetSource]] = {}
        for s in sets:
            self._by_folder.setdefault((s.datapoint, s.camera), []).append(s)

    def __call__(self, shard: Iterable[SourceFile]) -> tuple[SetSource, ...]:
        """The set files of ``shard``: to call once per shard, in planning order."""
        mine: list[SetSource] = []
        for f in shard:
            mine.extend(self._by_folder.pop((f.datapoint, f.camera), ()))
        mine.sort(key=lambda s: SET_RANK[s.table])  # stable: shard order within a table
        return tuple(mine)


SET_RANK = {t: i for i, t in enumerate(ALL_SET_TABLES)}
