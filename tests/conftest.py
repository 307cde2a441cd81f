"""Shared fixtures: one fast-timed DTM server for the session, fresh HTTP and gRPC business
stub state for each test, and a private server for tests that kill or reconfigure it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.grpc_busi import GrpcBusiness, GrpcEndpoints
from tests.harness import Business, DtmServer, Endpoints


@pytest.fixture(scope="session")
def busi_service() -> Iterator[Business]:
    service = Business()
    yield service
    service.close()


@pytest.fixture
def busi(busi_service: Business) -> Endpoints:
    return Endpoints(busi_service)


@pytest.fixture(scope="session")
def grpc_busi_service() -> Iterator[GrpcBusiness]:
    stub = GrpcBusiness()
    yield stub
    stub.close()


@pytest.fixture
def gbusi(grpc_busi_service: GrpcBusiness) -> GrpcEndpoints:
    """The gRPC business stub, with method names private to the test."""
    return GrpcEndpoints(grpc_busi_service)


@pytest.fixture(scope="session")
def dtm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DtmServer]:
    server = DtmServer(tmp_path_factory.mktemp("dtm")).start()
    yield server
    server.stop()


@pytest.fixture
def private_dtm(tmp_path: Path) -> Iterator[Callable[..., DtmServer]]:
    """Factory of servers owned by one test: `private_dtm(RetryInterval=2)`."""
    started: list[DtmServer] = []

    def make(**config: Any) -> DtmServer:
        workdir = tmp_path / f"dtm{len(started)}"
        workdir.mkdir()
        server = DtmServer(workdir, **config)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def gid(request: pytest.FixtureRequest) -> str:
    """A unique gid that names the test, for readable server logs."""
    return f"{request.node.name[:80]}-{uuid.uuid4().hex[:8]}"
