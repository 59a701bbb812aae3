"""Injected faults: a network cut at each point of a unit of work, a server restart."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from benchmarks.proxy import LatencyProxy
from persistence import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    UnitOfWork,
    create_engine,
    load_settings,
)
from persistence.database import normalize_url
from persistence.embedded import restart_embedded
from persistence.testing import TestDatabase
from tests.conftest import execute_in
from tests.proxying import engine_through


@pytest.fixture
def cut_engine(persistence_database: TestDatabase, proxy: LatencyProxy) -> Iterator[Engine]:
    engine = engine_through(proxy, persistence_database, pool_size=2)
    with UnitOfWork(engine) as uow:  # the first connection's set-up, before any cut is armed
        uow.tasks.count(user_id="warm-up")
    yield engine
    engine.dispose()


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


def _restart(persistence_database: TestDatabase) -> None:
    url = normalize_url(persistence_database.url)
    socket_dir = url.query.get("host")
    settings = load_settings()
    embedded_dir = settings.embedded_dir.expanduser().resolve()
    if isinstance(socket_dir, str) and Path(socket_dir).resolve() == embedded_dir:
        restart_embedded(embedded_dir)
        return
    direct = os.environ.get("PERSISTENCE_TEST_DIRECT_URL") or persistence_database.url
    direct_url = normalize_url(direct)
    cluster = shutil.which("pg_ctlcluster")
    if direct_url.host in ("127.0.0.1", "localhost") and cluster and os.geteuid() == 0:
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(
            [cluster, "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return
    pytest.skip("can restart only the embedded server or a local Debian cluster (as root)")


def test_a_server_restart_between_units_of_work_goes_unnoticed(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    engine = create_engine(persistence_database.url, pool_size=3, max_overflow=0)
    try:
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="before")
            started = execute_in(uow, select(func.pg_postmaster_start_time()))[0][0]
        _restart(persistence_database)
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="after")
            restarted = execute_in(uow, select(func.pg_postmaster_start_time()))[0][0]
        assert restarted > started, "the server did not restart"
    finally:
        engine.dispose()
    assert committed(persistence_engine, user) == ["after", "before"]
