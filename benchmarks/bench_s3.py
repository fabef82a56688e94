"""Object storage: a build from s3:// against fetching the same objects with 64 concurrent requests.

Usage: python -m benchmarks.bench_s3 [--files 600] [--delays 0 20] [--workers 2] [--repeat 3]

A local S3 server (moto, its own process) holds ``--files`` synthesized landmark files.
Every client talks to it through :mod:`benchmarks.proxy` (its own process, loopback),
which adds a fixed delay to every request/response turn: 0 ms, then 20 ms, as a
bucket in another building would. For each delay, alternating, best of ``--repeat``:

- **kpcompile**: ``kpcompile build s3://bench/dataset OUT --workers 2`` (a local OUT;
  process start, listing and writing included);
- **the floor**: a Python process that lists the prefix and fetches every object with
  s3fs ``cat(keys, batch_size=64)``: 64 requests in flight over a pool of 64
  connections, one ``GET`` per object (``max_concurrency=1``: no ``HEAD`` first).

Prints files/s and the ratio kpcompile / floor; at 0 ms also a build of the same files
from a local folder. Also, per delay, the listing alone: kpcompile's (s3fs, one
concurrent listing per top-level prefix) against pyarrow's ``S3FileSystem`` recursive
``get_file_info`` (C++, paged), alternating, best of ``--repeat``.
Writes ``benchmarks/results/s3.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import KPCOMPILE, PYTHON, ROOT, Run, arguments, dataset, save, table, timed

BIN = Path(sys.executable).parent
BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FLOOR = """
import sys, s3fs
fs = s3fs.S3FileSystem(config_kwargs={"max_pool_connections": 64})
keys = [k for k in fs.find(sys.argv[1]) if k.endswith(".json")]
data = fs.cat(keys, batch_size=64, max_concurrency=1)
assert len(data) == len(keys) == int(sys.argv[2]), (len(data), len(keys))
print(sum(len(v) for v in data.values()))
"""


LISTINGS = """
import os, sys, time
kind, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "pyarrow":
    import pyarrow.fs as pafs
    host = os.environ["AWS_ENDPOINT_URL"].split("://", 1)[1]
    fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing")
    t = time.perf_counter()
    infos = fs.get_file_info(pafs.FileSelector(url.split("://", 1)[1], recursive=True))
    found = sum(1 for i in infos if i.path.endswith(".json"))
else:
    if kind == "s3fs":
        os.environ["KPCOMPILE_S3_LISTING"] = "fsspec"
    from kpcompile.ingest import open_source
    from kpcompile.ingest.discover import LANDMARK_NAMES
    import pyarrow.fs, s3fs  # imports are not what is measured
    t = time.perf_counter()
    with open_source(url) as src:
        found = len(src.listing(LANDMARK_NAMES))
assert found == n, (found, n)
print(time.perf_counter() - t)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    msg = f"nothing listens on 127.0.0.1:{port} after {timeout:g} s"
    raise SystemExit(msg)


