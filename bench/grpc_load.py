"""gRPC load generator for the DTM server: what bench/saga.lua does for wrk, over `dtmgimp.Dtm`.

N concurrent callers, each submitting one 2-step saga after another with ``WaitResult`` on
and a unique gid, for a duration; then one parseable line on stdout:

    RESULT requests=N ok=N errors=N duration_s=F rps=F ok_rps=F p50_ms=F p99_ms=F cpu_s=F

and, if any call failed, the first failure on a line starting with ``FIRST_BAD``. Latencies
are those of the calls that finished (p50/p99 by nearest rank); ``cpu_s`` is this process's
own user + system time over the measured calls, read from /proc/self/stat, since it shares
the cores with the server it loads.

    python bench/grpc_load.py --target 127.0.0.1:36790 --clients 16 --duration 10 \\
        --prefix PREFIX [--branch-url HOST:PORT/busi.Busi/Step] [--channels 1]

An empty ``--branch-url`` gives both steps empty URLs (no branch calls); otherwise it is the
action and compensate URL of both steps. The callers share ``--channels`` channels (one, as
a gRPC client usually has one per server: HTTP/2 carries the calls side by side).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio

from dtm.protocol.gen import dtmgimp_pb2 as pb
from dtm.protocol.gen import dtmgimp_pb2_grpc as pb_grpc

CLK_TCK = os.sysconf("SC_CLK_TCK")
CALL_TIMEOUT = 10.0  # seconds, as wrk's --timeout in bench/run.py


def own_cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads), from /proc/self/stat."""
    stat = Path("/proc/self/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls only
    errors: int = 0
    first_bad: str = ""


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))  # nearest rank, 1-based
    return ordered[int(rank) - 1]


async def caller(
    stub: pb_grpc.DtmAsyncStub, *, gid_prefix: str, steps: str, deadline: float, tally: Tally
) -> None:
    options = pb.DtmTransOptions(WaitResult=True)
    payloads = [b"{}", b"{}"]
    counter = 0
    while time.monotonic() < deadline:
        counter += 1
        request = pb.DtmRequest(
            Gid=f"{gid_prefix}-{counter}",
            TransType="saga",
            TransOptions=options,
            Steps=steps,
            BinPayloads=payloads,
        )
        started = time.perf_counter()
        try:
            await stub.Submit(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            tally.errors += 1
            if not tally.first_bad:
                tally.first_bad = f"{exc.code().name} {exc.details() or ''}"[:300]
            continue
        tally.latencies.append(time.perf_counter() - started)


async def run(args: argparse.Namespace) -> str:
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(args.channels)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        # The type stubs' DtmAsyncStub: what DtmStub is on an aio channel.
        stubs = [pb_grpc.DtmStub(channel) for channel in channels]
        step = {"action": args.branch_url, "compensate": args.branch_url}
        steps = json.dumps([step, step])
        tally = Tally()
        cpu_before = own_cpu_seconds()
        started = time.monotonic()
        deadline = started + args.duration
        await asyncio.gather(
            *(
                caller(
                    stubs[i % len(stubs)],
                    gid_prefix=f"{args.prefix}-{i}",
                    steps=steps,
                    deadline=deadline,
                    tally=tally,
                )
                for i in range(args.clients)
            )
        )
        seconds = time.monotonic() - started
        cpu = own_cpu_seconds() - cpu_before
    finally:
        for channel in channels:
            await channel.close()
    ok = len(tally.latencies)
    requests = ok + tally.errors
    ordered = sorted(tally.latencies)
    line = (
        f"RESULT requests={requests} ok={ok} errors={tally.errors} duration_s={seconds:.3f} "
        f"rps={requests / seconds:.1f} ok_rps={ok / seconds:.1f} "
        f"p50_ms={percentile(ordered, 50) * 1e3:.3f} p99_ms={percentile(ordered, 99) * 1e3:.3f} "
        f"cpu_s={cpu:.3f}\n"
    )
    if tally.first_bad:
        line += "FIRST_BAD " + tally.first_bad.replace("\n", " ") + "\n"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description="gRPC saga submit load for the DTM server")
    parser.add_argument("--target", required=True, help="the server's gRPC HOST:PORT")
    parser.add_argument("--clients", type=int, default=16, help="concurrent callers (16)")
    parser.add_argument("--duration", type=float, default=10, help="seconds (10)")
    parser.add_argument("--prefix", default=f"grpc-bench-{int(time.time())}", help="gid prefix")
    parser.add_argument("--branch-url", default="", help="gRPC URL of both steps ('': empty)")
    parser.add_argument("--channels", type=int, default=1, help="channels the callers share (1)")
    args = parser.parse_args()
    if args.clients < 1 or args.channels < 1 or args.duration <= 0:
        parser.error("--clients, --channels and --duration must be positive")
    sys.stdout.write(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
