"""The contract suite against `AsyncFakeUnitOfWork`, through the async suite's sync facade
(see `tests/fake_contract.py` and `tests/contract/conftest.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from persistence.testing import AsyncFakeUnitOfWork, FakeDatabase
from tests.contract.conftest import Loops, SyncFacade
from tests.fake_contract import (
    fake_database,
    leave_out_database_only,
    make_every_unit_of_work,
    persistence_engine,
    task_factory,
)

__all__ = ["fake_database", "persistence_engine", "task_factory"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    leave_out_database_only(config, items, "contract_async_fake")


@pytest.fixture
def loops() -> Iterator[Loops]:
    running = Loops()
    yield running
    running.close()


@pytest.fixture
def facade(loops: Loops, fake_database: FakeDatabase) -> type[SyncFacade]:
    class AsyncFakeFacade(SyncFacade):
        """The sync facade over an `AsyncFakeUnitOfWork` (the real one's `bind` ignored)."""

        def __init__(self, bind: Any = None, **options: Any) -> None:
            self._uow = AsyncFakeUnitOfWork(fake_database, **options)  # type: ignore[assignment]

    AsyncFakeFacade.loops = loops
    return AsyncFakeFacade


@pytest.fixture
def uow(facade: type[SyncFacade]) -> SyncFacade:
    return facade()


@pytest.fixture(autouse=True)
def _every_unit_of_work_is_the_async_fake(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    facade: type[SyncFacade],
    fake_database: FakeDatabase,
) -> None:
    make_every_unit_of_work(request, monkeypatch, facade, fake_database)
