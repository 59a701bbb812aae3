"""The units of work's pool: bounded, no churn under load, idle extras closed, broken and
old connections replaced, `engine.dispose()` closing it; counted, never timed."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from persistence import (
    AsyncUnitOfWork,
    PoolTimeoutError,
    Settings,
    UnitOfWork,
    create_async_engine,
    create_engine,
    load_settings,
    pool_stats,
)
from persistence.connections import connect_arguments, connector
from persistence.pool import ConnectionPool, PoolOptions
from persistence.testing import TestDatabase
from persistence.urls import normalize_url
from tests.conftest import backend_pid, committed_count, terminate


@pytest.fixture
def small(persistence_database: TestDatabase, persistence_engine: Engine) -> Iterator[Engine]:
    engine = create_engine(persistence_database.url, pool_size=2, max_overflow=2, pool_timeout=30)
    yield engine
    engine.dispose()


def test_sustained_load_opens_no_more_connections_than_the_pool_holds(small: Engine, user: str):
    # 16 threads x 25 units of work, on a pool of at most 4: every unit gets a connection,
    # and no connection is closed and opened again while the load goes on.
    def work(n: int) -> None:
        for _ in range(25):
            with UnitOfWork(small) as uow:
                uow.tasks.create(user_id=user, title=f"thread {n}")
                uow.tasks.list(user_id=user, limit=5)

    with ThreadPoolExecutor(16) as threads:
        list(threads.map(work, range(16)))
    stats = pool_stats(small)
    assert stats.opened <= 4
    assert stats.size <= 4
    assert stats.lent == 0
    with UnitOfWork(small) as uow:
        assert uow.tasks.count(user_id=user) == 16 * 25


def test_connections_beyond_the_pool_size_are_closed_once_idle_too_long(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    settings = Settings(database_url=None, pool_size=1, max_overflow=3, pool_idle_timeout=0.0)
    engine = create_engine(persistence_database.url, settings)
    try:
        started = threading.Barrier(4)
        connections: list[psycopg.Connection[Any]] = []

        def hold() -> None:
            with UnitOfWork(engine) as uow:
                uow.tasks.count(user_id=user)
                connections.append(uow._connected())
                started.wait()  # all four at once: four connections

        with ThreadPoolExecutor(4) as threads:
            list(threads.map(lambda _: hold(), range(4)))
        assert pool_stats(engine).opened == 4
        # Idle longer than the (zero) bound: the extras go as connections come back and
        # the next is lent; the one of `pool_size` stays.
        with UnitOfWork(engine) as uow:
            uow.tasks.count(user_id=user)
        assert pool_stats(engine).size == 1
        # Closed for real (not merely forgotten): three of the four, the one kept open.
        assert sorted(c.closed for c in connections) == [False, True, True, True]
    finally:
        engine.dispose()


def test_a_connection_older_than_the_recycle_age_is_replaced(
    persistence_database: TestDatabase, user: str
):
    engine = create_engine(persistence_database.url, pool_size=1, max_overflow=0, pool_recycle=0)
    try:
        connections = []
        for _ in range(3):
            with UnitOfWork(engine) as uow:
                uow.tasks.count(user_id=user)
                connections.append(uow._connected())
        assert len({id(c) for c in connections}) == 3
        assert all(c.closed for c in connections)
        assert pool_stats(engine).opened == 3
        assert pool_stats(engine).size == 0  # past its age when given back: closed then
    finally:
        engine.dispose()


def test_a_waiter_is_handed_the_next_connection_given_back(
    persistence_database: TestDatabase, user: str
):
    engine = create_engine(persistence_database.url, pool_size=1, max_overflow=0, pool_timeout=30)
    try:
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with UnitOfWork(engine) as uow:
                uow.tasks.count(user_id=user)
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait(30)
        with ThreadPoolExecutor(1) as waiting:
            counted = waiting.submit(lambda: _count(engine, user))
            for _ in range(3000):  # until the waiter has queued up
                assert not counted.done(), counted.result()
                if pool_stats(engine).waiting:
                    break
                threading.Event().wait(0.01)
            release.set()
            assert counted.result(timeout=30) == 0
        holder.join()
        assert pool_stats(engine).opened == 1
    finally:
        engine.dispose()


def _count(engine: Engine, user: str) -> int:
    with UnitOfWork(engine) as uow:
        return uow.tasks.count(user_id=user)


def test_pool_recycle_minus_one_means_never_as_in_sqlalchemy(
    persistence_database: TestDatabase, user: str
):
    engine = create_engine(persistence_database.url, pool_size=1, pool_recycle=-1)
    try:
        for _ in range(3):
            with UnitOfWork(engine) as uow:
                uow.tasks.count(user_id=user)
        assert pool_stats(engine).opened == 1
    finally:
        engine.dispose()


def test_no_free_connection_within_the_timeout_is_a_clear_error(
    persistence_database: TestDatabase, user: str
):
    engine = create_engine(persistence_database.url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        with UnitOfWork(engine) as holder:
            holder.tasks.count(user_id=user)
            with pytest.raises(PoolTimeoutError, match="pool exhausted"), UnitOfWork(engine) as uow:
                uow.tasks.count(user_id=user)
        assert pool_stats(engine).waiting == 0
        assert _count(engine, user) == 0  # and the pool still serves
    finally:
        engine.dispose()


def _until(condition: Callable[[], bool]) -> None:
    # Wait for another thread to reach a state, bounded; counted, not timed.
    for _ in range(10_000):
        if condition():
            return
        threading.Event().wait(0.001)
    raise AssertionError("never reached")


class Interrupted(Exception):
    """What a signal handler raises (a request timeout, say), as KeyboardInterrupt does."""


def _pool_of_one(database: TestDatabase) -> ConnectionPool:
    arguments = connect_arguments(normalize_url(database.url), load_settings(), {})
    return ConnectionPool(connector(arguments), PoolOptions(min_size=0, max_size=1, timeout=30))


def test_a_waiter_interrupted_by_a_signal_loses_the_pool_no_connection(
    persistence_database: TestDatabase,
):
    pool = _pool_of_one(persistence_database)

    def interrupt(*_: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    held = pool.getconn()
    try:
        main = threading.get_ident()
        sender = threading.Thread(
            target=lambda: (
                _until(lambda: pool.stats().waiting == 1),
                signal.pthread_kill(main, signal.SIGUSR1),
            )
        )
        sender.start()
        with pytest.raises(Interrupted):
            pool.getconn()  # waits for the one connection, and is interrupted
        sender.join()
        pool.putconn(held)
        assert pool.stats().waiting == 0
        again = pool.getconn()  # the connection came back to the pool, not to the dead waiter
        pool.putconn(again)
        assert pool.stats().opened == 1
    finally:
        signal.signal(signal.SIGUSR1, previous)
        pool.close()


def test_a_waiter_on_a_pool_closed_meanwhile_is_handed_the_freed_place(
    persistence_database: TestDatabase,
):
    pool = _pool_of_one(persistence_database)
    held = pool.getconn()
    with ThreadPoolExecutor(1) as thread:
        waiting = thread.submit(pool.getconn)
        _until(lambda: pool.stats().waiting == 1)
        pool.close()  # engine.dispose(): the lent connection is closed when given back
        pool.putconn(held)
        lease = waiting.result()  # not a PoolTimeoutError 30 s later
    pool.putconn(lease)
    assert pool.stats().size == 0


class Boom(Exception):
    """The application's own failure."""


