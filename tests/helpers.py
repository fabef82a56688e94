"""Helpers shared by the tests."""

from __future__ import annotations

import os
import socket
from typing import Any

import msgspec

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
