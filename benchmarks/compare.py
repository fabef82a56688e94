"""A/B guard: the working tree against a git ref, run in turn on the same files.

``make bench-compare BASE=main`` (or ``python -m benchmarks.compare --base main``):

1. installs BASE once into its own cached venv (``benchmarks/data/venvs/<sha>``),
   non-editable, with the versions of pyarrow, polars, numpy, ... pinned to the
   ones the project's ``.venv`` holds, so that only kpcompile differs;
2. runs BASE and the working tree in turn (A B, then B A, ...: neither side always
   runs first), on the 2,000-file build, the 20,000-file build, the +1% incremental
   build at 20,000 files, the listing alone and, as root, the cold build (page
   cache dropped before every run);
3. prints, per case and side, the medians of wall, CPU (user + sys of the process
   and every child it reaped) and sys seconds, and the median of the paired ratios
   (working tree / BASE) with the load average at the start of each case;
4. exits 1 when the working tree is more than ``--threshold`` (5%) slower on any
   case, and 3 when the machine was loaded (1-minute load above 1.0 at the start)
   unless ``--loaded`` says that is known: a loaded run proves nothing either way.

Results go to ``benchmarks/results/compare-<base>.json`` (not for a loaded run
unless ``--loaded``, which marks them as such).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DATA,
    ROOT,
    compile_bytecode,
    dataset,
    load_guard,
    loadavg,
    save,
    table,
)

VENVS = DATA / "venvs"
LISTING = r"""
import json, resource, sys, time
t0 = time.perf_counter(); c0 = resource.getrusage(resource.RUSAGE_SELF)
try:
    from kpcompile.ingest import open_source
    from kpcompile.ingest.discover import discover_files
    with open_source(sys.argv[1]) as src:
        n = len(discover_files(src)[0])
except ImportError:  # the layout before the ingest/ package
    from kpcompile.sources import discover
    n = len(discover(sys.argv[1]))
c1 = resource.getrusage(resource.RUSAGE_SELF)
import kpcompile
assert kpcompile.__file__.startswith(sys.argv[2]), (kpcompile.__file__, sys.argv[2])
user, sys_ = c1.ru_utime - c0.ru_utime, c1.ru_stime - c0.ru_stime
print(json.dumps({"files": n, "wall": time.perf_counter() - t0, "cpu": user + sys_, "sys": sys_}))
"""


@dataclass
class Sample:
    wall: float
    cpu: float
    sys: float


@dataclass
class Case:
    name: str
    load: float = 0.0
    base: list[Sample] = field(default_factory=list)
    head: list[Sample] = field(default_factory=list)

    def ratio(self) -> float:
        """Median of the paired wall-time ratios (head / base)."""
        pairs = zip(self.head, self.base, strict=False)
        return statistics.median(h.wall / b.wall for h, b in pairs)


def run(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[Sample, str]:
    """Run ``cmd``; its wall time and the CPU of it and its reaped children, and stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=tempfile.gettempdir(),  # not the project: `python -c` would import its kpcompile
    )
    out_b, err_b = b"", b""
    # read both pipes to the end, then reap with wait4 for the rusage of the tree
    out_b, err_b = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        msg = f"{' '.join(cmd)} failed ({proc.returncode}):\n{err_b.decode()[-3000:]}"
        raise SystemExit(msg)
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_stime), out_b.decode()


