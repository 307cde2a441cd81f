"""Load benchmark of the DTM server: 2-step sagas, wait_result on, driven by wrk or gRPC.

Measures global transactions per second, p50/p99 latency and CPU time per transaction for
each store x server count x mode x client count x protocol:

- stores: ``sqlite`` (a file in a temporary directory), ``mysql`` (database ``dtm_bench`` on
  the MariaDB at 127.0.0.1:3306, user root), ``postgres`` (schema ``dtm_bench`` of database
  ``test`` at 127.0.0.1:5432, user postgres), ``redis`` (keys prefixed ``{dtm_bench}`` on
  127.0.0.1:6379). Every run starts its servers on an empty store: the file, database,
  schema or keys are dropped first (and at the end); the server creates its tables at start.
- servers: 1 or 2 ``dtm serve`` processes on their own ports sharing the store (two SQLite
  processes share one WAL file). With 2, two wrk processes run at once, each with half the
  connections against one server; tx/s and errors are summed, p50 and p99 are the worse of
  the two, server CPU is both processes' together.
- modes: ``empty``: both steps have empty URLs, so the server does no branch calls
  (upstream's ``benchEmptyUrl``): the transaction machinery and the store alone; ``stub``:
  both steps call a business stub (bench/stub.py) that answers SUCCESS at once.
- protocols: ``http``: wrk submits over the HTTP API (bench/saga.lua); ``grpc``: the sagas
  are submitted over ``dtmgimp.Dtm/Submit`` by bench/grpc_load.py (wrk speaks HTTP only), a
  Python process with that many concurrent callers on one channel, and in ``stub`` mode the
  steps are gRPC branches answered by bench/grpc_stub.py. The load generator's own CPU is
  reported too (wrk's from getrusage of its reaped processes, grpc_load.py's from its
  /proc/self/stat over the measured calls): it shares the two cores with the server, and the
  Python generator costs far more per call than wrk.

Everything runs on loopback, servers on free ports below 32768 (outside the kernel's range
for outgoing ports). CPU comes from /proc (utime + stime of a process and its children): the
DTM servers', the stub's, and the store server's (the process listening on the store's port
and its children, e.g. PostgreSQL's backends; it counts whatever else uses that instance).
CPU per transaction is the figure to compare between runs on a 2-core machine: wrk, the
stub, the store and the servers share the cores, so tx/s moves with whatever else runs.
Everything started here is stopped on exit.

Run through bench/run.sh, which installs wrk and the server's dependencies first:

    bash bench/run.sh [--stores sqlite,mysql,postgres,redis] [--servers 1,2]
        [--duration 10] [--warmup 2] [--clients 16,64] [--modes empty,stub]
        [--protocols http,grpc] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

import yaml

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "saga.lua"
STUB_SCRIPT = BENCH_DIR / "stub.py"
GRPC_STUB_SCRIPT = BENCH_DIR / "grpc_stub.py"
GRPC_LOAD_SCRIPT = BENCH_DIR / "grpc_load.py"
PROTOCOLS = ("http", "grpc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
RESULT_LINE = re.compile(r"^RESULT (.*)$", re.MULTILINE)
FIRST_BAD_LINE = re.compile(r"^FIRST_BAD (.*)$", re.MULTILINE)

# The database, schema and key prefix the benchmark owns: dropped before every run.
BENCH_NAME = "dtm_bench"
REDIS_PREFIX = "{" + BENCH_NAME + "}"
MYSQL_PORT, POSTGRES_PORT, REDIS_PORT = 3306, 5432, 6379
STORE_PORTS = {"mysql": MYSQL_PORT, "postgres": POSTGRES_PORT, "redis": REDIS_PORT}
STORES = ("sqlite", "mysql", "postgres", "redis")
SQLITE_FILE = "dtm.sqlite3"


@dataclass(frozen=True)
class RunResult:
    """One measured run: every wrk process against every server of one set-up, combined."""

    store: str
    servers: int
    mode: str
    clients: int
    protocol: str
    seconds: float
    requests: int
    ok: int
    non200: int  # answers other than HTTP 200 or, over gRPC, other than OK
    socket_errors: int
    ok_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    stub_cpu_s: float | None
    store_cpu_s: float | None
    load_cpu_s: float | None  # the load generator's (wrk's or grpc_load.py's)
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

    def start(
        self, argv: list[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=env,
            )
        self.procs.append(proc)
        return proc

    def stop(self, procs: Iterable[subprocess.Popen[bytes]]) -> None:
        """SIGTERM to each group, then SIGKILL to those still there after 10 s."""
        procs = list(procs)
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            self.procs.remove(proc)

    def stop_all(self) -> None:
        self.stop(list(self.procs))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (uvicorn workers, PostgreSQL backends, say)."""
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


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of ``pids`` and their live descendants, from /proc/PID/stat."""
    members = {member for pid in pids for member in process_tree(pid)}
    ticks = 0
    for member in members:
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        # Fields after "(comm)": state is field 3, utime 14 and stime 15 (1-based).
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def listener_pids(port: int) -> list[int]:
    """Processes holding a socket that listens on TCP ``port`` (empty if /proc hides them)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    holders = []
    for entry in Path("/proc").iterdir() if inodes else ():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                holders.append(int(entry.name))
        except OSError:
            continue
    return holders


