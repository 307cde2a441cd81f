"""One contract suite for every store backend: `store` is parametrized by backend name.

Each backend has a module `tests/stores/factory_<name>.py` with `make(tmp_path) -> Store`:
a new, unopened store over data private to the test (a file in tmp_path, a database or a key
prefix named after it). Called twice in one test it must return stores over the same data,
so tests can close a store and open it again. Server stores connect to the services of this
machine; when one is down the tests fail (never skip): scripts/ensure-services.sh starts them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

import tests.stores
from dtm.server.stores.base import Store

StoreFactory = Callable[[], Store]

FACTORIES: dict[str, Callable[[Path], Store]] = {
    info.name.removeprefix("factory_"): importlib.import_module(f"tests.stores.{info.name}").make
    for info in pkgutil.iter_modules(tests.stores.__path__)
    if info.name.startswith("factory_")
}


@pytest.fixture(params=sorted(FACTORIES))
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def new_store(backend: str, tmp_path: Path) -> StoreFactory:
    """Makes unopened stores over this test's data."""
    return lambda: FACTORIES[backend](tmp_path)


# Function loop scope, like the tests, so a store's futures live on the test's own loop.
@pytest_asyncio.fixture(loop_scope="function")
async def store(new_store: StoreFactory) -> AsyncIterator[Store]:
    opened = new_store()
    await opened.open()
    await opened.migrate()
    yield opened
    await opened.close()
