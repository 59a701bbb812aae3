"""The contract suite against `FakeUnitOfWork`: the same tests, the fake in every place.

Every `UnitOfWork` the contract tests use (the name in their module, the task factory's,
the `uow` fixture) becomes a `FakeUnitOfWork` on one in-memory database per test, and
"what another connection sees as committed" is read from that database. Tests marked
`database_only` inspect PostgreSQL itself (sessions, query plans) and are left out.
"""

from __future__ import annotations

from typing import Any

import pytest

import persistence.factories
from persistence.testing import FakeDatabase, FakeUnitOfWork


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = [i for i in items if "contract_fake" in str(i.path)]
    left_out = [i for i in here if i.get_closest_marker("database_only")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [i for i in items if i not in left_out]


@pytest.fixture
def fake_database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def fake(fake_database: FakeDatabase) -> type[FakeUnitOfWork]:
    class Fake(FakeUnitOfWork):
        """A FakeUnitOfWork that takes (and ignores) the real one's `bind`."""

        def __init__(self, bind: Any = None, **options: Any) -> None:
            super().__init__(fake_database, **options)

    return Fake


@pytest.fixture
def persistence_engine() -> None:
    """No database: the fake ignores the engine it is given."""
    return None


@pytest.fixture
def uow(fake: type[FakeUnitOfWork]) -> FakeUnitOfWork:
    return fake()


@pytest.fixture
def task_factory() -> Any:
    from persistence.factories import TaskFactory

    return TaskFactory.bound_to(None)


@pytest.fixture(autouse=True)
def _every_unit_of_work_is_fake(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    fake: type[FakeUnitOfWork],
    fake_database: FakeDatabase,
) -> None:
    def committed_titles(_engine: object, user: str) -> list[str]:
        return [task.title for task in fake_database.tasks() if task.user_id == user]

    names = request.function.__globals__
    monkeypatch.setitem(names, "UnitOfWork", fake)
    if "committed_titles" in names:
        monkeypatch.setitem(names, "committed_titles", committed_titles)
    monkeypatch.setattr(persistence.factories, "UnitOfWork", fake)
