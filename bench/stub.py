"""Business stub for the load benchmark: answers every request ``200 {"dtm_result":"SUCCESS"}``.

A raw asyncio protocol with httptools' parser (both come with ``uvicorn[standard]``, the
server extra), on uvloop when installed: the stub shares two cores with the DTM server and wrk,
so it must cost as little CPU per call as Python allows. It supports keep-alive and pipelining,
which the server's pooled branch calls use.

    python bench/stub.py --port 21790 [--host 127.0.0.1]

Prints ``stub listening on http://HOST:PORT`` to stderr once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import cast

import httptools

BODY = b'{"dtm_result":"SUCCESS"}'
RESPONSE_KEEP_ALIVE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
RESPONSE_CLOSE = RESPONSE_KEEP_ALIVE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


class StubProtocol(asyncio.Protocol):
    """One connection: parse requests, answer each the moment its message is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

    # httptools calls this (by name) at the end of each request.
    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.should_keep_alive():
            self.transport.write(RESPONSE_KEEP_ALIVE)
        else:
            self.transport.write(RESPONSE_CLOSE)
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"stub listening on http://{host}:{port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
