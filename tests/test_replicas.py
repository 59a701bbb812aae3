"""Read replicas with read-your-writes, on a real streaming replica.

The module starts its own primary and a hot standby streaming from it
(`tests.servers.LocalServer`, `pg_basebackup -R`); replication is made to lag on purpose
with `pg_wal_replay_pause()`. A read-only unit of work given the causal token of a commit
never misses that commit; with no token it reads from the replica; a replica that is
down or lagging past the bound is left aside.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from persistence import (
    AsyncUnitOfWork,
    LastWrites,
    Settings,
    TaskValidationError,
    UnitOfWork,
    create_async_engine,
    create_engine,
    init_db,
    load_settings,
)
from persistence.connections import database_of
from tests.conftest import execute_in, execute_in_async
from tests.servers import LocalServer


@dataclasses.dataclass
class Cluster:
    primary: LocalServer
    replica: LocalServer

    def pause(self) -> None:
        """Stop the replica replaying what it receives: from now on it falls behind."""
        self.replica.execute_admin("SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.replica.execute_admin("SELECT pg_wal_replay_resume()")

    def cut_off(self) -> None:
        """Wait (bounded) until the replica's WAL receiver has stopped (a reload takes
        effect when the server gets to it, not when `pg_reload_conf()` returns)."""
        for _ in range(3000):
            if not self.replica.execute_admin("SELECT count(*) FROM pg_stat_wal_receiver")[0][0]:
                return
            threading.Event().wait(0.01)
        raise AssertionError("the replica's WAL receiver never stopped")

    def caught_up(self) -> None:
        """Wait (bounded) until the replica has replayed all the primary has written."""
        target = self.primary.execute_admin("SELECT pg_current_wal_lsn()::text")[0][0]
        for _ in range(3000):
            done = self.replica.execute_admin(
                f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            )[0][0]
            if done:
                return
            threading.Event().wait(0.01)
        raise AssertionError("the replica never caught up")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    settings = {
        "wal_level": "replica",
        "max_wal_senders": "4",
        "wal_receiver_status_interval": "1s",
    }
    with LocalServer.start(settings=settings) as primary:
        schema = create_engine(primary.url())
        init_db(schema)
        schema.dispose()
        with primary.start_replica() as replica:
            yield Cluster(primary, replica)


def engine_for(cluster: Cluster, *, max_lag: float = 3600.0, read_urls: tuple[str, ...] = ()):
    settings = dataclasses.replace(
        load_settings(),
        read_urls=read_urls or (cluster.replica.url(),),
        read_max_lag=max_lag,
    )
    return create_engine(cluster.primary.url(), settings)


@pytest.fixture
def engine(cluster: Cluster) -> Iterator[Engine]:
    engine = engine_for(cluster)
    yield engine
    engine.dispose()
    cluster.resume()


def served_by_a_standby(uow: UnitOfWork) -> bool:
    return bool(execute_in(uow, select(func.pg_is_in_recovery()))[0][0])


def test_a_read_only_unit_of_work_without_a_token_reads_from_the_replica(
    cluster: Cluster, engine: Engine, user: str
):
    with UnitOfWork(engine) as uow:
        uow.tasks.create(user_id=user, title="replicated")
    cluster.caught_up()
    with UnitOfWork(engine, read_only=True) as uow:
        assert [t.title for t in uow.tasks.list(user_id=user)] == ["replicated"]
        assert served_by_a_standby(uow)


def test_a_read_after_a_write_never_misses_it_while_the_replica_lags(
    cluster: Cluster, engine: Engine, user: str
):
    cluster.pause()
    with UnitOfWork(engine) as uow:
        uow.tasks.create(user_id=user, title="just written")
    token = uow.causal_token
    assert token is not None
    # With the token: the replica has not replayed it, so the primary answers.
    with UnitOfWork(engine, read_only=True, after=token) as uow:
        assert [t.title for t in uow.tasks.list(user_id=user)] == ["just written"]
        assert not served_by_a_standby(uow)
    # Without one: the replica answers, from before the write.
    with UnitOfWork(engine, read_only=True) as uow:
        assert uow.tasks.list(user_id=user) == []
        assert served_by_a_standby(uow)
    cluster.resume()
    cluster.caught_up()
    # Once it is seen to have replayed that far (any read's status check tells), the
    # token is served by the replica.
    with UnitOfWork(engine, read_only=True) as uow:
        assert [t.title for t in uow.tasks.list(user_id=user)] == ["just written"]
    with UnitOfWork(engine, read_only=True, after=token) as uow:
        assert [t.title for t in uow.tasks.list(user_id=user)] == ["just written"]
        assert served_by_a_standby(uow)


def test_a_replica_lagging_past_the_bound_is_left_aside(cluster: Cluster, user: str, caplog):
    caplog.set_level(logging.WARNING, logger="persistence")
    engine = engine_for(cluster, max_lag=0.0)
    try:
        cluster.pause()
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="not yet replayed")
        with UnitOfWork(engine, read_only=True) as uow:  # no token: only the bound counts
            assert [t.title for t in uow.tasks.list(user_id=user)] == ["not yet replayed"]
            assert not served_by_a_standby(uow)
        assert any("left aside" in record.getMessage() for record in caplog.records)
    finally:
        engine.dispose()
        cluster.resume()


def test_a_replica_that_is_down_is_skipped_and_the_primary_serves(
    cluster: Cluster, user: str, caplog
):
    caplog.set_level(logging.WARNING, logger="persistence")
    nowhere = "postgresql://postgres@127.0.0.1:1/postgres"
    engine = engine_for(cluster, read_urls=(nowhere, nowhere))
    try:
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="on the primary")
        for _ in range(3):  # every replica down: the primary, every time
            with UnitOfWork(engine, read_only=True) as uow:
                assert [t.title for t in uow.tasks.list(user_id=user)] == ["on the primary"]
                assert not served_by_a_standby(uow)
        assert any("can't be used" in record.getMessage() for record in caplog.records)
    finally:
        engine.dispose()


def test_writes_in_a_read_only_unit_of_work_are_refused_on_the_replica(
    cluster: Cluster, engine: Engine, user: str
):
    from persistence import DatabaseError

    with pytest.raises(DatabaseError, match="read-only"), UnitOfWork(engine, read_only=True) as uow:
        uow.tasks.create(user_id=user, title="refused")


def test_last_writes_carries_each_users_latest_token(cluster: Cluster, engine: Engine, user: str):
    last_writes = LastWrites()
    cluster.pause()
    for title in ("first", "second"):
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title=title)
        last_writes.record(user, uow.causal_token)
    assert last_writes.get(user) == uow.causal_token  # the second's: the latest
    last_writes.record(user, "0/1")  # an older token never replaces a later one
    assert last_writes.get(user) == uow.causal_token
    with UnitOfWork(engine, read_only=True, after=last_writes.get(user)) as uow:
        assert sorted(t.title for t in uow.tasks.list(user_id=user)) == ["first", "second"]
    assert last_writes.get("someone-else") is None


@pytest.mark.parametrize("token", ["yesterday", "16/", 42, "G/1", "123456789/0"])
def test_a_bad_token_is_refused_up_front_by_the_unit_and_by_last_writes(token: object):
    with pytest.raises(TaskValidationError, match="after"):
        UnitOfWork(read_only=True, after=token)
    if isinstance(token, str):  # what LastWrites keeps, a unit of work must take
        with pytest.raises(TaskValidationError, match="after"):
            LastWrites().record("someone", token)


def test_a_unit_of_work_that_wrote_nothing_has_no_token(engine: Engine, user: str):
    with UnitOfWork(engine) as uow:
        uow.tasks.list(user_id=user)
    assert uow.causal_token is None


def test_without_read_urls_everything_goes_to_the_primary(cluster: Cluster, user: str):
    engine = create_engine(cluster.primary.url(), Settings(database_url=None))
    try:
        with UnitOfWork(engine, read_only=True) as uow:
            uow.tasks.list(user_id=user)
            assert not served_by_a_standby(uow)
    finally:
        engine.dispose()


@pytest.mark.asyncio
async def test_async_a_read_after_a_write_never_misses_it_while_the_replica_lags(
    cluster: Cluster, user: str
):
    settings = dataclasses.replace(load_settings(), read_urls=(cluster.replica.url(),))
    engine = create_async_engine(cluster.primary.url(), settings)
    try:
        cluster.pause()
        async with AsyncUnitOfWork(engine) as uow:
            await uow.tasks.create(user_id=user, title="just written")
        token = uow.causal_token
        async with AsyncUnitOfWork(engine, read_only=True, after=token) as uow:
            assert [t.title for t in await uow.tasks.list(user_id=user)] == ["just written"]
            recovery = await execute_in_async(uow, select(func.pg_is_in_recovery()))
            assert recovery[0][0] is False
        async with AsyncUnitOfWork(engine, read_only=True) as uow:
            assert await uow.tasks.list(user_id=user) == []
            recovery = await execute_in_async(uow, select(func.pg_is_in_recovery()))
            assert recovery[0][0] is True
    finally:
        cluster.resume()
        await engine.dispose()


def test_a_repeatable_read_unit_reads_from_the_replica_in_one_snapshot(
    cluster: Cluster, engine: Engine, user: str
):
    with UnitOfWork(engine) as uow:
        uow.tasks.create(user_id=user, title="seen twice")
    cluster.caught_up()
    with UnitOfWork(engine, read_only=True, isolation_level="REPEATABLE READ") as uow:
        first = uow.tasks.count(user_id=user)
        assert served_by_a_standby(uow)
        level = execute_in(uow, select(func.current_setting("transaction_isolation")))
        assert level[0][0] == "repeatable read"
        assert uow.tasks.count(user_id=user) == first == 1


def test_a_snapshot_read_sent_on_to_the_primary_keeps_the_replicas_connection(
    cluster: Cluster, engine: Engine, user: str
):
    cluster.pause()
    with UnitOfWork(engine) as uow:
        uow.tasks.create(user_id=user, title="not replayed yet")
    snapshot = {"read_only": True, "isolation_level": "REPEATABLE READ"}
    with UnitOfWork(engine, after=uow.causal_token, **snapshot) as uow:
        assert [t.title for t in uow.tasks.list(user_id=user)] == ["not replayed yet"]
        assert not served_by_a_standby(uow)
    # The replica's BEGIN ... READ ONLY was ended, not left for the pool to close.
    with UnitOfWork(engine, **snapshot) as uow:
        assert served_by_a_standby(uow)
    assert database_of(engine).replicas[0].pool.stats().opened == 1


def test_a_replica_whose_pool_is_busy_is_not_left_aside(cluster: Cluster, user: str, caplog):
    caplog.set_level(logging.WARNING, logger="persistence")
    settings = dataclasses.replace(load_settings(), read_urls=(cluster.replica.url(),))
    engine = create_engine(
        cluster.primary.url(), settings, pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    try:
        with UnitOfWork(engine, read_only=True) as holding:
            holding.tasks.count(user_id=user)  # the replica's one connection, held
            with UnitOfWork(engine, read_only=True) as uow:
                assert uow.tasks.count(user_id=user) == 0
                assert not served_by_a_standby(uow)
        with UnitOfWork(engine, read_only=True) as uow:  # right after: the replica again
            assert served_by_a_standby(uow)
        assert database_of(engine).replicas[0].pool.stats().opened == 1
        assert not any("left aside" in record.getMessage() for record in caplog.records)
    finally:
        engine.dispose()


def test_a_serializable_read_only_unit_reads_from_the_primary(engine: Engine, user: str):
    # A hot standby can't run SERIALIZABLE transactions.
    with UnitOfWork(engine, read_only=True, isolation_level="SERIALIZABLE") as uow:
        assert uow.tasks.count(user_id=user) == 0
        assert not served_by_a_standby(uow)


def test_a_replica_cut_off_from_the_primary_is_left_aside_once_it_misses_a_commit(
    cluster: Cluster, user: str
):
    # Cut off, it has replayed all it received, so it says it is 0 s behind; but this
    # process committed something it has not replayed, longer ago than the bound.
    engine = engine_for(cluster, max_lag=0.2)
    conninfo = cluster.replica.execute_admin("SHOW primary_conninfo")[0][0]
    try:
        cluster.replica.execute_admin("ALTER SYSTEM SET primary_conninfo = ''")
        cluster.replica.execute_admin("SELECT pg_reload_conf()")
        cluster.cut_off()
        with UnitOfWork(engine) as uow:
            uow.tasks.create(user_id=user, title="never replicated")
        threading.Event().wait(0.5)  # past the bound: the replica has missed it that long
        with UnitOfWork(engine, read_only=True) as uow:
            assert [t.title for t in uow.tasks.list(user_id=user)] == ["never replicated"]
            assert not served_by_a_standby(uow)
    finally:
        engine.dispose()
        quoted = conninfo.replace("'", "''")
        cluster.replica.execute_admin(f"ALTER SYSTEM SET primary_conninfo = '{quoted}'")
        cluster.replica.execute_admin("SELECT pg_reload_conf()")
        cluster.caught_up()
