"""Load benchmark of the DTM server: 2-step sagas, wait_result on, driven by wrk.

Measures global transactions per second, p50/p99 latency and the server's CPU time per
transaction for each mode x client count:

- ``empty``: both steps have empty URLs, so the server does no branch calls (upstream's
  ``benchEmptyUrl``): the cost of the transaction machinery and the store alone;
- ``stub``: both steps call a business stub (bench/stub.py) that answers SUCCESS at once.

Everything runs on loopback: a fresh SQLite store in a temporary directory, the server on a free
port below 32768 (outside the kernel's range for outgoing ports), the stub on another. Server CPU
comes from /proc (utime + stime of the server and its child processes) and is the figure to
compare between runs on this 2-core machine: wrk, the stub and the server share the cores, so
tx/s moves with whatever else runs. Everything started here is stopped on exit.

Run through bench/run.sh, which installs wrk and the server's dependencies first:

    bash bench/run.sh [--duration 10] [--clients 16,64] [--modes empty,stub] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "saga.lua"
STUB_SCRIPT = BENCH_DIR / "stub.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
RESULT_LINE = re.compile(r"^RESULT (.*)$", re.MULTILINE)
FIRST_BAD_LINE = re.compile(r"^FIRST_BAD (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class RunResult:
    """One wrk run against the server."""

    mode: str
    clients: int
    seconds: float
    requests: int
    ok: int
    non200: int
    socket_errors: int
    ok_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    stub_cpu_s: float | None
    first_bad: str | None

    @property
    def errors(self) -> int:
        return self.non200 + self.socket_errors

    def cpu_us_per_tx(self, cpu_s: float | None) -> str:
        if cpu_s is None or self.ok == 0:
            return "-"
        return f"{cpu_s / self.ok * 1e6:,.0f}"


# --- processes ---------------------------------------------------------------------------------


class Children:
    """Processes this benchmark started; each in its own session so its whole group can go."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (uvicorn workers, say)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants, from /proc/PID/stat."""
    ticks = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        # Fields after "(comm)": state is field 3, utime 14 and stime 15 (1-based).
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def free_port(start: int, *, avoid: Collection[int] = ()) -> int:
    """The first port from ``start`` up that a loopback listener can bind."""
    for port in range(start, 32768):
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"bench: no free loopback port in {start}..32767")


def wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str
) -> None:
    """Poll ``check()`` for up to 30 s; fail with the log's tail if ``proc`` dies or times out."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if check():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:]
    state = (
        f"exited with {proc.returncode}" if proc.poll() is not None else "did not answer in 30 s"
    )
    raise SystemExit(f"bench: {what} {state}; its log ends:\n{tail}")


def pings(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/api/ping", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


# --- wrk ----------------------------------------------------------------------------------------


def run_wrk(
    *,
    wrk: str,
    server_port: int,
    clients: int,
    threads: int,
    seconds: float,
    gid_prefix: str,
    branch_url: str,
) -> dict[str, str]:
    """One wrk run; returns the RESULT line's fields (and FIRST_BAD if any)."""
    argv = [
        wrk,
        f"-t{min(threads, clients)}",
        f"-c{clients}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{server_port}",
        "--",
        gid_prefix,
        branch_url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    match = RESULT_LINE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(
            f"bench: wrk failed ({done.returncode}): {shlex.join(argv)}\n{done.stdout}{done.stderr}"
        )
    fields = dict(item.split("=", 1) for item in match.group(1).split())
    bad = FIRST_BAD_LINE.search(done.stdout)
    if bad:
        fields["first_bad"] = bad.group(1)
    return fields


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="DTM server load benchmark (2-step sagas, wait_result on, wrk)."
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each")
    parser.add_argument("--clients", default="16,64", help="concurrent connections (16,64)")
    parser.add_argument("--modes", default="empty,stub", help="empty and/or stub (empty,stub)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: spare the CPU)")
    parser.add_argument("--port", type=int, default=21789, help="first port tried for the server")
    parser.add_argument("--stub-port", type=int, default=21790, help="first port for the stub")
    parser.add_argument(
        "--server-cmd",
        default=None,
        help="server command before its options (default: this venv's `dtm serve`)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra option for the server, repeatable (e.g. --server-arg=--log-level=debug)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (store, logs)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",") if c]
    args.modes = [m for m in args.modes.split(",") if m]
    if not set(args.modes) <= {"empty", "stub"} or not args.modes or not args.clients:
        parser.error("--modes takes empty and/or stub; --clients a list of numbers")
    return args


def on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench: wrk not found (bench/run.sh installs it: apt-get install wrk)")
    if args.server_cmd:
        server_cmd = shlex.split(args.server_cmd)
    else:
        # The console script itself, not `uv run dtm`: then the pid we sample is the server's.
        server_cmd = [str(Path(sys.executable).with_name("dtm")), "serve"]

    tmp = Path(tempfile.mkdtemp(prefix="dtm-bench-"))
    children = Children()
    results: list[RunResult] = []
    try:
        server_port = free_port(args.port)
        server_log = tmp / "server.log"
        server = children.start(
            [
                *server_cmd,
                "--host",
                HOST,
                "--http-port",
                str(server_port),
                "--store-path",
                str(tmp / "dtm.sqlite3"),
                *args.server_arg,
            ],
            log=server_log,
        )
        wait_until(lambda: pings(server_port), server, server_log, "the DTM server")
        print(f"bench: server pid {server.pid} on {HOST}:{server_port}", file=sys.stderr)

        stub: subprocess.Popen[bytes] | None = None
        stub_url = ""
        if "stub" in args.modes:
            stub_port = free_port(args.stub_port, avoid={server_port})
            stub_log = tmp / "stub.log"
            stub = children.start(
                [sys.executable, str(STUB_SCRIPT), "--host", HOST, "--port", str(stub_port)],
                log=stub_log,
            )
            wait_until(lambda: accepts(stub_port), stub, stub_log, "the stub")
            stub_url = f"http://{HOST}:{stub_port}/api/busi/step"
            print(f"bench: stub pid {stub.pid} on {HOST}:{stub_port}", file=sys.stderr)

        run_id = f"b{int(time.time())}"
        for mode in args.modes:
            url = stub_url if mode == "stub" else ""
            for clients in args.clients:
                common = {
                    "wrk": wrk,
                    "server_port": server_port,
                    "clients": clients,
                    "threads": args.threads,
                    "branch_url": url,
                }
                if args.warmup > 0:
                    run_wrk(
                        **common, seconds=args.warmup, gid_prefix=f"{run_id}-w-{mode}-{clients}"
                    )
                server_cpu = cpu_seconds(server.pid)
                stub_cpu = cpu_seconds(stub.pid) if stub and mode == "stub" else None
                fields = run_wrk(
                    **common, seconds=args.duration, gid_prefix=f"{run_id}-{mode}-{clients}"
                )
                result = RunResult(
                    mode=mode,
                    clients=clients,
                    seconds=float(fields["duration_s"]),
                    requests=int(fields["requests"]),
                    ok=int(fields["ok"]),
                    non200=int(fields["non200"]),
                    socket_errors=int(fields["socket_errors"]),
                    ok_per_s=float(fields["ok_rps"]),
                    p50_ms=float(fields["p50_ms"]),
                    p99_ms=float(fields["p99_ms"]),
                    server_cpu_s=cpu_seconds(server.pid) - server_cpu,
                    stub_cpu_s=(
                        cpu_seconds(stub.pid) - stub_cpu
                        if stub is not None and stub_cpu is not None
                        else None
                    ),
                    first_bad=fields.get("first_bad"),
                )
                results.append(result)
                print(
                    f"bench: {mode} x{clients}: {result.ok_per_s:,.0f} tx/s, "
                    f"{result.errors} errors",
                    file=sys.stderr,
                )
                if result.first_bad:
                    print(f"bench:   first bad answer: {result.first_bad}", file=sys.stderr)
            if server.poll() is not None:
                raise SystemExit(f"bench: the server exited with {server.returncode}")
    finally:
        children.stop_all()
        if args.keep:
            print(f"bench: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print_table(results, duration=args.duration)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


def print_table(results: list[RunResult], *, duration: float) -> None:
    print(
        f"\n2-step sagas, wait_result on, {duration:g} s per run, {os.cpu_count()} cores "
        "shared by server, stub and wrk\n"
    )
    print(
        "| mode | clients | tx/s | p50 ms | p99 ms | errors | server CPU µs/tx | stub CPU µs/tx |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.mode} | {r.clients} | {r.ok_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.errors} | {r.cpu_us_per_tx(r.server_cpu_s)} | {r.cpu_us_per_tx(r.stub_cpu_s)} |"
        )


if __name__ == "__main__":
    main()
