"""gRPC business stub for the load benchmark: every unary method of every service answers OK.

A grpc.aio server with one generic handler and no (de)serialisers: it takes the request as
raw bytes and answers an empty message, which is what the DTM server expects of a gRPC
branch that succeeded (it ignores the answer's bytes and reads the status code only).

    python bench/grpc_stub.py --port 21781 [--host 127.0.0.1]

Prints ``grpc stub listening on HOST:PORT`` to stderr once it accepts calls.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import grpc
import grpc.aio


async def _ok(_request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b""


_OK_HANDLER: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_ok)


class _AnyMethod(grpc.GenericRpcHandler):
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return _OK_HANDLER


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_AnyMethod(),))
    if not server.add_insecure_port(f"{host}:{port}"):
        raise SystemExit(f"grpc stub: cannot listen on {host}:{port}")
    await server.start()
    print(f"grpc stub listening on {host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def main() -> None:
    parser = argparse.ArgumentParser(description="gRPC stub answering OK to any method")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
