"""Shared helpers for the package's own tests; the fixtures come from `persistence.testing`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import col

from benchmarks.proxy import LatencyProxy
from persistence import Task, create_engine
from persistence.database import normalize_url
from persistence.testing import TestDatabase
from tests.proxying import proxy_for

# The bound of every wait on an event in the tests: reached only when something is stuck,
# never part of a passing run, however loaded the machine.
STUCK = 60.0


@pytest.fixture
def user() -> str:
    """A user id no other test uses."""
    return f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def killer_engine(persistence_database: TestDatabase) -> Iterator[Engine]:
    """An engine that reaches the server's backends directly, to kill them.

    Behind a transaction-mode pooler, a connection through the pooler may be handed the
    very backend it means to kill; `PERSISTENCE_TEST_DIRECT_URL` (set by `.ci/run` for the
    PgBouncer run) names the server behind the pooler.
    """
    direct = os.environ.get("PERSISTENCE_TEST_DIRECT_URL")
    if not direct:
        yield persistence_database.engine
        return
    url = normalize_url(direct).set(database=persistence_database.name)
    engine = create_engine(url, pool_size=2, max_overflow=0)
    yield engine
    engine.dispose()


def terminate(killer: Engine, *pids: int) -> None:
    """Kill server backends from another connection, as a restarted server would, and wait
    until each one is gone (`pg_terminate_backend` with a timeout waits for that)."""
    with killer.connect() as connection:
        for pid in dict.fromkeys(pids):  # behind a pooler, two connections may share one
            gone = connection.execute(select(func.pg_terminate_backend(pid, int(STUCK * 1000))))
            assert gone.scalar_one(), f"backend {pid} did not exit"


@pytest.fixture
def proxy(persistence_database: TestDatabase) -> Iterator[LatencyProxy]:
    """A round-trip counting, cuttable proxy in front of the test database's server."""
    with proxy_for(persistence_database) as running:
        yield running


def committed_count(engine: Engine, user: str) -> int:
    """How many of `user`'s tasks another connection sees as committed."""
    with engine.connect() as other:
        return int(
            other.execute(
                select(func.count()).select_from(Task).where(col(Task.user_id) == user)
            ).scalar_one()
        )
