"""Cold cache: a build whose files are on disk, not in memory, against two floors.

Usage: python -m benchmarks.bench_cold [--files 20000] [--workers 2] [--repeat 2]

Before each cold run the page cache is dropped (``sync; echo 3 >
/proc/sys/vm/drop_caches``, which needs root; without it the runs are not cold and the
script says so). Alternating, best of ``--repeat``:

- **kpcompile cold**: ``kpcompile build SOURCE OUT --workers 2`` (read-ahead on, the
  default ``--read-ahead 16``), and the same with ``--read-ahead 0`` (a worker reads a
  file only when it parses it) to show what overlapping reads with parsing buys;
- **floor 1, reading cold**: ``find SOURCE -name '*.json' -print0 | xargs -0 -P8 -n 64
  cat > /dev/null``: every file read once, 8 readers in parallel, nothing parsed;
- **floor 2, the same build warm**: the build again right after a cold one.

The target is kpcompile cold ≤ 1.2x the larger floor. Writes
``benchmarks/results/cold.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import KPCOMPILE, ROOT, Run, arguments, dataset, save, table, timed

DROP = Path("/proc/sys/vm/drop_caches")


def drop_caches() -> str | None:
    """Drop the page cache; the reason it could not be, or None."""
    try:
        os.sync()
        DROP.write_text("3\n")
    except OSError as exc:
        return f"cannot drop the page cache ({exc.strerror or exc}): runs are not cold"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = arguments(ap)
    src = dataset(args.files)
    size = sum(p.stat().st_size for p in src.rglob("*.json"))
    work = Path(tempfile.mkdtemp(prefix="kpbench-cold-", dir=ROOT / "benchmarks" / "data"))
    out = work / "out"
    build = [KPCOMPILE, "build", str(src), str(out), "--workers", str(args.workers)]
    build.append("--no-progress")
    read_all = f"find {src} -name '*.json' -print0 | xargs -0 -P8 -n 64 cat > /dev/null"
    runs: dict[str, list[Run]] = {"cold": [], "cold_no_read_ahead": [], "read": [], "warm": []}
    problem = None
    load_before = os.getloadavg()[0]

    def run(name: str, cmd: list[str], *, cold: bool) -> None:
        nonlocal problem
        shutil.rmtree(out, ignore_errors=True)
        if cold:
            problem = drop_caches() or problem
        runs[name].append(timed(name, cmd))

    try:
        for _ in range(args.repeat):
            run("cold", build, cold=True)
            run("warm", build, cold=False)
            run("read", ["bash", "-c", read_all], cold=True)
            run("cold_no_read_ahead", [*build, "--read-ahead", "0"], cold=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]
    failed = [r for rs in runs.values() for r in rs if r.returncode != 0]
    if failed:
        msg = f"{failed[0].name} failed (exit {failed[0].returncode})"
        raise SystemExit(msg)
    best = {k: min(r.seconds for r in rs) for k, rs in runs.items()}
    floor = max(best["read"], best["warm"])
    result: dict[str, Any] = {
        "files": args.files,
        "source_bytes": size,
        "workers": args.workers,
        "repeat": args.repeat,
        "seconds": best,
        "all_seconds": {k: [r.seconds for r in rs] for k, rs in runs.items()},
        "peak_mib": {k: max(r.peak_mib for r in rs) for k, rs in runs.items()},
        "ratio_cold_over_larger_floor": best["cold"] / floor,
        "ratio_cold_no_read_ahead_over_larger_floor": best["cold_no_read_ahead"] / floor,
        "page_cache_dropped": problem is None,
        "note": problem,
        "target": "cold <= 1.2x the larger floor",
        "load_average": [load_before, load_after],
    }
    names = {
        "cold": "kpcompile, cold",
        "cold_no_read_ahead": "kpcompile --read-ahead 0, cold",
        "read": "floor: read every file cold, 8 readers",
        "warm": "floor: the same build, warm",
    }
    rows = [[names[k], best[k], f"{best[k] / floor:.2f}x"] for k in names]
    print(table(["run", "seconds", "vs larger floor"], rows))
    print(
        f"{args.files:,} files, {size / 1e9:.2f} GB; page cache "
        f"{'dropped before each cold run' if problem is None else 'NOT dropped: ' + problem}; "
        f"load average {load_before:.1f} -> {load_after:.1f} (2 cores shared)"
    )
    save("cold", result)
    subprocess.run(["sync"], check=False)


if __name__ == "__main__":
    main()
