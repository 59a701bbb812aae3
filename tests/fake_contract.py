"""What the contract suites against the fakes share: the same tests, a fake everywhere.

Every `UnitOfWork` the contract tests use (the name in their module, the task factory's,
the `uow` fixture) becomes the fake on one in-memory database per test, and "what another
connection sees as committed" is read from that database. Tests marked `database_only`
inspect PostgreSQL itself (sessions, query plans) and are left out.
"""

from __future__ import annotations

from typing import Any

import pytest

import persistence.factories
from persistence.testing import FakeDatabase


def leave_out_database_only(config: pytest.Config, items: list[pytest.Item], folder: str) -> None:
    """Deselect the `database_only` tests collected under `folder`."""
    left_out = [
        item
        for item in items
        if folder in str(item.path) and item.get_closest_marker("database_only")
    ]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]


def make_every_unit_of_work(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    unit_of_work: Any,
    database: FakeDatabase,
) -> None:
    """Put `unit_of_work` wherever the contract test would build a real one."""

    def committed_titles(_engine: object, user: str) -> list[str]:
        return [task.title for task in database.tasks() if task.user_id == user]

    names = request.function.__globals__
    monkeypatch.setitem(names, "UnitOfWork", unit_of_work)
    if "committed_titles" in names:
        monkeypatch.setitem(names, "committed_titles", committed_titles)
    monkeypatch.setattr(persistence.factories, "UnitOfWork", unit_of_work)


@pytest.fixture
def fake_database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def persistence_engine() -> None:
    """No database: the fake ignores the engine it is given."""
    return None


@pytest.fixture
def task_factory() -> Any:
    from persistence.factories import TaskFactory

    return TaskFactory.bound_to(None)
