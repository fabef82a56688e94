"""Discovery one top-level prefix at a time, so that a build never holds the whole listing.

A *unit* is what one top-level prefix of the source contributes: the camera folders
whose datapoint starts with it (``datapoint_00012``, ``scene_7`` of
``scene_7/frames/001``), or, for a camera folder lying at the top (datapoint ``.``),
that camera folder. Every camera folder lies in exactly one unit, so duplicates
(two landmark files of one camera folder) and set files (``--sets``) are decided
within a unit, exactly as over the whole listing. The one camera folder that
several prefixes name is the root's own (datapoint ``.``, camera: the root's name):
its files may lie in the root, in ``key_points/`` and in ``<root name>/``; they are
gathered first and joined to the unit named after the root.

:func:`discover_units` lists a batch of prefixes at a time
(:meth:`~kpcompile.ingest.base.Source.prefix_listing`), discovers their files in
columns (:func:`~kpcompile.ingest.discover.select_listing`) and hands out the units
in name order (as UTF-8 bytes), a batch at a time, their files in output order. What it holds
is one batch: the coordinator's memory is bounded by the largest prefix (or
:data:`BATCH_FILES`, whichever is larger), not by the dataset. Batches grow while
prefixes are small (a datapoint per prefix) and shrink to one prefix when they are
large; how prefixes are batched never changes a unit.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kpcompile.ingest.base import Source
from kpcompile.ingest.discover import Discovered, no_keypoint_files, select_listing
from kpcompile.ingest.listing import CHUNK, Listing, encode
from kpcompile.ingest.paths import KEYPOINT_DIR, locate
from kpcompile.ingest.setfiles import SetFiles, find_set_files

BATCH_FILES = 1 << 18
"""Listed files a batch of prefixes aims at (a prefix larger than this is one batch)."""
MAX_BATCH_PREFIXES = 1 << 12
"""Most prefixes listed in one batch."""


def unit_of(datapoint: str, camera: str) -> str:
    """The unit of a camera folder: its datapoint's first component, or, for a camera
    folder at the top (datapoint ``.``), the camera folder's name.

    Example:
        >>> unit_of("scene_7/frames", "001"), unit_of(".", "cam")
        ('scene_7', 'cam')
    """
    return datapoint.split("/", 1)[0] if datapoint != "." else camera


@dataclass(frozen=True, slots=True)
class Batch:
    """The files of consecutive units (``first`` to ``last``, by name), in output order:
    indices of ``files``' listing, sorted by unit, then as
    :meth:`~kpcompile.ingest.discover.Discovered.output_order` sorts them."""

    first: str
    last: str
    files: Discovered
    order: npt.NDArray[np.int64]
    sets: SetFiles | None

    def __len__(self) -> int:
        return len(self.order)


class Lister(Protocol):
    """Lists chunks of prefixes: one listing per chunk, in the order of the chunks.

    It may list ahead of what has been taken (on a Dask cluster:
    ``kpcompile.compile.executor.dask_lister``), but takes a chunk only when it has
    room for it: :func:`discover_units` decides a chunk's width from the listings
    handed back so far.
    """

    def __call__(
        self, source: Source, names: frozenset[str], chunks: Iterator[list[str]]
    ) -> Iterator[Listing]: ...


def list_here(
    source: Source, names: frozenset[str], chunks: Iterator[list[str]]
) -> Iterator[Listing]:
    """The default :class:`Lister`: each chunk listed in this process, when taken."""
    for chunk in chunks:
        yield source.prefix_listing(chunk, names)


def discover_units(
    source: Source,
    names: frozenset[str],
    partition_by: str,
    *,
    sets: bool = False,
    batch_files: int = BATCH_FILES,
    lister: Lister = list_here,
) -> Iterator[Batch]:
    """The units of ``source`` in name order, a batch at a time, with their files in
    ``partition_by``'s output order (see :meth:`Discovered.output_order`) and, with
    ``sets``, the set files of their camera folders.

    ``lister`` lists the chunks of prefixes (the root's own files and a top-level
    ``key_points/`` are listed here, whatever it is). A lister that lists ahead
    makes other batches, never other units or files.

    Raises:
        SourceError: The source cannot be listed, or holds no keypoint file (raised
            once every prefix has been listed).
    """
    root = source.name
    prefixes = source.prefixes(names)
    found = 0
    held: list[Listing] = []  # the root's own camera folder, from "" and key_points/
    for where in ("", KEYPOINT_DIR):
        if where in prefixes and where != root:
            lst = source.prefix_listing([where], names)
            rooted = _rooted(lst, root)
            held.append(lst.take(np.flatnonzero(rooted)))
            if not where:  # names starting with "/": the unit "", before any other
                for batch in _batch(lst.take(np.flatnonzero(~rooted)), source, partition_by, sets):
                    found += len(batch)
                    yield batch
                    del batch
    todo = [p for p in prefixes if p]  # sorted
    extra = None  # the root's camera folder, where no prefix is named after the root
    if any(len(h) for h in held) and root not in todo:
        extra = root
        bisect.insort(todo, root, key=encode)
    del prefixes
    apart = {extra, KEYPOINT_DIR} if root != KEYPOINT_DIR else {extra}
    chunks = _Chunks(todo, apart, batch_files)
    for listed in lister(source, names, iter(chunks)):
        chunk = chunks.taken()
        parts = []
        if KEYPOINT_DIR in chunk and root != KEYPOINT_DIR:  # its root files were held
            kp = source.prefix_listing([KEYPOINT_DIR], names)
            parts.append(kp.take(np.flatnonzero(~_rooted(kp, root))))
        parts.append(listed)
        if root in chunk:
            parts += held
            held = []
        lst = Listing.concat(parts) if len(parts) > 1 else parts[0]
        del parts, listed
        chunks.listed(len(chunk), len(lst))
        for batch in _batch(lst, source, partition_by, sets):
            found += len(batch)
            yield batch
            del batch  # not held while the next chunk is listed
        del lst
    if not found:
        raise no_keypoint_files(source.location)


class _Chunks:
    """The prefixes in chunks: widths double while prefixes are small, up to
    ``batch_files`` listed files a chunk (from the files per prefix listed so far).

    Iterating yields what the lister lists (a chunk without ``apart``: prefixes
    listed otherwise); :meth:`taken` gives back the whole chunk, in order, as its
    listing arrives. A lister running ``k`` chunks ahead sees the widths decided from
    the listings of all but the last ``k``: the same widths for the same ``k``.
    """

    def __init__(self, todo: list[str], apart: set[str | None], batch_files: int) -> None:
        self.todo, self.apart, self.batch_files = todo, apart, batch_files
        self.issued: deque[list[str]] = deque()
        self.done, self.files = 0, 0

    def __iter__(self) -> Iterator[list[str]]:
        at, width = 0, 1
        while at < len(self.todo):
            if self.done:
                per_prefix = max(self.files / self.done, 1.0)
                most = max(1, int(self.batch_files // per_prefix))
                width = int(min(MAX_BATCH_PREFIXES, 2 * width, most))
            chunk = self.todo[at : at + width]
            at += len(chunk)
            self.issued.append(chunk)
            yield [p for p in chunk if p not in self.apart]
            if not self.done:
                width = min(2 * width, MAX_BATCH_PREFIXES)

    def taken(self) -> list[str]:
        return self.issued.popleft()

    def listed(self, prefixes: int, files: int) -> None:
        self.done += prefixes
        self.files += files


def _rooted(lst: Listing, root: str) -> npt.NDArray[np.bool_]:
    """Per file, whether it is of the root's own camera folder (datapoint ``.``,
    camera ``root``)."""
    n = len(lst.folders)
    rooted = np.zeros(n, dtype=bool)
    for lo in range(0, n, CHUNK):
        for k, folder in enumerate(lst.folder_paths(np.arange(lo, min(lo + CHUNK, n)))):
            rooted[lo + k] = locate(folder + "x", root) == (".", root)
    return rooted[lst.folder] if n else np.zeros(0, dtype=bool)


def _batch(lst: Listing, source: Source, partition_by: str, sets: bool) -> Iterator[Batch]:
    """The batch of one listing (none if it holds no keypoint file)."""
    files = select_listing(lst, source.name, source.location, required=False)
    if not len(files):
        return
    set_files = find_set_files(files) if sets else None
    order = files.output_order(partition_by)
    of_file = files.unit[lst.folder[order]]
    by_unit = np.argsort(of_file, kind="stable")
    present = np.unique(of_file).tolist()
    names = files.units
    yield Batch(names[present[0]], names[present[-1]], files, order[by_unit], set_files)
