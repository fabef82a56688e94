"""How many distinct datapoints and cameras a build compiled, without holding every datapoint.

A build reports the distinct datapoints and camera names of the files it compiled:
those it found, less any whose every file was rejected. Rejections are known only
at the end, when the listing has long been dropped, so per datapoint its number of
files must be kept somewhere. A hundred million datapoints at 16 bytes each would
be 1.6 GB of the coordinator's memory; :class:`Tally` writes them to a temporary
file instead (12 bytes a datapoint: a 64-bit hash of the name and a 32-bit count)
and reads it back, a chunk at a time, only when files were rejected.

Datapoints are counted per unit (top-level prefix): two units never share a
datapoint, except ``.`` (the camera folders lying at the top of the source), which
is counted once.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterable

import numpy as np

RECORD = np.dtype([("hash", "<u8"), ("files", "<u4")])
"""One datapoint in the temporary file."""
CHUNK_RECORDS = 1 << 20
"""Records read back at once (12 MiB)."""


def name_hash(name: str) -> int:
    """A datapoint's 64-bit key: Python's own string hash, fixed for the life of the
    process, which is all a tally needs (a collision, about one in 10^8 at a million
    datapoints, could count one datapoint too many)."""
    return hash(name) & 0xFFFF_FFFF_FFFF_FFFF


class Tally:
    """Landmark files per datapoint and per camera name, as units are listed.

    :meth:`add` each unit's files once; :meth:`distinct` at the end; then
    :meth:`close` (or use it as a context manager).
    """

    def __init__(self) -> None:
        self.cameras: Counter[str] = Counter()
        self._spill = tempfile.TemporaryFile(prefix="kpcompile-datapoints-")  # noqa: SIM115
        self._datapoints = 0
        self._top = 0  # files of datapoint "."

    def add(self, datapoints: Counter[str], cameras: Counter[str]) -> None:
        """One unit's files per datapoint and per camera name (printable names)."""
        self.cameras.update(cameras)
        self._top += datapoints.get(".", 0)  # camera folders at the top: in several units
        named = [(d, n) for d, n in datapoints.items() if d != "."]
        if not named:
            return
        records = np.empty(len(named), dtype=RECORD)
        records["hash"] = np.fromiter((name_hash(d) for d, _ in named), np.uint64, len(named))
        records["files"] = np.fromiter((n for _, n in named), np.uint32, len(named))
        self._spill.write(records.tobytes())
        self._datapoints += len(named)

    def distinct(self, excluded: Iterable[tuple[str, str]]) -> dict[str, int]:
        """Datapoints and camera names keeping a file once the files of ``excluded``
        (``(datapoint, camera)`` of each rejected file) are taken away."""
        gone_dp: Counter[str] = Counter()
        gone_cam: Counter[str] = Counter()
        for datapoint, camera in excluded:
            gone_dp[datapoint] += 1
            gone_cam[camera] += 1
        datapoints = self._datapoints + (self._top > 0)
        if self._top and gone_dp.pop(".", 0) >= self._top:
            datapoints -= 1
        if gone_dp:
            gone: Counter[int] = Counter()
            for d, n in gone_dp.items():
                gone[name_hash(d)] += n
            files = self._files_of(gone)
            datapoints -= sum(1 for h, n in files.items() if n <= gone[h])
        cameras = sum(1 for c, n in self.cameras.items() if n > gone_cam.get(c, 0))
        return {"datapoints": datapoints, "cameras": cameras}

    def _files_of(self, wanted: Iterable[int]) -> dict[int, int]:
        """The files of each datapoint hash of ``wanted`` (read back from the file)."""
        keys = np.fromiter(wanted, np.uint64)
        found: Counter[int] = Counter()
        self._spill.flush()
        self._spill.seek(0)
        while True:
            raw = self._spill.read(CHUNK_RECORDS * RECORD.itemsize)
            if not raw:
                break
            records = np.frombuffer(raw, dtype=RECORD)
            hit = records[np.isin(records["hash"], keys)]
            for h, n in zip(hit["hash"].tolist(), hit["files"].tolist(), strict=True):
                found[h] += n
        return dict(found)

    def close(self) -> None:
        self._spill.close()

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
