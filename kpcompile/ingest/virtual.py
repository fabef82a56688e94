"""A virtual dataset of any size, for scale tests and benchmarks: nothing on disk.

``virtual://N/P`` (or :class:`VirtualSource` ``(N, P)``) is a Faces-layout dataset of
``N`` landmark files spread over ``P`` top-level prefixes::

    batch_0000/datapoint_000000000/camera/key_points/face_dense_key_points.json
    batch_0000/datapoint_000000001/camera/key_points/face_dense_key_points.json
    ...
    batch_0001/datapoint_000000500/camera/key_points/face_dense_key_points.json

Datapoints are numbered from 0 and split into ``P`` contiguous runs, one per
prefix, so the listing is already in sorted order. Every file has the same bytes
(:attr:`VirtualSource.template`: by default a Faces file of 468 landmarks written
as the exports write them, 3-space indented; pass a real one, e.g. synth's, to
measure with it), the same size and a modification time that depends only on its
index: the same ``N`` and ``P`` list the same files, every time, on every machine.

The listing is made from fixed-width digits with numpy, not one Python string per
file: a hundred million files list in seconds, at the listing's own 24 bytes per
file plus each folder's path. It is a testing and benchmarking aid, not a dataset.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kpcompile.errors import SourceError
from kpcompile.ingest.base import Entry, Source, too_large, unreadable
from kpcompile.ingest.listing import Listing

SCHEME = "virtual://"
FILE_NAME = "face_dense_key_points.json"
MTIME_BASE_NS = 1_700_000_000 * 1_000_000_000
"""The modification time of file 0 (November 2023); file ``i`` is ``i`` microseconds later."""
FOLDERS_PER_CHUNK = 1 << 16
"""Folders per chunk of the listing's folder array."""
_LOCATION = re.compile(r"^virtual://(\d+)/(\d+)/?$")


def default_template(landmarks: int = 468) -> bytes:
    """A Faces ``face_dense_key_points.json`` with deterministic values, as the exports
    write it (3-space indent, ``is_visible`` as a string; about 160 KB).

    Example:
        >>> default_template()[:40]
        b'{\\n   "version": "2.0.0",\\n   "face": {\\n '
    """
    dense = {}
    for i in range(landmarks):
        a, b = 2 * math.pi * i / landmarks, math.pi * ((i * 7) % landmarks) / landmarks
        dense[str(i)] = {
            "global_3d": {
                "x": 0.08 * math.cos(a) * math.sin(b) + 1e-9 * i,
                "y": -0.05 + 0.08 * math.sin(a) * math.sin(b),
                "z": 0.1 + 0.08 * math.cos(b),
            },
            "pixel_2d": {"x": 512.0 + 300.0 * math.sin(a) + i / 7, "y": 512.0 + 300 * math.cos(b)},
            "is_visible": "true" if math.cos(b) > -0.2 else "false",
        }
    return json.dumps({"version": "2.0.0", "face": {"dense": dense}}, indent=3).encode()


