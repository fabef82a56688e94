"""The keypoints table of a snapshot a Parquet row group at a time, as per-file arrays.

A snapshot's ``keypoints`` files hold whole landmark files: each file's 468 rows
together, in ``kp_id`` order, and every row group ends at a file boundary. So a
row group reshapes into ``(files, 468)`` arrays without sorting or grouping, and
is the unit that :func:`kpcompile.tensors`, :func:`kpcompile.iter_tensors` and
:class:`kpcompile.torch.KeypointDataset` read, split and shuffle.

Row groups are read with pyarrow, not polars: pyarrow decodes the
``BYTE_STREAM_SPLIT`` float columns two to three times faster (see the query
benchmark), and the string columns come as dictionaries (one value per file,
never one per row).

On object storage, readers :meth:`Parts.plan` the row groups they will read, and
their bytes are fetched ahead (see :mod:`kpcompile.feeding.readahead`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from kpcompile.errors import QueryError, SnapshotError
from kpcompile.feeding.readahead import DecodeAhead, HeldFile, Key, ReadAhead, Span, spans
from kpcompile.schema import FLOAT_COLUMNS, NUM_LANDMARKS
from kpcompile.store import Store, open_store
from kpcompile.store.objstore import ObjectStore

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

T = TypeVar("T")
K = NUM_LANDMARKS
"""Rows per landmark file in the ``keypoints`` table."""
KEYS = ("datapoint", "camera")
FLOATS = FLOAT_COLUMNS
PixelOrder = Literal["as_stored", "xy"]
PIXEL_ORDERS: tuple[str, ...] = ("as_stored", "xy")
DTYPES: tuple[str, ...] = ("float32", "float64")


def check_dtype(dtype: Any) -> np.dtype[np.floating[Any]]:
    """``float32`` or ``float64`` (a name or a numpy dtype), else QueryError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        msg = f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}"
        raise QueryError(msg)
    return np.dtype(dt.name)  # type: ignore[no-any-return]


def check_pixel_order(pixel_order: str) -> None:
    """``as_stored`` or ``xy``, else QueryError."""
    if pixel_order not in PIXEL_ORDERS:
        msg = f"pixel_order must be one of {', '.join(PIXEL_ORDERS)}; got {pixel_order!r}"
        raise QueryError(msg)


def pixel_columns(pixel_order: str) -> tuple[str, str]:
    """The stored columns along the last axis of ``pixels``.

    The exports write ``pixel_2d`` as (row, column) (see "the pixel axis convention"
    in the docs), so ``xy``, image coordinates (x = column, y = row), is ``(py, px)``.
    """
    return ("px", "py") if pixel_order == "as_stored" else ("py", "px")


@dataclass(frozen=True, slots=True)
class RowGroup:
    """One row group of one Parquet file of the ``keypoints`` table."""

    rel: str
    """The Parquet file, relative to the snapshot's folder."""
    index: int
    files: int
    """Landmark files it holds (rows / 468)."""

    @property
    def stream(self) -> str:
        """The partition folder: within it, files follow each other in key order."""
        return self.rel.rsplit("/", 1)[0]


