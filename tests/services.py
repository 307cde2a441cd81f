"""Private Redis, PostgreSQL and MariaDB instances that a test may stop, kill and start.

The machine's shared services must stay up for other tests, so a test that takes a store
away runs its own copy, from the same Debian binaries, on a loopback port below the
kernel's ephemeral range (32768 up: ports the OS hands out to outgoing connections, so a
port below it stays ours between a stop and the next start). Each instance is a child
process in its own session: `kill()` SIGKILLs the whole process group, so no PostgreSQL
backend outlives its postmaster and blocks the next start.

`service_fixture(RedisService)` makes a module-scoped fixture: the data directory is made
once (initdb and mariadb-install-db take a moment) and every start reuses it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pymysql
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")

# Ports the kernel never picks for outgoing connections start here (ip_local_port_range).
_EPHEMERAL_START = 32768


def free_port(low: int = 20000, high: int = _EPHEMERAL_START - 1) -> int:
    """A loopback TCP port below the ephemeral range that nothing listens on now."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


class ServiceError(RuntimeError):
    """A private service would not start, or would not stop."""


class Service:
    """One private server process on a fixed loopback port and a data directory it keeps.

    `start()` returns once the server answers its own protocol, `stop()` shuts it down
    cleanly, `kill()` SIGKILLs it; a later `start()` comes back on the same port with the
    same data.
    """

    name: ClassVar[str]

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = workdir
        self._port_fixed = port is not None
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self._prepared = False

    # --- what each service says -----------------------------------------------------

    def command(self) -> list[str]:
        """The server's command line, run in the foreground."""
        raise NotImplementedError

    def ready(self) -> bool:
        """One cheap round trip: does the server answer queries now?"""
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the data directory; runs once, before the first start."""

    def after_first_start(self) -> None:
        """Create what clients expect to find (a database); runs once."""

    def run_as(self) -> str | None:
        """The OS user the server runs as (None: ours)."""
        return None

    def cwd(self) -> Path:
        """A directory that user may enter."""
        return self.workdir

    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    # --- life cycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30) -> Service:
        """Start and wait until it answers; the first start may move to another port when
        someone else took this one."""
        if self.running:
            return self
        first = not self._prepared
        if first:
            self.prepare()
            self._prepared = True
        attempts = 1 if (self._port_fixed or not first) else 3
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                break
            except ServiceError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
        if first:
            self.after_first_start()
        return self

    def _start_once(self, timeout: float) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"--- start on port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd(),
                user=self.run_as(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if self.ready():
                    return
            time.sleep(0.05)
        self.kill()
        raise ServiceError(f"{self.name} did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> None:
        """Clean shutdown; SIGKILL if it does not finish in time."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServiceError(
                f"{self.name} ignored {self.stop_signal.name} for {timeout}s"
            ) from None
        self._reap_group()

    def kill(self) -> None:
        """SIGKILL to the server and everything it started: nothing gets to finish."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        """Wait until no process of the session is left (PostgreSQL's backends)."""
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop for good (the fixture's teardown)."""
        with contextlib.suppress(ServiceError):
            self.stop()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class _RedisServer(Service):
    """redis-server on loopback, its files in `workdir`, no RDB snapshots (so no forks);
    `options()` says what else this kind of server is."""

    def options(self) -> list[str]:
        raise NotImplementedError

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--save", "",
            "--protected-mode", "no",
            *self.options(),
        ]  # fmt: skip

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            # While loading the AOF, redis answers -LOADING.
            return s.recv(64).startswith(b"+PONG")


class RedisService(_RedisServer):
    """redis-server with an append-only file synced on every write: an acknowledged write
    survives `kill()` and comes back with the next start."""

    name = "redis"

    def options(self) -> list[str]:
        return ["--appendonly", "yes", "--appendfsync", "always"]


def _traversable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


class PostgresService(Service):
    """PostgreSQL 15, trust authentication for user `postgres` over TCP.

    initdb and postgres refuse to run as root, so both run as the `postgres` OS user. That
    user cannot enter pytest's temporary directories (mode 0700, root's), so the cluster
    lives in a directory of its own under the system temp dir, removed by `close()`.
    """

    name = "postgres"
    settings: ClassVar[dict[str, str]] = {}
    """Extra server settings (`-c name=value`), for a subclass to set."""
    # SIGTERM is "smart" shutdown, which waits for the clients' pooled connections to go;
    # SIGINT is "fast": clients are disconnected, as when an administrator restarts it.
    stop_signal = signal.SIGINT

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        super().__init__(workdir, port=port)
        self._own_root: Path | None = None
        root = workdir
        if not _traversable_by_others(workdir):
            self._own_root = root = Path(tempfile.mkdtemp(prefix="dtm-pg-"))
        self.root = root
        self.datadir = root / "data"
        self.sockdir = root / "sock"

    def run_as(self) -> str | None:
        return "postgres"

    def cwd(self) -> Path:
        return self.root

    def prepare(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        self.sockdir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.sockdir, "postgres", "postgres")
        out = subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.root,
            user="postgres",
            capture_output=True,
            timeout=60,
            check=False,
        )
        if out.returncode:
            raise ServiceError(f"initdb failed: {out.stdout!r} {out.stderr!r}")

    def command(self) -> list[str]:
        return [
            str(PG_BIN / "postgres"),
            "-D", str(self.datadir),
            "-h", "127.0.0.1",
            "-p", str(self.port),
            "-k", str(self.sockdir),
            "-c", "max_connections=200",
            *(f"-c{name}={value}" for name, value in self.settings.items()),
        ]  # fmt: skip

    def ready(self) -> bool:
        out = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            timeout=5,
            check=False,
        )
        return out.returncode == 0

    def close(self) -> None:
        super().close()
        if self._own_root is not None:
            shutil.rmtree(self._own_root, ignore_errors=True)


