"""The lazy BEGIN: reads before the first write need no transaction; the first write
begins it, and the transaction's statements reach the server verbatim."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Engine

from persistence import AsyncUnitOfWork, UnitOfWork, create_async_engine
from persistence.testing import TestDatabase
from tests.conftest import committed_count


def _status(uow: UnitOfWork) -> psycopg.pq.TransactionStatus:
    return uow._connected().info.transaction_status


def test_reads_before_the_first_write_run_outside_a_transaction(
    persistence_engine: Engine, user: str
):
    with UnitOfWork(persistence_engine) as uow:
        uow.tasks.list(user_id=user)
        uow.tasks.count(user_id=user)
        assert _status(uow) == psycopg.pq.TransactionStatus.IDLE
        uow.tasks.create(user_id=user, title="the first write")
        assert _status(uow) == psycopg.pq.TransactionStatus.INTRANS
        uow.tasks.list(user_id=user)  # and later reads share the transaction
        assert _status(uow) == psycopg.pq.TransactionStatus.INTRANS


def test_under_serializable_the_first_read_begins_the_transaction(
    persistence_engine: Engine, user: str
):
    with UnitOfWork(persistence_engine, isolation_level="SERIALIZABLE") as uow:
        uow.tasks.count(user_id=user)
        assert _status(uow) == psycopg.pq.TransactionStatus.INTRANS


def test_a_first_write_of_many_rows_is_rolled_back_with_the_rest(
    persistence_engine: Engine, user: str
):
    class Boom(Exception):
        pass

    try:
        with UnitOfWork(persistence_engine) as uow:
            uow.tasks.create_many(user_id=user, items=[{"title": "a"}, {"title": "b"}])
            raise Boom
    except Boom:
        pass
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user) == 0


@pytest.mark.asyncio
async def test_async_a_first_write_of_many_rows_is_rolled_back_with_the_rest(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    class Boom(Exception):
        pass

    engine = create_async_engine(persistence_database.url)
    try:
        with pytest.raises(Boom):
            async with AsyncUnitOfWork(engine) as uow:
                await uow.tasks.create_many(user_id=user, items=[{"title": "a"}, {"title": "b"}])
                raise Boom
        assert committed_count(persistence_engine, user) == 0
    finally:
        await engine.dispose()


def test_percent_signs_reach_the_database_verbatim(uow: UnitOfWork, user: str):
    with uow:
        task = uow.tasks.create(user_id=user, title="50% done %s %% %(x)s")
        uow.tasks.update(user_id=user, task_id=task.id, description="100%")
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert (stored.title, stored.description) == ("50% done %s %% %(x)s", "100%")
