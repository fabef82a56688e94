"""Compile speed, memory and size against DuckDB, a pandas script and the orjson limit.

Usage: python -m benchmarks.bench_build [--sizes 2000 20000] [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.common import (
    KPCOMPILE,
    PYTHON,
    ROOT,
    Run,
    arguments,
    best,
    compile_bytecode,
    dataset,
    fastest,
    save,
    table,
    timed,
)

PEERS = ROOT / "benchmarks" / "peers"
SAMPLES = ROOT.parent / "shared" / "datagen-samples"


def measure(files: int, workers: int, repeat: int, with_pandas: bool) -> dict[str, Any]:
    src = dataset(files)
    # Every tool reads the files from the page cache: read them all once first, or
    # whichever runs first pays for the disk (seen: 10.9 s cold vs 5.4 s warm, 20,000 files).
    src_bytes = sum(len(p.read_bytes()) for p in src.rglob("*.json"))
    work = Path(tempfile.mkdtemp(prefix="kpbench-", dir=ROOT / "benchmarks" / "data"))
    out = work / "out"

    def fresh() -> None:
        shutil.rmtree(out, ignore_errors=True)

    try:
        runs: dict[str, Run] = {}
        kp_cmd = [
            KPCOMPILE,
            "build",
            str(src),
            str(out),
            "--workers",
            str(workers),
            "--no-progress",
        ]
        duck_cmd = [PYTHON, str(PEERS / "duckdb_build.py"), str(src), str(out), str(workers)]
        # alternated, so both see the same machine (others' load changes by the minute)
        kp_runs: list[Run] = []
        duck_runs: list[Run] = []
        for k in range(repeat + 1):
            memory = k == repeat  # the last pair: memory, sampled (see timed)
            fresh()
            kp_runs.append(timed("kpcompile", kp_cmd, memory=memory))
            kp_rows = (
                pl.scan_parquet(str(out / "snapshots" / "*" / "keypoints" / "*" / "*.parquet"))
                .select(pl.len())
                .collect()
                .item()
            )
            out_bytes = sum(p.stat().st_size for p in (out / "snapshots").rglob("*.parquet"))
            fresh()
            duck_runs.append(timed("duckdb", duck_cmd, memory=memory))
        runs["kpcompile"], runs["duckdb"] = _timing(kp_runs), _timing(duck_runs)
        load = os.getloadavg()[0]
        duck_rows = (
            pl.scan_parquet(str(out / "*" / "*.parquet"), hive_partitioning=False)
            .select(pl.len())
            .collect()
            .item()
        )
        report = work / "limit.txt"
        runs["orjson_limit"] = best(
            "orjson_limit",
            [PYTHON, str(PEERS / "orjson_limit.py"), str(src), str(workers), str(report)],
            repeat,
        )
        parse_only = float(report.read_text()) / workers
        if with_pandas:
            fresh()
            runs["pandas"] = timed(
                "pandas", [PYTHON, str(PEERS / "pandas_build.py"), str(src), str(out)]
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if duck_rows != kp_rows:
        msg = f"peers disagree: kpcompile {kp_rows} rows, duckdb {duck_rows}"
        raise SystemExit(msg)
    kp = runs["kpcompile"]
    result: dict[str, Any] = {
        "files": files,
        "landmarks": kp_rows,
        "source_bytes": src_bytes,
        "output_bytes": out_bytes,
        "runs": {k: vars(v) for k, v in runs.items()},
        "load_average_1min": load,
        "all_seconds": {
            "kpcompile": [r.seconds for r in kp_runs[:-1]],
            "duckdb": [r.seconds for r in duck_runs[:-1]],
        },
        "orjson_parse_only_seconds": parse_only,
        "ratios": {
            "duckdb_over_kpcompile": runs["duckdb"].seconds / kp.seconds,
            "kpcompile_over_orjson_limit": kp.seconds / runs["orjson_limit"].seconds,
            "kpcompile_over_orjson_parse_only": kp.seconds / parse_only,
        },
    }
    if "pandas" in runs:
        result["ratios"]["pandas_over_kpcompile"] = runs["pandas"].seconds / kp.seconds
    return result


def _timing(runs: list[Run]) -> Run:
    """The fastest unsampled run, with the peak memory of the sampled one (the last)."""
    first = fastest(runs[:-1])
    return Run(first.name, first.seconds, runs[-1].peak_mib, first.returncode)


def samples_size() -> dict[str, Any] | None:
    """Source JSON bytes over snapshot Parquet bytes on the real exports (all sets counted)."""
    if not SAMPLES.is_dir():
        return None
    out = Path(tempfile.mkdtemp(prefix="kpsamples-"))
    try:
        r = timed("samples", [KPCOMPILE, "build", str(SAMPLES), str(out / "o"), "--no-progress"])
        manifest = json.loads(next((out / "o" / "snapshots").glob("*/manifest.json")).read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    src = manifest["source"]["bytes"]
    kp = manifest["tables"]["keypoints"]["bytes"]
    return {
        "returncode": r.returncode,
        "source_bytes": src,
        "keypoints_bytes": kp,
        "output_bytes": manifest["output_bytes"],
        "ratio_keypoints": src / kp,
        "ratio_all_tables": src / manifest["output_bytes"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pandas", action="store_true")
    args = arguments(ap)
    compile_bytecode()
    results = [
        measure(n, args.workers, args.repeat if n <= 5000 else 3, not args.no_pandas)
        for n in args.sizes
    ]
    size = samples_size()
    rows = []
    for r in results:
        for name, run in r["runs"].items():
            ratio = run["seconds"] / r["runs"]["kpcompile"]["seconds"]
            rows.append(
                [
                    r["files"],
                    r["landmarks"],
                    name,
                    run["seconds"],
                    r["landmarks"] / run["seconds"] / 1e6,
                    run["peak_mib"],
                    f"{ratio:.2f}x",
                ]
            )
    print(
        table(
            [
                "files",
                "landmarks",
                "tool",
                "seconds",
                "M landmarks/s",
                "peak MiB",
                "time vs kpcompile",
            ],
            rows,
        )
    )
    for r in results:
        print(
            f"{r['files']:,} files: orjson parse alone {r['orjson_parse_only_seconds']:.2f} s per "
            f"worker; kpcompile/limit (e2e) {r['ratios']['kpcompile_over_orjson_limit']:.2f}x, "
            f"kpcompile/parse-only {r['ratios']['kpcompile_over_orjson_parse_only']:.2f}x; "
            f"JSON/Parquet size {r['source_bytes'] / r['output_bytes']:.1f}x"
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = b["runs"]["kpcompile"]["peak_mib"] / a["runs"]["kpcompile"]["peak_mib"] - 1
        per_file = [r["runs"]["kpcompile"]["seconds"] / r["files"] * 1e6 for r in (a, b)]
        print(
            f"kpcompile peak memory growth {a['files']:,} -> {b['files']:,} files: {growth:+.0%}; "
            f"time per file {per_file[0]:.0f} us -> {per_file[1]:.0f} us"
        )
    if size:
        print(
            f"real samples: {size['source_bytes']:,} JSON bytes -> {size['keypoints_bytes']:,} "
            f"keypoints bytes ({size['ratio_keypoints']:.1f}x smaller; "
            f"{size['ratio_all_tables']:.1f}x with files and errors tables)"
        )
    save("build", {"workers": args.workers, "results": results, "samples": size})


if __name__ == "__main__":
    main()
