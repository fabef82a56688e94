"""Query benchmarks: kpcompile's helpers beside DuckDB on the same Parquet files (and raw JSON).

Seven queries on one snapshot, each answered by kpcompile's helper and by DuckDB over
the same Parquet files (the snapshot's ``kpcompile.files``), in the same run, best of
N; the answers are checked equal. The first four are also answered by plain Python
+ orjson over the source JSON (one pass). Results go to
``benchmarks/results/query.json``, with the machine's load average before and after.

Run: ``python -m benchmarks.bench_query [--files 20000] [--repeat 5] [--compression lz4] [--keep]``
(default: 20,000 files = 9,360,000 landmarks built with zstd; the synthesized dataset is
kept in benchmarks/data/ for the next run, the compiled snapshot is deleted unless
``--keep``). A build with another codec writes ``query-<codec>.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import polars as pl

import kpcompile
from benchmarks.common import DATA, arguments, dataset, save
from kpcompile.options import COMPRESSIONS

LIPS = kpcompile.region_ids("lips")
LIPS_SQL = ", ".join(map(str, LIPS))
FLOATS = ("x3", "y3", "z3", "px", "py")


@dataclass
class Query:
    """One question, asked of kpcompile and of DuckDB; ``check`` compares the answers."""

    name: str
    label: str
    kpcompile: Callable[[], Any]
    duckdb: Callable[[], Any]
    check: Callable[[Any, Any], None]
    raw: Callable[[], Any] | None = None
    check_raw: Callable[[Any, Any], None] | None = None


@dataclass
class Timing:
    """Best wall and CPU seconds of one engine over the runs, and its last answer."""

    wall: float = float("inf")
    cpu: float = float("inf")
    result: Any = None

    def run(self, fn: Callable[[], Any]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.result = fn()
        self.wall = min(self.wall, time.perf_counter() - wall)
        self.cpu = min(self.cpu, time.process_time() - cpu)


def _best_pair(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[Timing, Timing]:
    """Best times of ``a`` and ``b`` over ``repeat`` alternating runs, and their results.

    Alternating (a, b, a, b, ...) makes both see the same machine: on a shared machine
    other processes' load comes and goes, and best-of-N of one after the other would
    compare different moments. CPU time (every thread of this process; both engines
    run in it) is recorded beside wall time: other processes' load moves it less.
    """
    ta, tb = Timing(), Timing()
    for _ in range(repeat):
        ta.run(a)
        tb.run(b)
    return ta, tb


def connect(out: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with a ``keypoints`` view over the snapshot's files (the documented recipe)."""
    con = duckdb.connect()
    files = kpcompile.files(out)
    con.execute(
        f"CREATE VIEW keypoints AS SELECT * FROM read_parquet({files!r}, hive_partitioning = false)"
    )
    return con


