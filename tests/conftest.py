"""Shared fixtures: synthesized datasets and the real samples when present."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kpcompile.synth import synth
from tests.helpers import free_port

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "datagen-samples"


@pytest.fixture(scope="session")
def mixed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every layout, two cameras, extras included (read-only: do not modify)."""
    root = tmp_path_factory.mktemp("mixed") / "dataset"
    synth(root, datapoints=12, cameras=2, layout="mixed", seed=7)
    return root


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A Faces dataset that a test may modify."""
    root = tmp_path / "dataset"
    synth(root, datapoints=4, cameras=2, layout="faces", seed=3)
    return root


@pytest.fixture
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/datagen-samples is not present")
    return SAMPLES


def landmarks_from_json(path: Path) -> list[tuple[int, float, float, float, float, float, Any]]:
    """Independent reference reader: (kp_id, x3, y3, z3, px, py, visible) with json.load."""
    doc = json.loads(path.read_text())
    if "keypoints_3d_coordinates" in doc:
        m3, m2 = doc["keypoints_3d_coordinates"], doc["keypoints_2d_coordinates"]
        mv = doc.get("is_visible", {})
        return [
            (int(k), *map(float, m3[k]), *map(float, m2[k]), mv.get(k)) for k in sorted(m3, key=int)
        ]
    face = doc["face"]
    lms = face["dense"] if "dense" in face else face["standard"]
    out = []
    for k in sorted(lms, key=int):
        v = lms[k]
        vis = v.get("is_visible")
        if isinstance(vis, str):
            vis = vis == "true"
        g, p = v["global_3d"], v["pixel_2d"]
        out.append(
            (int(k), float(g["x"]), float(g["y"]), float(g["z"]), float(p["x"]), float(p["y"]), vis)
        )
    return out


@pytest.fixture(scope="session")
def compiled_sets(mixed_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mixed_dataset`` built with ``--sets`` (read-only: do not modify)."""
    import kpcompile

    out = tmp_path_factory.mktemp("compiled_sets") / "compiled"
    kpcompile.build(mixed_dataset, out, workers=1, sets=True, shard_files=5)
    return out


# Tests that try to break a promise many times record how many trials they ran;
# the numbers are printed at the end of the run (`make test`, `make test-long`).
_TRIALS: list[tuple[str, str]] = []


@pytest.fixture
def trials(request: pytest.FixtureRequest) -> Any:
    """``trials(n, "kills")`` records that the test ran ``n`` trials."""

    def record(n: int, what: str) -> None:
        _TRIALS.append((request.node.nodeid, f"{n} {what}"))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TRIALS:
        terminalreporter.section("trials run")
        for nodeid, text in _TRIALS:
            terminalreporter.write_line(f"{nodeid}: {text}")


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """A bucket on a real S3-compatible server on 127.0.0.1; yields an s3fs filesystem."""
    import fsspec

    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    _count_requests(server)
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        fsspec.config.conf.pop("s3", None)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bucket")
        try:
            yield fs
        finally:
            fsspec.filesystem("s3").clear_instance_cache()
            server.stop()


S3_REQUESTS: list[tuple[str, str, str | None]] = []
"""Requests the S3 test server answered: (method, path, Range header)."""
S3_LIST_SECONDS: list[float] = [0.0]
"""How long the S3 test server takes to answer a listing request (``slow_s3_listing``)."""


def _is_listing(environ: dict[str, Any]) -> bool:
    query = environ.get("QUERY_STRING", "")
    return environ["REQUEST_METHOD"] == "GET" and ("list-type=" in query or "prefix=" in query)


def _count_requests(server: Any) -> None:
    """Record every request the server answers, whichever process sent it."""
    inner = server._server.app

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        S3_REQUESTS.append(
            (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("HTTP_RANGE"))
        )
        if S3_LIST_SECONDS[0] and _is_listing(environ):
            time.sleep(S3_LIST_SECONDS[0])  # a slow store: each server thread waits alone
        return inner(environ, start_response)

    server._server.app = app


@pytest.fixture
def s3_requests(s3: Any) -> list[tuple[str, str, str | None]]:
    """The requests the S3 test server answers from now on (see :data:`S3_REQUESTS`)."""
    S3_REQUESTS.clear()
    return S3_REQUESTS


@pytest.fixture
def slow_s3_listing(s3: Any) -> Iterator[list[float]]:
    """The S3 test server answers each listing request 0.1 s late (set ``[0]`` to change)."""
    S3_LIST_SECONDS[0] = 0.1
    try:
        yield S3_LIST_SECONDS
    finally:
        S3_LIST_SECONDS[0] = 0.0
