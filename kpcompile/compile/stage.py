"""Where a build writes: the staging area of a new snapshot, as the compile stage sees it.

The store (:mod:`kpcompile.store`) decides where a snapshot is staged and how it is
published; the compile stage only needs to write files into the staging area,
reuse files of the previous snapshot and read them. :class:`Stage` is that
contract. The store's implementations (a local folder, an object-store prefix)
are picklable, so worker processes and Dask workers write through them directly.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


class Stage(ABC):
    """The staging area of snapshot :attr:`snapshot` (picklable).

    Paths (``rel``) are relative to a snapshot's folder, with ``/`` separators:
    ``keypoints/camera=cam/part-00000.parquet``.
    """

    def __init__(self, snapshot: str) -> None:
        self.snapshot = snapshot

    @abstractmethod
    @contextlib.contextmanager
    def writing(self) -> Iterator[str]:
        """A local folder to write files into, laid out as the snapshot.

        Every file under it is part of the stage once the block ends without an
        exception (an object store uploads them then).
        """

    @abstractmethod
    def remove_named(self, name: str, tables: Sequence[str]) -> int:
        """Remove files called ``name`` or ``name.*`` under the tables' folders; how many."""

    @abstractmethod
    def link(self, snapshot: str, old: str, new: str) -> None:
        """Make file ``old`` of snapshot ``snapshot`` file ``new`` of this stage.

        A hard link where the store has them, else a copy: snapshots never share
        a file that removing one of them could break.
        """

    @abstractmethod
    def read_table(self, snapshot: str, rel: str) -> pa.Table:
        """Read a Parquet file of another (published) snapshot of the same store."""
