"""Shared helpers for the package's own tests; the fixtures come from `persistence.testing`."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text
from sqlmodel import col

from benchmarks.proxy import LatencyProxy
from persistence import AsyncUnitOfWork, Task, UnitOfWork, create_engine, pool_stats
from persistence.database import normalize_url
from persistence.statements import compile_statement
from persistence.testing import TestDatabase
from tests.proxying import engine_through, proxy_for

# The bound of every wait on an event in the tests: reached only when something is stuck,
# never part of a passing run, however loaded the machine.
STUCK = 60.0


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
    """Kill server backends from another connection, as a restarted server would, and wait
    until each one is gone (`pg_terminate_backend` with a timeout waits for that)."""
    with killer.connect() as connection:
        for pid in dict.fromkeys(pids):  # behind a pooler, two connections may share one
            gone = connection.execute(select(func.pg_terminate_backend(pid, int(STUCK * 1000))))
            assert gone.scalar_one(), f"backend {pid} did not exit"


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


Lock = Callable[[str], threading.Event]


@pytest.fixture
def hold_lock(persistence_database: TestDatabase) -> Iterator[Lock]:
    """`hold(sql)` runs `sql` (taking a lock) in another connection's open transaction
    until the returned event is set (or the test ends): whatever needs that lock waits,
    deterministically."""
    release = threading.Event()
    holders: list[threading.Thread] = []

    def hold(statement: str) -> threading.Event:
        held = threading.Event()

        def run() -> None:
            with psycopg.connect(libpq_url(persistence_database.url)) as connection:
                connection.execute(statement)
                held.set()
                release.wait(60)
                connection.rollback()

        holder = threading.Thread(target=run)
        holders.append(holder)
        holder.start()
        assert held.wait(60), "the lock was never taken"
        return release

    yield hold
    release.set()
    for holder in holders:
        holder.join()


def _until(engine: Engine, sql: str, params: dict[str, Any], done: Callable[[int], bool]) -> bool:
    # Ask the server every 10 ms, for at most 30 s: a wait on a condition, not a timing.
    for _ in range(3000):
        with engine.connect() as connection:
            count = int(connection.exec_driver_sql(sql, params).scalar_one())
        if done(count):
            return True
        threading.Event().wait(0.01)
    return False


def wait_until_waiting_on_a_lock(engine: Engine, operation: Future[Any] | None = None) -> None:
    """Return once a session of the test database waits on a lock; raise what `operation`
    (the one expected to wait) raised if it ended instead."""

    def waiting(count: int) -> bool:
        if operation is not None and operation.done():
            operation.result()
            raise AssertionError("the operation ended instead of waiting on the lock")
        return count > 0

    sql = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    assert _until(engine, sql, {}, waiting), "no session ever waited on the lock"


def wait_until_gone(engine: Engine, pid: int) -> None:
    """Return once server process `pid` has ended."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = %(pid)s"
    assert _until(engine, sql, {"pid": pid}, lambda alive: alive == 0), f"{pid} never ended"


@pytest.fixture
def small_engine(
    persistence_database: TestDatabase, persistence_engine: Engine
) -> Iterator[Engine]:
    """An engine of its own with a pool of two: what a test does to its connections (kill
    them, say) touches no other test."""
    engine = create_engine(persistence_database.url, pool_size=2, max_overflow=0)
    yield engine
    engine.dispose()


@pytest.fixture
def cut_engine(persistence_database: TestDatabase, proxy: LatencyProxy) -> Iterator[Engine]:
    """An engine reaching the database through `proxy`, its first connection already made:
    a cut armed on the proxy then lands on a unit of work's own statements."""
    engine = engine_through(proxy, persistence_database, pool_size=2)
    with UnitOfWork(engine) as uow:
        uow.tasks.count(user_id="warm-up")
    yield engine
    engine.dispose()


def committed_count(engine: Engine, user: str) -> int:
    """How many of `user`'s tasks another connection sees as committed."""
    with engine.connect() as other:
        return int(
            other.execute(
                select(func.count()).select_from(Task).where(col(Task.user_id) == user)
            ).scalar_one()
        )