@dataclass(slots=True)
class Group:
    """A row group's columns as flat numpy arrays, checked to be whole files in id order."""

    datapoint: npt.NDArray[np.str_]
    camera: npt.NDArray[np.str_]
    columns: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    visible: npt.NDArray[np.bool_] | None = None
    known: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return len(self.datapoint)

    def part(self, start: int, stop: int) -> Group:
        """Files ``start`` to ``stop`` (views)."""
        return Group(
            self.datapoint[start:stop],
            self.camera[start:stop],
            {k: v[start * K : stop * K] for k, v in self.columns.items()},
            None if self.visible is None else self.visible[start * K : stop * K],
            None if self.known is None else self.known[start * K : stop * K],
        )

    def take(self, files: npt.NDArray[Any]) -> Group:
        """The files at positions ``files`` (indices or a boolean mask), in that order."""
        if files.dtype == np.bool_:
            files = np.flatnonzero(files)

        def rows(v: npt.NDArray[Any]) -> npt.NDArray[Any]:
            # whole files as rows of K: one block copy each (an index per landmark
            # costs 3x more)
            block: npt.NDArray[Any] = v.reshape(-1, K)[files]
            return block.reshape(-1)

        return Group(
            self.datapoint[files],
            self.camera[files],
            {k: rows(v) for k, v in self.columns.items()},
            None if self.visible is None else rows(self.visible),
            None if self.known is None else rows(self.known),
        )

    @staticmethod
    def concat(groups: Sequence[Group]) -> Group:
        """Files of several groups, one group after the other."""
        if len(groups) == 1:
            return groups[0]
        first = groups[0]

        def cat(arrays: list[npt.NDArray[Any] | None]) -> npt.NDArray[Any] | None:
            return None if arrays[0] is None else np.concatenate(arrays)  # type: ignore[arg-type]

        return Group(
            np.concatenate([g.datapoint for g in groups]),
            np.concatenate([g.camera for g in groups]),
            {k: np.concatenate([g.columns[k] for g in groups]) for k in first.columns},
            cat([g.visible for g in groups]),
            cat([g.known for g in groups]),
        )

    def arrays(self, dtype: np.dtype[Any], pixel_order: str) -> dict[str, npt.NDArray[Any]]:
        """``xyz``, ``pixels``, ``visible``, ``has_visibility`` of these files, new arrays."""
        out = empty_arrays(len(self), dtype)
        self.fill(out, slice(None), pixel_order)
        return out

    def fill(
        self,
        out: dict[str, npt.NDArray[Any]],
        rows: slice | npt.NDArray[np.intp],
        pixel_order: str,
    ) -> None:
        """Write this group's files into ``out`` (``xyz``, ``pixels``, ``visible``,
        ``has_visibility``) at ``rows``, casting to the arrays' dtype."""
        n = len(self)
        for axis, name in enumerate(("x3", "y3", "z3")):
            out["xyz"][rows, :, axis] = self.columns[name].reshape(n, K)
        for axis, name in enumerate(pixel_columns(pixel_order)):
            out["pixels"][rows, :, axis] = self.columns[name].reshape(n, K)
        assert self.visible is not None and self.known is not None
        known = self.known.reshape(n, K)
        out["visible"][rows] = self.visible.reshape(n, K) & known
        out["has_visibility"][rows] = known.any(axis=1)


