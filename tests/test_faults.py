"""Injected faults: a network cut at each point of a unit of work, a server restart.

The restart is of a server this module starts (`tests.servers.LocalServer`): a test run
never restarts a server it did not start.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from benchmarks.proxy import LatencyProxy
from persistence import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    UnitOfWork,
    create_engine,
    init_db,
)
from tests.conftest import execute_in
from tests.servers import LocalServer


def committed(engine: Engine, user: str) -> list[str]:
    with UnitOfWork(engine) as uow:
        return sorted(task.title for task in uow.tasks.list(user_id=user, limit=None))


def test_a_cut_before_the_unit_begins_is_invisible(
    cut_engine: Engine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    with UnitOfWork(cut_engine) as uow:  # a pooled connection, now idle
        uow.tasks.count(user_id=user)
    proxy.cut()
    with UnitOfWork(cut_engine) as uow:
        uow.tasks.create(user_id=user, title="after the cut")
    assert committed(persistence_engine, user) == ["after the cut"]


def test_a_cut_midway_raises_and_commits_nothing(
    cut_engine: Engine, proxy: LatencyProxy, persistence_engine: Engine, user: str
):
    with UnitOfWork(cut_engine) as uow:
        uow.tasks.count(user_id=user)
    proxy.cut_at_flight(2)  # BEGIN + INSERT is the first, the UPDATE the second
    with pytest.raises(ConnectionLostError) as raised, UnitOfWork(cut_engine) as uow:
        task = uow.tasks.create(user_id=user, title="first write")
        uow.tasks.toggle_complete(user_id=user, task_id=task.id)
    assert not isinstance(raised.value, CommitOutcomeUnknownError)
    proxy.cut_on(None)
    assert committed(persistence_engine, user) == []
    with UnitOfWork(cut_engine) as uow:  # and the next unit of work works
        uow.tasks.create(user_id=user, title="next")
    assert committed(persistence_engine, user) == ["next"]


def test_a_read_only_unit_cut_at_commit_is_not_ambiguous(
    cut_engine: Engine, proxy: LatencyProxy, user: str
):
    # Reads before any write run outside a transaction: there is no COMMIT to lose.
    proxy.cut_at_flight(2)  # the SELECT is the first: a COMMIT would be the second
    with UnitOfWork(cut_engine) as uow:
        assert uow.tasks.list(user_id=user) == []
    assert proxy.round_trips >= 1


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalServer]:
    """A server this test module started, so restarting it touches nobody else's."""
    with LocalServer.start() as server:
        schema = create_engine(server.url())
        init_db(schema)
        schema.dispose()
        yield server


def test_a_server_restart_between_units_of_work_goes_unnoticed(own_server: LocalServer, user: str):
    engine = create_engine(own_server.url(), pool_size=3, max_overflow=0)
    try:
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="before")
            started = execute_in(uow, select(func.pg_postmaster_start_time()))[0][0]
        own_server.restart()  # every pooled connection is now dead
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="after")
            restarted = execute_in(uow, select(func.pg_postmaster_start_time()))[0][0]
        assert restarted > started, "the server did not restart"
    finally:
        engine.dispose()
    other = create_engine(own_server.url(), pool_size=1, max_overflow=0)
    try:
        assert committed(other, user) == ["after", "before"]
    finally:
        other.dispose()
