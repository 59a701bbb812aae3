"""The contract suite against `FakeUnitOfWork` (see `tests/fake_contract.py`)."""

from __future__ import annotations

from typing import Any

import pytest

from persistence.testing import FakeDatabase, FakeUnitOfWork
from tests.fake_contract import (
    fake_database,
    leave_out_database_only,
    make_every_unit_of_work,
    persistence_engine,
    task_factory,
)

__all__ = ["fake_database", "persistence_engine", "task_factory"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    leave_out_database_only(config, items, "contract_fake")


@pytest.fixture
def fake(fake_database: FakeDatabase) -> type[FakeUnitOfWork]:
    class Fake(FakeUnitOfWork):
        """A FakeUnitOfWork that takes (and ignores) the real one's `bind`."""

        def __init__(self, bind: Any = None, **options: Any) -> None:
            super().__init__(fake_database, **options)

    return Fake


@pytest.fixture
def uow(fake: type[FakeUnitOfWork]) -> FakeUnitOfWork:
    return fake()


@pytest.fixture(autouse=True)
def _every_unit_of_work_is_fake(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    fake: type[FakeUnitOfWork],
    fake_database: FakeDatabase,
) -> None:
    make_every_unit_of_work(request, monkeypatch, fake, fake_database)
