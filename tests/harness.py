"""Real parts for tests: the DTM server as a child process, and a business service stub
whose answers each test programs. Both listen on loopback ports the OS picks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import requests
import yaml
from aiohttp import web

# Fast timings so recovery paths finish within a test: upstream's keys, small values.
FAST_CONFIG: dict[str, Any] = {
    "TransCronInterval": 0.2,
    "RetryInterval": 1,
    "TimeoutToFail": 3,
    "RequestTimeout": 2,
    "LogLevel": "info",
}


class DtmServer:
    """`dtm serve` in a child process, on its own SQLite file."""

    def __init__(self, workdir: Path, **config: Any) -> None:
        self.workdir = workdir
        self.config: dict[str, Any] = {**FAST_CONFIG, **config}
        self.config["Store"] = {
            "Driver": "sqlite",
            "Path": str(workdir / "dtm.db"),
            **config.get("Store", {}),
        }
        self.config.setdefault("HttpHost", "127.0.0.1")
        self.config.setdefault("HttpPort", 0)
        self.config.setdefault("GrpcPort", 0)  # many servers run at once: each its own port
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / "dtm.log"
        self.http = requests.Session()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        """The URL clients are given: upstream's `/api/dtmsvr` prefix."""
        return f"{self.base}/api/dtmsvr"

    def start(self, timeout: float = 20) -> DtmServer:
        conf = dict(self.config)
        if self.port:
            conf["HttpPort"] = self.port  # a restart keeps the address clients know
        path = self.workdir / "conf.yml"
        path.write_text(yaml.safe_dump(conf))
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dtm", "serve", "-c", str(path)],
            stdout=log,
            stderr=log,
            env=env,
        )
        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"listening on http://[^:]+:(\d+)")
        offset = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dtm exited with {self.proc.returncode}:\n{self.logs()}")
            text = self.log_path.read_bytes()
            found = list(pattern.finditer(text, offset))
            if found:
                self.port = int(found[-1].group(1))
                offset = len(text)
                try:
                    if self.http.get(f"{self.base}/api/ping", timeout=1).ok:
                        return self
                except requests.ConnectionError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"dtm did not start in {timeout}s:\n{self.logs()}")

    @property
    def grpc_target(self) -> str:
        """`host:port` of the gRPC API, as the last start logged it."""
        found = re.findall(r"grpc listening on [^\s:]+:(\d+)", self.logs())
        assert found, f"no gRPC address in the log:\n{self.logs()}"
        return f"127.0.0.1:{found[-1]}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: nothing gets a chance to finish or flush."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    # --- client helpers ------------------------------------------------------------------

    def post(self, op: str, body: Any) -> requests.Response:
        return self.http.post(f"{self.api}/{op}", json=body, timeout=30)

    def get(self, op: str, **params: Any) -> requests.Response:
        return self.http.get(f"{self.api}/{op}", params=params, timeout=30)

    def query(self, gid: str) -> dict[str, Any]:
        resp = self.get("query", gid=gid)
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def branch_rows(self, gid: str) -> list[tuple[str, str, str]]:
        """The transaction's branches as (branch_id, op, status), in the server's order."""
        return [(b["branch_id"], b["op"], b["status"]) for b in self.query(gid)["branches"]]

    def branch_records(self, gid: str) -> list[tuple[str, str, str, bytes]]:
        """`branch_rows` with each branch's bin_data (a workflow's recorded result)."""
        return [
            (b["branch_id"], b["op"], b["status"], base64.b64decode(b.get("bin_data", "")))
            for b in self.query(gid)["branches"]
        ]

    def status(self, gid: str) -> str | None:
        trans = self.query(gid)["transaction"]
        return trans["status"] if trans else None

    def wait_status(self, gid: str, status: str, timeout: float = 15) -> dict[str, Any]:
        """Poll until the transaction reaches `status`; fail with what it is instead."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.query(gid)
            current = found["transaction"]["status"] if found["transaction"] else None
            if current == status:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{gid}: status {current!r}, wanted {status!r}: {found}")
            time.sleep(0.05)

    def new_gid(self) -> str:
        gid: str = self.get("newGid").json()["gid"]
        return gid


# --- the business service stubs ------------------------------------------------------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


CallT = TypeVar("CallT", bound=_Named)
AnswerT = TypeVar("AnswerT")


class Stub(Generic[CallT, AnswerT]):
    """A business service stub on an event loop of its own, in a daemon thread.

    `program(name, a, b)` answers a, then b, then b again for every later call; a name never
    programmed answers `default`. Every call is recorded. A subclass starts and stops its
    server (`_start` sets `self.port`) and hands each call to `_record`.
    """

    def __init__(self, default: AnswerT) -> None:
        self._default = default
        self._answers: dict[str, list[AnswerT | Callable[[CallT], AnswerT]]] = {}
        self._calls: list[CallT] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), f"{type(self).__name__} did not start"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    def _record(self, call: CallT) -> AnswerT | Callable[[CallT], AnswerT]:
        """Record `call`; what it is to be answered."""
        with self._lock:
            self._calls.append(call)
            queue = self._answers.get(call.name, [])
            return queue.pop(0) if len(queue) > 1 else (queue[0] if queue else self._default)

    def program(self, name: str, *answers: AnswerT | Callable[[CallT], AnswerT]) -> None:
        with self._lock:
            self._answers[name] = list(answers)

    def calls(self, name: str | None = None) -> list[CallT]:
        with self._lock:
            return [c for c in self._calls if name is None or c.name == name]

    def wait_calls(self, name: str, count: int, timeout: float = 10) -> list[CallT]:
        deadline = time.monotonic() + timeout
        while len(self.calls(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: {len(self.calls(name))} calls, wanted {count}")
            time.sleep(0.02)
        return self.calls(name)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"dtm_result": "SUCCESS"})
    delay: float = 0.0


OK = Answer()
FAILURE = Answer(409, {"dtm_result": "FAILURE", "message": "business said no"})
ONGOING = Answer(425, {"dtm_result": "ONGOING"})
ERROR = Answer(500, {"message": "business broke"})


def slow(seconds: float, answer: Answer = OK) -> Answer:
    return Answer(answer.status, answer.body, seconds)


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    query: dict[str, str]
    body: bytes
    headers: dict[str, str]
    at: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Business(Stub[Call, Answer]):
    """An HTTP service whose endpoints `/busi/<name>` answer as each test programs them (a
    `Stub`: an endpoint never programmed answers 200 SUCCESS)."""

    def __init__(self) -> None:
        super().__init__(OK)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/busi/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        call = Call(
            name=request.match_info["name"],
            method=request.method,
            query=dict(request.query),
            body=await request.read(),
            headers=dict(request.headers),
            at=time.monotonic(),
        )
        planned = self._record(call)
        answer = planned(call) if callable(planned) else planned
        if answer.delay:
            await asyncio.sleep(answer.delay)
        body = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
        return web.Response(status=answer.status, text=body, content_type="application/json")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/busi/{name}"

    def reset(self) -> None:
        with self._lock:
            self._answers.clear()
            self._calls.clear()


class Endpoints:
    """One test's view of the business service: its endpoint names carry a prefix of
    their own, so a transaction another test left unfinished on a shared server can never
    call (or use up the answers of) this test's endpoints."""

    def __init__(self, service: Business) -> None:
        self.service = service
        self.prefix = uuid.uuid4().hex[:8]

    def url(self, name: str) -> str:
        return self.service.url(f"{self.prefix}-{name}")

    def program(self, name: str, *answers: Answer | Callable[[Call], Answer]) -> None:
        self.service.program(f"{self.prefix}-{name}", *answers)

    def calls(self, name: str | None = None) -> list[Call]:
        if name is not None:
            return self.service.calls(f"{self.prefix}-{name}")
        return [c for c in self.service.calls() if c.name.startswith(f"{self.prefix}-")]

    def wait_calls(self, name: str, count: int, timeout: float = 10) -> list[Call]:
        return self.service.wait_calls(f"{self.prefix}-{name}", count, timeout)

    def count(self, name: str) -> int:
        return len(self.calls(name))


def closed_port_url() -> str:
    """A loopback URL nothing listens on: a branch that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/busi/down"


def servers(tmp: Path, count: int, **config: Any) -> Iterator[DtmServer]:
    for i in range(count):
        (tmp / f"dtm{i}").mkdir(exist_ok=True)
        yield DtmServer(tmp / f"dtm{i}", **config)
