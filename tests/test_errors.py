"""Every driver or server failure reaches callers as a PersistenceError, chained, secret-free."""

from __future__ import annotations

import logging
import os

import psycopg
import pytest
from sqlalchemy import Engine, insert
from sqlmodel import col, select

from persistence import (
    AuthenticationError,
    ConnectionLostError,
    DatabaseError,
    DatabaseUnavailableError,
    IntegrityViolationError,
    PersistenceError,
    PoolTimeoutError,
    Task,
    TaskNotFoundError,
    TaskValidationError,
    UnitOfWork,
    create_engine,
)
from persistence.database import normalize_url
from persistence.errors import driver_errors
from persistence.testing import TestDatabase
from tests.conftest import backend_pid, terminate


def test_the_error_types_form_one_family():
    for error in (TaskNotFoundError, TaskValidationError, DatabaseUnavailableError):
        assert issubclass(error, PersistenceError)


def test_an_unreachable_server_is_a_clear_error_without_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    engine = create_engine("postgresql://someone:hunter2-secret@127.0.0.1:1/nowhere")
    with (
        pytest.raises(DatabaseUnavailableError, match="could not connect") as raised,
        UnitOfWork(engine) as uow,
    ):
        uow.tasks.count(user_id="alice")
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)
    assert "hunter2-secret" not in str(raised.value)
    assert "hunter2-secret" not in repr(raised.value)
    assert "hunter2-secret" not in repr(engine)
    assert all("hunter2-secret" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("values", "error", "sqlstate"),
    [
        ({"user_id": " ", "title": "t"}, IntegrityViolationError, "23514"),
        ({"user_id": "u", "title": " padded "}, IntegrityViolationError, "23514"),
        ({"user_id": "u", "title": ""}, IntegrityViolationError, "23514"),
        ({"user_id": "u", "title": "t" * 201}, DatabaseError, "22001"),
        ({"user_id": "u", "title": "t", "description": "d" * 1001}, DatabaseError, "22001"),
    ],
)
def test_the_database_constraints_back_up_validation(
    persistence_engine: Engine, values: dict[str, str], error: type[DatabaseError], sqlstate: str
):
    # Straight to the table, around the repository's validation.
    with (
        pytest.raises(error, match=sqlstate) as raised,
        driver_errors("bypassing validation"),
        persistence_engine.begin() as connection,
    ):
        connection.execute(insert(Task).values(**values))
    assert raised.value.sqlstate == sqlstate
    assert isinstance(raised.value.__cause__.orig, psycopg.Error)


def test_a_connection_killed_inside_a_unit_of_work_raises_and_commits_nothing(
    persistence_engine: Engine, killer_engine: Engine, user: str
):
    with pytest.raises(ConnectionLostError) as raised, UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="lost with the connection")
        pid = backend_pid(uow)
        terminate(killer_engine, pid)
        uow.tasks.create(user_id=user, title="never arrives")
    assert raised.value.__cause__ is not None
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user) == 0
        uow.tasks.create(user_id=user, title="the next unit of work works")
    with persistence_engine.connect() as other:
        titles = other.execute(select(Task.title).where(col(Task.user_id) == user)).all()
    assert [t for (t,) in titles] == ["the next unit of work works"]


def test_an_exhausted_pool_ends_in_a_clear_error(persistence_database: TestDatabase, user: str):
    tiny = create_engine(persistence_database.url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        with UnitOfWork(tiny) as holder:
            holder.tasks.count(user_id=user)
            with (
                pytest.raises(PoolTimeoutError, match="no database connection became free"),
                UnitOfWork(tiny) as waiter,
            ):
                waiter.tasks.count(user_id=user)
    finally:
        tiny.dispose()


def test_the_packages_errors_survive_pickling_and_copying():
    import copy
    import pickle

    for error in (
        TaskNotFoundError(user_id="alice", task_id=7),
        TaskValidationError("title", "must not be blank"),
    ):
        for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(clone) is type(error)
            assert str(clone) == str(error)
            assert vars(clone) == vars(error)


def test_a_short_password_is_scrubbed_only_where_a_password_stands():
    from persistence.errors import register_secret, scrub

    register_secret("a")
    assert scrub("connecting to the database at postgresql://app:a@host/db") == (
        "connecting to the database at postgresql://app:***@host/db"
    )
    register_secret("long-enough-secret")
    assert scrub("it said long-enough-secret somewhere") == "it said *** somewhere"


def test_a_refused_login_names_no_sqlstate_it_does_not_have(persistence_database: TestDatabase):
    # libpq refuses a login while connecting without a SQLSTATE: the message said "SQLSTATE
    # None". The server itself, not a pooler in front of it, whose answer to an unknown user
    # varies.
    direct = os.environ.get("PERSISTENCE_TEST_DIRECT_URL") or persistence_database.url
    url = normalize_url(direct).set(username="no_such_role_here", password="wrong-password")
    engine = create_engine(url)
    try:
        with pytest.raises(AuthenticationError) as raised, UnitOfWork(engine) as uow:
            uow.tasks.count(user_id="alice")
    finally:
        engine.dispose()
    assert raised.value.sqlstate is None
    assert "refused the credentials in DATABASE_URL: " in str(raised.value)
    assert "SQLSTATE" not in str(raised.value)
    assert "wrong-password" not in str(raised.value)
