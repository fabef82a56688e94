"""Face features: faces per second of the math (pose fit, aligned landmarks) and end to end.

Builds a synthesized Faces snapshot (kept in benchmarks/data/ for the next run), reads
its landmarks once with ``kpcompile.tensors``, and times:

* ``math``: :func:`kpcompile.query.features.face_features` on the ``(N, 468, 3)``
  landmarks, in float32 and float64 (the snapshot's files repeated up to ``--faces``,
  so the timing covers many chunks; the work per face does not depend on its values);
* ``features``: ``kpcompile.features(out)`` on the snapshot, reading included.

Best of ``--repeat`` runs; the 1-minute load average is printed beside every number.
The target is 100,000 faces/s for the math on 2 cores.

Run: ``python -m benchmarks.bench_features [--files 8000] [--faces 200000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import shutil
from functools import partial
from typing import Any

import numpy as np

import kpcompile
from benchmarks.common import DATA, arguments, best_of, dataset, loadavg, save, table
from kpcompile.query.features import face_features

TARGET = 100_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=8000, help="files in the snapshot")
    ap.add_argument("--faces", type=int, default=200_000, help="faces in the math timing")
    ap.add_argument("--repeat", type=int, default=5)
    args = arguments(ap)
    src = dataset(args.files)
    out = DATA / f"features-{args.files}"
    shutil.rmtree(out, ignore_errors=True)
    kpcompile.build(src, out, workers=2)
    rows: list[list[Any]] = []
    try:
        for dtype in ("float32", "float64"):
            xyz = kpcompile.tensors(out, dtype=dtype).xyz
            reps = -(-args.faces // len(xyz))
            many = np.ascontiguousarray(np.tile(xyz, (reps, 1, 1))[: args.faces])
            seconds = best_of(partial(face_features, many), args.repeat)
            rows.append([f"math {dtype}", len(many), seconds, len(many) / seconds, loadavg()])
            del many
        n = len(kpcompile.tensors(out).index)
        seconds = best_of(lambda: kpcompile.features(out), args.repeat)
        rows.append(["features(out), float32", n, seconds, n / seconds, loadavg()])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(table(["what", "faces", "seconds", "faces/s", "load 1 min"], rows))
    met = rows[0][3] >= TARGET
    print(f"target {TARGET:,} faces/s for the math: {'met' if met else 'missed'}")
    keys = ["what", "faces", "seconds", "faces_per_s", "load_average_1min"]
    save(
        "features",
        {
            "files": args.files,
            "target_faces_per_s": TARGET,
            "target_met": met,
            "rows": [dict(zip(keys, r, strict=True)) for r in rows],
        },
    )


if __name__ == "__main__":
    main()
