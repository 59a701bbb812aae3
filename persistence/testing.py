"""A pytest plugin (entry point `pytest11`) for code built on `persistence`.

Fixtures:

- `persistence_database` (session): a throwaway database with the schema, on the server
  named by `TEST_DATABASE_URL` (else `DATABASE_URL`, else the embedded PostgreSQL),
  dropped at the end. While it lives, `DATABASE_URL` points at it, so code under test
  that calls `UnitOfWork()` with no arguments uses it too.
- `uow`: a `UnitOfWork` whose commits are real inside the test and undone when it ends;
  `async_uow`: the same for an `AsyncUnitOfWork`, on the test's event loop (pytest-asyncio).
- `task_factory`: a factory-boy factory that creates valid tasks through `uow.tasks.create`
  on the test's connection: `task_factory(user_id="alice")`, `task_factory.create_batch(3)`.
- `persistence_engine`: the database's engine for tests that must see committed state
  from other connections; every task is deleted when the test ends.

`FakeUnitOfWork` and `AsyncFakeUnitOfWork` (also exported here) are in-memory twins for
unit tests that should not touch a database; the package's contract suite runs against them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the `test` extra brings it; without it, no async_uow
    pytest_asyncio = None  # type: ignore[assignment]
from sqlalchemy import Connection, Engine, delete, text
from sqlalchemy.exc import DBAPIError

from persistence.async_database import create_async_engine
from persistence.async_unit_of_work import AsyncUnitOfWork
from persistence.config import load_settings
from persistence.database import (
    configured_url,
    create_engine,
    dispose_engine,
    init_db,
    normalize_url,
)
from persistence.errors import PersistenceError
from persistence.fake import AsyncFakeUnitOfWork, FakeDatabase, FakeUnitOfWork
from persistence.models import Task
from persistence.unit_of_work import UnitOfWork
from persistence.unit_of_work_base import default_binds

__all__ = [
    "AsyncFakeUnitOfWork",
    "FakeAsyncUnitOfWork",
    "FakeDatabase",
    "FakeUnitOfWork",
    "TaskFactory",  # noqa: F822 - provided lazily by __getattr__ (needs factory-boy)
    "TestDatabase",
    "server_url",
]

FakeAsyncUnitOfWork = AsyncFakeUnitOfWork
"""Another name for `AsyncFakeUnitOfWork`."""


def __getattr__(name: str) -> Any:
    # `TaskFactory` needs factory-boy (the `test` extra): imported only when asked for;
    # without it, `MissingExtraError` names the extra.
    if name == "TaskFactory":
        from persistence.factories import TaskFactory

        return TaskFactory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class TestDatabase:
    """The throwaway database of a test session."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    name: str
    url: str
    engine: Engine


def server_url() -> str:
    """The server tests run on: `TEST_DATABASE_URL`, else `DATABASE_URL`, else embedded."""
    settings = load_settings()
    return settings.test_database_url or configured_url(settings)


def _admin_engine(url: str) -> Engine:
    # CREATE/DROP DATABASE can't run inside a transaction. A pre-ping (set-up and tear-down
    # only) so that dropping the database still works after a test restarted the server.
    return create_engine(
        url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0, pool_pre_ping=True
    )


@pytest.fixture(scope="session")
def persistence_database() -> Iterator[TestDatabase]:
    """A fresh database with the `tasks` table; dropped when the test session ends."""
    base = server_url()
    name = f"persistence_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(base)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_url(base).set(database=name).render_as_string(hide_password=False)
    # The user's read replicas (DATABASE_READ_URL, from the environment or .env) hold the
    # user's data, not the test database's: read-only units of work read the test
    # database too. Set, even empty, in the environment, it wins over .env.
    test_environment = {"DATABASE_URL": url, "DATABASE_READ_URL": ""}
    previous = {variable: os.environ.get(variable) for variable in test_environment}
    os.environ.update(test_environment)
    engine = create_engine(url)
    dispose_engine()
    try:
        init_db(engine)
        yield TestDatabase(name=name, url=url, engine=engine)
    finally:
        engine.dispose()
        dispose_engine()
        for variable, value in previous.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def persistence_connection(persistence_database: TestDatabase) -> Iterator[Connection]:
    """A connection inside a transaction that is rolled back when the test ends.

    While it lives, `UnitOfWork()` with no `bind` (in the code under test, say) joins it
    too, so it sees what `task_factory` made and its work is undone with the test's.
    """
    with persistence_database.engine.connect() as connection:
        outer = connection.begin()  # never committed
        default_binds["sync"] = connection
        try:
            yield connection
        finally:
            default_binds["sync"] = None
            if outer.is_active:
                outer.rollback()


@pytest.fixture
def uow(persistence_connection: Connection) -> UnitOfWork:
    """A unit of work (enter it with `with uow:`) whose work vanishes after the test."""
    return UnitOfWork(persistence_connection)


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def async_uow(persistence_database: TestDatabase) -> AsyncIterator[AsyncUnitOfWork]:
        """An `AsyncUnitOfWork` (enter it with `async with async_uow:`) whose commits are
        real inside the test and undone when it ends; on the test's own event loop. Seed it
        with `await async_uow.tasks.create_many(...)` (`task_factory` writes through the
        sync connection, which this one can't see)."""
        # Building an engine reads the settings (and `.env`): off the loop, never blocking it.
        engine = await asyncio.to_thread(
            create_async_engine, persistence_database.url, pool_size=1, max_overflow=0
        )
        try:
            async with engine.connect() as connection:
                await connection.begin()
                default_binds["async"] = connection  # `AsyncUnitOfWork()` joins it too
                try:
                    yield AsyncUnitOfWork(connection)
                finally:
                    default_binds["async"] = None
                    if connection.in_transaction():
                        await connection.rollback()
        finally:
            await engine.dispose()


@pytest.fixture
def task_factory(request: pytest.FixtureRequest, persistence_connection: Connection) -> Any:
    """`TaskFactory` bound to the test's connection: tasks made through validation.

    Raises `PersistenceError` in a test that uses `async_uow`, whose connection could not
    see the tasks: seed those with `await async_uow.tasks.create_many(...)`; and
    `MissingExtraError` (naming the `test` extra) when factory-boy is not installed.
    """
    if "async_uow" in request.fixturenames:
        raise PersistenceError(
            "task_factory writes through the sync test connection, which async_uow can't "
            "see: seed an async test with `await async_uow.tasks.create_many(...)`"
        )
    from persistence.factories import TaskFactory  # factory-boy is a test-only dependency

    return TaskFactory.bound_to(persistence_connection)


@pytest.fixture
def persistence_engine(persistence_database: TestDatabase) -> Iterator[Engine]:
    """The test database's engine, for real commits; all tasks are deleted afterwards."""
    yield persistence_database.engine
    for attempt in (1, 2):
        try:
            with persistence_database.engine.begin() as connection:
                connection.execute(delete(Task))
            return
        except DBAPIError as exc:
            # A test that restarted the server leaves dead pooled connections behind.
            if attempt == 2 or not exc.connection_invalidated:
                raise
