"""The script a user would write by hand: json.load per file, rows into pandas, to_parquet.

Usage: python benchmarks/peers/pandas_build.py SOURCE OUT
"""

from __future__ import annotations

import glob
import json
import os
import sys

import pandas as pd


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    rows = []
    pattern = os.path.join(src, "*", "*", "key_points", "face_dense_key_points.json")
    for path in sorted(glob.glob(pattern)):
        camera_dir = os.path.dirname(os.path.dirname(path))
        camera = os.path.basename(camera_dir)
        datapoint = os.path.basename(os.path.dirname(camera_dir))
        with open(path) as fh:
            doc = json.load(fh)
        for kp_id, lm in doc["face"]["dense"].items():
            g, p = lm["global_3d"], lm["pixel_2d"]
            rows.append(
                (
                    datapoint,
                    camera,
                    int(kp_id),
                    g["x"],
                    g["y"],
                    g["z"],
                    p["x"],
                    p["y"],
                    lm.get("is_visible") == "true",
                )
            )
    df = pd.DataFrame(
        rows, columns=["datapoint", "camera", "kp_id", "x3", "y3", "z3", "px", "py", "visible"]
    )
    df["kp_id"] = df["kp_id"].astype("int16")
    df.to_parquet(out, partition_cols=["camera"], compression="zstd", index=False)


if __name__ == "__main__":
    main()