class Parts:
    """The ``keypoints`` Parquet files of one snapshot, opened once each, read by row group.

    Picklable before first use (only the location and snapshot id travel), so a
    dataset holding one can be sent to DataLoader worker processes.
    """

    def __init__(self, out: str | os.PathLike[str] | Store, snapshot: str | None = None) -> None:
        store = open_store(out)
        head = store.head(snapshot)
        self.location: str | os.PathLike[str] | Store = out
        self.snapshot = head.snapshot
        self.rels: list[str] = sorted(store.table_paths(head, "keypoints"))
        self._store: Store | None = store
        self._open: dict[str, pq.ParquetFile] = {}
        self._held: dict[str, HeldFile] = {}
        self._ahead: ReadAhead | None = None
        self._decoding: DecodeAhead[Group] | None = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"location": self.location, "snapshot": self.snapshot, "rels": self.rels}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.location, self.snapshot, self.rels = (
            state["location"],
            state["snapshot"],
            state["rels"],
        )
        self._reset()

    def _reset(self) -> None:
        self._store, self._open, self._held, self._ahead = None, {}, {}, None
        self._decoding = None
        self._pid = os.getpid()

    def store(self) -> Store:
        """The snapshot's store, opened once per process."""
        if self._pid != os.getpid():  # a forked worker: open its own files and threads
            self._reset()
        if self._store is None:
            self._store = open_store(self.location)
        return self._store

    def file(self, rel: str) -> pq.ParquetFile:
        """``rel`` opened with pyarrow (once per process), strings read as dictionaries."""
        store = self.store()
        if rel not in self._open:
            if isinstance(store, ObjectStore):
                import pyarrow.parquet as pq

                fs, path = store.object(self.snapshot, rel)
                held = self._held[rel] = HeldFile(fs.open(path, "rb"))
                self._open[rel] = pq.ParquetFile(held, read_dictionary=KEYS)
            else:
                self._open[rel] = store.parquet_file(self.snapshot, rel, read_dictionary=KEYS)
        return self._open[rel]

    def plan(
        self, groups: Iterable[RowGroup], columns: Sequence[str] = (), *, threads: int = 1
    ) -> None:
        """Say which row groups :meth:`read` will be asked for next, in that order, with
        these ``columns``: on object storage their bytes are fetched ahead; on a local
        store, read by one thread (``threads=1``), they are decoded ahead. Replaces the
        previous plan; reads outside the plan still work (unhurried).

        ``threads``: how many threads of the caller read; with more than one, the
        order the reads come in is only roughly the plan's, and local row groups are
        not decoded ahead (the caller's threads decode them).
        """
        store = self.store()
        if not isinstance(store, ObjectStore):
            # local files: the reads are page-cache copies, the cost is decoding, so the
            # next row groups are decoded on threads (pyarrow releases the GIL) while
            # the caller turns the current one into tensors
            if self._decoding is None and threads == 1:
                self._decoding = DecodeAhead(self._decode)
            if self._decoding is not None:
                names = _names(columns)
                self._decoding.plan(
                    [(g.rel, g.index, names) for g in groups] if threads == 1 else []
                )
            return
        if self._ahead is None:
            self._ahead = ReadAhead(self._fetch)
        names = _names(columns)
        items: list[tuple[Key, list[Span]]] = [
            ((g.rel, g.index, names), spans(self.file(g.rel).metadata, g.index, names))
            for g in groups
        ]
        self._ahead.plan(items)

    def _decode(self, key: Key, files: dict[str, pq.ParquetFile]) -> Group:
        """Row group ``key`` of a local file, decoded (on :class:`DecodeAhead`'s thread,
        with that thread's own open files: a ``ParquetFile`` is not shared across threads)."""
        rel, index, names = key
        if rel not in files:
            files[rel] = self.store().parquet_file(self.snapshot, rel, read_dictionary=KEYS)
        table = files[rel].read_row_group(index, columns=list(names), use_threads=False)
        rows = table.num_rows
        return _group(table, RowGroup(rel, index, rows // K))

    def _fetch(self, rel: str, ranges: Sequence[Span]) -> list[bytes]:
        store = self.store()
        assert isinstance(store, ObjectStore)
        fs, path = store.object(self.snapshot, rel)
        return [bytes(fs.cat_file(path, start=start, end=stop)) for start, stop in ranges]

    def row_groups(self) -> list[RowGroup]:
        """Every row group of the table, file by file in path order (from the footers)."""
        if isinstance(self.store(), ObjectStore):  # one round trip for all the footers
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(self.file, [r for r in self.rels if r not in self._open]))
        groups = []
        for rel in self.rels:
            meta = self.file(rel).metadata
            for i in range(meta.num_row_groups):
                rows = meta.row_group(i).num_rows
                if rows % K:
                    msg = f"{rel}: row group {i} holds {rows} rows, not whole landmark files"
                    raise SnapshotError(msg)
                groups.append(RowGroup(rel, i, rows // K))
        return groups

    def read(self, group: RowGroup, columns: Sequence[str] = ()) -> Group:
        """A row group's keys (one per file) and ``columns`` (``visible`` included if named)."""
        names = _names(columns)
        if self._decoding is not None:
            decoded = self._decoding.take((group.rel, group.index, names))
            if decoded is not None:
                return decoded
        file = self.file(group.rel)
        held = None if self._ahead is None else self._ahead.take((group.rel, group.index, names))
        if held is None:
            table = file.read_row_group(group.index, columns=list(names), use_threads=False)
            return _group(table, group)
        source = self._held[group.rel]
        source.held = held
        try:
            table = file.read_row_group(group.index, columns=list(names), use_threads=False)
        finally:
            source.held = []
        return _group(table, group)

    def streams(self, groups: Sequence[RowGroup]) -> list[list[RowGroup]]:
        """Row groups per partition folder, each in storage (= key) order."""
        by: dict[str, list[RowGroup]] = {}
        for g in groups:
            by.setdefault(g.stream, []).append(g)
        return [by[k] for k in sorted(by)]


def _names(columns: Sequence[str]) -> tuple[str, ...]:
    """The columns a read of ``columns`` asks pyarrow for (keys and ``kp_id`` first)."""
    return (*KEYS, "kp_id", *(c for c in columns if c not in (*KEYS, "kp_id")))


def _group(table: pa.Table, where: RowGroup) -> Group:
    n = where.files
    kp = _flat(table.column("kp_id"))
    if len(kp) != n * K or not (kp.reshape(n, K) == np.arange(K, dtype=kp.dtype)).all():
        msg = f"{where.rel}: row group {where.index} is not whole files in kp_id order"
        raise SnapshotError(msg)
    keys = [_per_file(table.column(c), n, where) for c in KEYS]
    group = Group(keys[0], keys[1])
    for name in table.column_names:
        if name in FLOATS:
            group.columns[name] = _flat(table.column(name))
        elif name == "visible":
            group.visible, group.known = _bools(table.column(name))
    return group


def _flat(column: pa.ChunkedArray) -> npt.NDArray[Any]:
    chunks = column.chunks
    if len(chunks) == 1:
        return np.asarray(chunks[0].to_numpy(zero_copy_only=True))
    return np.concatenate([c.to_numpy(zero_copy_only=True) for c in chunks])


def _per_file(column: pa.ChunkedArray, n: int, where: RowGroup) -> npt.NDArray[np.str_]:
    """A dictionary column's value for each file; checks it is constant within files."""
    values: list[npt.NDArray[np.str_]] = []
    for chunk in column.chunks:
        ix = np.asarray(chunk.indices.to_numpy(zero_copy_only=False))
        if len(ix) % K or not (ix.reshape(-1, K) == ix[::K, None]).all():
            msg = f"{where.rel}: row group {where.index} mixes files within {K} rows"
            raise SnapshotError(msg)
        names = np.array(chunk.dictionary.to_pylist(), dtype=np.str_)
        values.append(names[ix[::K]])
    out = values[0] if len(values) == 1 else np.concatenate(values)
    assert len(out) == n
    return out


def _bools(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Values and validity of a boolean column, unpacked from its bitmaps (nulls: False)."""
    values, known = [], []
    for chunk in column.chunks:
        validity, data = chunk.buffers()
        n, off = len(chunk), chunk.offset
        values.append(_unpack(data, off, n))
        known.append(np.ones(n, np.bool_) if validity is None else _unpack(validity, off, n))
    if len(values) == 1:
        return values[0], known[0]
    return np.concatenate(values), np.concatenate(known)


def _unpack(buffer: pa.Buffer, offset: int, n: int) -> npt.NDArray[np.bool_]:
    bits = np.unpackbits(np.frombuffer(buffer, np.uint8), bitorder="little")
    return bits[offset : offset + n].astype(np.bool_)


def empty_arrays(n: int, dtype: np.dtype[Any]) -> dict[str, npt.NDArray[Any]]:
    """Uninitialised ``xyz``, ``pixels``, ``visible``, ``has_visibility`` for ``n`` files."""
    return {
        "xyz": np.empty((n, K, 3), dtype),
        "pixels": np.empty((n, K, 2), dtype),
        "visible": np.empty((n, K), np.bool_),
        "has_visibility": np.empty(n, np.bool_),
    }


def key_order(datapoint: npt.NDArray[np.str_], camera: npt.NDArray[np.str_]) -> npt.NDArray[Any]:
    """Stable argsort by (datapoint, camera); code-point order, which is polars' (UTF-8) order."""
    return np.lexsort((camera, datapoint))


def chunks_in_order(parts: Parts, groups: Sequence[RowGroup]) -> Iterator[Group]:
    """Row groups' files merged into (datapoint, camera) order, a few files at a time.

    Each partition folder is already in that order; this merges the folders, holding
    at most one row group per folder: a file is handed on once no folder can still
    hold a smaller key.
    """
    by_stream = parts.streams(groups)
    cols = (*FLOATS, "visible")
    parts.plan(interleaved(by_stream), cols)  # the folders advance about together
    streams = [iter(s) for s in by_stream]
    pending: list[Group | None] = [None] * len(streams)
    done = [False] * len(streams)

    def advance(i: int) -> None:
        nxt = next(streams[i], None)
        if nxt is None:
            done[i] = True
            return
        g = parts.read(nxt, cols)
        before = pending[i]
        pending[i] = g if before is None else Group.concat([before, g])

    for i in range(len(streams)):
        advance(i)
    while True:
        live = [i for i in range(len(streams)) if not done[i]]
        bound = min((_last(pending[i]) for i in live), default=None)
        ready = _take_below(pending, bound)
        if ready is not None:
            yield ready
        if bound is None:
            return
        for i in live:
            if _last(pending[i]) == bound:
                advance(i)


def interleaved(lists: Sequence[Sequence[T]]) -> Iterator[T]:
    """The first of each list, then the second of each, ..."""
    for i in range(max((len(x) for x in lists), default=0)):
        yield from (x[i] for x in lists if i < len(x))


def _last(g: Group | None) -> tuple[str, str]:
    if g is None or len(g) == 0:
        return ("", "")
    return (str(g.datapoint[-1]), str(g.camera[-1]))


def _take_below(pending: list[Group | None], bound: tuple[str, str] | None) -> Group | None:
    """Remove from ``pending`` every file whose key is below ``bound`` (all if None), merged."""
    taken: list[Group] = []
    for i, g in enumerate(pending):
        if g is None or len(g) == 0:
            continue
        if bound is None:
            cut = len(g)
        else:
            below = (g.datapoint < bound[0]) | ((g.datapoint == bound[0]) & (g.camera < bound[1]))
            cut = int(np.argmin(below)) if not below.all() else len(g)
        if cut:
            taken.append(g.part(0, cut))
            pending[i] = g.part(cut, len(g))
    if not taken:
        return None
    merged = Group.concat(taken)
    return merged if len(taken) == 1 else merged.take(key_order(merged.datapoint, merged.camera))


def regroup(chunks: Iterable[Group], size: int) -> Iterator[Group]:
    """Re-cut a stream of groups into groups of exactly ``size`` files (the last: the rest)."""
    held: list[Group] = []
    count = 0
    for chunk in chunks:
        if not len(chunk):
            continue
        held.append(chunk)
        count += len(chunk)
        if count < size:
            continue
        joined = Group.concat(held)
        cut = count - count % size
        for s in range(0, cut, size):
            yield joined.part(s, s + size)
        held = [joined.part(cut, count)] if cut < count else []
        count -= cut
    if count:
        yield Group.concat(held)


def shuffled(chunks: Iterable[Group], size: int, rng: np.random.Generator) -> Iterator[Group]:
    """Files of a stream of groups in random order, through a buffer of ``size`` files.

    Once the buffer holds ``size`` files, it is shuffled and all but ``size // 2``
    of them go on; the rest wait for the next groups. Memory: the buffer plus one group.
    """
    held: list[Group] = []
    count = 0
    for chunk in chunks:
        held.append(chunk)
        count += len(chunk)
        if count < size:
            continue
        joined = Group.concat(held)
        perm = rng.permutation(count)
        keep = min(size // 2, count)
        yield joined.take(perm[keep:])
        held, count = [joined.take(perm[:keep])], keep
    if count:
        joined = Group.concat(held)
        yield joined.take(rng.permutation(count))
