"""A COMMIT cut in flight is resolved: the server is asked how the transaction ended.

The proxy cuts the connection as COMMIT leaves the client: before the server gets it
(nothing is saved) or right after (it is saved). The unit of work asks a new connection
`pg_xact_status(xid)` of the transaction id it captured with its first write (riding in
the BEGIN pipeline: no extra round trip): committed, it returns normally; aborted, it
raises `ConnectionLostError` (safe to run again); unreachable, `CommitOutcomeUnknownError`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.proxy import LatencyProxy
from persistence import (
    AsyncUnitOfWork,
    CommitOutcomeUnknownError,
    ConnectionLostError,
    UnitOfWork,
    run_in_transaction,
    run_in_transaction_async,
)
from persistence.causal import position
from persistence.testing import TestDatabase
from tests.conftest import committed_count
from tests.proxying import async_engine_through

# BEGIN + the first write (and its transaction id) are the first flight, COMMIT the second.
COMMIT_FLIGHT = 2


@pytest_asyncio.fixture
async def cut_async_engine(
    persistence_database: TestDatabase, proxy: LatencyProxy
) -> AsyncIterator[AsyncEngine]:
    engine = async_engine_through(proxy, persistence_database, pool_size=2)
    async with AsyncUnitOfWork(engine) as uow:
        await uow.tasks.count(user_id="warm-up")
    yield engine
    await engine.dispose()


def test_a_commit_cut_before_the_server_got_it_says_nothing_was_saved(
    cut_engine: Engine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    proxy.cut_at_flight(COMMIT_FLIGHT)
    with (
        pytest.raises(ConnectionLostError, match="nothing was saved") as raised,
        UnitOfWork(cut_engine) as uow,
    ):
        uow.tasks.create(user_id=user, title="never committed")
    assert not isinstance(raised.value, CommitOutcomeUnknownError)
    assert committed_count(persistence_engine, user) == 0


def test_a_commit_cut_after_the_server_got_it_returns_normally(
    cut_engine: Engine, proxy: LatencyProxy, persistence_engine: Engine, user: str, caplog
):
    caplog.set_level(logging.WARNING, logger="persistence")
    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=True)
    with UnitOfWork(cut_engine) as uow:
        made = uow.tasks.create(user_id=user, title="committed, then cut")
    assert made.title == "committed, then cut"
    assert committed_count(persistence_engine, user) == 1
    assert any("committed" in record.getMessage() for record in caplog.records)


def test_a_commit_cut_before_the_server_got_it_carries_the_drivers_error(
    cut_engine: Engine, proxy: LatencyProxy, user: str
):
    proxy.cut_at_flight(COMMIT_FLIGHT)
    with pytest.raises(ConnectionLostError) as raised, UnitOfWork(cut_engine) as uow:
        uow.tasks.create(user_id=user, title="never committed")
    assert isinstance(raised.value.__cause__, psycopg.Error)


def test_an_explicit_commit_cut_after_the_server_got_it_lets_the_block_go_on(
    cut_engine: Engine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=True)
    with UnitOfWork(cut_engine) as uow:
        uow.tasks.create(user_id=user, title="committed, then cut")
        uow.commit()
        token = uow.causal_token
        uow.tasks.create(user_id=user, title="after it, on a new connection")
    assert committed_count(persistence_engine, user) == 2
    # The resolved commit yields a causal token too, at or past the commit's position.
    assert token is not None
    assert position(token) <= position(uow.causal_token or "")


def test_run_in_transaction_runs_work_with_an_explicit_commit_cut_after_it_once(
    cut_engine: Engine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    runs = []

    def work(uow: UnitOfWork) -> None:
        runs.append(1)
        uow.tasks.create(user_id=user, title="exactly once")
        uow.commit()

    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=True)
    run_in_transaction(work, bind=cut_engine, backoff=0.0)
    assert (len(runs), committed_count(persistence_engine, user)) == (1, 1)


def test_a_commit_cut_with_the_server_out_of_reach_is_an_unknown_outcome(
    cut_engine: Engine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    proxy.refuse_new = True  # the connection that would ask can't be made
    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=True)
    with (
        pytest.raises(CommitOutcomeUnknownError, match="may or may not"),
        UnitOfWork(cut_engine) as uow,
    ):
        uow.tasks.create(user_id=user, title="outcome unknown")
    proxy.refuse_new = False
    assert committed_count(persistence_engine, user) == 1  # it was, in fact


@pytest.mark.parametrize("server_got_it", [False, True])
def test_run_in_transaction_neither_duplicates_nor_loses_a_cut_commit(
    cut_engine: Engine,
    proxy: LatencyProxy,
    persistence_engine: Engine,
    user: str,
    server_got_it: bool,
):
    runs = []

    def work(uow: UnitOfWork) -> int:
        runs.append(1)
        return uow.tasks.create(user_id=user, title="exactly once").id

    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=server_got_it)
    run_in_transaction(work, bind=cut_engine, backoff=0.0)
    assert committed_count(persistence_engine, user) == 1
    assert len(runs) == (1 if server_got_it else 2)


@pytest.mark.asyncio
async def test_async_a_commit_cut_before_the_server_got_it_says_nothing_was_saved(
    cut_async_engine: AsyncEngine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    proxy.cut_at_flight(COMMIT_FLIGHT)
    with pytest.raises(ConnectionLostError, match="nothing was saved") as raised:
        async with AsyncUnitOfWork(cut_async_engine) as uow:
            await uow.tasks.create(user_id=user, title="never committed")
    assert not isinstance(raised.value, CommitOutcomeUnknownError)
    assert committed_count(persistence_engine, user) == 0


@pytest.mark.asyncio
async def test_async_a_commit_cut_after_the_server_got_it_returns_normally(
    cut_async_engine: AsyncEngine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=True)
    async with AsyncUnitOfWork(cut_async_engine) as uow:
        await uow.tasks.create(user_id=user, title="committed, then cut")
    assert committed_count(persistence_engine, user) == 1


@pytest.mark.asyncio
async def test_async_an_explicit_commit_cut_after_the_server_got_it_lets_the_block_go_on(
    cut_async_engine: AsyncEngine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=True)
    async with AsyncUnitOfWork(cut_async_engine) as uow:
        await uow.tasks.create(user_id=user, title="committed, then cut")
        await uow.commit()
        token = uow.causal_token
        await uow.tasks.create(user_id=user, title="after it, on a new connection")
    assert committed_count(persistence_engine, user) == 2
    assert token is not None


@pytest.mark.asyncio
async def test_async_a_commit_cut_with_the_server_out_of_reach_is_an_unknown_outcome(
    cut_async_engine: AsyncEngine, proxy: LatencyProxy, user: str
):
    proxy.refuse_new = True
    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=True)
    with pytest.raises(CommitOutcomeUnknownError, match="may or may not"):
        async with AsyncUnitOfWork(cut_async_engine) as uow:
            await uow.tasks.create(user_id=user, title="outcome unknown")
    proxy.refuse_new = False


@pytest.mark.asyncio
@pytest.mark.parametrize("server_got_it", [False, True])
async def test_async_run_in_transaction_neither_duplicates_nor_loses_a_cut_commit(
    cut_async_engine: AsyncEngine,
    proxy: LatencyProxy,
    persistence_engine: Engine,
    user: str,
    server_got_it: bool,
):
    runs = []

    async def work(uow: AsyncUnitOfWork) -> int:
        runs.append(1)
        return (await uow.tasks.create(user_id=user, title="exactly once")).id

    proxy.cut_at_flight(COMMIT_FLIGHT, after_forwarding=server_got_it)
    await run_in_transaction_async(work, bind=cut_async_engine, backoff=0.0)
    assert committed_count(persistence_engine, user) == 1
    assert len(runs) == (1 if server_got_it else 2)
