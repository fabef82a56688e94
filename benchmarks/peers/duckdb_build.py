"""DuckDB at its best: explicit schema, unnest(map_entries(...)), COPY to Parquet by camera.

Usage: python benchmarks/peers/duckdb_build.py SOURCE OUT THREADS
"""

from __future__ import annotations

import sys

import duckdb

LANDMARK = (
    "STRUCT(global_3d STRUCT(x DOUBLE, y DOUBLE, z DOUBLE), "
    "pixel_2d STRUCT(x DOUBLE, y DOUBLE), is_visible VARCHAR)"
)
COLUMNS = f"{{'version': 'VARCHAR', 'face': 'STRUCT(dense MAP(VARCHAR, {LANDMARK}))'}}"
PATH_RE = r"([^/]+)/([^/]+)/key_points/face_dense_key_points\.json$"

QUERY = """
COPY (
    SELECT regexp_extract(filename, '{re}', 1) AS datapoint,
           regexp_extract(filename, '{re}', 2) AS camera,
           CAST(e.key AS SMALLINT) AS kp_id,
           e.value.global_3d.x AS x3, e.value.global_3d.y AS y3, e.value.global_3d.z AS z3,
           e.value.pixel_2d.x AS px, e.value.pixel_2d.y AS py,
           CAST(e.value.is_visible AS BOOLEAN) AS visible
    FROM (
        SELECT filename, unnest(map_entries(face.dense)) AS e
        FROM read_json('{src}/*/*/key_points/face_dense_key_points.json',
                       columns = {columns}, format = 'unstructured', filename = true,
                       maximum_object_size = 67108864)
    )
    ORDER BY datapoint, camera, kp_id
) TO '{out}' (FORMAT parquet, PARTITION_BY (camera), COMPRESSION zstd)
"""


def main() -> None:
    src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(QUERY.format(re=PATH_RE, src=src, out=out, columns=COLUMNS))


if __name__ == "__main__":
    main()
