"""The only I/O of the SDK: send an `HttpRequest`, return an `HttpResponse`, and drive an
`Op` generator with it. One transport for asyncio (aiohttp), one blocking (urllib3).

Both turn every failure to get an answer (refused, reset, timeout, bad URL) into
`TransportError`; reading the answer is the core's job (`check_answer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TypeVar

import aiohttp
import urllib3

from dtm.client._core import HttpRequest, HttpResponse, Op
from dtm.errors import TransportError

T = TypeVar("T")


class AsyncTransport:
    """One aiohttp session, created inside the running loop on first use (aiohttp binds
    sessions to a loop) and closed by `close`."""

    def __init__(self, *, timeout: float, headers: Mapping[str, str]) -> None:
        self._timeout = timeout
        self._headers = dict(headers)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: HttpRequest) -> HttpResponse:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        timeout = aiohttp.ClientTimeout(total=max(request.min_timeout, self._timeout))
        try:
            async with self._session.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=timeout,
            ) as response:
                return HttpResponse(response.status, await response.read())
        except TimeoutError as exc:
            raise TransportError(f"{request.method} {request.url}: timed out") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TransportError(f"{request.method} {request.url}: {exc!r}") from exc

    async def run(self, op: Op[T]) -> T:
        """Drive `op` to its result, sending each request it yields."""
        try:
            request = next(op)
            while True:
                request = op.send(await self.send(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            op.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            # Let aiohttp's connector finish closing its sockets before the loop may end.
            await asyncio.sleep(0)


class SyncTransport:
    """A urllib3 PoolManager: pooled keep-alive connections, no retries of its own (the
    caller decides; retrying a submit is safe, retrying a branch call is the server's job)."""

    def __init__(self, *, timeout: float, headers: Mapping[str, str]) -> None:
        self._timeout = timeout
        self._pool = urllib3.PoolManager(headers=dict(headers), retries=False)

    def send(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self._pool.request(
                request.method,
                request.url,
                body=request.body,
                headers={**self._pool.headers, **request.headers},
                timeout=urllib3.Timeout(total=max(request.min_timeout, self._timeout)),
                redirect=False,
            )
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise TransportError(f"{request.method} {request.url}: {exc!r}") from exc
        return HttpResponse(response.status, response.data)

    def run(self, op: Op[T]) -> T:
        """Drive `op` to its result, sending each request it yields."""
        try:
            request = next(op)
            while True:
                request = op.send(self.send(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            op.close()

    def close(self) -> None:
        self._pool.clear()