def free_port(start: int, *, avoid: Collection[int] = ()) -> int:
    """The first port from ``start`` up that a loopback listener can bind."""
    for port in range(start, 32768):
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the server binds: a port whose old connections linger in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        time.sleep(0.05)
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


# --- stores -------------------------------------------------------------------------------------


def store_section(store: str, tmp: Path) -> dict[str, object]:
    """The ``Store`` section of the servers' YAML config (upstream's keys)."""
    if store == "sqlite":
        return {"Driver": "sqlite", "Path": str(tmp / SQLITE_FILE)}
    if store == "mysql":
        return {
            "Driver": "mysql",
            "Host": HOST,
            "Port": MYSQL_PORT,
            "User": "root",
            "Password": "",
            "Db": BENCH_NAME,
        }
    if store == "postgres":
        return {
            "Driver": "postgres",
            "Host": HOST,
            "Port": POSTGRES_PORT,
            "User": "postgres",
            "Db": "test",
            "Schema": BENCH_NAME,
        }
    return {"Driver": "redis", "Host": HOST, "Port": REDIS_PORT, "RedisPrefix": REDIS_PREFIX}


async def _drop_mysql() -> None:
    import asyncmy

    conn = await asyncmy.connect(host=HOST, port=MYSQL_PORT, user="root", password="")
    try:
        async with conn.cursor() as cur:
            # Without this, the note "database doesn't exist" is logged as a warning.
            await cur.execute("SET sql_notes = 0")
            await cur.execute(f"DROP DATABASE IF EXISTS `{BENCH_NAME}`")
    finally:
        conn.close()


async def _drop_postgres() -> None:
    import asyncpg

    conn = await asyncpg.connect(host=HOST, port=POSTGRES_PORT, user="postgres", database="test")
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {BENCH_NAME} CASCADE")
    finally:
        await conn.close()


async def _drop_redis() -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host=HOST, port=REDIS_PORT)
    try:
        # SCAN, not KEYS: the instance may serve others while this runs.
        cursor = 0
        while True:
            cursor, keys = await client.scan(cursor, match=REDIS_PREFIX + "*", count=1000)
            if keys:
                await client.delete(*keys)
            if cursor == 0:
                break
    finally:
        await client.aclose()


def empty_store(store: str, tmp: Path) -> None:
    """Drop everything the benchmark stored; the next server start recreates the tables."""
    if store == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            (tmp / (SQLITE_FILE + suffix)).unlink(missing_ok=True)
        return
    drop = {"mysql": _drop_mysql, "postgres": _drop_postgres, "redis": _drop_redis}[store]
    try:
        asyncio.run(drop())
    except OSError as exc:
        raise SystemExit(f"bench: cannot empty the {store} store at {HOST}: {exc}") from None


# --- wrk ----------------------------------------------------------------------------------------


