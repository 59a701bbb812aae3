"""Deadlines: `UnitOfWork(timeout=...)` bounds every statement and lock wait on the server;
a transaction left idle is ended by the server; none of it costs a round trip."""

from __future__ import annotations

import threading

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from benchmarks.proxy import LatencyProxy
from persistence import (
    AsyncUnitOfWork,
    ConnectionLostError,
    DeadlineExceededError,
    PersistenceError,
    Settings,
    TaskValidationError,
    UnitOfWork,
    create_async_engine,
    create_engine,
)
from persistence.testing import TestDatabase
from tests.conftest import (
    Lock,
    committed_count,
    execute_in,
    wait_until_gone,
    wait_until_waiting_on_a_lock,
)
from tests.proxying import url_through


def test_a_unit_blocked_on_a_row_lock_waits_at_most_its_deadline(
    persistence_engine: Engine, hold_lock: Lock, user: str
):
    with UnitOfWork(persistence_engine) as uow:
        task = uow.tasks.create(user_id=user, title="locked by someone else")
    hold_lock(f"SELECT 1 FROM tasks WHERE id = {task.id} FOR UPDATE")
    with (
        pytest.raises(DeadlineExceededError, match="deadline") as raised,
        UnitOfWork(persistence_engine, timeout=0.3) as uow,
    ):
        uow.tasks.toggle_complete(user_id=user, task_id=task.id)
    error = raised.value
    assert isinstance(error, TimeoutError)
    assert isinstance(error, PersistenceError)
    assert error.sqlstate in {"55P03", "57014"}
    assert isinstance(error.__cause__, psycopg.Error)


def test_a_read_outside_a_transaction_is_bounded_too_and_the_bound_ends_with_it(
    persistence_engine: Engine, hold_lock: Lock, user: str
):
    release = hold_lock("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
    with UnitOfWork(persistence_engine, timeout=0.3) as uow:
        with pytest.raises(DeadlineExceededError):
            uow.tasks.list(user_id=user)
        release.set()
        # SET LOCAL lasted for the read's own implicit transaction, not the session's.
        assert execute_in(uow, select(func.current_setting("statement_timeout")))[0][0] == "0"
        assert uow.tasks.list(user_id=user) == []


def test_a_unit_without_a_deadline_waits_as_long_as_it_takes(
    persistence_engine: Engine, hold_lock: Lock, user: str
):
    with UnitOfWork(persistence_engine) as uow:
        task = uow.tasks.create(user_id=user, title="waited for")
    release = hold_lock(f"SELECT 1 FROM tasks WHERE id = {task.id} FOR UPDATE")
    toggled: list[bool] = []

    def toggle() -> None:
        with UnitOfWork(persistence_engine) as uow:
            toggled.append(uow.tasks.toggle_complete(user_id=user, task_id=task.id).complete)

    waiter = threading.Thread(target=toggle)
    waiter.start()
    wait_until_waiting_on_a_lock(persistence_engine)
    release.set()
    waiter.join()
    assert toggled == [True]


def test_the_deadline_comes_from_the_settings_by_default(
    persistence_database: TestDatabase, hold_lock: Lock, user: str
):
    engine = create_engine(persistence_database.url, Settings(database_url=None, timeout=0.3))
    try:
        with UnitOfWork(engine) as uow:
            task = uow.tasks.create(user_id=user, title="t")
        hold_lock(f"SELECT 1 FROM tasks WHERE id = {task.id} FOR UPDATE")
        with pytest.raises(DeadlineExceededError), UnitOfWork(engine) as uow:
            uow.tasks.update(user_id=user, task_id=task.id, title="late")
    finally:
        engine.dispose()


def test_a_transaction_left_idle_is_ended_by_the_server_and_the_next_use_says_so(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    settings = Settings(database_url=None, idle_in_transaction_timeout=0.2)
    engine = create_engine(persistence_database.url, settings)
    try:
        with pytest.raises(ConnectionLostError), UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="left idle")
            pid = execute_in(uow, select(func.pg_backend_pid()))[0][0]
            wait_until_gone(persistence_engine, pid)  # the server ended it
            uow.tasks.create(user_id=user, title="too late")
        assert committed_count(persistence_engine, user) == 0
        with UnitOfWork(engine) as uow:  # and the next unit of work works
            assert uow.tasks.count(user_id=user) == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("timeout", [0, -1, "soon", True])
def test_a_bad_timeout_is_refused_up_front(timeout: object):
    with pytest.raises(TaskValidationError, match="timeout"):
        UnitOfWork(timeout=timeout)


def test_deadlines_cost_no_round_trip(
    persistence_database: TestDatabase, proxy: LatencyProxy, user: str
):
    engine = create_engine(url_through(proxy, persistence_database))
    try:
        with UnitOfWork(engine) as uow:  # warm up: connect once, outside the counts
            uow.tasks.count(user_id="warm-up")
        proxy.reset_counts()
        with UnitOfWork(engine, timeout=5) as uow:
            uow.tasks.list(user_id=user)
        assert proxy.round_trips == 1
        proxy.reset_counts()
        with UnitOfWork(engine, timeout=5) as uow:
            uow.tasks.create(user_id=user, title="t")
        assert proxy.round_trips == 2
    finally:
        engine.dispose()


@pytest.mark.asyncio
async def test_async_a_unit_blocked_on_a_row_lock_waits_at_most_its_deadline(
    persistence_database: TestDatabase, persistence_engine: Engine, hold_lock: Lock, user: str
):
    with UnitOfWork(persistence_engine) as uow:
        task = uow.tasks.create(user_id=user, title="locked")
    hold_lock(f"SELECT 1 FROM tasks WHERE id = {task.id} FOR UPDATE")
    engine = create_async_engine(persistence_database.url, pool_size=1, max_overflow=0)
    try:
        with pytest.raises(DeadlineExceededError):
            async with AsyncUnitOfWork(engine, timeout=0.3) as uow:
                await uow.tasks.toggle_complete(user_id=user, task_id=task.id)
    finally:
        await engine.dispose()
