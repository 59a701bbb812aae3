"""`AsyncUnitOfWork` on what only real connections show: Neon's faults and retries.

The rest of the contract runs against it in tests/contract, the asyncio guarantees in
test_async_guarantees.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import persistence
from persistence import (
    AsyncUnitOfWork,
    ConnectionLostError,
    TransactionConflictError,
    create_async_engine,
    run_in_transaction_async,
)
from persistence.testing import TestDatabase
from tests.async_probes import finished
from tests.conftest import checked_out, execute_in_async, terminate

pytestmark = pytest.mark.asyncio


class Boom(Exception):
    """The application's own failure."""


async def backend_pid(uow: AsyncUnitOfWork) -> int:
    return int((await execute_in_async(uow, select(func.pg_backend_pid())))[0][0])


@pytest_asyncio.fixture
async def small_engine(
    persistence_database: TestDatabase, persistence_engine: Engine
) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(persistence_database.url, pool_size=2, max_overflow=0)
    yield engine
    await engine.dispose()


async def test_the_async_api_is_exported():
    assert {"AsyncUnitOfWork", "run_in_transaction_async", "create_async_engine"} <= set(
        persistence.__all__
    )


async def test_a_pooled_connection_that_died_while_idle_is_replaced_unseen(
    small_engine: AsyncEngine, killer_engine: Engine, user: str
):
    async with AsyncUnitOfWork(small_engine) as uow:
        pid = await backend_pid(uow)
    await asyncio.to_thread(terminate, killer_engine, pid)
    async with AsyncUnitOfWork(small_engine) as uow:
        await uow.tasks.create(user_id=user, title="after the drop")
        assert await backend_pid(uow) != pid
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.count(user_id=user) == 1


async def test_a_unit_that_opens_with_a_savepoint_rides_over_a_dead_connection(
    small_engine: AsyncEngine, killer_engine: Engine, user: str
):
    async with AsyncUnitOfWork(small_engine) as uow:
        pid = await backend_pid(uow)
    await asyncio.to_thread(terminate, killer_engine, pid)
    async with AsyncUnitOfWork(small_engine) as uow, uow.savepoint():
        await uow.tasks.create(user_id=user, title="inside the first savepoint")
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.count(user_id=user) == 1


async def test_an_operation_still_running_at_the_end_of_the_block_is_waited_for(
    persistence_database: TestDatabase, user: str
):
    engine = create_async_engine(persistence_database.url, pool_size=1, max_overflow=0)
    try:
        with pytest.raises(persistence.PersistenceError, match="already running an operation"):
            async with AsyncUnitOfWork(engine) as uow:
                await uow.tasks.create(user_id=user, title="rolled back")
                await asyncio.gather(uow.tasks.count(user_id=user), uow.tasks.count(user_id=user))
        assert checked_out(engine) == 0
        async with AsyncUnitOfWork(engine) as uow:  # the pool's one connection is back
            assert await uow.tasks.count(user_id=user) == 0
    finally:
        await engine.dispose()


async def test_a_connection_lost_mid_unit_is_not_replayed(
    small_engine: AsyncEngine, killer_engine: Engine, user: str
):
    with pytest.raises(ConnectionLostError):
        async with AsyncUnitOfWork(small_engine) as uow:
            await uow.tasks.create(user_id=user, title="done before the drop")
            await asyncio.to_thread(terminate, killer_engine, await backend_pid(uow))
            await uow.tasks.create(user_id=user, title="after the drop")
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.count(user_id=user) == 0


async def test_run_in_transaction_async_commits_and_returns_the_result(
    small_engine: AsyncEngine, user: str
):
    task = await run_in_transaction_async(
        lambda uow: uow.tasks.create(user_id=user, title="t"), bind=small_engine
    )
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.get(user_id=user, task_id=task.id) is not None


async def test_run_in_transaction_async_never_reruns_on_the_applications_own_errors(
    small_engine: AsyncEngine, user: str
):
    calls = []

    async def fails(uow: AsyncUnitOfWork) -> None:
        calls.append(1)
        await uow.tasks.create(user_id=user, title="t")
        raise KeyError("application bug")

    with pytest.raises(KeyError):
        await run_in_transaction_async(fails, attempts=5, bind=small_engine)
    assert len(calls) == 1
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.count(user_id=user) == 0


async def test_run_in_transaction_async_reruns_after_a_connection_lost_before_commit(
    small_engine: AsyncEngine, killer_engine: Engine, user: str
):
    calls = []

    async def work(uow: AsyncUnitOfWork) -> int:
        calls.append(1)
        task = await uow.tasks.create(user_id=user, title="t")
        if len(calls) == 1:
            await asyncio.to_thread(terminate, killer_engine, await backend_pid(uow))
        await uow.tasks.toggle_complete(user_id=user, task_id=task.id)
        return task.id

    await run_in_transaction_async(work, bind=small_engine, backoff=0.001)
    assert len(calls) == 2
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.count(user_id=user, complete=True) == 1
        assert await uow.tasks.count(user_id=user) == 1


async def test_run_in_transaction_async_reruns_serialization_failures(
    small_engine: AsyncEngine, user: str
):
    async with AsyncUnitOfWork(small_engine) as uow:
        seed = await uow.tasks.create(user_id=user, title="seed")
    both_read = asyncio.Barrier(2)
    calls = []

    async def work(uow: AsyncUnitOfWork) -> None:
        calls.append(1)
        await uow.tasks.count(user_id=user)
        if len(calls) <= 2:  # the rerun goes alone
            await both_read.wait()
        await uow.tasks.update(user_id=user, task_id=seed.id, title=f"by call {len(calls)}")
        await uow.tasks.create(user_id=user, title="one more")

    await asyncio.gather(
        *(
            run_in_transaction_async(
                work, isolation_level="SERIALIZABLE", bind=small_engine, backoff=0.01
            )
            for _ in range(2)
        )
    )
    assert len(calls) == 3  # one of the two ran twice
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.count(user_id=user) == 3


async def test_run_in_transaction_async_gives_up_after_its_attempts(small_engine: AsyncEngine):
    calls = []

    async def always_conflicts(uow: AsyncUnitOfWork) -> None:
        calls.append(1)
        raise TransactionConflictError("simulated 40001")

    with pytest.raises(TransactionConflictError):
        await run_in_transaction_async(
            always_conflicts, attempts=3, bind=small_engine, backoff=0.001
        )
    assert len(calls) == 3


async def test_run_in_transaction_async_never_reruns_a_cancelled_unit(
    small_engine: AsyncEngine, user: str
):
    calls = []
    waiting = asyncio.Event()

    async def slow(uow: AsyncUnitOfWork) -> None:
        calls.append(1)
        await uow.tasks.create(user_id=user, title="t")
        if len(calls) == 1:  # a wrongful rerun would end at once, and be seen
            waiting.set()
            await asyncio.Event().wait()  # cancelled here

    running = asyncio.create_task(run_in_transaction_async(slow, bind=small_engine))
    await waiting.wait()
    running.cancel()
    await finished(running)
    assert running.cancelled()
    assert len(calls) == 1
    async with AsyncUnitOfWork(small_engine) as uow:
        assert await uow.tasks.count(user_id=user) == 0


async def test_a_read_only_async_unit_of_work_refuses_writes(small_engine: AsyncEngine, user):
    with pytest.raises(persistence.PersistenceError, match="read-only"):
        async with AsyncUnitOfWork(small_engine, read_only=True) as uow:
            await uow.tasks.create(user_id=user, title="t")
