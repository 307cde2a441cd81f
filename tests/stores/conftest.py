"""One contract suite for every store backend: `store` is parametrized by backend name.

A backend joins the suite by adding a factory to `FACTORIES`; a factory gets the test's
temporary directory and returns a new, unopened store. Called twice in one test, it must
return stores over the same data, so tests can close a store and open it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from dtm.server.stores.base import Store
from dtm.server.stores.sqlite import SqliteStore

StoreFactory = Callable[[], Store]

FACTORIES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: SqliteStore(str(tmp / "dtm.sqlite3")),
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
