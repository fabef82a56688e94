"""Report benchmark: `kpcompile report` on a 10M-landmark snapshot, beside two peers.

The dataset is the one the target names: ``kpcompile synth DIR --datapoints 10000
--cameras 2`` (Faces, camera metadata included: 20,000 landmark files, 9,360,000
landmarks, about 9 GB of JSON), built with ``kpcompile build DIR OUT --sets``.
Each command runs as its own process (interpreter start and imports included),
best of ``--repeat``:

- **kpcompile report**: ``kpcompile report OUT -o report.html``;
- **full scan**: read every column of the keypoints table into memory with polars
  (``kpcompile.scan(OUT).collect()``), the cost of touching every landmark once;
- **polars helpers**: the report's per-landmark numbers (statistics per camera,
  visibility per camera and landmark, pixels outside the image, 3D consistency,
  the reprojection error with both camera models) computed with kpcompile's
  polars helpers and plain polars group-bys, the way a notebook would, no page
  written (``benchmarks/peers/polars_report.py``).

Synthesizing takes about half an hour and building a few minutes, so both are
kept in ``benchmarks/data/report-<files>/`` (git-ignored) for the next run;
delete that folder to start again. Results: ``benchmarks/results/report.json``.

Run: ``python -m benchmarks.bench_report [--datapoints 10000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import kpcompile
from benchmarks.common import DATA, KPCOMPILE, PYTHON, Run, arguments, best, save, table

HERE = Path(__file__).resolve().parent


def prepare(datapoints: int, cameras: int = 2) -> tuple[Path, Path]:
    """The dataset and its --sets snapshot, made once and kept."""
    base = DATA / f"report-{datapoints * cameras}"
    source, out = base / "dataset", base / "compiled"
    if not (source / ".complete").exists():
        shutil.rmtree(source, ignore_errors=True)
        subprocess.run(
            [KPCOMPILE, "synth", str(source), "--datapoints", str(datapoints),
             "--cameras", str(cameras)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        (source / ".complete").touch()
        (base / ".built").unlink(missing_ok=True)
    built = base / ".built"  # beside the output: OUT holds only what kpcompile writes
    if not built.exists():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(
            [KPCOMPILE, "build", str(source), str(out), "--sets"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        built.touch()
    return source, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datapoints", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = arguments(ap)
    _source, out = prepare(args.datapoints)
    info = kpcompile.info(out)
    page = DATA / f"report-{info.files}" / "report.html"
    runs: list[Run] = [
        best("kpcompile report", [KPCOMPILE, "report", str(out), "-o", str(page)], args.repeat),
        best(
            "full scan (polars)",
            [PYTHON, "-c", f"import kpcompile; kpcompile.scan({str(out)!r}).collect()"],
            args.repeat,
        ),
        best(
            "polars helpers",
            [PYTHON, str(HERE / "peers" / "polars_report.py"), str(out)],
            args.repeat,
        ),
    ]
    report_s = runs[0].seconds
    rows = [
        [r.name, r.seconds, r.peak_mib, f"{r.seconds / report_s:.2f}x", r.returncode] for r in runs
    ]
    print(
        f"{info.files:,} files, {info.rows:,} landmarks, "
        f"snapshot {info.output_bytes / 1e6:,.0f} MB; "
        f"report {page.stat().st_size / 1e6:.1f} MB; best of {args.repeat}\n"
    )
    print(table(["command", "seconds", "peak MiB", "time / report", "exit"], rows))
    save(
        "report",
        {
            "files": info.files,
            "landmarks": info.rows,
            "snapshot_bytes": info.output_bytes,
            "report_bytes": page.stat().st_size,
            "repeat": args.repeat,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
