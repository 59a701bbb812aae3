"""The contract suite against `AsyncFakeUnitOfWork`, through the async suite's sync facade.

As in `tests/contract_fake`, every unit of work is the fake on one in-memory database per
test; as in `tests/contract`, each coroutine runs on a private event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import persistence.factories
from persistence.testing import AsyncFakeUnitOfWork, FakeDatabase
from tests.contract.conftest import Loops, SyncFacade


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = [i for i in items if "contract_async_fake" in str(i.path)]
    left_out = [i for i in here if i.get_closest_marker("database_only")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [i for i in items if i not in left_out]


@pytest.fixture
def fake_database() -> FakeDatabase:
    return FakeDatabase()


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
def persistence_engine() -> None:
    """No database: the fake ignores the engine it is given."""
    return None


@pytest.fixture
def uow(facade: type[SyncFacade]) -> SyncFacade:
    return facade()


@pytest.fixture
def task_factory() -> Any:
    from persistence.factories import TaskFactory

    return TaskFactory.bound_to(None)


@pytest.fixture(autouse=True)
def _every_unit_of_work_is_the_async_fake(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    facade: type[SyncFacade],
    fake_database: FakeDatabase,
) -> None:
    def committed_titles(_engine: object, user: str) -> list[str]:
        return [task.title for task in fake_database.tasks() if task.user_id == user]

    names = request.function.__globals__
    monkeypatch.setitem(names, "UnitOfWork", facade)
    if "committed_titles" in names:
        monkeypatch.setitem(names, "committed_titles", committed_titles)
    monkeypatch.setattr(persistence.factories, "UnitOfWork", facade)
