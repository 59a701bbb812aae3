"""`init_db`: idempotent, and safe when several processes or threads run it at once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, inspect, text

from persistence import UnitOfWork, create_engine, init_db
from persistence.database import normalize_url
from persistence.testing import TestDatabase


@pytest.fixture
def empty_database(persistence_database: TestDatabase) -> Iterator[Engine]:
    url = normalize_url(persistence_database.url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    name = f"persistence_empty_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(url.set(database=name), pool_size=8)
    yield engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_init_db_creates_the_table_index_and_checks_and_can_run_again(empty_database: Engine):
    init_db(empty_database)
    init_db(empty_database)
    inspector = inspect(empty_database)
    assert inspector.has_table("tasks")
    assert "ix_tasks_user_id_created_at_id" in {i["name"] for i in inspector.get_indexes("tasks")}
    checks = {c["name"] for c in inspector.get_check_constraints("tasks")}
    assert {"ck_tasks_user_id", "ck_tasks_title", "ck_tasks_description"} <= checks
    with UnitOfWork(empty_database) as uow:
        uow.tasks.create(user_id="u", title="works")


def test_init_db_from_many_threads_at_once_succeeds(empty_database: Engine):
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            init_db(empty_database)
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert inspect(empty_database).has_table("tasks")