def queries(out: Path, con: duckdb.DuckDBPyConnection) -> list[Query]:
    """The benchmark's queries over snapshot ``out`` (DuckDB on the same files via ``con``)."""
    target = kpcompile.read(out, "files")["datapoint"].sort()[kpcompile.info(out).compiled // 2]
    return [
        _visibility(out, con),
        _lips(out, con),
        _lookup(out, con, target),
        _tensors(out, con),
        _sql(out, con),
        _stats(out, con),
        _nme(out, con),
    ]


def _visibility(out: Path, con: duckdb.DuckDBPyConnection) -> Query:
    def check(p: pl.DataFrame, d: np.ndarray) -> None:
        assert np.allclose(p["visible_rate"].to_numpy(), d)

    return Query(
        "visibility_rate_per_landmark",
        "visibility rate per landmark (`visibility_rate`)",
        lambda: kpcompile.visibility_rate(kpcompile.scan(out)).collect(),
        lambda: con.execute(
            "SELECT kp_id, avg(visible::INT) AS r FROM keypoints GROUP BY kp_id ORDER BY kp_id"
        ).fetchnumpy()["r"],
        check,
    )


def _lips(out: Path, con: duckdb.DuckDBPyConnection) -> Query:
    def check(p: pl.DataFrame, d: list[tuple[Any, ...]]) -> None:
        assert np.allclose(p.select("x3", "y3", "z3").to_numpy(), np.array([r[1:] for r in d]))

    return Query(
        "per_camera_mean_of_lips",
        "mean x3, y3, z3 of the lips per camera (`filter_region` + group_by)",
        lambda: (
            kpcompile.filter_region(kpcompile.scan(out), "lips")
            .group_by("camera")
            .agg(pl.col("x3", "y3", "z3").mean())
            .sort("camera")
            .collect()
        ),
        lambda: con.execute(
            f"SELECT camera, avg(x3), avg(y3), avg(z3) FROM keypoints WHERE kp_id IN ({LIPS_SQL}) "
            "GROUP BY camera ORDER BY camera"
        ).fetchall(),
        check,
    )


def _lookup(out: Path, con: duckdb.DuckDBPyConnection, target: str) -> Query:
    def check(p: pl.DataFrame, d: dict[str, np.ndarray]) -> None:
        assert np.array_equal(p.select("x3", "y3", "z3").to_numpy(), np.stack(list(d.values()), 1))

    return Query(
        "one_datapoint_lookup",
        "one datapoint's rows",
        lambda: (
            kpcompile.scan(out)
            .filter(pl.col("datapoint") == target)
            .sort("camera", "kp_id")
            .collect()
        ),
        lambda: con.execute(
            "SELECT x3, y3, z3 FROM keypoints WHERE datapoint = ? ORDER BY camera, kp_id", [target]
        ).fetchnumpy(),
        check,
    )


def _tensors(out: Path, con: duckdb.DuckDBPyConnection) -> Query:
    def duck() -> np.ndarray:
        cols = con.execute(
            "SELECT x3, y3, z3 FROM keypoints ORDER BY datapoint, camera, kp_id"
        ).fetchnumpy()
        return np.stack([cols["x3"], cols["y3"], cols["z3"]], axis=-1).reshape(-1, 468, 3)

    def check(p: kpcompile.Tensors, d: np.ndarray) -> None:
        assert np.array_equal(p.xyz, d)

    return Query(
        "tensor_export",
        "`tensors(scan(out))` (xyz, pixels, visible, index) vs `ORDER BY datapoint, camera, "
        "kp_id` fetchnumpy of x3, y3, z3",
        lambda: kpcompile.tensors(kpcompile.scan(out)),
        duck,
        check,
    )


def _sql(out: Path, con: duckdb.DuckDBPyConnection) -> Query:
    query = "SELECT camera, count(*) AS n, avg(z3) AS z FROM keypoints GROUP BY camera"

    def check(p: pl.DataFrame, d: list[tuple[Any, ...]]) -> None:
        got = sorted(p.rows())
        assert [r[:2] for r in got] == [r[:2] for r in sorted(d)]
        assert np.allclose([r[2] for r in got], [r[2] for r in sorted(d)])

    return Query(
        "sql_group_by_camera",
        f'`kpcompile.sql(out, "{query}")`',
        lambda: kpcompile.sql(out, query),
        lambda: con.execute(query).fetchall(),
        check,
    )


def _stats(out: Path, con: duckdb.DuckDBPyConnection) -> Query:
    cols = ", ".join(f"avg({c}) AS mean_{c}, stddev_samp({c}) AS std_{c}" for c in FLOATS)

    def check(p: pl.DataFrame, d: dict[str, np.ndarray]) -> None:
        for c in FLOATS:
            assert np.allclose(p[f"mean_{c}"].to_numpy(), d[f"mean_{c}"], rtol=1e-9)
            assert np.allclose(p[f"std_{c}"].to_numpy(), d[f"std_{c}"], rtol=1e-6)
        assert np.allclose(p["visible_rate"].to_numpy(), d["visible_rate"])

    return Query(
        "landmark_stats",
        "per-landmark statistics (`landmark_stats`: n, mean and std of 5 columns, visibility)",
        lambda: kpcompile.landmark_stats(kpcompile.scan(out)).collect(),
        lambda: con.execute(
            f"SELECT kp_id, count(*) AS n, {cols}, count(visible) AS visible_n, "
            "avg(visible::INT) AS visible_rate FROM keypoints GROUP BY kp_id ORDER BY kp_id"
        ).fetchnumpy(),
        check,
    )


def _nme(out: Path, con: duckdb.DuckDBPyConnection) -> Query:
    """NME of predictions (the truth plus noise), given to each engine as a long table."""
    truth = kpcompile.read(out).select("datapoint", "camera", "kp_id", "px", "py")
    noise = np.random.default_rng(0).normal(0.0, 2.0, (truth.height, 2))
    pred = truth.with_columns(pl.col("px") + noise[:, 0], pl.col("py") + noise[:, 1])
    pred_arrow = pred.to_arrow()
    con.register("predictions", pred_arrow)
    eye = "max({c}) FILTER (WHERE kp_id = 33) - max({c}) FILTER (WHERE kp_id = 263)"
    sql = f"""
        WITH err AS (
            SELECT p.datapoint, p.camera, avg(sqrt((p.px - t.px)^2 + (p.py - t.py)^2)) AS e
            FROM predictions p JOIN keypoints t USING (datapoint, camera, kp_id)
            GROUP BY p.datapoint, p.camera),
        eyes AS (
            SELECT datapoint, camera,
                sqrt(({eye.format(c="px")})^2 + ({eye.format(c="py")})^2) AS norm
            FROM keypoints WHERE kp_id IN (33, 263) GROUP BY datapoint, camera)
        SELECT datapoint, camera, e / norm AS nme FROM err JOIN eyes USING (datapoint, camera)
        ORDER BY datapoint, camera"""

    def check(p: pl.DataFrame, d: dict[str, np.ndarray]) -> None:
        assert np.allclose(p["nme"].to_numpy(), d["nme"], rtol=1e-9)

    return Query(
        "nme",
        "NME of 2D predictions (`nme`, inter-ocular; predictions a long frame)",
        lambda: kpcompile.nme(pred, kpcompile.scan(out), normalizer="inter_ocular").collect(),
        lambda: con.execute(sql).fetchnumpy(),
        check,
    )


def with_raw(qs: list[Query], source: Path, out: Path) -> None:
    """Add the plain Python + orjson answers over the source JSON to the first four queries."""
    files = kpcompile.read(out, "files").sort("datapoint", "camera")
    raw = [(d, c, source / p) for d, c, p in files.select("datapoint", "camera", "path").rows()]
    target = raw[len(raw) // 2][0]
    by_name = {q.name: q for q in qs}
    by_name["visibility_rate_per_landmark"].raw = lambda: raw_visibility(raw)
    by_name["visibility_rate_per_landmark"].check_raw = lambda p, r: _close(
        p["visible_rate"].to_numpy(), r
    )
    by_name["per_camera_mean_of_lips"].raw = lambda: raw_region_mean(raw)
    by_name["per_camera_mean_of_lips"].check_raw = lambda p, r: _close(
        p.select("x3", "y3", "z3").to_numpy(), np.array([r[c] for c in sorted(r)])
    )
    by_name["one_datapoint_lookup"].raw = lambda: raw_lookup(raw, target)
    by_name["tensor_export"].raw = lambda: raw_tensors(raw)
    by_name["tensor_export"].check_raw = lambda p, r: _close(p.xyz, r)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert np.allclose(a, b)


def _raw_landmarks(path: Path) -> list[dict[str, Any]]:
    dense = orjson.loads(path.read_bytes())["face"]["dense"]
    return [dense[str(i)] for i in range(468)]


def raw_visibility(files: list[tuple[str, str, Path]]) -> np.ndarray:
    seen, visible = np.zeros(468), np.zeros(468)
    for _d, _c, path in files:
        flags = [lm.get("is_visible") for lm in _raw_landmarks(path)]
        seen += np.array([f is not None for f in flags])
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
    out = [
        [[lm["global_3d"][a] for a in "xyz"] for lm in _raw_landmarks(path)]
        for d, _c, path in files
        if d == datapoint
    ]
    return np.array(out)


def raw_tensors(files: list[tuple[str, str, Path]]) -> np.ndarray:
    xyz = np.empty((len(files), 468, 3))
    for n, (_d, _c, path) in enumerate(files):
        xyz[n] = [[lm["global_3d"][a] for a in "xyz"] for lm in _raw_landmarks(path)]
    return xyz


def measure(qs: list[Query], repeat: int) -> dict[str, dict[str, Any]]:
    """Best-of-``repeat`` times of both engines (and one raw JSON pass where there is one)."""
    results: dict[str, dict[str, Any]] = {}
    for q in qs:
        k, d = _best_pair(q.kpcompile, q.duckdb, repeat)
        q.check(k.result, d.result)
        tk, td, rk = k.wall, d.wall, k.result
        r: dict[str, Any] = {
            "label": q.label,
            "kpcompile_s": round(tk, 4),
            "duckdb_s": round(td, 4),
            "duckdb_over_kpcompile": round(td / tk, 2),
            "kpcompile_cpu_s": round(k.cpu, 4),
            "duckdb_cpu_s": round(d.cpu, 4),
            "cpu_duckdb_over_kpcompile": round(d.cpu / k.cpu, 2),
        }
        if q.raw is not None:
            t = time.perf_counter()
            rr = q.raw()
            tr = time.perf_counter() - t
            if q.check_raw is not None:
                q.check_raw(rk, rr)
            r |= {"raw_json_s": round(tr, 2), "raw_json_over_kpcompile": round(tr / tk, 1)}
        results[q.name] = r
        print(
            f"  {q.name:29} kpcompile {tk * 1e3:7.1f} ms  DuckDB {td * 1e3:7.1f} ms  "
            f"{td / tk:.2f}x | CPU {k.cpu * 1e3:7.1f} / {d.cpu * 1e3:7.1f} ms  "
            f"{d.cpu / k.cpu:.2f}x"
        )
    return results


def run(
    n_files: int, keep: bool, repeat: int, workers: int | None, raw: bool, compression: str
) -> dict[str, Any]:
    source = dataset(n_files)
    out = DATA / "query-compiled"
    shutil.rmtree(out, ignore_errors=True)
    built = kpcompile.build(source, out, workers=workers, compression=compression)
    con = connect(out)
    qs = queries(out, con)
    if raw:
        with_raw(qs, source, out)
    load_before = os.getloadavg()
    results = measure(qs, repeat)
    info = kpcompile.info(out)
    report = {
        "files": info.compiled,
        "landmarks": info.rows,
        "source_bytes": info.source_bytes,
        "snapshot_bytes": info.output_bytes,
        "build_seconds": round(built.seconds, 1),
        "compression": compression,
        "repeat": repeat,
        "versions": {"polars": pl.__version__, "duckdb": duckdb.__version__},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "queries": results,
    }
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000, help="landmark files (468 rows each)")
    ap.add_argument("--repeat", type=int, default=5, help="best of N for kpcompile and DuckDB")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-raw", action="store_true", help="skip the raw JSON answers")
    ap.add_argument("--keep", action="store_true", help="keep the compiled snapshot")
    ap.add_argument(
        "--compression",
        default="zstd",
        choices=COMPRESSIONS,
        help="the build's codec; other than zstd, results go to query-<codec>.json",
    )
    args = arguments(ap)
    report = run(
        args.files, args.keep, args.repeat, args.workers, not args.no_raw, args.compression
    )
    save("query" if args.compression == "zstd" else f"query-{args.compression}", report)
    print(f"{report['landmarks']:,} landmarks in {report['files']:,} files")


if __name__ == "__main__":
    main()