class MariaDBService(Service):
    """MariaDB 10.11 as root with an empty password, and an empty `dtm` database."""

    name = "mariadb"
    databases: ClassVar[tuple[str, ...]] = ("dtm",)

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        super().__init__(workdir, port=port)
        self.datadir = workdir / "data"
        self.socket = workdir / "mysqld.sock"

    def prepare(self) -> None:
        if (self.datadir / "mysql").exists():
            return
        out = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            cwd=self.workdir,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if out.returncode:
            raise ServiceError(f"mariadb-install-db failed: {out.stdout!r} {out.stderr!r}")

    def command(self) -> list[str]:
        return [
            "mariadbd",
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.workdir / 'mariadbd.pid'}",
            "--user=root",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            "--max-connections=300",
        ]

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", password="", connect_timeout=2, **kwargs
        )

    def ready(self) -> bool:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True

    def after_first_start(self) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            for db in self.databases:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")


S = TypeVar("S", bound=Service)


def service_fixture(cls: type[S], *, scope: Any = "module") -> Callable[..., Iterator[S]]:
    """A fixture that starts one `cls` instance for the module (by default) and stops it
    after: `redis_service = service_fixture(RedisService)` in a test module."""

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S]:
        service = cls(tmp_path_factory.mktemp(cls.name))
        try:
            service.start()
            yield service
        finally:
            service.close()

    return fixture


class RedisClusterNodeService(_RedisServer):
    """One master of a `RedisClusterService`: cluster mode, nothing persisted."""

    name = "redis-cluster-node"

    def options(self) -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.workdir / f"nodes-{self.port}.conf"),
            "--appendonly", "no",
        ]  # fmt: skip

    def cluster_ok(self) -> bool:
        """Does this node see every slot served?"""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"CLUSTER INFO\r\n")
            reply = b""
            while b"cluster_state:" not in reply or not reply.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return b"cluster_state:ok" in reply


class RedisClusterService:
    """A Redis Cluster of `masters` private redis-server processes on loopback, without
    replicas: `start()` returns once every node reports `cluster_state:ok`; `hosts` is
    what `Store.Host` takes ("127.0.0.1:P1,127.0.0.1:P2,...")."""

    def __init__(self, workdir: Path, *, masters: int = 3) -> None:
        self.workdir = workdir
        self.nodes = [
            RedisClusterNodeService(self._node_dir(workdir, number)) for number in range(masters)
        ]

    @staticmethod
    def _node_dir(workdir: Path, number: int) -> Path:
        path = workdir / f"node-{number}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 60) -> RedisClusterService:
        for node in self.nodes:
            node.start()
        create = [
            "redis-cli",
            "--cluster", "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        out = subprocess.run(
            create,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode:
            self.close()
            raise ServiceError(f"redis-cli --cluster create failed: {out.stdout!r} {out.stderr!r}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if all(node.cluster_ok() for node in self.nodes):
                    return self
            time.sleep(0.1)
        self.close()
        raise ServiceError(f"the Redis Cluster did not reach cluster_state:ok in {timeout}s")

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
