"""Round trips per async unit of work, counted by a proxy: the same as the sync ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.proxy import LatencyProxy
from persistence import AsyncUnitOfWork
from persistence.testing import TestDatabase
from tests.proxying import async_engine_through

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def proxied(
    persistence_database: TestDatabase, proxy: LatencyProxy
) -> AsyncIterator[AsyncEngine]:
    engine = async_engine_through(proxy, persistence_database)
    async with AsyncUnitOfWork(engine) as uow:  # warm up: connect once, outside the counts
        await uow.tasks.count(user_id="warm-up")
    yield engine
    await engine.dispose()


async def round_trips(
    proxy: LatencyProxy,
    engine: AsyncEngine,
    work: Callable[[AsyncUnitOfWork], Awaitable[Any]],
    **kw: Any,
) -> int:
    proxy.reset_counts()
    async with AsyncUnitOfWork(engine, **kw) as uow:
        await work(uow)
    assert proxy.connections_opened == 0, "a unit of work opened a new connection"
    return proxy.round_trips


async def test_an_async_unit_of_work_that_only_reads_costs_one_round_trip(proxy, proxied, user):
    assert await round_trips(proxy, proxied, lambda uow: uow.tasks.list(user_id=user)) == 1
    assert await round_trips(proxy, proxied, lambda uow: uow.tasks.count(user_id=user)) == 1


async def test_creating_a_task_async_costs_two_round_trips(proxy, proxied, user):
    async def create(uow: AsyncUnitOfWork) -> None:
        await uow.tasks.create(user_id=user, title="t")

    assert await round_trips(proxy, proxied, create) == 2


async def test_toggling_async_costs_two_round_trips(proxy, proxied, user):
    async with AsyncUnitOfWork(proxied) as uow:
        task = await uow.tasks.create(user_id=user, title="t")

    async def toggle(uow: AsyncUnitOfWork) -> None:
        await uow.tasks.toggle_complete(user_id=user, task_id=task.id)

    assert await round_trips(proxy, proxied, toggle) == 2


async def test_create_toggle_and_list_async_cost_four_round_trips(proxy, proxied, user):
    async def mixed(uow: AsyncUnitOfWork) -> None:
        task = await uow.tasks.create(user_id=user, title="t")
        await uow.tasks.toggle_complete(user_id=user, task_id=task.id)
        assert [t.id for t in await uow.tasks.list(user_id=user)] == [task.id]

    assert await round_trips(proxy, proxied, mixed) == 4


async def test_a_thousand_tasks_in_bulk_async_cost_two_round_trips(proxy, proxied, user):
    async def bulk(uow: AsyncUnitOfWork) -> None:
        made = await uow.tasks.create_many(user_id=user, items=[{"title": "t"}] * 1000)
        assert len(made) == 1000

    assert await round_trips(proxy, proxied, bulk) == 2


async def test_async_reads_under_serializable_share_the_transaction(proxy, proxied, user):
    async def reads(uow: AsyncUnitOfWork) -> None:
        await uow.tasks.list(user_id=user)
        await uow.tasks.count(user_id=user)

    # BEGIN goes with the first read (1), the second read (1), COMMIT (1).
    assert await round_trips(proxy, proxied, reads, isolation_level="SERIALIZABLE") == 3


async def test_the_first_write_returns_its_rows_through_the_async_pipeline(proxy, proxied, user):
    # BEGIN and the INSERT go in one pipeline: the rows must still reach SQLAlchemy.
    async with AsyncUnitOfWork(proxied) as uow:
        made = await uow.tasks.create_many(user_id=user, items=[{"title": "a"}, {"title": "b"}])
        assert [t.title for t in made] == ["a", "b"]
        assert (await uow.tasks.create(user_id=user, title="c")).title == "c"