def test_a_write_after_a_swallowed_pool_timeout_is_still_inside_the_units_transaction(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    # The failed write's BEGIN never left (no connection was to be had): the next write
    # must send its own, not run in autocommit where the rollback can't undo it.
    engine = create_engine(persistence_database.url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        holder = UnitOfWork(engine).__enter__()
        holder.tasks.create(user_id=f"{user}-holder", title="holds the only connection")
        with pytest.raises(Boom), UnitOfWork(engine) as uow:
            with pytest.raises(PoolTimeoutError):
                uow.tasks.create(user_id=user, title="no connection for it")
            holder.__exit__(None, None, None)
            uow.tasks.create(user_id=user, title="undone with the unit")
            raise Boom
        assert committed_count(persistence_engine, user) == 0
    finally:
        engine.dispose()


@pytest.mark.asyncio
async def test_async_a_write_after_a_swallowed_pool_timeout_is_still_inside_the_transaction(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    engine = create_async_engine(
        persistence_database.url, pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    try:
        holder = await AsyncUnitOfWork(engine).__aenter__()
        await holder.tasks.create(user_id=f"{user}-holder", title="holds the only connection")
        with pytest.raises(Boom):
            async with AsyncUnitOfWork(engine) as uow:
                with pytest.raises(PoolTimeoutError):
                    await uow.tasks.create(user_id=user, title="no connection for it")
                await holder.__aexit__(None, None, None)
                await uow.tasks.create(user_id=user, title="undone with the unit")
                raise Boom
        assert committed_count(persistence_engine, user) == 0
    finally:
        await engine.dispose()


def test_after_one_dead_connection_every_older_one_is_replaced(
    persistence_database: TestDatabase, killer_engine: Engine, user: str
):
    engine = create_engine(persistence_database.url, pool_size=3, max_overflow=0)
    try:
        barrier = threading.Barrier(3)
        pids: list[int] = []

        def open_one() -> None:
            with UnitOfWork(engine) as uow:
                pids.append(backend_pid(uow))
                barrier.wait()

        with ThreadPoolExecutor(3) as threads:
            list(threads.map(lambda _: open_one(), range(3)))
        terminate(killer_engine, *pids)  # as a server restart does to all of them
        for _ in range(3):  # the first one notices; none of the others is lent again
            with UnitOfWork(engine) as uow:
                assert uow.tasks.count(user_id=user) == 0
                assert backend_pid(uow) not in pids
    finally:
        engine.dispose()


def test_dispose_closes_the_units_of_works_connections(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    engine = create_engine(persistence_database.url, pool_size=2, max_overflow=0)
    with UnitOfWork(engine) as uow:
        uow.tasks.count(user_id=user)
        connection = uow._connected()
    assert pool_stats(engine).idle == 1
    open_before = not connection.closed
    engine.dispose()
    assert (open_before, connection.closed) == (True, True)
    with UnitOfWork(engine) as uow:  # the engine still works: a new pool
        assert uow.tasks.count(user_id=user) == 0
    engine.dispose()
