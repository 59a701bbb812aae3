"""Savepoints when things go wrong: a dead connection under one, a failed RELEASE."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, insert

from persistence import ConnectionLostError, DatabaseError, Task, UnitOfWork
from tests.conftest import backend_pid, committed_count, execute_in, terminate


class Boom(Exception):
    """The application's own failure."""


def test_a_failed_rollback_to_a_savepoint_lets_the_callers_own_error_through(
    small_engine: Engine, killer_engine: Engine, persistence_engine: Engine, user: str, caplog
):
    caplog.set_level(logging.WARNING, logger="persistence")
    error = Boom("the caller's own failure")
    with pytest.raises(Boom) as raised, UnitOfWork(small_engine) as uow:
        uow.tasks.create(user_id=user, title="before the savepoint")
        with uow.savepoint():
            uow.tasks.create(user_id=user, title="inside")
            terminate(killer_engine, backend_pid(uow))  # the connection dies here
            raise error
    assert raised.value is error
    # The loss is logged, and told on the caller's error, which stays what it was.
    assert any("savepoint" in record.getMessage() for record in caplog.records)
    assert any("connection was lost" in note for note in getattr(error, "__notes__", []))
    assert committed_count(persistence_engine, user) == 0
    with UnitOfWork(small_engine) as uow:  # and the next unit of work works
        uow.tasks.create(user_id=user, title="next")
    assert committed_count(persistence_engine, user) == 1


@pytest.mark.database_only
def test_after_a_failed_release_every_statement_says_25P02_and_nothing_is_committed(
    persistence_engine: Engine, user: str
):
    with pytest.raises(DatabaseError) as at_exit, UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="lost with the transaction")
        # Around validation, straight to the table: the server refuses it, and the
        # application swallows the error inside the savepoint.
        with (
            pytest.raises(DatabaseError) as at_release,
            uow.savepoint(),
            pytest.raises(Exception, match="ck_tasks_title"),
        ):
            execute_in(uow, insert(Task).values(user_id=user, title=" ", complete=False))
        assert at_release.value.sqlstate == "25P02"
        with pytest.raises(DatabaseError) as next_statement:
            uow.tasks.count(user_id=user)
        assert next_statement.value.sqlstate == "25P02"
        assert "prepared state" not in str(next_statement.value)
    assert at_exit.value.sqlstate == "25P02"
    assert not isinstance(at_exit.value, ConnectionLostError)
    assert committed_count(persistence_engine, user) == 0
