"""A TCP proxy on loopback that adds a fixed delay to every round trip.

Usage: ``python -m benchmarks.proxy UPSTREAM_PORT --delay-ms 20`` prints ``PORT`` (where
it listens, on 127.0.0.1) on its first line, then forwards every connection to
``127.0.0.1:UPSTREAM_PORT`` until killed.

Bytes from the client reach the server ``delay`` seconds after the proxy received
them (a fixed one-way latency, chunks kept in order and not delayed one after the
other: a request pipelined behind another is not delayed twice); answers come back
at once. So every request/response turn (an HTTP request, a TLS-free S3 ``GET``)
costs one ``delay`` more than it would on loopback, as a server that far away would.
It counts the connections it accepted and the chunks it forwarded to the server
(printed on SIGTERM/Ctrl-C to stderr). Loopback only: it binds and connects to
127.0.0.1 and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time

HOST = "127.0.0.1"


class Stats:
    connections = 0
    chunks = 0


async def _delayed_pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Forward reader -> writer, each chunk ``delay`` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
            Stats.chunks += 1
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while chunk := await reader.read(1 << 16):
            queue.put_nowait((time.monotonic() + delay, chunk))
    finally:
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(OSError, ConnectionError):
            await sender


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(1 << 16):
        writer.write(chunk)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


async def _serve_one(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream: int, delay: float
) -> None:
    Stats.connections += 1
    try:
        server_r, server_w = await asyncio.open_connection(HOST, upstream)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(_delayed_pump(client_r, server_w, delay), _pump(server_r, client_w))
    except (OSError, ConnectionError):
        pass
    finally:
        for w in (server_w, client_w):
            w.close()


async def serve(upstream: int, delay: float, port: int = 0) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, upstream, delay), HOST, port, limit=1 << 20
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("upstream", type=int, help="port of the server on 127.0.0.1")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=0, help="port to listen on [default: any free]")
    args = ap.parse_args()

    def report(*_: object) -> None:
        sys.stderr.write(f"proxy: {Stats.connections} connections, {Stats.chunks} chunks\n")
        sys.stderr.flush()
        os._exit(0)  # at once: connections still open are simply dropped

    signal.signal(signal.SIGTERM, report)
    try:
        asyncio.run(serve(args.upstream, args.delay_ms / 1000, args.port))
    except KeyboardInterrupt:
        report()


if __name__ == "__main__":
    main()
