"""The password never shows: not in errors, reprs, log records at any level, or output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from sqlalchemy import URL, Engine

from persistence import (
    PersistenceError,
    UnitOfWork,
    create_engine,
    load_settings,
    run_in_transaction,
)
from persistence.database import normalize_url
from persistence.testing import TestDatabase

SECRET = "Sup3r-s3cret-pw"


@pytest.fixture
def secret_url(persistence_database: TestDatabase) -> URL:
    """The test database's URL with a password: the real one if it has one, else a
    sample (servers with trust authentication accept any)."""
    url = normalize_url(persistence_database.url)
    return url if url.password else url.set(password=SECRET)


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.pool", "persistence", "psycopg"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


def _texts(error: BaseException) -> list[str]:
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


def test_no_password_in_logs_or_reprs_during_a_whole_life(
    secret_url: URL, everything_logged: pytest.LogCaptureFixture, user: str
):
    password = str(secret_url.password)
    engine = create_engine(secret_url.render_as_string(hide_password=False), echo=True)
    try:
        with UnitOfWork(engine) as uow:
            task = uow.tasks.create(user_id=user, title="t")
            uow.tasks.toggle_complete(user_id=user, task_id=task.id)
            shown = [repr(uow), repr(uow.tasks), repr(task), repr(engine), repr(engine.url)]
        run_in_transaction(lambda uow: uow.tasks.count(user_id=user), bind=engine)
    finally:
        engine.dispose()
    shown.append(repr(load_settings()))
    records = [r.getMessage() for r in everything_logged.records]
    assert records, "nothing was logged: the check would prove nothing"
    for text in shown + records:
        assert password not in text


@pytest.mark.parametrize(
    "break_it",
    [
        lambda url: url.set(host="127.0.0.1", port=1, query={}),  # nothing listens
        lambda url: url.set(database="no_such_database_here"),  # the server refuses
    ],
)
def test_no_password_in_connection_errors(
    secret_url: URL, everything_logged: pytest.LogCaptureFixture, break_it
):
    password = str(secret_url.password)
    engine = create_engine(break_it(secret_url))
    with pytest.raises(PersistenceError) as raised, UnitOfWork(engine) as uow:
        uow.tasks.count(user_id="u")
    engine.dispose()
    texts = _texts(raised.value) + [r.getMessage() for r in everything_logged.records]
    texts += [str(r.exc_info[1]) for r in everything_logged.records if r.exc_info]
    for text in texts:
        assert password not in text


def test_no_password_in_any_command_output(secret_url: URL, persistence_engine: Engine):
    password = str(secret_url.password)
    env = {**os.environ, "DATABASE_URL": secret_url.render_as_string(hide_password=False)}
    broken = secret_url.set(host="127.0.0.1", port=1, query={})
    for command, url in (
        (["doctor"], None),
        (["quickstart"], None),
        (["doctor"], broken.render_as_string(hide_password=False)),
    ):
        run_env = env if url is None else {**env, "DATABASE_URL": url}
        done = subprocess.run(
            [sys.executable, "-m", "persistence", *command],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.stdout or done.stderr
        assert password not in done.stdout + done.stderr
