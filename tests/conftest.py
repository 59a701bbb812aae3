"""Shared helpers for the package's own tests; the fixtures come from `persistence.testing`."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlmodel import col

from benchmarks.proxy import LatencyProxy
from persistence import AsyncUnitOfWork, Task, UnitOfWork, create_engine, pool_stats
from persistence.database import normalize_url
from persistence.statements import compile_statement
from persistence.testing import TestDatabase
from tests.proxying import proxy_for


@pytest.fixture
def user() -> str:
    """A user id no other test uses."""
    return f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def killer_engine(persistence_database: TestDatabase) -> Iterator[Engine]:
    """An engine that reaches the server's backends directly, to kill them.

    Behind a transaction-mode pooler, a connection through the pooler may be handed the
    very backend it means to kill; `PERSISTENCE_TEST_DIRECT_URL` (set by `.ci/run` for the
    PgBouncer run) names the server behind the pooler.
    """
    direct = os.environ.get("PERSISTENCE_TEST_DIRECT_URL")
    if not direct:
        yield persistence_database.engine
        return
    url = normalize_url(direct).set(database=persistence_database.name)
    engine = create_engine(url, pool_size=2, max_overflow=0)
    yield engine
    engine.dispose()


def terminate(killer: Engine, *pids: int) -> None:
    """Kill server backends from another connection, as a restarted server would."""
    with killer.connect() as connection:
        for pid in pids:
            connection.execute(select(func.pg_terminate_backend(pid)))
    time.sleep(0.05)  # let the backends exit


@pytest.fixture
def proxy(persistence_database: TestDatabase) -> Iterator[LatencyProxy]:
    """A round-trip counting, cuttable proxy in front of the test database's server."""
    with proxy_for(persistence_database) as running:
        yield running


def execute_in(uow: Any, statement: Any) -> list[tuple[Any, ...]]:
    """Send a statement of the test's own on the unit of work's connection, in its
    transaction if one has begun, around the repository (to plant a server error, or ask
    the server something); its rows. Works for `UnitOfWork` and the contract suite's
    sync facade over an `AsyncUnitOfWork`."""
    compiled = compile_statement(statement)
    args = compiled.args({})
    facade = getattr(uow, "_uow", None)
    if facade is not None:
        found: list[tuple[Any, ...]] = uow.loops.run(execute_in_async(facade, statement))
        return found
    cursor = uow._connected().execute(compiled.sql, args)
    rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description else []
    return rows


async def execute_in_async(uow: AsyncUnitOfWork, statement: Any) -> list[tuple[Any, ...]]:
    """`execute_in` for an `AsyncUnitOfWork`."""
    compiled = compile_statement(statement)
    cursor = await (await uow._connected()).execute(compiled.sql, compiled.args({}))
    return await cursor.fetchall() if cursor.description else []


def backend_pid(uow: UnitOfWork) -> int:
    """The server process serving the unit of work's connection."""
    return int(execute_in(uow, select(func.pg_backend_pid()))[0][0])


def libpq_url(url: str) -> str:
    """`url` as libpq and psycopg take it (no SQLAlchemy driver name)."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def checked_out(engine: Any) -> int:
    """How many of the engine's pooled connections units of work hold right now."""
    return pool_stats(engine).lent


def open_transactions(engine: Engine) -> int:
    """How many other sessions on the engine's database sit in an open transaction."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                )
            ).scalar_one()
        )


def committed_count(engine: Engine, user: str) -> int:
    """How many of `user`'s tasks another connection sees as committed."""
    with engine.connect() as other:
        return int(
            other.execute(
                select(func.count()).select_from(Task).where(col(Task.user_id) == user)
            ).scalar_one()
        )
