"""Shared benchmark helpers: data, timed subprocesses with whole-tree memory, results.

Every measurement runs a command as its own process (process start included) and
samples the proportional set size (PSS) of the process and all its children every
20 ms, so "peak memory" is what all processes use together, shared pages counted once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable
KPCOMPILE = str(Path(sys.executable).with_name("kpcompile"))
MAX_LOAD = 1.0
"""1-minute load average above which a benchmark's numbers are not recorded."""

_START_LOAD = os.getloadavg()[0]  # this module is imported as a benchmark starts
_loaded_ok = False


def loadavg() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


def load_guard(loaded: bool) -> float:
    """The load when the benchmark started; warns when it is too high to trust.

    ``loaded`` (``--loaded``): record the results anyway, marked as loaded.
    """
    global _loaded_ok
    _loaded_ok = loaded
    if _START_LOAD > MAX_LOAD:
        what = "recorded as loaded" if loaded else "NOT recorded (pass --loaded to keep them)"
        print(
            f"warning: 1-minute load {_START_LOAD:.2f} > {MAX_LOAD} at start: other work shares "
            f"the cores, numbers are not comparable; results {what}",
            file=sys.stderr,
        )
    return _START_LOAD


def arguments(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a benchmark's arguments, adding ``--loaded`` (see :func:`load_guard`)."""
    ap.add_argument(
        "--loaded",
        action="store_true",
        help=f"record results even though the load was above {MAX_LOAD} at start (marked loaded)",
    )
    args = ap.parse_args(argv)
    load_guard(args.loaded)
    return args


@dataclass
class Run:
    """One timed command."""

    name: str
    seconds: float
    peak_mib: float
    returncode: int


def compile_bytecode() -> None:
    """Write kpcompile's ``.pyc`` files, as a regular (not editable) ``pip install`` does.

    An editable install run with ``PYTHONDONTWRITEBYTECODE`` (set on this project's
    machine) compiles every kpcompile module from source in every process, a cost
    no installed kpcompile pays (measured: 0.1-0.2 s per build); its peers run from
    installed packages that have their bytecode.
    """
    import compileall

    compileall.compile_dir(ROOT / "kpcompile", quiet=1)


def dataset(files: int, *, cameras: int = 2, layout: str = "faces") -> Path:
    """A synthesized dataset of ``files`` landmark files, made once and kept."""
    path = DATA / f"{layout}-{files}"
    marker = path / ".complete"
    if not marker.exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(
            [
                KPCOMPILE,
                "synth",
                str(path),
                "--datapoints",
                str(files // cameras),
                "--cameras",
                str(cameras),
                "--layout",
                layout,
                "--no-extras",
                "--seed",
                "1",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        marker.touch()
    return path


def _pss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def timed(
    name: str, cmd: list[str], *, env: dict[str, str] | None = None, memory: bool = True
) -> Run:
    """Run ``cmd``, return wall time and peak PSS of its process tree.

    ``memory=False``: no sampling (peak 0). Reading every process's
    ``smaps_rollup`` each 20 ms costs CPU that the measured tool then lacks on a
    2-core machine (seen: a 2,000-file build 1.43 s sampled, 0.97 s not), so speed
    is timed unsampled and memory measured in a run of its own.
    """
    if not memory:
        start = time.perf_counter()
        environ = {**os.environ, **(env or {})}
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = done.stderr.decode()[-2000:]
            sys.stderr.write(f"{name} failed ({done.returncode}):\n{tail}\n")
        return Run(name, seconds, 0.0, done.returncode)
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    ps = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _pss(ps))
            stop.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    t.join()
    if proc.returncode != 0:
        sys.stderr.write(f"{name} failed ({proc.returncode}):\n{err.decode()[-2000:]}\n")
    return Run(name, seconds, peak / 2**20, proc.returncode)


def best(name: str, cmd: list[str], repeat: int, *, before: Any = None) -> Run:
    """Fastest of ``repeat`` unsampled runs, with the peak memory of one more, sampled."""
    runs = []
    for _ in range(repeat):
        if before is not None:
            before()
        runs.append(timed(name, cmd, memory=False))
    if before is not None:
        before()
    peak = timed(name, cmd).peak_mib
    first = fastest(runs)
    return Run(first.name, first.seconds, peak, first.returncode)


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Fewest seconds of ``repeat`` calls of ``fn`` in this process."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def fastest(runs: list[Run]) -> Run:
    """The fastest run, with the largest peak memory seen in any of them (see :func:`timed`)."""
    first = min(runs, key=lambda r: r.seconds)
    return Run(first.name, first.seconds, max(r.peak_mib for r in runs), first.returncode)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json``, unless the machine was loaded at the start
    (then only with ``--loaded``, and marked so); the path either way. Says which it did."""
    path = RESULTS / f"{name}.json"
    loaded = _START_LOAD > MAX_LOAD
    print(f"load average at start {_START_LOAD:.2f}, now {loadavg():.2f}")
    if loaded and not _loaded_ok:
        print(f"{path.relative_to(ROOT)} not written: the machine was loaded (see above)")
        return path
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load_average_1min_at_start": round(_START_LOAD, 2),
        "loaded": loaded,
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=lambda o: asdict(o)) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if j and _num(c) else c.ljust(w) for c, w in zip(r, widths, strict=True)
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _num(s: str) -> bool:
    return s.replace(",", "").replace(".", "").replace("x", "").replace("-", "").isdigit()
