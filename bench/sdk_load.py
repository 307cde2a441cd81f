"""What a client library costs: 2-step saga submits (empty URLs) through an SDK, measured on
the client side, against a DTM server that is already running.

    python bench/sdk_load.py --client async --dtm http://127.0.0.1:36789/api/dtmsvr \\
        --clients 32 --duration 10
    python bench/sdk_load.py --client async --dtm 127.0.0.1:36790     # over gRPC
    python bench/sdk_load.py --client sync|dtmcli --dtm URL --clients 8  # threads

Clients: `async` is `AsyncDtmClient` (N tasks on one event loop), `sync` is `DtmClient` (N
threads sharing one client), `dtmcli` is upstream's PyPI client (N threads). Each submit
carries a gid made here and no `wait_result` (upstream's client cannot ask for it), so the
server answers once the saga is stored. Prints one line per run:

    RESULT client=async requests=N errors=N duration_s=F tx_s=F p50_ms=F p99_ms=F cpu_us_per_tx=F

`cpu_us_per_tx` is this process's user + system CPU over the run divided by the submits: the
client library's own cost per transaction (the server's is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from dtm import AsyncDtmClient, DtmClient

CLK_TCK = os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    stat = Path("/proc/self/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


async def run_async(
    dtm: str, clients: int, deadline: float, payload: Any
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def caller(client: AsyncDtmClient) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            saga = client.saga(f"sdk-{uuid.uuid4().hex}")
            saga.add("", "", payload).add("", "", payload)
            started = time.perf_counter()
            try:
                await saga.submit()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    async with AsyncDtmClient(dtm) as client:
        await asyncio.gather(*(caller(client) for _ in range(clients)))
    return latencies, errors


def run_threads(
    kind: str, dtm: str, clients: int, deadline: float, payload: Any
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shared = DtmClient(dtm) if kind == "sync" else None

    def submit_sync() -> None:
        assert shared is not None
        saga = shared.saga(f"sdk-{uuid.uuid4().hex}")
        saga.add("", "", payload).add("", "", payload).submit()

    def submit_dtmcli() -> None:
        from dtmcli import saga as dtmcli_saga  # type: ignore[import-untyped]

        s = dtmcli_saga.Saga(dtm, f"sdk-{uuid.uuid4().hex}")
        s.add(payload, "", "").add(payload, "", "").submit()

    submit = submit_sync if kind == "sync" else submit_dtmcli

    def caller() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                submit()
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=caller) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if shared is not None:
        shared.close()
    return latencies, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description="client-side cost of saga submits per SDK")
    parser.add_argument("--client", choices=["async", "sync", "dtmcli"], default="async")
    parser.add_argument("--dtm", required=True, help="HTTP API URL, or gRPC host:port")
    parser.add_argument("--clients", type=int, default=16, help="concurrent callers (16)")
    parser.add_argument("--duration", type=float, default=10, help="seconds (10)")
    args = parser.parse_args()
    grpc = "://" not in args.dtm
    payload: Any = b"{}" if grpc else {"amount": 30}
    cpu_before = own_cpu_seconds()
    started = time.monotonic()
    deadline = started + args.duration
    if args.client == "async":
        latencies, errors = asyncio.run(run_async(args.dtm, args.clients, deadline, payload))
    else:
        latencies, errors = run_threads(args.client, args.dtm, args.clients, deadline, payload)
    seconds = time.monotonic() - started
    cpu = own_cpu_seconds() - cpu_before
    ordered = sorted(latencies)
    done = len(latencies)
    print(
        f"RESULT client={args.client}{'/grpc' if grpc else ''} requests={done + errors} "
        f"errors={errors} duration_s={seconds:.3f} tx_s={done / seconds:.1f} "
        f"p50_ms={percentile(ordered, 50) * 1e3:.2f} p99_ms={percentile(ordered, 99) * 1e3:.2f} "
        f"cpu_us_per_tx={cpu / max(done, 1) * 1e6:.0f}"
    )


if __name__ == "__main__":
    main()
