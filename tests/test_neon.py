"""Neon-ready connections: dead pooled connections, safe retries, credentials, `doctor`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

import pytest
from sqlalchemy import Engine, func, select, table, text

from persistence import (
    AuthenticationError,
    ConnectionLostError,
    TransactionConflictError,
    UnitOfWork,
    create_engine,
    run_in_transaction,
)
from persistence.database import normalize_url
from persistence.testing import TestDatabase
from tests.conftest import STUCK, backend_pid, execute_in, terminate
from tests.proxying import proxy_for, url_through


def _backend_pid(uow: UnitOfWork) -> int:
    return backend_pid(uow)


def test_a_pooled_connection_that_died_while_idle_is_replaced_unseen(
    small_engine: Engine, persistence_engine: Engine, killer_engine: Engine, user: str
):
    with UnitOfWork(small_engine) as uow:
        pid = _backend_pid(uow)
    terminate(killer_engine, pid)  # as a suspended or restarted compute does
    for first_call in ("create", "list"):
        with UnitOfWork(small_engine) as uow:
            if first_call == "create":
                uow.tasks.create(user_id=user, title="after the drop")
            assert len(uow.tasks.list(user_id=user)) == 1
            new_pid = _backend_pid(uow)
        assert new_pid != pid
        terminate(killer_engine, new_pid)
        pid = new_pid


def test_every_pooled_connection_dead_after_a_restart_still_works(
    small_engine: Engine, persistence_engine: Engine, killer_engine: Engine, user: str
):
    barrier = threading.Barrier(2)
    pids: list[int] = []

    def hold() -> None:
        with UnitOfWork(small_engine) as uow:
            pids.append(_backend_pid(uow))
            barrier.wait()  # both pool connections checked out at once

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    terminate(killer_engine, *pids)
    with UnitOfWork(small_engine) as uow:
        uow.tasks.create(user_id=user, title="first after restart")
    with UnitOfWork(small_engine) as uow:
        assert uow.tasks.count(user_id=user) == 1


def test_a_connection_lost_mid_unit_is_not_replayed(
    small_engine: Engine, persistence_engine: Engine, killer_engine: Engine, user: str
):
    with pytest.raises(ConnectionLostError), UnitOfWork(small_engine) as uow:
        uow.tasks.create(user_id=user, title="done before the drop")
        terminate(killer_engine, _backend_pid(uow))
        uow.tasks.create(user_id=user, title="after the drop")
    with UnitOfWork(small_engine) as uow:
        assert uow.tasks.count(user_id=user) == 0


def test_run_in_transaction_commits_and_returns_the_result(persistence_engine: Engine, user: str):
    task = run_in_transaction(
        lambda uow: uow.tasks.create(user_id=user, title="t"), bind=persistence_engine
    )
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.get(user_id=user, task_id=task.id) is not None


def test_run_in_transaction_never_reruns_on_the_applications_own_errors(
    persistence_engine: Engine, user: str
):
    calls = []

    def fails(uow: UnitOfWork) -> None:
        calls.append(1)
        uow.tasks.create(user_id=user, title="t")
        raise KeyError("application bug")

    with pytest.raises(KeyError):
        run_in_transaction(fails, attempts=5, bind=persistence_engine)
    assert len(calls) == 1
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user) == 0


def test_run_in_transaction_reruns_after_a_connection_lost_before_commit(
    small_engine: Engine, persistence_engine: Engine, killer_engine: Engine, user: str
):
    calls = []

    def work(uow: UnitOfWork) -> int:
        calls.append(1)
        task = uow.tasks.create(user_id=user, title="t")
        if len(calls) == 1:
            terminate(killer_engine, _backend_pid(uow))
        uow.tasks.toggle_complete(user_id=user, task_id=task.id)
        return task.id

    run_in_transaction(work, bind=small_engine, backoff=0.001)
    assert len(calls) == 2
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user, complete=True) == 1
        assert uow.tasks.count(user_id=user) == 1


def test_run_in_transaction_reruns_serialization_failures(persistence_engine: Engine, user: str):
    # Two SERIALIZABLE transactions each read the count and write: one of them must fail
    # with 40001 and run again, so both writes land and each saw a consistent count.
    with UnitOfWork(persistence_engine) as uow:
        seed = uow.tasks.create(user_id=user, title="seed")
    both_read = threading.Barrier(2)
    calls = []
    errors: list[BaseException] = []

    def work(uow: UnitOfWork) -> None:
        calls.append(1)
        first_attempt = len(calls) <= 2  # the rerun comes after both passed the barrier
        uow.tasks.count(user_id=user)
        uow.tasks.list(user_id=user)
        if first_attempt:
            both_read.wait(timeout=STUCK)  # breaks (and fails the test) only if stuck
        uow.tasks.update(user_id=user, task_id=seed.id, title=f"by call {len(calls)}")
        uow.tasks.create(user_id=user, title="one more")

    def run() -> None:
        try:
            run_in_transaction(
                work, isolation_level="SERIALIZABLE", bind=persistence_engine, backoff=0.01
            )
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(calls) == 3  # one of the two ran twice
    with UnitOfWork(persistence_engine) as uow:
        assert uow.tasks.count(user_id=user) == 3


def test_run_in_transaction_gives_up_after_its_attempts(persistence_engine: Engine, user: str):
    calls = []

    def always_conflicts(uow: UnitOfWork) -> None:
        calls.append(1)
        raise TransactionConflictError("simulated 40001")

    with pytest.raises(TransactionConflictError):
        run_in_transaction(always_conflicts, attempts=3, bind=persistence_engine, backoff=0.001)
    assert len(calls) == 3


def test_wrong_credentials_fail_fast_with_a_clear_error(persistence_database: TestDatabase):
    url = normalize_url(persistence_database.url)
    if not url.password:
        pytest.skip(
            "needs a server that checks passwords: the TLS run of .ci/run (SCRAM user) has one"
        )
    wrong = "wrong-" + url.password
    calls = []

    def count(uow: UnitOfWork) -> int:
        calls.append(1)
        return uow.tasks.count(user_id="u")

    # Fast means no waiting and no retrying: one connection attempt, one call of `count`.
    with proxy_for(persistence_database) as proxy:
        engine = create_engine(url_through(proxy, persistence_database).set(password=wrong))
        with pytest.raises(AuthenticationError) as raised:
            run_in_transaction(count, bind=engine, attempts=5)
        assert proxy.connections_opened == 1
    assert len(calls) == 1  # never retried
    assert url.password not in str(raised.value)
    assert "credentials" in str(raised.value)
    engine.dispose()


def _doctor(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "persistence", "doctor"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_doctor_reports_version_tls_pooler_round_trip_and_table(
    persistence_database: TestDatabase,
):
    done = _doctor(persistence_database.url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for label in ("server:     PostgreSQL ", "tls:        ", "pooler:     ", "round trip: "):
        assert label in out
    assert "table:      tasks exists" in out
    password = normalize_url(persistence_database.url).password
    if password:
        assert password not in out


def test_doctor_names_the_cause_in_one_line_when_nothing_listens():
    done = _doctor("postgresql://someone:hunter2-secret@127.0.0.1:1/none")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "could not connect" in lines[0]
    assert "Connection refused" in lines[0]
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr


def test_doctor_says_when_the_table_is_missing(persistence_database: TestDatabase):
    url = normalize_url(persistence_database.url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text('CREATE DATABASE "persistence_doctor_empty"'))
    try:
        empty = url.set(database="persistence_doctor_empty").render_as_string(hide_password=False)
        done = _doctor(empty)
        assert done.returncode == 0, done.stderr
        assert "tasks missing (init_db() creates it)" in done.stdout
    finally:
        with engine.connect() as connection:
            connection.execute(text('DROP DATABASE "persistence_doctor_empty" WITH (FORCE)'))
        engine.dispose()


def test_psycopg_never_prepares_statements(persistence_engine: Engine, user: str):
    # Transaction-mode poolers can't keep protocol-level prepared statements; psycopg
    # would prepare a query after it ran 5 times on one connection.
    with UnitOfWork(persistence_engine) as uow:
        for _ in range(10):
            uow.tasks.count(user_id=user)
            uow.tasks.create(user_id=user, title="t")
        prepared = execute_in(
            uow, select(func.count()).select_from(table("pg_prepared_statements"))
        )[0][0]
    assert prepared == 0


def test_a_tls_url_as_neon_gives_it_connects_over_tls(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    url = normalize_url(persistence_database.url)
    if url.query.get("sslmode") != "require":
        pytest.skip("needs a sslmode=require URL: the TLS run of .ci/run has one")
    assert url.query.get("channel_binding") == "require"
    with UnitOfWork(persistence_engine) as uow:
        uow.tasks.create(user_id=user, title="over TLS")
        assert uow._connected().pgconn.ssl_in_use
    assert "tls:        yes" in _doctor(persistence_database.url).stdout


def test_a_unit_that_opens_with_a_savepoint_rides_over_a_dead_connection(
    small_engine: Engine, killer_engine: Engine, user: str
):
    with UnitOfWork(small_engine) as uow:
        pid = _backend_pid(uow)
    terminate(killer_engine, pid)
    with UnitOfWork(small_engine) as uow, uow.savepoint():
        uow.tasks.create(user_id=user, title="inside the first savepoint")
    with UnitOfWork(small_engine) as uow:
        assert uow.tasks.count(user_id=user) == 1


def test_a_clean_exit_after_a_swallowed_connection_loss_says_the_connection_was_lost(
    small_engine: Engine, killer_engine: Engine, user: str
):
    with pytest.raises(ConnectionLostError, match="lost"), UnitOfWork(small_engine) as uow:
        uow.tasks.create(user_id=user, title="lost")
        terminate(killer_engine, _backend_pid(uow))
        with contextlib.suppress(ConnectionLostError):  # the application swallows it
            uow.tasks.create(user_id=user, title="never sent")
    with UnitOfWork(small_engine) as uow:
        assert uow.tasks.count(user_id=user) == 0
