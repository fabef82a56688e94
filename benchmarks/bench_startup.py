"""Start-up: what a build of a tiny dataset costs, beside the interpreter and pyarrow floors.

Usage: python -m benchmarks.bench_startup [--files 10] [--repeat 12]

Runs, alternated, best of ``--repeat``: ``python -c pass``, ``python -c "import
pyarrow.parquet"`` (the floor: a build writes Parquet) and ``kpcompile build`` of a
``--files`` dataset with 1 and 2 workers. Wall time and CPU time (user + system of
the process tree, steadier than wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import KPCOMPILE, PYTHON, ROOT, arguments, compile_bytecode, save, table


def _run(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=12)
    args = arguments(ap)
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="kpstartup-", dir=ROOT / "benchmarks" / "data"))
    src, out = work / "dataset", work / "out"
    subprocess.run(
        [KPCOMPILE, "synth", str(src), "-n", str(args.files // 2), "-c", "2", "--no-extras"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    build = [KPCOMPILE, "build", str(src), str(out), "--no-progress", "--workers"]
    commands = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "import pyarrow.parquet": [PYTHON, "-c", "import pyarrow.parquet"],
        "build -j 1": [*build, "1"],
        "build -j 2": [*build, "2"],
    }
    seen: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
    try:
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                shutil.rmtree(out, ignore_errors=True)
                seen[name].append(_run(cmd))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {
        name: {"wall_best": min(w for w, _ in v), "cpu_best": min(c for _, c in v)}
        for name, v in seen.items()
    }
    floor = results["import pyarrow.parquet"]
    rows = [
        [name, r["wall_best"], r["cpu_best"], r["cpu_best"] - floor["cpu_best"]]
        for name, r in results.items()
    ]
    print(table(["command", "wall s (best)", "CPU s (best)", "CPU above pyarrow"], rows))
    load = os.getloadavg()[0]
    print(f"{args.files} files, best of {args.repeat}, load average {load:.1f}")
    save(
        "startup",
        {"files": args.files, "repeat": args.repeat, "load_average_1min": load, **results},
    )


if __name__ == "__main__":
    main()
