"""What asyncio adds to the contract: cancellation, one loop shared by many tasks, many
loops in one process, and a loop that is never blocked."""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import persistence.async_database
from benchmarks.proxy import LatencyProxy
from persistence import (
    AsyncUnitOfWork,
    create_async_engine,
    dispose_async_engine,
    get_async_engine,
)
from persistence.testing import TestDatabase
from tests.conftest import committed_count
from tests.proxying import async_engine_through, proxy_for


class Boom(Exception):
    """The application's own failure."""


def server_states(engine: Engine) -> list[str]:
    """The state of every other session on the test database, as the server sees it."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT coalesce(state, '') FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        return [state for (state,) in rows]


@pytest_asyncio.fixture
async def small_async_engine(
    persistence_database: TestDatabase, persistence_engine: Engine
) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(persistence_database.url, pool_size=5, max_overflow=0)
    yield engine
    await engine.dispose()


@pytest.fixture
def slow_proxy(persistence_database: TestDatabase) -> Iterator[LatencyProxy]:
    with proxy_for(persistence_database, rtt_ms=30) as running:
        yield running


# Cancellation


@pytest.mark.asyncio
async def test_a_thousand_cancelled_units_of_work_leak_nothing(
    small_async_engine: AsyncEngine, persistence_engine: Engine, user: str
):
    opened = []
    event.listen(small_async_engine.sync_engine, "connect", lambda *_: opened.append(1))
    async with AsyncUnitOfWork(small_async_engine) as uow:  # one connection in the pool
        await uow.tasks.count(user_id=user)
    # Timeouts from 0 to 5 ms land everywhere: with BEGIN and the INSERT in flight, during
    # the UPDATE, or while the block awaits something else.
    landed: collections.Counter[str] = collections.Counter()
    for n in range(1000):
        where = "entering"
        try:
            async with asyncio.timeout((n % 50) / 10_000):
                async with AsyncUnitOfWork(small_async_engine) as uow:
                    where = "in a statement"
                    task = await uow.tasks.create(user_id=user, title=f"t{n}")
                    await uow.tasks.toggle_complete(user_id=user, task_id=task.id)
                    where = "between statements"
                    await asyncio.sleep(1)  # cancelled here at the latest
        except TimeoutError:
            landed[where] += 1
    assert sum(landed.values()) == 1000
    assert landed["in a statement"] > 0
    assert landed["between statements"] > 0
    pool = small_async_engine.sync_engine.pool
    assert pool.checkedout() == 0
    # Each connection went back to the pool rolled back and was used again: cancelling a
    # statement doesn't cost a new connection.
    assert len(opened) <= 5
    states = await asyncio.to_thread(server_states, persistence_engine)
    assert not [s for s in states if s.startswith("idle in transaction")]
    assert committed_count(persistence_engine, user) == 0  # every one rolled back
    async with AsyncUnitOfWork(small_async_engine) as uow:
        await uow.tasks.create(user_id=user, title="after a thousand cancellations")
    assert committed_count(persistence_engine, user) == 1
    gc.collect()  # a connection left to the garbage collector would warn (an error here)


@pytest.mark.asyncio
async def test_a_cancellation_during_commit_waits_for_it_and_returns_the_connection(
    slow_proxy: LatencyProxy,
    persistence_database: TestDatabase,
    persistence_engine: Engine,
    user: str,
):
    engine = async_engine_through(slow_proxy, persistence_database, pool_size=1, max_overflow=0)
    try:
        async with AsyncUnitOfWork(engine) as uow:  # connect outside the measured part
            await uow.tasks.count(user_id=user)
        slow_proxy.reset_counts()
        with pytest.raises(TimeoutError):
            # BEGIN + INSERT take one 30 ms round trip, COMMIT another: the timeout fires
            # while COMMIT is in flight.
            async with asyncio.timeout(0.045), AsyncUnitOfWork(engine) as uow:
                await uow.tasks.create(user_id=user, title="committed despite the timeout")
        # COMMIT was not interrupted: the work is saved and the connection is back, healthy.
        assert committed_count(persistence_engine, user) == 1
        assert engine.sync_engine.pool.checkedout() == 0
        async with AsyncUnitOfWork(engine) as uow:
            assert await uow.tasks.count(user_id=user) == 1
        assert slow_proxy.connections_opened == 0  # the same connection, not a new one
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_a_cancelled_savepoint_lets_the_cancellation_through(
    small_async_engine: AsyncEngine, persistence_engine: Engine, user: str
):
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), AsyncUnitOfWork(small_async_engine) as uow:
            await uow.tasks.create(user_id=user, title="outer")
            async with uow.savepoint():
                await uow.tasks.create(user_id=user, title="inner")
                await asyncio.sleep(1)
    assert committed_count(persistence_engine, user) == 0
    assert small_async_engine.sync_engine.pool.checkedout() == 0


# Concurrency on one loop


@pytest.mark.asyncio
async def test_two_hundred_tasks_share_a_pool_of_ten_each_isolated_and_never_block_the_loop(
    slow_proxy: LatencyProxy,
    persistence_database: TestDatabase,
    persistence_engine: Engine,
    user: str,
    caplog: pytest.LogCaptureFixture,
):
    # Through a proxy that adds 30 ms to every round trip, any database call made
    # synchronously on the loop would hold it for 30 ms or more: debug mode reports it.
    engine = async_engine_through(slow_proxy, persistence_database, pool_size=10, max_overflow=0)
    busiest = 0

    async def work(n: int) -> None:
        nonlocal busiest
        mine = f"{user}-{n}"
        async with AsyncUnitOfWork(engine) as uow:
            task = await uow.tasks.create(user_id=mine, title=f"task {n}")
            busiest = max(busiest, engine.sync_engine.pool.checkedout())
            await uow.tasks.toggle_complete(user_id=mine, task_id=task.id)
            seen = await uow.tasks.list(user_id=mine)
            assert [(t.id, t.complete) for t in seen] == [(task.id, True)]
            if n % 2:
                raise Boom(n)  # odd ones roll back, alongside even ones that commit

    async with AsyncUnitOfWork(engine) as uow:  # warm up: statement caches, one connection
        await uow.tasks.count(user_id=user)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.025
    caplog.set_level(logging.WARNING, logger="asyncio")
    try:
        results = await asyncio.gather(*(work(n) for n in range(200)), return_exceptions=True)
    finally:
        loop.set_debug(False)
        await engine.dispose()
    assert [type(r).__name__ for r in results] == ["NoneType", "Boom"] * 100
    assert busiest == 10
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []
    with persistence_engine.connect() as connection:
        per_user: dict[str, int] = dict(
            connection.execute(
                text("SELECT user_id, count(*) FROM tasks WHERE user_id LIKE :p GROUP BY 1"),
                {"p": f"{user}-%"},
            ).all()
        )
    assert per_user == {f"{user}-{n}": 1 for n in range(0, 200, 2)}


@pytest.mark.asyncio
async def test_a_unit_of_work_refuses_two_operations_at_once(
    small_async_engine: AsyncEngine, user: str
):
    async with AsyncUnitOfWork(small_async_engine) as uow:
        results = await asyncio.gather(
            uow.tasks.create(user_id=user, title="a"),
            uow.tasks.create(user_id=user, title="b"),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1
        assert "one operation" in str(refused[0]) or "already running" in str(refused[0])
        assert await uow.tasks.count(user_id=user) == 1


# Many loops in one process


def test_many_event_loops_one_after_another_each_get_their_own_default_engine(
    persistence_engine: Engine, user: str
):
    engines: list[AsyncEngine] = []

    async def step(n: int) -> None:
        engines.append(await get_async_engine())
        async with AsyncUnitOfWork() as uow:
            await uow.tasks.create(user_id=user, title=f"step {n}")
            assert await uow.tasks.count(user_id=user) == n + 1

    for n in range(4):
        asyncio.run(step(n))
    assert len({id(engine) for engine in engines}) == 4  # never shared across loops
    # Each loop's engine was disposed as its loop shut down: nothing left connected.
    assert all(e.sync_engine.pool.checkedin() == 0 for e in engines)
    assert persistence.async_database._defaults == {}
    assert committed_count(persistence_engine, user) == 4
    gc.collect()


def test_a_loop_closed_without_shutting_down_is_cleaned_up_by_the_next(
    persistence_engine: Engine, user: str
):
    async def step() -> AsyncEngine:
        async with AsyncUnitOfWork() as uow:
            await uow.tasks.create(user_id=user, title="t")
        return await get_async_engine()

    loop = asyncio.new_event_loop()
    first = loop.run_until_complete(step())
    loop.close()  # no shutdown_asyncgens: the engine is still there, its connection idle
    assert first.sync_engine.pool.checkedin() == 1
    second = asyncio.run(step())
    assert second is not first
    assert first.sync_engine.pool.checkedin() == 0
    assert committed_count(persistence_engine, user) == 2
    gc.collect()


def test_event_loops_in_several_threads_at_once(persistence_engine: Engine, user: str):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    async def step(n: int) -> None:
        await asyncio.to_thread(barrier.wait)
        async with AsyncUnitOfWork() as uow:
            await uow.tasks.create(user_id=user, title=f"thread {n}")

    def run(n: int) -> None:
        try:
            asyncio.run(step(n))
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert committed_count(persistence_engine, user) == 4


@pytest.mark.asyncio
async def test_an_async_unit_of_work_refuses_another_event_loop(
    small_async_engine: AsyncEngine, user: str
):
    async with AsyncUnitOfWork(small_async_engine) as uow:
        await uow.tasks.count(user_id=user)

        async def elsewhere() -> int:
            return await uow.tasks.count(user_id=user)

        with pytest.raises(Exception, match="event loop"):
            await asyncio.to_thread(asyncio.run, elsewhere())


@pytest.mark.asyncio
async def test_dispose_async_engine_closes_the_loops_default_and_the_next_use_builds_anew(
    persistence_engine: Engine,
):
    first = await get_async_engine()
    async with AsyncUnitOfWork() as uow:
        await uow.tasks.count(user_id="nobody")
    await dispose_async_engine()
    assert first.sync_engine.pool.checkedin() == 0
    assert await get_async_engine() is not first


# Never blocking the loop


@pytest.mark.asyncio
async def test_the_default_engine_is_built_off_the_loop(
    monkeypatch: pytest.MonkeyPatch, persistence_engine: Engine
):
    # Reading `.env` and starting the embedded server are blocking: a worker thread does them.
    built_in: list[int] = []
    build = persistence.async_database._build_default

    def recording() -> AsyncEngine:
        built_in.append(threading.get_ident())
        return build()

    monkeypatch.setattr(persistence.async_database, "_build_default", recording)
    await dispose_async_engine()
    async with AsyncUnitOfWork() as uow:
        await uow.tasks.count(user_id="nobody")
    assert built_in
    assert threading.get_ident() not in built_in
