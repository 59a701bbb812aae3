"""The lazy BEGIN: every kind of first write, and locking reads, start the transaction."""

from __future__ import annotations

import psycopg
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from persistence import Task, UnitOfWork
from persistence.database import transaction_options


def _session(engine: Engine) -> Session:
    return Session(engine.execution_options(**transaction_options()), expire_on_commit=False)


def _status(session: Session) -> psycopg.pq.TransactionStatus:
    raw = session.connection().connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw.info.transaction_status


def test_a_first_write_sent_with_many_parameter_sets_is_rolled_back(
    persistence_engine: Engine, user: str
):
    with UnitOfWork(persistence_engine) as uow:
        tasks = uow.tasks.create_many(user_id=user, items=[{"title": "a"}, {"title": "b"}])
    with _session(persistence_engine) as session:
        # An UPDATE by primary key with a list of rows goes out as executemany.
        session.execute(update(Task), [{"id": t.id, "title": "changed"} for t in tasks])
        assert _status(session) == psycopg.pq.TransactionStatus.INTRANS
        session.rollback()
    with UnitOfWork(persistence_engine) as uow:
        assert {t.title for t in uow.tasks.list(user_id=user)} == {"a", "b"}


def test_a_locking_read_begins_the_transaction(persistence_engine: Engine, user: str):
    with _session(persistence_engine) as session:
        session.execute(select(Task).where(col(Task.user_id) == user).with_for_update())
        assert _status(session) == psycopg.pq.TransactionStatus.INTRANS
        session.rollback()


def test_a_plain_read_does_not(persistence_engine: Engine, user: str):
    with _session(persistence_engine) as session:
        session.execute(select(Task).where(col(Task.user_id) == user))
        assert _status(session) == psycopg.pq.TransactionStatus.IDLE


def test_percent_signs_reach_the_database_verbatim(uow: UnitOfWork, user: str):
    with uow:
        task = uow.tasks.create(user_id=user, title="50% done %s %% %(x)s")
        uow.tasks.update(user_id=user, task_id=task.id, description="100%")
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert (stored.title, stored.description) == ("50% done %s %% %(x)s", "100%")