def base_venv(ref: str) -> tuple[Path, str]:
    """The cached venv holding BASE (installed once per commit)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if sha.returncode != 0:
        raise SystemExit(f"--base {ref!r}: not a commit of this repository")
    commit = sha.stdout.strip()
    venv = VENVS / commit[:12]
    if (venv / ".complete").exists():
        return venv, commit
    print(f"installing {ref} ({commit[:12]}) into {venv.relative_to(ROOT)} (once)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="kpbase-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        # the same versions of every shared dependency as the working tree's venv
        freeze = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        pins = [ln for ln in freeze.splitlines() if "==" in ln and not ln.startswith("kpcompile")]
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        # pandas: the working tree's venv has it, and pyarrow imports it when present
        subprocess.run([*pip, "-c", str(constraints), str(src), "pandas"], check=True)
    (venv / ".complete").touch()
    return venv, commit


def incremental_tree(files: int) -> tuple[Path, Path]:
    """A tree of ``files`` (hard links to the benchmark dataset) and 1% more files beside it."""
    full = dataset(files)
    tree, extra = DATA / f"inc-{files}", DATA / f"inc-{files}-extra"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(full, tree, copy_function=os.link)
        (tree / ".complete").touch()
    if not (extra / ".complete").exists():
        shutil.rmtree(extra, ignore_errors=True)
        extra.mkdir(parents=True)
        datapoints = sorted(p for p in full.iterdir() if p.is_dir())
        cameras = max(1, sum(1 for _ in datapoints[0].iterdir()))
        add = max(1, files // 100 // cameras)
        last = len(datapoints)
        for k, dp in enumerate(datapoints[:add]):
            shutil.copytree(dp, extra / f"datapoint_{last + 1 + k:05d}")
        (extra / ".complete").touch()
    for dp in [p for p in extra.iterdir() if p.is_dir()]:  # a run cut short left them in
        if (tree / dp.name).exists():
            shutil.rmtree(tree / dp.name)
    return tree, extra


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Sides:
    """How to run each side: BASE's venv and the working tree's."""

    def __init__(self, base: Path) -> None:
        here = Path(sys.executable).parent
        self.bin = {"base": base / "bin", "head": here}

    def build(self, side: str, src: Path, out: Path, workers: int) -> list[str]:
        kp = str(self.bin[side] / "kpcompile")
        return [kp, "build", str(src), str(out), "--workers", str(workers), "--no-progress"]

    def listing(self, side: str, src: Path) -> list[str]:
        prefix = str(ROOT / "kpcompile") if side == "head" else str(self.bin[side].parent)
        return [str(self.bin[side] / "python"), "-c", LISTING, str(src), prefix]


def paired(
    case: Case, repeat: int, once: Callable[[str], Sample], *, prepare: Callable[[], None] | None
) -> Case:
    """``repeat`` pairs, alternating which side runs first."""
    case.load = loadavg()
    for k in range(repeat):
        order = ("base", "head") if k % 2 == 0 else ("head", "base")
        for side in order:
            if prepare is not None:
                prepare()
            getattr(case, side).append(once(side))
        h, b = case.head[-1], case.base[-1]
        print(
            f"  {case.name} #{k + 1}: base {b.wall:.2f} s, head {h.wall:.2f} s "
            f"({h.wall / b.wall:.2f}x), load {loadavg():.2f}",
            flush=True,
        )
    return case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", default="main", help="git ref to compare with [main]")
    ap.add_argument("--repeat", type=int, default=5, help="pairs per small case [5]")
    ap.add_argument("--repeat-large", type=int, default=3, help="pairs per 20,000-file case [3]")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--small", type=int, default=2000, help="files of the small build")
    ap.add_argument("--large", type=int, default=20000, help="files of the large builds")
    ap.add_argument(
        "--cases",
        nargs="+",
        default=["build-small", "build-large", "incremental", "listing", "cold"],
        choices=["build-small", "build-large", "incremental", "listing", "cold"],
    )
    ap.add_argument("--threshold", type=float, default=0.05, help="slowdown that fails [0.05]")
    ap.add_argument("--loaded", action="store_true", help="run and record on a loaded machine")
    args = ap.parse_args(argv)
    start_load = load_guard(args.loaded)
    venv, commit = base_venv(args.base)
    compile_bytecode()
    sides = Sides(venv)
    work = Path(tempfile.mkdtemp(prefix="kpcompare-", dir=DATA))
    cases: list[Case] = []
    try:
        for name in args.cases:
            case = _case(name, args, sides, work)
            if case is not None:
                cases.append(case)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _report(cases, args, commit, start_load)


def _case(name: str, args: argparse.Namespace, sides: Sides, work: Path) -> Case | None:
    out = work / "out"

    def fresh() -> None:
        shutil.rmtree(out, ignore_errors=True)

    if name in ("build-small", "build-large"):
        files = args.small if name == "build-small" else args.large
        src = dataset(files)
        _warm(src)
        repeat = args.repeat if name == "build-small" else args.repeat_large
        label = f"build {files:,} files, --workers {args.workers}"
        return paired(
            Case(label),
            repeat,
            lambda side: run(sides.build(side, src, out, args.workers))[0],
            prepare=fresh,
        )
    if name == "incremental":
        return _incremental(args, sides, work)
    if name == "listing":
        src = dataset(args.large)
        _warm(src)

        def listing(side: str) -> Sample:
            got = json.loads(run(sides.listing(side, src))[1])
            return Sample(got["wall"], got["cpu"], got["sys"])

        return paired(
            Case(f"listing {args.large:,} files, warm"), args.repeat, listing, prepare=None
        )
    if os.geteuid() != 0:
        print("cold: skipped (dropping the page cache needs root)")
        return None
    src = dataset(args.large)

    def cold() -> None:
        fresh()
        drop_caches()

    return paired(
        Case(f"cold build {args.large:,} files, --workers {args.workers}"),
        args.repeat_large,
        lambda side: run(sides.build(side, src, out, args.workers))[0],
        prepare=cold,
    )


def _incremental(args: argparse.Namespace, sides: Sides, work: Path) -> Case:
    tree, extra = incremental_tree(args.large)
    added = [p for p in extra.iterdir() if p.is_dir()]
    pristine = {side: work / f"inc-{side}-before" for side in ("base", "head")}
    outs = {side: work / f"inc-{side}" for side in ("base", "head")}
    _warm(tree)
    _warm(extra)
    for side in ("base", "head"):  # each side's own full build of the tree, once
        run(sides.build(side, tree, outs[side], args.workers))
        shutil.copytree(outs[side], pristine[side], symlinks=True)

    def once(side: str) -> Sample:
        shutil.rmtree(outs[side])
        shutil.copytree(pristine[side], outs[side], symlinks=True)
        for dp in added:
            dp.rename(tree / dp.name)
        try:
            return run(sides.build(side, tree, outs[side], args.workers))[0]
        finally:
            for dp in added:
                (tree / dp.name).rename(dp)

    label = f"incremental +{len(added) * 2:,} files at {args.large:,}"
    return paired(Case(label), args.repeat, once, prepare=None)


def _warm(src: Path) -> None:
    """Read every file once, so that whichever side runs first does not pay for the disk."""
    for p in src.rglob("*.json"):
        p.read_bytes()


def _report(cases: list[Case], args: argparse.Namespace, commit: str, start_load: float) -> int:
    rows = []
    slower = []
    for c in cases:
        med = {
            side: Sample(*(statistics.median(getattr(s, f) for s in getattr(c, side)) for f in
                           ("wall", "cpu", "sys")))
            for side in ("base", "head")
        }  # fmt: skip
        ratio = c.ratio()
        if ratio > 1 + args.threshold:
            slower.append(c.name)
        b, h = med["base"], med["head"]
        rows.append(
            [c.name, b.wall, b.cpu, b.sys, h.wall, h.cpu, h.sys, f"{ratio:.2f}x", f"{c.load:.2f}"]
        )
    headers = [
        "case",
        "base wall",
        "base CPU",
        "base sys",
        "head wall",
        "head CPU",
        "head sys",
        "head/base",
        "load",
    ]
    print(f"\nbase {args.base} ({commit[:12]}) vs working tree; medians, seconds")
    print(table(headers, rows))
    loaded = start_load > 1.0
    payload: dict[str, Any] = {
        "base": args.base,
        "base_commit": commit,
        "head_commit": _head(),
        "load_average_1min_at_start": start_load,
        "loaded": loaded,
        "threshold": args.threshold,
        "cases": [asdict(c) | {"ratio": c.ratio()} for c in cases],
    }
    if not loaded or args.loaded:
        save(f"compare-{_slug(args.base)}", payload)
    if slower:
        print(f"SLOWER than {args.base} by more than {args.threshold:.0%}: {', '.join(slower)}")
        return 1
    print(f"no case slower than {args.base} by more than {args.threshold:.0%}")
    return 0


def _head() -> str:
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "kpcompile"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return sha.stdout.strip() + ("+changes" if dirty else "")


def _slug(ref: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in ref)


if __name__ == "__main__":
    sys.exit(main())
