"""Query benchmarks: kpcompile (polars) beside DuckDB on the same Parquet files and raw JSON.

Four queries on one snapshot: visibility rate per landmark, per-camera mean of one
region (lips), one datapoint's lookup, and the tensor export. Each is answered
three ways (kpcompile helpers over the snapshot, DuckDB over the same Parquet
files, plain Python + orjson over the source JSON), the answers are checked to be
equal, and the times are written to ``benchmarks/results/query.json``.

Run: ``python -m benchmarks.bench_query [--files 21400] [--keep]`` (default
size: 21,400 files = 10,015,200 landmarks; the data goes to benchmarks/data/,
which is git-ignored, and is deleted afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import polars as pl

import kpcompile
from kpcompile.query.scan import files as table_uris
from kpcompile.synth import synth

HERE = Path(__file__).resolve().parent
LIPS = kpcompile.region_ids("lips")


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def _raw_files(source: Path, out: Path) -> list[tuple[str, str, Path]]:
    files = kpcompile.read(out, "files").sort("datapoint", "camera")
    return [(d, c, source / p) for d, c, p in files.select("datapoint", "camera", "path").rows()]


def _raw_landmarks(path: Path) -> list[dict[str, Any]]:
    doc = orjson.loads(path.read_bytes())
    dense = doc["face"]["dense"]
    return [dense[str(i)] for i in range(468)]


def raw_visibility(files: list[tuple[str, str, Path]]) -> np.ndarray:
    seen = np.zeros(468)
    visible = np.zeros(468)
    for _d, _c, path in files:
        flags = [lm.get("is_visible") for lm in _raw_landmarks(path)]
        known = np.array([f is not None for f in flags])
        seen += known
        visible += np.array([f in (True, "true") for f in flags])
    return visible / seen


def raw_region_mean(files: list[tuple[str, str, Path]]) -> dict[str, np.ndarray]:
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for _d, cam, path in files:
        lms = _raw_landmarks(path)
        pts = np.array([[lms[i]["global_3d"][a] for a in "xyz"] for i in LIPS])
        sums[cam] = sums.get(cam, 0) + pts.sum(axis=0)
        counts[cam] = counts.get(cam, 0) + len(LIPS)
    return {c: sums[c] / counts[c] for c in sorted(sums)}


def raw_lookup(files: list[tuple[str, str, Path]], datapoint: str) -> np.ndarray:
    # Raw JSON knows where a datapoint's files are: no scan, just read them.
    out = []
    for d, _c, path in files:
        if d == datapoint:
            lms = _raw_landmarks(path)
            out.append([[lm["global_3d"][a] for a in "xyz"] for lm in lms])
    return np.array(out)


def raw_tensors(files: list[tuple[str, str, Path]]) -> np.ndarray:
    xyz = np.empty((len(files), 468, 3))
    for n, (_d, _c, path) in enumerate(files):
        xyz[n] = [[lm["global_3d"][a] for a in "xyz"] for lm in _raw_landmarks(path)]
    return xyz


def run(n_files: int, data: Path, keep: bool, repeat: int, workers: int | None) -> dict[str, Any]:
    source, out = data / "dataset", data / "compiled"
    shutil.rmtree(data, ignore_errors=True)
    cameras = 2
    t0 = time.perf_counter()
    synth(source, datapoints=n_files // cameras, cameras=cameras, layout="faces", extras=False)
    synth_s = time.perf_counter() - t0
    built = kpcompile.build(source, out, workers=workers)
    files = _raw_files(source, out)
    landmarks = built.rows
    kp_files = table_uris(out, "keypoints")
    con = duckdb.connect()
    con.execute(
        "CREATE VIEW keypoints AS SELECT * FROM read_parquet("
        f"{kp_files!r}, hive_partitioning = false)"
    )
    target = files[len(files) // 2][0]
    lips_sql = ", ".join(map(str, LIPS))
    results: dict[str, Any] = {}

    def record(
        name: str,
        polars_fn: Callable[[], Any],
        duck_fn: Callable[[], Any],
        raw_fn: Callable[[], Any],
        check: Callable[[Any, Any, Any], None],
    ) -> None:
        tp, rp = _best(polars_fn, repeat)
        td, rd = _best(duck_fn, repeat)
        tr, rr = _best(raw_fn, 1)
        check(rp, rd, rr)
        results[name] = {
            "kpcompile_s": round(tp, 4),
            "duckdb_s": round(td, 4),
            "raw_json_s": round(tr, 4),
            "duckdb_over_kpcompile": round(td / tp, 2),
            "raw_json_over_kpcompile": round(tr / tp, 1),
        }

    def check_vis(p: pl.DataFrame, d: np.ndarray, r: np.ndarray) -> None:
        assert np.allclose(p["visible_rate"].to_numpy(), d) and np.allclose(d, r)

    record(
        "visibility_rate_per_landmark",
        lambda: kpcompile.visibility_rate(kpcompile.scan(out)).collect(),
        lambda: con.execute(
            "SELECT kp_id, avg(visible::INT) FROM keypoints GROUP BY kp_id ORDER BY kp_id"
        ).fetchnumpy()["avg(CAST(visible AS INTEGER))"],
        lambda: raw_visibility(files),
        check_vis,
    )

    def check_region(p: pl.DataFrame, d: Any, r: dict[str, np.ndarray]) -> None:
        pm = p.select("mx", "my", "mz").to_numpy()
        assert np.allclose(pm, np.array(d)[:, 1:].astype(float))
        assert np.allclose(pm, np.array([r[c] for c in sorted(r)]))

    record(
        "per_camera_mean_of_lips",
        lambda: (
            kpcompile.filter_region(kpcompile.scan(out), "lips")
            .group_by("camera")
            .agg(
                pl.col("x3").mean().alias("mx"),
                pl.col("y3").mean().alias("my"),
                pl.col("z3").mean().alias("mz"),
            )
            .sort("camera")
            .collect()
        ),
        lambda: con.execute(
            f"SELECT camera, avg(x3), avg(y3), avg(z3) FROM keypoints WHERE kp_id IN ({lips_sql}) "
            "GROUP BY camera ORDER BY camera"
        ).fetchall(),
        lambda: raw_region_mean(files),
        check_region,
    )

    def check_lookup(p: pl.DataFrame, d: np.ndarray, r: np.ndarray) -> None:
        xyz = p.select("x3", "y3", "z3").to_numpy().reshape(-1, 468, 3)
        assert np.array_equal(xyz, d.reshape(-1, 468, 3)) and np.array_equal(xyz, r)

    record(
        "one_datapoint_lookup",
        lambda: (
            kpcompile.scan(out)
            .filter(pl.col("datapoint") == target)
            .sort("camera", "kp_id")
            .collect()
        ),
        lambda: con.execute(
            "SELECT x3, y3, z3 FROM keypoints WHERE datapoint = ? ORDER BY camera, kp_id", [target]
        ).fetchnumpy(),
        lambda: raw_lookup(files, target),
        lambda p, d, r: check_lookup(p, np.stack([d["x3"], d["y3"], d["z3"]], axis=-1), r),
    )

    def duck_tensors() -> np.ndarray:
        cols = con.execute(
            "SELECT x3, y3, z3 FROM keypoints ORDER BY datapoint, camera, kp_id"
        ).fetchnumpy()
        return np.stack([cols["x3"], cols["y3"], cols["z3"]], axis=-1).reshape(-1, 468, 3)

    def check_tensors(p: Any, d: np.ndarray, r: np.ndarray) -> None:
        assert np.array_equal(p.xyz, d) and np.array_equal(p.xyz, r)

    record(
        "tensor_export",
        lambda: kpcompile.tensors(kpcompile.scan(out)),
        duck_tensors,
        lambda: raw_tensors(files),
        check_tensors,
    )
    report = {
        "benchmark": "query",
        "files": len(files),
        "landmarks": landmarks,
        "source_bytes": kpcompile.info(out).source_bytes,
        "snapshot_bytes": kpcompile.info(out).output_bytes,
        "synth_seconds": round(synth_s, 1),
        "build_seconds": round(built.seconds, 1),
        "repeat": repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "polars": pl.__version__,
            "duckdb": duckdb.__version__,
        },
        "queries": results,
    }
    if not keep:
        shutil.rmtree(data, ignore_errors=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=21_400, help="landmark files (468 rows each)")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "query")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "query.json")
    ap.add_argument("--repeat", type=int, default=3, help="best of N for kpcompile and DuckDB")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the synthesized data")
    args = ap.parse_args()
    report = run(args.files, args.data, args.keep, args.repeat, args.workers)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['landmarks']:,} landmarks in {report['files']:,} files")
    print(
        f"{'query':32} {'kpcompile':>10} {'duckdb':>10} {'raw json':>10} "
        f"{'duck/kp':>8} {'json/kp':>8}"
    )
    for name, r in report["queries"].items():
        print(
            f"{name:32} {r['kpcompile_s']:>9.3f}s {r['duckdb_s']:>9.3f}s {r['raw_json_s']:>9.2f}s "
            f"{r['duckdb_over_kpcompile']:>7.2f}x {r['raw_json_over_kpcompile']:>7.1f}x"
        )
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