@contextlib.contextmanager
def _process(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, text=True, **kw)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_server() -> Iterator[int]:
    """A moto S3 server on 127.0.0.1, in its own process; yields its port."""
    port = _free_port()
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with _process(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        _wait_for(port)
        yield port


@contextlib.contextmanager
def proxy(upstream: int, delay_ms: float) -> Iterator[int]:
    """:mod:`benchmarks.proxy` in its own process; yields the port it listens on."""
    cmd = [PYTHON, "-m", "benchmarks.proxy", str(upstream), "--delay-ms", str(delay_ms)]
    with _process(cmd, stdout=subprocess.PIPE, cwd=ROOT) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        _wait_for(port)
        yield port


def upload(src: Path, port: int) -> int:
    """Put the dataset's landmark files into s3://bench/dataset; how many."""
    import fsspec

    os.environ.update(CREDENTIALS)
    fs = fsspec.filesystem("s3", endpoint_url=f"http://127.0.0.1:{port}", skip_instance_cache=True)
    fs.mkdir(BUCKET)
    files = sorted(src.rglob("*.json"))
    fs.put([str(p) for p in files], [f"{BUCKET}/dataset/{p.relative_to(src)}" for p in files])
    return len(files)


def measure(files: int, delay: float, port: int, workers: int, repeat: int) -> dict[str, Any]:
    env = {**CREDENTIALS}
    work = Path(tempfile.mkdtemp(prefix="kpbench-s3-", dir=ROOT / "benchmarks" / "data"))
    runs: dict[str, list[Run]] = {"kpcompile": [], "floor": []}
    try:
        with proxy(port, delay) as via:
            env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{via}"
            for i in range(repeat):
                out = work / f"out-{i}"
                build = [KPCOMPILE, "build", f"s3://{BUCKET}/dataset", str(out)]
                build += ["--workers", str(workers), "--no-progress"]
                runs["kpcompile"].append(timed("kpcompile", build, env=env))
                floor = [PYTHON, "-c", FLOOR, f"{BUCKET}/dataset", str(files)]
                runs["floor"].append(timed("floor", floor, env=env))
            listing = {
                kind: [_listing(kind, files, env) for _ in range(repeat)]
                for kind in ("kpcompile", "s3fs", "pyarrow")
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, rs in runs.items():
        failed = [r for r in rs if r.returncode != 0]
        if failed:
            msg = f"{name} failed at {delay:g} ms (exit {failed[0].returncode})"
            raise SystemExit(msg)
    kp = min(runs["kpcompile"], key=lambda r: r.seconds)
    fl = min(runs["floor"], key=lambda r: r.seconds)
    return {
        "delay_ms": delay,
        "files": files,
        "kpcompile_s": kp.seconds,
        "kpcompile_all_s": [r.seconds for r in runs["kpcompile"]],
        "floor_s": fl.seconds,
        "floor_all_s": [r.seconds for r in runs["floor"]],
        "kpcompile_files_per_s": files / kp.seconds,
        "floor_files_per_s": files / fl.seconds,
        "ratio": kp.seconds / fl.seconds,
        "listing_s": {kind: min(ts) for kind, ts in listing.items()},
        "listing_all_s": listing,
    }


def _listing(kind: str, files: int, env: dict[str, str]) -> float:
    """Seconds one process takes to list the dataset (``kind``: kpcompile or pyarrow)."""
    cmd = [PYTHON, "-c", LISTINGS, kind, f"s3://{BUCKET}/dataset", str(files)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env}, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} listing failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip())


def local_build(src: Path, workers: int, repeat: int) -> float:
    """Best time of the same build from the local folder (page cache warm)."""
    out = Path(tempfile.mkdtemp(prefix="kpbench-local-"))
    try:
        times = []
        for i in range(repeat):
            cmd = [KPCOMPILE, "build", str(src), str(out / str(i)), "--workers", str(workers)]
            times.append(timed("local", [*cmd, "--no-progress"]).seconds)
        return min(times)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--delays", type=float, nargs="+", default=[0.0, 20.0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = arguments(ap)
    src = dataset(args.files)
    load_before = os.getloadavg()
    with moto_server() as port:
        n = upload(src, port)
        results = [measure(n, d, port, args.workers, args.repeat) for d in args.delays]
    local = local_build(src, args.workers, args.repeat)
    load_after = os.getloadavg()
    rows = [
        [
            f"{r['delay_ms']:g} ms",
            r["kpcompile_s"],
            r["kpcompile_files_per_s"],
            r["floor_s"],
            r["floor_files_per_s"],
            f"{r['ratio']:.2f}x",
        ]
        for r in results
    ]
    print(
        table(
            ["delay", "kpcompile s", "files/s", "floor s", "floor files/s", "kpcompile/floor"],
            rows,
        )
    )
    print(f"{n:,} files; the same build from a local folder: {local:.2f} s")
    for r in results:
        ls = r["listing_s"]
        print(
            f"listing at {r['delay_ms']:g} ms (imports excluded): "
            f"kpcompile {ls['kpcompile']:.3f} s "
            f"(pyarrow's client), kpcompile with s3fs {ls['s3fs']:.3f} s, one pyarrow "
            f"recursive listing {ls['pyarrow']:.3f} s"
        )
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (2 cores shared)")
    save(
        "s3",
        {
            "workers": args.workers,
            "repeat": args.repeat,
            "results": results,
            "local_folder_s": local,
            "target": "ratio <= 1.5 at 20 ms",
            "load_average": [load_before[0], load_after[0]],
        },
    )


if __name__ == "__main__":
    main()
