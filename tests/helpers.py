"""Helpers shared by the tests."""

from __future__ import annotations

import os
import random
import socket
from typing import Any

import msgspec

from kpcompile.ingest.base import Entry
from kpcompile.store import open_store


def manifest_dict(out: str | os.PathLike[str], snapshot: str | None = None) -> dict[str, Any]:
    """A snapshot's manifest as plain JSON values (default: the current snapshot)."""
    result: dict[str, Any] = msgspec.to_builtins(open_store(out).manifest(snapshot))
    return result


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


LISTED_NAMES = [
    "face_dense_key_points.json",
    "dense_keypoints.json",
    "all_key_points.json",
    "camera_metadata.json",
]
LISTED_FOLDERS = ["dp1/cam", "dp1/cam/key_points", "dp2/cam", "dp2/c2/key_points", "key_points"]
LISTED_FOLDERS += ["", "../up/cam", "/abs/cam", "a//b/cam", "./c/cam", "é/cam"]


def random_listing(
    rng: random.Random, folders: list[str] = LISTED_FOLDERS, names: list[str] = LISTED_NAMES
) -> list[Entry]:
    """Up to 40 files of random names among ``folders`` (unsafe ones too), shuffled."""
    entries = {}
    for _ in range(rng.randrange(1, 40)):
        folder, name = rng.choice(folders), rng.choice(names)
        path = f"{folder}/{name}" if folder else name
        entries[path] = Entry(path, rng.randrange(-1, 5), rng.randrange(0, 3))
    items = list(entries.values())
    rng.shuffle(items)
    return items


SET_NAMES = [
    "face_standard_key_points.json",
    "standard_keypoints.json",
    "head_key_points.json",
    "ears_key_points.json",
    "camera_metadata.json",
    "all_key_points.json",
    "face_dense_key_points.json",
]
SET_FOLDERS = ["dp1/cam", "dp1/cam/key_points", "dp2/c2", "dp2/c2/key_points", "key_points"]
SET_FOLDERS += ["", "root", "root/key_points", "../up/cam", "../up/cam/key_points", "é/cam"]
SET_FOLDERS += ["dp3/key_points", "dp3/key_points/key_points"]
