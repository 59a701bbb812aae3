"""Round trips per unit of work, counted by a proxy (deterministic: no timing involved)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from benchmarks.proxy import LatencyProxy
from persistence import UnitOfWork
from persistence.testing import TestDatabase
from tests.proxying import engine_through, url_through


@pytest.fixture
def proxied(persistence_database: TestDatabase, proxy: LatencyProxy) -> Iterator[Engine]:
    engine = engine_through(proxy, persistence_database)
    with UnitOfWork(engine) as uow:  # warm up: connect once, outside the counts
        uow.tasks.count(user_id="warm-up")
    yield engine
    engine.dispose()


def round_trips(proxy: LatencyProxy, engine: Engine, work: Callable[[UnitOfWork], Any], **kw):
    proxy.reset_counts()
    with UnitOfWork(engine, **kw) as uow:
        work(uow)
    assert proxy.connections_opened == 0, "a unit of work opened a new connection"
    return proxy.round_trips


def test_a_unit_of_work_that_only_reads_costs_one_round_trip(proxy, proxied, user):
    assert round_trips(proxy, proxied, lambda uow: uow.tasks.list(user_id=user)) == 1
    assert round_trips(proxy, proxied, lambda uow: uow.tasks.count(user_id=user)) == 1


def test_creating_a_task_costs_two_round_trips(proxy, proxied, user):
    assert round_trips(proxy, proxied, lambda uow: uow.tasks.create(user_id=user, title="t")) == 2


def test_toggling_costs_two_round_trips_with_no_read_first(proxy, proxied, user):
    with UnitOfWork(proxied) as uow:
        task = uow.tasks.create(user_id=user, title="t")

    def toggle(uow: UnitOfWork) -> None:
        uow.tasks.toggle_complete(user_id=user, task_id=task.id)

    assert round_trips(proxy, proxied, toggle) == 2


def test_create_toggle_and_list_cost_four_round_trips(proxy, proxied, user):
    def mixed(uow: UnitOfWork) -> None:
        task = uow.tasks.create(user_id=user, title="t")
        uow.tasks.toggle_complete(user_id=user, task_id=task.id)
        uow.tasks.list(user_id=user)

    assert round_trips(proxy, proxied, mixed) == 4


def test_a_thousand_tasks_in_bulk_cost_two_round_trips(proxy, proxied, user):
    def bulk(uow: UnitOfWork) -> None:
        assert len(uow.tasks.create_many(user_id=user, items=[{"title": "t"}] * 1000)) == 1000

    assert round_trips(proxy, proxied, bulk) == 2


def test_reads_under_serializable_share_the_transaction(proxy, proxied, user):
    def reads(uow: UnitOfWork) -> None:
        uow.tasks.list(user_id=user)
        uow.tasks.count(user_id=user)

    # BEGIN goes with the first read (1), the second read (1), COMMIT (1).
    assert round_trips(proxy, proxied, reads, isolation_level="SERIALIZABLE") == 3


def test_validation_errors_cost_no_round_trip(proxy, proxied, user):
    def bad(uow: UnitOfWork) -> None:
        with pytest.raises(ValueError, match="title"):
            uow.tasks.create(user_id=user, title="   ")

    assert round_trips(proxy, proxied, bad) == 0


@pytest.fixture
def libpq_connect_flights(proxy, persistence_database) -> Iterator[int]:
    """The flights libpq itself needs to connect through `proxy` (startup, and TLS and
    SCRAM where the server asks for them): raw psycopg, nothing else. The connection is
    closed only after the test, so that its goodbye falls in no count."""
    url = url_through(proxy, persistence_database).set(drivername="postgresql")
    proxy.reset_counts()
    with psycopg.connect(url.render_as_string(hide_password=False)):
        yield int(proxy.round_trips)


def test_the_first_unit_of_work_after_start_needs_only_what_libpq_needs(
    proxy, persistence_database, user, libpq_connect_flights
):
    # A new engine: its first unit of work connects (what libpq needs: one flight on a
    # plain server, more with TLS and SCRAM) and reads (one). No dialect initialisation,
    # no query for the server's version or settings: they come with the connection.
    connect = libpq_connect_flights
    engine = engine_through(proxy, persistence_database)
    try:
        proxy.reset_counts()
        with UnitOfWork(engine) as uow:
            uow.tasks.list(user_id=user)
        assert proxy.connections_opened == 1
        assert proxy.round_trips == connect + 1
    finally:
        engine.dispose()


def test_the_first_write_after_start_costs_one_round_trip_more_than_the_write(
    proxy, persistence_database, user, libpq_connect_flights
):
    connect = libpq_connect_flights
    engine = engine_through(proxy, persistence_database)
    try:
        proxy.reset_counts()
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="first")
        assert proxy.round_trips == connect + 2  # connect, BEGIN + INSERT, COMMIT
    finally:
        engine.dispose()


def test_iterate_costs_one_round_trip_a_page(proxy, proxied, user):
    with UnitOfWork(proxied) as uow:
        uow.tasks.create_many(user_id=user, items=[{"title": f"t{i}"} for i in range(10)])

    def walk(uow: UnitOfWork) -> None:
        assert len(list(uow.tasks.iterate(user_id=user, page_size=4))) == 10

    assert round_trips(proxy, proxied, walk) == 3  # pages of 4, 4 and 2
