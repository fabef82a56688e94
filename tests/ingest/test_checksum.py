"""The ``files`` table's checksum: zlib's CRC-32, whichever library computes it."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from kpcompile.ingest.checksum import checksum


@given(st.binary(max_size=70_000))
@settings(max_examples=300, deadline=None)
def test_checksum_is_zlibs_crc32(data: bytes) -> None:
    assert checksum(data) == f"crc32:{zlib.crc32(data):08x}"


def test_checksums_of_earlier_snapshots_still_match() -> None:
    # the value a snapshot built with Python's zlib recorded for these bytes
    assert checksum(b"") == "crc32:00000000"
    assert checksum(b"hello") == "crc32:3610a686"
