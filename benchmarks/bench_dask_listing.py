"""Listing on the cluster (issue 19.2): a local build against a Dask build listed by the workers.

Usage: python -m benchmarks.bench_dask_listing [--files 20000] [--cameras 10] [--workers 2]
[--no-kill]

A local S3 server (moto, its own process) holds ``--files`` synthesized legacy landmark
files, ``--cameras`` per top-level prefix (``environment_NNNNN/camera_K/dense_keypoints.json``):
2,000 prefixes at the defaults, each listed by its own request. (One file per prefix
is the costliest case, but moto scans every key of the bucket for each listing
request: 20,000 prefixes would measure moto.) A real ``dask
scheduler`` and ``--workers`` ``dask worker`` processes (one thread each, no nanny) run
on loopback. Timed in this process, one run each (the coordinator is this process):

- the listing and planning alone (``plan_only``), listed here, then by the workers;
- the whole build, executor ``local`` (``--workers`` processes), then ``dask``;
- unless ``--no-kill``: the Dask build again on a fresh cluster, one worker SIGKILLed
  as soon as the scheduler shows it running a listing task.

Prints each time with the 1-minute load average when it ended, and whether every
Parquet file of the Dask snapshots is byte-identical to the local build's. Writes
``benchmarks/results/dask_listing.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kpcompile
from benchmarks.bench_s3 import BUCKET, _free_port, moto_server, upload
from benchmarks.common import ROOT, arguments, dataset, loadavg, save

DASK = Path(sys.executable).with_name("dask")
URL = f"s3://{BUCKET}/dataset"


@contextlib.contextmanager
def cluster(workers: int) -> Iterator[tuple[str, dict[str, int]]]:
    """A scheduler and ``workers`` worker processes on loopback: its address and the
    workers' pids by address; all killed on the way out."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    procs = [subprocess.Popen(scheduler, env=env, cwd=ROOT, **quiet)]
    try:
        for i in range(workers):
            cmd = [DASK, "worker", address, "--name", f"w{i}", "--nthreads", "1", "--no-nanny"]
            cmd += ["--no-dashboard", "--host", "127.0.0.1"]
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, **quiet))
        with Client(address, timeout="60s") as observer:
            observer.wait_for_workers(workers, timeout=120)
            info = observer.scheduler_info()["workers"]
            pid = {f"w{i}": p.pid for i, p in enumerate(procs[1:])}
            yield address, {a: pid[w["name"]] for a, w in info.items()}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def kill_while_listing(address: str, pids: dict[str, int], done: threading.Event) -> list[str]:
    """In a thread: SIGKILL the first worker the scheduler shows running a listing task;
    the list gets ``[worker address, task key, seconds after the start]``."""
    from distributed import Client

    killed: list[str] = []
    start = time.perf_counter()

    def watch() -> None:
        with Client(address, timeout="60s") as observer:
            while not done.is_set():
                for worker, keys in observer.processing().items():
                    listing = [str(k) for k in keys if str(k).startswith("list_prefixes-")]
                    if listing and worker in pids:
                        os.kill(pids[worker], signal.SIGKILL)
                        killed.extend([worker, listing[0], f"{time.perf_counter() - start:.2f}"])
                        return
                time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def timed(what: str, fn: Callable[[], kpcompile.BuildResult]) -> dict[str, Any]:
    t = time.perf_counter()
    r = fn()
    seconds = time.perf_counter() - t
    load = loadavg()
    print(f"{what:<44} {seconds:8.2f} s   load {load:.2f}   files {r.discovered:,}", flush=True)
    return {"seconds": round(seconds, 3), "load_1min": round(load, 2), "result": r}


def parquet(r: kpcompile.BuildResult) -> dict[str, bytes]:
    root = Path(r.path)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    w = args.workers
    runs: dict[str, dict[str, Any]] = {}

    def build(name: str, **opts: Any) -> Callable[[], kpcompile.BuildResult]:
        return lambda: kpcompile.build(URL, work / name, progress=False, **opts)

    runs["list_local"] = timed("listing + planning, local", build("pl", plan_only=True))
    with cluster(w) as (address, _):
        dask = {"executor": "dask", "scheduler": address}
        runs["list_dask"] = timed("listing + planning, dask", build("pd", plan_only=True, **dask))
        runs["build_local"] = timed(f"build, local executor ({w} workers)", build("l", workers=w))
        runs["build_dask"] = timed(f"build, dask ({w} workers)", build("d", **dask))
    if not args.no_kill:
        with cluster(w) as (address, pids):
            done = threading.Event()
            killed = kill_while_listing(address, pids, done)
            dask = {"executor": "dask", "scheduler": address}
            what = "build, dask, a worker SIGKILLed listing"
            runs["build_dask_killed"] = timed(what, build("k", **dask))
            done.set()
        print(f"killed: {killed or 'nobody (no listing task seen)'}")
        runs["build_dask_killed"]["killed"] = killed
    reference = parquet(runs["build_local"]["result"])
    for name in ("build_dask", "build_dask_killed"):
        if name in runs:
            same = parquet(runs[name]["result"]) == reference
            runs[name]["identical"] = same
            print(f"{name}: {len(reference)} Parquet files, byte-identical to local: {same}")
    for r in runs.values():
        r.pop("result")
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--cameras", type=int, default=10, help="files per top-level prefix")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-kill", action="store_true", help="skip the run with a killed worker")
    args = arguments(ap)
    src = dataset(args.files, cameras=args.cameras, layout="legacy")
    work = Path(tempfile.mkdtemp(prefix="kpbench-dasklist-", dir=ROOT / "benchmarks" / "data"))
    try:
        with moto_server() as port:
            t = time.perf_counter()
            n = upload(src, port)
            os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
            print(f"{n:,} files uploaded in {time.perf_counter() - t:.1f} s, load {loadavg():.2f}")
            runs = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {"files": n, "prefixes": n // args.cameras, "workers": args.workers, "runs": runs}
    save("dask_listing", payload)


if __name__ == "__main__":
    main()
