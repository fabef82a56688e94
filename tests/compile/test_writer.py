"""How the writer encodes the keypoints table: float encodings follow the codec."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import kpcompile
from kpcompile.schema import FLOAT_COLUMNS

# zstd and gzip compress BYTE_STREAM_SPLIT's byte streams well (the smallest files);
# with lz4, snappy or no codec the split buys little and costs polars a slow decode.
EXPECTED = {
    "zstd": "BYTE_STREAM_SPLIT",
    "gzip": "BYTE_STREAM_SPLIT",
    "lz4": "PLAIN",
    "snappy": "PLAIN",
    "none": "PLAIN",
}


def _float_encodings(out: Path) -> set[str]:
    found = set()
    for path in kpcompile.files(out):
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                if column.path_in_schema in FLOAT_COLUMNS:
                    found |= set(column.encodings) - {"RLE"}
    return found


@pytest.mark.parametrize("codec", sorted(EXPECTED))
def test_float_columns_are_encoded_for_the_codec(
    codec: str, small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / codec
    kpcompile.build(small_dataset, out, workers=1, compression=codec)
    assert _float_encodings(out) == {EXPECTED[codec]}
    # the same values, bit for bit, whatever the encoding
    reference = tmp_path / "reference"
    kpcompile.build(small_dataset, reference, workers=1)
    assert kpcompile.read(out).equals(kpcompile.read(reference))