def wrk_argv(
    *,
    wrk: str,
    server_port: int,
    clients: int,
    threads: int,
    seconds: float,
    gid_prefix: str,
    branch_url: str,
) -> list[str]:
    return [
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


def grpc_load_argv(
    *, grpc_port: int, clients: int, seconds: float, gid_prefix: str, branch_url: str
) -> list[str]:
    return [
        sys.executable,
        str(GRPC_LOAD_SCRIPT),
        "--target",
        f"{HOST}:{grpc_port}",
        "--clients",
        str(clients),
        "--duration",
        f"{seconds:g}",
        "--prefix",
        gid_prefix,
        "--branch-url",
        branch_url,
    ]


def children_cpu_seconds() -> float:
    """User + system CPU of this process's terminated and reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrks(argvs: list[list[str]], *, seconds: float) -> list[dict[str, str]]:
    """Runs the load processes (wrk or grpc_load.py) at once; returns each one's RESULT
    fields (and FIRST_BAD if any)."""
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    try:
        outputs = [proc.communicate(timeout=seconds + 60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for argv, proc, (stdout, stderr) in zip(argvs, procs, outputs, strict=True):
        match = RESULT_LINE.search(stdout)
        if proc.returncode != 0 or match is None:
            raise SystemExit(
                f"bench: load failed ({proc.returncode}): {shlex.join(argv)}\n{stdout}{stderr}"
            )
        fields = dict(item.split("=", 1) for item in match.group(1).split())
        bad = FIRST_BAD_LINE.search(stdout)
        if bad:
            fields["first_bad"] = bad.group(1)
        results.append(fields)
    return results


def split(clients: int, parts: int) -> list[int]:
    """``clients`` connections shared out over ``parts`` wrk processes, as evenly as possible."""
    return [clients // parts + (1 if i < clients % parts else 0) for i in range(parts)]


# --- main ---------------------------------------------------------------------------------------


def names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="DTM server load benchmark (2-step sagas, wait_result on, wrk or gRPC)."
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each")
    parser.add_argument("--clients", default="16,64", help="concurrent connections (16,64)")
    parser.add_argument("--modes", default="empty,stub", help="empty and/or stub (empty,stub)")
    parser.add_argument(
        "--protocols", default="http", help="http (wrk) and/or grpc (grpc_load.py) (http)"
    )
    parser.add_argument(
        "--stores", default="sqlite", help="any of sqlite,mysql,postgres,redis (sqlite)"
    )
    parser.add_argument(
        "--servers", default="1", help="server processes sharing the store, e.g. 1,2 (1)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: spare the CPU)")
    parser.add_argument("--port", type=int, default=21789, help="first port tried for servers")
    parser.add_argument("--stub-port", type=int, default=21780, help="first port for the stubs")
    parser.add_argument(
        "--server-cmd",
        default=None,
        help="server command before its options (default: this venv's `dtm serve`)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra option for the servers, repeatable (e.g. --server-arg=--log-level=debug)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (logs, SQLite file) and store data"
    )
    args = parser.parse_args()
    try:
        args.clients = [int(c) for c in names(args.clients)]
        args.servers = [int(s) for s in names(args.servers)]
    except ValueError:
        parser.error("--clients and --servers take lists of numbers, e.g. 16,64")
    args.modes = names(args.modes)
    args.stores = names(args.stores)
    args.protocols = names(args.protocols)
    if not args.protocols or not set(args.protocols) <= set(PROTOCOLS):
        parser.error("--protocols takes http and/or grpc")
    if not args.modes or not set(args.modes) <= {"empty", "stub"}:
        parser.error("--modes takes empty and/or stub")
    if not args.stores or not set(args.stores) <= set(STORES):
        parser.error("--stores takes a list of " + ",".join(STORES))
    if not args.clients or not args.servers or min(args.servers) < 1:
        parser.error("--clients and --servers take lists of positive numbers")
    if min(args.clients) < max(args.servers):
        parser.error("every server needs at least one client connection")
    return args


def on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@dataclass(frozen=True)
class Setup:
    """What stays the same for every run of one invocation."""

    wrk: str
    server_cmd: list[str]
    server_args: list[str]
    tmp: Path
    first_port: int
    threads: int
    warmup: float
    duration: float
    run_id: str


def start_servers(
    setup: Setup, children: Children, *, count: int, config: Path, name: str, avoid: set[int]
) -> tuple[list[subprocess.Popen[bytes]], list[int], list[int]]:
    """``count`` servers on free ports sharing ``config``'s store, each answering /api/ping
    and accepting gRPC; returns them, their HTTP ports and their gRPC ports.

    One after another: two SQLite servers opening a new file at once can fail with "database
    is locked" (switching the file to WAL does not wait for the other's lock).
    """
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    grpc_ports: list[int] = []
    for i in range(count):
        port = free_port(setup.first_port, avoid={*avoid, *ports, *grpc_ports})
        grpc_port = free_port(port + 1, avoid={*avoid, *ports, *grpc_ports})
        log = setup.tmp / f"server-{name}-{i + 1}.log"
        argv = [*setup.server_cmd, "-c", str(config), "--host", HOST, "--http-port", str(port)]
        # Each server its own gRPC port (upstream's GrpcPort, from the environment).
        env = {**os.environ, "GRPC_PORT": str(grpc_port)}
        procs.append(children.start([*argv, *setup.server_args], log=log, env=env))
        ports.append(port)
        grpc_ports.append(grpc_port)
        what = f"DTM server {i + 1} ({name})"
        wait_until(functools.partial(pings, port), procs[-1], log, what)
        wait_until(functools.partial(accepts, grpc_port), procs[-1], log, what + " gRPC")
    return procs, ports, grpc_ports


def measure(
    setup: Setup,
    children: Children,
    *,
    store: str,
    servers: int,
    mode: str,
    clients: int,
    protocol: str,
    branch_url: str,
    stub_pid: int | None,
    store_pids: list[int],
    avoid: set[int],
) -> RunResult:
    """One run on an empty store: start the servers, warm up, measure, stop the servers."""
    name = f"{store}-{servers}-{mode}-{clients}-{protocol}"
    empty_store(store, setup.tmp)
    config = setup.tmp / f"{store}.yml"
    config.write_text(yaml.safe_dump({"Store": store_section(store, setup.tmp)}))
    procs, ports, grpc_ports = start_servers(
        setup, children, count=servers, config=config, name=name, avoid=avoid
    )
    try:

        def argvs(seconds: float, prefix: str) -> list[list[str]]:
            shares = zip(ports, grpc_ports, split(clients, servers), strict=True)
            return [
                wrk_argv(
                    wrk=setup.wrk,
                    server_port=port,
                    clients=share,
                    threads=setup.threads,
                    seconds=seconds,
                    gid_prefix=f"{setup.run_id}-{prefix}-{name}-s{i + 1}",
                    branch_url=branch_url,
                )
                if protocol == "http"
                else grpc_load_argv(
                    grpc_port=grpc_port,
                    clients=share,
                    seconds=seconds,
                    gid_prefix=f"{setup.run_id}-{prefix}-{name}-s{i + 1}",
                    branch_url=branch_url,
                )
                for i, (port, grpc_port, share) in enumerate(shares)
            ]

        if setup.warmup > 0:
            run_wrks(argvs(setup.warmup, "w"), seconds=setup.warmup)
        server_pids = [proc.pid for proc in procs]
        server_cpu = cpu_seconds(server_pids)
        stub_cpu = cpu_seconds([stub_pid]) if stub_pid is not None else 0.0
        store_cpu = cpu_seconds(store_pids)
        load_cpu = children_cpu_seconds()
        parts = run_wrks(argvs(setup.duration, "m"), seconds=setup.duration)
        load_cpu = children_cpu_seconds() - load_cpu
        server_cpu = cpu_seconds(server_pids) - server_cpu
        stub_cpu = cpu_seconds([stub_pid]) - stub_cpu if stub_pid is not None else 0.0
        store_cpu = cpu_seconds(store_pids) - store_cpu
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                raise SystemExit(f"bench: DTM server {i + 1} ({name}) exited: {proc.returncode}")
    finally:
        children.stop(procs)
    if protocol == "grpc":
        # grpc_load.py reports its CPU over the measured calls alone, without its start-up.
        load_cpu = sum(float(p["cpu_s"]) for p in parts)
    return RunResult(
        store=store,
        servers=servers,
        mode=mode,
        clients=clients,
        protocol=protocol,
        seconds=max(float(p["duration_s"]) for p in parts),
        requests=sum(int(p["requests"]) for p in parts),
        ok=sum(int(p["ok"]) for p in parts),
        non200=sum(int(p.get("non200", p.get("errors", "0"))) for p in parts),
        socket_errors=sum(int(p.get("socket_errors", "0")) for p in parts),
        ok_per_s=sum(float(p["ok_rps"]) for p in parts),
        p50_ms=max(float(p["p50_ms"]) for p in parts),
        p99_ms=max(float(p["p99_ms"]) for p in parts),
        server_cpu_s=server_cpu,
        stub_cpu_s=stub_cpu if stub_pid is not None else None,
        store_cpu_s=store_cpu if store_pids else None,
        load_cpu_s=load_cpu,
        first_bad=next((p["first_bad"] for p in parts if "first_bad" in p), None),
    )


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
    setup = Setup(
        wrk=wrk,
        server_cmd=server_cmd,
        server_args=args.server_arg,
        tmp=tmp,
        first_port=args.port,
        threads=args.threads,
        warmup=args.warmup,
        duration=args.duration,
        run_id=f"b{int(time.time())}",
    )
    children = Children()
    results: list[RunResult] = []
    load_before = os.getloadavg()
    try:
        # protocol -> (stub pid, the steps' URL) for the stub mode
        stubs: dict[str, tuple[int, str]] = {}
        avoid: set[int] = set()
        if "stub" in args.modes:
            for protocol in args.protocols:
                script = STUB_SCRIPT if protocol == "http" else GRPC_STUB_SCRIPT
                stub_port = free_port(args.stub_port, avoid=avoid)
                stub_log = tmp / f"stub-{protocol}.log"
                stub = children.start(
                    [sys.executable, str(script), "--host", HOST, "--port", str(stub_port)],
                    log=stub_log,
                )
                wait_until(
                    functools.partial(accepts, stub_port), stub, stub_log, f"the {protocol} stub"
                )
                avoid.add(stub_port)
                stubs[protocol] = (
                    stub.pid,
                    f"http://{HOST}:{stub_port}/api/busi/step"
                    if protocol == "http"
                    else f"{HOST}:{stub_port}/busi.Busi/Step",
                )
                print(
                    f"bench: {protocol} stub pid {stub.pid} on {HOST}:{stub_port}",
                    file=sys.stderr,
                )

        for store in args.stores:
            store_pids = listener_pids(STORE_PORTS[store]) if store in STORE_PORTS else []
            try:
                for servers, mode, clients, protocol in itertools.product(
                    args.servers, args.modes, args.clients, args.protocols
                ):
                    stub_pid, stub_url = stubs[protocol] if mode == "stub" else (None, "")
                    result = measure(
                        setup,
                        children,
                        store=store,
                        servers=servers,
                        mode=mode,
                        clients=clients,
                        protocol=protocol,
                        branch_url=stub_url,
                        stub_pid=stub_pid,
                        store_pids=store_pids,
                        avoid=avoid,
                    )
                    results.append(result)
                    print(
                        f"bench: {store} x{servers} {mode} x{clients} {protocol}: "
                        f"{result.ok_per_s:,.0f} tx/s, {result.errors} errors",
                        file=sys.stderr,
                    )
                    if result.first_bad:
                        print(f"bench:   first bad: {result.first_bad}", file=sys.stderr)
            finally:
                if not args.keep:
                    # measure() has stopped this store's servers, also when it failed.
                    with contextlib.suppress(SystemExit):
                        empty_store(store, tmp)
    finally:
        children.stop_all()
        if args.keep:
            print(f"bench: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print_table(
        results,
        duration=args.duration,
        load=(*load_before, *os.getloadavg()),
        modes=args.modes,
        protocols=args.protocols,
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


def print_table(
    results: list[RunResult],
    *,
    duration: float,
    load: tuple[float, ...],
    modes: list[str],
    protocols: list[str],
) -> None:
    print(
        f"\n2-step sagas, wait_result on, {duration:g} s per run on an empty store, "
        f"{os.cpu_count()} cores shared by servers, store, stub and load generator; load average "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} before, "
        f"{load[3]:.2f}/{load[4]:.2f}/{load[5]:.2f} after (1/5/15 min). With 2 servers: tx/s "
        "and errors summed over both, p50/p99 the worse of the two, CPU both servers'.\n"
    )
    stub = "stub" in modes
    # The protocol and load CPU columns only when gRPC is measured, so HTTP-only tables
    # stay as before.
    both = "grpc" in protocols
    print(
        "| store | servers | mode | clients |"
        + (" protocol |" if both else "")
        + " tx/s | p50 ms | p99 ms | errors | server CPU µs/tx | store CPU µs/tx |"
        + (" stub CPU µs/tx |" if stub else "")
        + (" load CPU µs/tx |" if both else "")
    )
    print(
        "|---|---:|---|---:|"
        + ("---|" if both else "")
        + "---:|---:|---:|---:|---:|---:|"
        + ("---:|" if stub else "")
        + ("---:|" if both else "")
    )
    for r in results:
        print(
            f"| {r.store} | {r.servers} | {r.mode} | {r.clients} |"
            + (f" {r.protocol} |" if both else "")
            + f" {r.ok_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} "
            f"| {r.cpu_us_per_tx(r.server_cpu_s)} | {r.cpu_us_per_tx(r.store_cpu_s)} |"
            + (f" {r.cpu_us_per_tx(r.stub_cpu_s)} |" if stub else "")
            + (f" {r.cpu_us_per_tx(r.load_cpu_s)} |" if both else "")
        )


if __name__ == "__main__":
    main()
