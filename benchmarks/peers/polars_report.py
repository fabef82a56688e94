"""Peer of `kpcompile report`: its per-landmark numbers with kpcompile's polars helpers.

What a notebook would run to get the same numbers without the report: statistics
per camera, visibility per camera and landmark, pixels outside the image (a join
with the cameras table), 3D consistency across cameras (``inconsistent_3d``) and
the reprojection error with both camera models (``reprojection_error``). No
page, no pictures: only the numbers.

Usage: python benchmarks/peers/polars_report.py OUT
"""

from __future__ import annotations

import sys

import polars as pl

import kpcompile

COORDS = ("x3", "y3", "z3", "px", "py")


def main() -> None:
    out = sys.argv[1]
    kp = kpcompile.scan(out)
    sizes = kpcompile.scan(out, "cameras").select("datapoint", "camera", "width", "height")
    outside = (pl.col("px") < 0) | (pl.col("px") > pl.col("height"))
    outside = outside | (pl.col("py") < 0) | (pl.col("py") > pl.col("width"))
    pl.collect_all(
        [
            kp.group_by("camera").agg(
                pl.len(),
                *(
                    getattr(pl.col(c), f)().alias(f"{c}_{f}")
                    for c in COORDS
                    for f in ("min", "mean", "std", "max")
                ),
            ),
            kp.group_by("camera", "kp_id").agg(
                pl.len(), pl.col("visible").count().alias("flagged"), pl.col("visible").sum()
            ),
            kp.select("datapoint", "camera", "px", "py")
            .join(sizes, on=["datapoint", "camera"])
            .group_by("camera")
            .agg(pl.len(), outside.sum().alias("outside")),
            kpcompile.inconsistent_3d(kp),
        ]
    )
    for model in ("matrices", "pose"):
        kpcompile.reprojection_error(out, model=model)


if __name__ == "__main__":
    main()