class VirtualSource(Source):
    """``files`` identical landmark files in ``prefixes`` top-level folders (see the module).

    Args:
        files: Landmark files, at least 1.
        prefixes: Top-level folders, from 1 to ``files``.
        template: The bytes of every file; default :func:`default_template`.

    Example:
        >>> src = VirtualSource(6, 2)
        >>> [e.path for e in src.list(frozenset({FILE_NAME}))][3]
        'batch_0001/datapoint_000000003/camera/key_points/face_dense_key_points.json'
    """

    kind = "virtual"
    listable_anywhere = True

    def __init__(self, files: int, prefixes: int = 1, *, template: bytes | None = None) -> None:
        if files < 1 or not 1 <= prefixes <= files:
            msg = (
                f"a virtual source needs at least 1 file and 1 to {max(files, 1):,} prefixes; "
                f"got {files} files and {prefixes} prefixes"
            )
            raise SourceError(msg)
        super().__init__(f"{SCHEME}{files}/{prefixes}", "virtual")
        self.files = files
        self.prefix_count = prefixes
        self.template = default_template() if template is None else template
        self._dp_width = max(9, len(str(files - 1)))
        self._prefix_width = max(4, len(str(prefixes - 1)))

    @classmethod
    def parse(cls, location: str) -> VirtualSource:
        """The source a ``virtual://N/P`` location names.

        Raises:
            SourceError: The location is not ``virtual://N/P``.
        """
        m = _LOCATION.match(location)
        if m is None:
            msg = f"source {location!r}: a virtual source is virtual://FILES/PREFIXES"
            raise SourceError(msg)
        return cls(int(m.group(1)), int(m.group(2)))

    # --- naming ---------------------------------------------------------------------------

    def prefix_bounds(self, prefix: int) -> tuple[int, int]:
        """The files ``[start, stop)`` under top-level folder number ``prefix``."""
        return (prefix * self.files) // self.prefix_count, (
            (prefix + 1) * self.files
        ) // self.prefix_count

    def prefix_name(self, prefix: int) -> str:
        """The name of top-level folder number ``prefix`` (``batch_0000``)."""
        return f"batch_{prefix:0{self._prefix_width}d}"

    def path(self, i: int) -> str:
        """The path of file ``i``."""
        prefix = self._prefix_of(np.array([i], dtype=np.int64))[0]
        return f"{self._folder(int(prefix), i)}{FILE_NAME}"

    def _folder(self, prefix: int, i: int) -> str:
        return f"{self.prefix_name(prefix)}/datapoint_{i:0{self._dp_width}d}/camera/key_points/"

    def _prefix_of(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        # the largest p with p * files // prefixes <= i
        p = ((idx + 1) * self.prefix_count - 1) // self.files
        return np.asarray(p, dtype=np.int64)

    def _index(self, rel: str) -> int | None:
        """The index of the file named ``rel``, or ``None`` if the source holds no such file."""
        parts = rel.split("/")
        if len(parts) != 5 or parts[2:] != ["camera", "key_points", FILE_NAME]:
            return None
        dp = parts[1].removeprefix("datapoint_")
        if not dp.isdigit() or len(dp) != self._dp_width or int(dp) >= self.files:
            return None
        i = int(dp)
        return i if self.path(i) == rel else None

    # --- listing --------------------------------------------------------------------------

    def list(self, names: frozenset[str]) -> Iterable[Entry]:
        return self.listing(names).entries()

    def listing(self, names: frozenset[str]) -> Listing:
        return self.range_listing(0, self.files, names)

    def prefixes(self, names: frozenset[str]) -> tuple[str, ...]:
        """The top-level folders ``batch_0000`` ... (none without :data:`FILE_NAME`)."""
        if FILE_NAME not in names:
            return ()
        return tuple(self.prefix_name(p) for p in range(self.prefix_count))

    def prefix_listing(self, prefixes: Sequence[str], names: frozenset[str]) -> Listing:
        """The files under these top-level folders (of :meth:`prefixes`), one range
        listing per run of consecutive folders."""
        numbers = sorted({n for n in map(self._prefix_number, prefixes) if n is not None})
        runs: list[tuple[int, int]] = []
        for p in numbers:
            start, stop = self.prefix_bounds(p)
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], stop)
            else:
                runs.append((start, stop))
        parts = [self.range_listing(start, stop, names) for start, stop in runs]
        if not parts:
            return self.range_listing(0, 0, names)
        return parts[0] if len(parts) == 1 else Listing.concat(parts)

    def _prefix_number(self, name: str) -> int | None:
        digits = name.removeprefix("batch_")
        if len(digits) != self._prefix_width or not digits.isdigit():
            return None
        p = int(digits)
        return p if p < self.prefix_count else None

    def range_listing(
        self, start: int, stop: int, names: frozenset[str] = frozenset({FILE_NAME})
    ) -> Listing:
        """The listing of files ``[start, stop)``, in sorted order."""
        if FILE_NAME not in names:
            start = stop
        n = stop - start
        chunks = [
            self._folders(lo, min(lo + FOLDERS_PER_CHUNK, stop))
            for lo in range(start, stop, FOLDERS_PER_CHUNK)
        ]
        idx = np.arange(start, stop, dtype=np.int64)
        return Listing(
            pa.chunked_array(chunks, type=pa.large_binary()),
            np.arange(n, dtype=np.int32),  # one file per folder
            np.zeros(n, dtype=np.int32),
            (FILE_NAME,),
            np.full(n, len(self.template), dtype=np.int64),
            MTIME_BASE_NS + idx * 1000,
        )

    def _folders(self, lo: int, hi: int) -> pa.Array:
        """The folder paths of files ``[lo, hi)``, written digit by digit with numpy."""
        idx = np.arange(lo, hi, dtype=np.int64)
        prefix = self._prefix_of(idx)
        row = np.frombuffer(self._folder(0, 0).encode(), dtype=np.uint8)
        width = len(row)
        out = np.tile(row, (hi - lo, 1))
        at_prefix, at_dp = len("batch_"), len(self.prefix_name(0)) + len("/datapoint_")
        for column, values, digits in (
            (at_prefix, prefix, self._prefix_width),
            (at_dp, idx, self._dp_width),
        ):
            for k in range(digits):
                out[:, column + digits - 1 - k] = 48 + (values // 10**k) % 10
        offsets = np.arange(hi - lo + 1, dtype=np.int64) * width
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(out.reshape(-1))]
        return pa.Array.from_buffers(pa.large_binary(), hi - lo, buffers)

    # --- reading --------------------------------------------------------------------------

    def read(self, rel: str, max_bytes: int) -> bytes:
        if self._index(rel) is None:
            raise unreadable(rel, f"no such file in {self.location}")
        if len(self.template) > max_bytes:
            raise too_large(rel, len(self.template), max_bytes)
        return self.template

    def read_cached(self, rel: str, max_bytes: int) -> bytes | None:
        # always in memory: a failure is read() again, and reported, in a thread
        return self.template if self._index(rel) is not None else None
