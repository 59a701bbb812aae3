"""What asyncio adds to the contract: cancellation, one loop shared by many tasks, many
loops in one process, and a loop that is never blocked.

Nothing here is timed: the tests count suspensions, flights, connections and calls, and
wait on events (tests/async_probes.py), so a loaded machine makes them slower, not flaky."""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import psycopg.waiting
import pytest
import pytest_asyncio
from sqlalchemy import Engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

import persistence.async_database
from benchmarks.proxy import LatencyProxy
from persistence import (
    AsyncUnitOfWork,
    PersistenceError,
    create_async_engine,
    dispose_async_engine,
    get_async_engine,
    pool_stats,
)
from persistence.models import Task
from persistence.testing import TestDatabase
from tests.async_probes import (
    HeldReply,
    LoopWitness,
    cancelled_at,
    checked_in,
    checked_out,
    connections_opened,
    finished,
    nothing_left_to_the_garbage_collector,
    sleeps_on_the_loop,
)
from tests.conftest import Lock, committed_count, wait_until_waiting_on_a_lock
from tests.proxying import async_engine_through


class Boom(Exception):
    """The application's own failure."""


def server_states(engine: Engine) -> list[str]:
    """The state of every other session on the test database, as the server sees it."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT coalesce(state, '') FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        return [state for (state,) in rows]


def committed_titles(engine: Engine, user: str) -> list[str]:
    """The titles of `user`'s tasks another connection sees as committed."""
    with engine.connect() as connection:
        titles = select(col(Task.title)).where(col(Task.user_id) == user)
        return list(connection.execute(titles).scalars())


@pytest_asyncio.fixture
async def small_async_engine(
    persistence_database: TestDatabase, persistence_engine: Engine
) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(persistence_database.url, pool_size=5, max_overflow=0)
    yield engine
    await engine.dispose()


# Cancellation


async def read_create_toggle(engine: AsyncEngine, user: str, title: str, where: list[str]) -> None:
    """A unit of work that reads, creates and toggles a task, noting in `where` how far it got."""
    async with AsyncUnitOfWork(engine) as uow:
        where.append("in a statement")
        await uow.tasks.count(user_id=user)
        task = await uow.tasks.create(user_id=user, title=title)
        await uow.tasks.toggle_complete(user_id=user, task_id=task.id)
        where.append("between statements")
        await asyncio.sleep(0)
        where.append("at the end of the block")


async def how_it_ends(coro: Coroutine[Any, Any, None], *, cancelled_at_suspension: int = 0) -> str:
    """Run `coro` as a task (cancelled at that suspension, if given) and say how it ended:
    "cancelled", "finished" or the error. Nothing of the task outlives the call, so the
    garbage collector can find a connection it leaked while the test still runs."""
    if cancelled_at_suspension:
        coro = cancelled_at(coro, cancelled_at_suspension)
    running = asyncio.create_task(coro)
    await finished(running)
    if running.cancelled():
        return "cancelled"
    error = running.exception()
    return "finished" if error is None else repr(error)


# Two cancellation points that once leaked (found by the sweep below), each tested here:
@pytest.mark.asyncio
async def test_a_cancellation_as_the_block_ends_still_ends_the_transaction(
    small_async_engine: AsyncEngine, persistence_engine: Engine, user: str
):
    async def unit() -> None:
        async with AsyncUnitOfWork(small_async_engine) as uow:
            await uow.tasks.create(user_id=user, title="t")
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # lands on the first suspension of the block's end, as a timeout can

    with nothing_left_to_the_garbage_collector():
        assert await how_it_ends(unit()) == "cancelled"
        assert checked_out(small_async_engine) == 0
        states = await asyncio.to_thread(server_states, persistence_engine)
        assert not [s for s in states if s.startswith("idle in transaction")]


@pytest.mark.asyncio
async def test_a_cancellation_as_the_first_write_starts_leaves_the_connection_usable(
    persistence_database: TestDatabase, user: str, monkeypatch: pytest.MonkeyPatch
):
    # psycopg suspends as it enters a pipeline only when the loop has been busy for 5 ms
    # (a loaded machine); made to always do so, that is the first write's first suspension.
    monkeypatch.setattr(psycopg.waiting, "MAX_BUSY_TIME", 0.0, raising=False)
    engine = create_async_engine(persistence_database.url, pool_size=1, max_overflow=0)

    async def cancelled() -> None:
        async with AsyncUnitOfWork(engine) as uow:
            await uow.tasks.count(user_id=user)  # connected, outside a transaction
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # lands on the first write's first suspension
            await uow.tasks.create(user_id=user, title="never")

    async def next_one() -> None:
        async with AsyncUnitOfWork(engine) as uow:  # on the same, only connection
            task = await uow.tasks.create(user_id=user, title="next")
            assert (await uow.tasks.toggle_complete(user_id=user, task_id=task.id)).complete

    with nothing_left_to_the_garbage_collector():
        try:
            assert await how_it_ends(cancelled()) == "cancelled"
            assert await how_it_ends(next_one()) == "finished"
        finally:
            await engine.dispose()


@pytest.mark.asyncio
@pytest.mark.parametrize("pool", ["warm", "cold"])
async def test_a_thousand_cancelled_units_of_work_leak_nothing(
    small_async_engine: AsyncEngine,
    persistence_engine: Engine,
    user: str,
    monkeypatch: pytest.MonkeyPatch,
    pool: str,
):
    # A timeout can land on any point where the unit of work suspends: with BEGIN and the
    # INSERT in flight, during the UPDATE, between statements, at the end of the block, and
    # (cold) while connecting. Each sweep cancels a unit at its 1st suspension, then a new
    # one at its 2nd, and so on until one finishes uncancelled: every point, in order.
    # psycopg also suspends when the loop has been busy for 5 ms (as on a loaded machine):
    # made to always do so, the sweep reaches those points too.
    monkeypatch.setattr(psycopg.waiting, "MAX_BUSY_TIME", 0.0, raising=False)
    engine = small_async_engine
    async with AsyncUnitOfWork(engine) as uow:  # one connection in the pool
        await uow.tasks.count(user_id=user)
    opened = connections_opened(engine)
    landed: collections.Counter[str] = collections.Counter()
    may_be_committed: set[str] = set()
    must_be_committed: set[str] = set()
    sweeps = 0
    with nothing_left_to_the_garbage_collector():
        while sum(landed.values()) < (1000 if pool == "warm" else 200):
            sweeps += 1
            for at in itertools.count(1):
                if pool == "cold":
                    await engine.dispose()
                title = f"{sweeps}-{at}"
                where = ["entering"]  # the block is entered without suspending
                unit = read_create_toggle(engine, user, title, where)
                ended = await how_it_ends(unit, cancelled_at_suspension=at)
                # Back in the pool before the cancellation reaches the caller.
                assert checked_out(engine) == 0, (at, where)
                if ended == "finished":
                    must_be_committed.add(title)
                    break
                assert ended == "cancelled", (at, where)  # never any other error
                landed[where[-1]] += 1
                if where[-1] == "at the end of the block":
                    may_be_committed.add(title)  # COMMIT may be in flight: not interrupted
        assert set(landed) >= {"in a statement", "between statements", "at the end of the block"}
        if pool == "warm":
            # Each connection went back to the pool rolled back and was used again:
            # cancelling a statement doesn't cost a new connection.
            assert opened() == 0
        states = await asyncio.to_thread(server_states, persistence_engine)
        assert not [s for s in states if s.startswith("idle in transaction")]
        committed = set(await asyncio.to_thread(committed_titles, persistence_engine, user))
        assert must_be_committed <= committed <= must_be_committed | may_be_committed
        title = "after the cancellations"
        assert await how_it_ends(read_create_toggle(engine, user, title, [])) == "finished"


@pytest.mark.asyncio
async def test_a_cancellation_during_commit_waits_for_it_and_returns_the_connection(
    proxy: LatencyProxy,
    persistence_database: TestDatabase,
    persistence_engine: Engine,
    user: str,
):
    engine = async_engine_through(proxy, persistence_database, pool_size=1, max_overflow=0)
    try:
        async with AsyncUnitOfWork(engine) as uow:  # connect outside the measured part
            await uow.tasks.count(user_id=user)
        proxy.reset_counts()
        # BEGIN + INSERT are the first flight, COMMIT the second: the cancellation comes
        # while the server has COMMIT and its reply is held at the proxy.
        commit = HeldReply(flight=2)
        proxy.hold_replies(commit)

        async def unit() -> None:
            async with AsyncUnitOfWork(engine) as uow:
                await uow.tasks.create(user_id=user, title="committed despite the cancellation")

        running = asyncio.create_task(unit())
        await commit.arrived()
        running.cancel()
        commit.release()
        await finished(running)
        proxy.hold_replies(None)
        assert running.cancelled()  # the cancellation still reaches the caller, after COMMIT
        # COMMIT was not interrupted: the work is saved and the connection is back, healthy.
        assert committed_count(persistence_engine, user) == 1
        assert checked_out(engine) == 0
        async with AsyncUnitOfWork(engine) as uow:
            assert await uow.tasks.count(user_id=user) == 1
        # The same connection, and no cancel request sent for the COMMIT (either would be
        # a new connection to the proxy).
        assert proxy.connections_opened == 0
    finally:
        proxy.hold_replies(None)
        await engine.dispose()


@pytest.mark.asyncio
async def test_a_cancelled_savepoint_lets_the_cancellation_through(
    small_async_engine: AsyncEngine, persistence_engine: Engine, user: str
):
    inside = asyncio.Event()

    async def unit() -> None:
        async with AsyncUnitOfWork(small_async_engine) as uow:
            await uow.tasks.create(user_id=user, title="outer")
            async with uow.savepoint():
                await uow.tasks.create(user_id=user, title="inner")
                inside.set()
                await asyncio.Event().wait()  # cancelled here

    running = asyncio.create_task(unit())
    await inside.wait()
    running.cancel()
    await finished(running)
    assert running.cancelled()  # not swallowed by the savepoint's rollback
    assert committed_count(persistence_engine, user) == 0
    assert checked_out(small_async_engine) == 0


# Concurrency on one loop


@pytest.mark.asyncio
async def test_two_hundred_tasks_share_a_pool_of_ten_each_isolated_and_never_block_the_loop(
    proxy: LatencyProxy,
    persistence_database: TestDatabase,
    persistence_engine: Engine,
    user: str,
    monkeypatch: pytest.MonkeyPatch,
):
    # Every reply, on every connection, is relayed only once the loop has run a callback
    # scheduled when its request reached the proxy: a database call made synchronously on
    # the loop would wait for a reply that can't come, and is counted as blocked. A
    # `time.sleep` on the loop's thread is recorded as well.
    engine = async_engine_through(proxy, persistence_database, pool_size=10, max_overflow=0)

    async def work(n: int) -> None:
        mine = f"{user}-{n}"
        async with AsyncUnitOfWork(engine) as uow:
            task = await uow.tasks.create(user_id=mine, title=f"task {n}")
            await uow.tasks.toggle_complete(user_id=mine, task_id=task.id)
            seen = await uow.tasks.list(user_id=mine)
            assert [(t.id, t.complete) for t in seen] == [(task.id, True)]
            if n % 2:
                raise Boom(n)  # odd ones roll back, alongside even ones that commit

    async with AsyncUnitOfWork(engine) as uow:  # warm up: statement caches, one connection
        await uow.tasks.count(user_id=user)
    opened = connections_opened(engine)
    witness = LoopWitness()
    proxy.hold_replies(witness)
    try:
        with sleeps_on_the_loop(monkeypatch) as sleeps:
            results = await asyncio.gather(*(work(n) for n in range(200)), return_exceptions=True)
        made = opened()  # before `dispose()`, which ends the pool
    finally:
        proxy.hold_replies(None)
        await engine.dispose()
    assert witness.blocked == 0
    assert witness.flights >= 200 * 4  # each unit's round trips were witnessed
    assert sleeps == []
    assert [type(r).__name__ for r in results] == ["NoneType", "Boom"] * 100
    # A pool opens a connection only when all it has are in use: all ten were busy at
    # once, and never more.
    assert made == 9
    with persistence_engine.connect() as connection:
        per_user: dict[str, int] = dict(
            connection.execute(
                text("SELECT user_id, count(*) FROM tasks WHERE user_id LIKE :p GROUP BY 1"),
                {"p": f"{user}-%"},
            ).all()
        )
    assert per_user == {f"{user}-{n}": 1 for n in range(0, 200, 2)}


@pytest.mark.asyncio
async def test_a_unit_of_work_refuses_two_operations_at_once(
    small_async_engine: AsyncEngine, user: str
):
    async with AsyncUnitOfWork(small_async_engine) as uow:
        results = await asyncio.gather(
            uow.tasks.create(user_id=user, title="a"),
            uow.tasks.create(user_id=user, title="b"),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1
        assert "one operation" in str(refused[0]) or "already running" in str(refused[0])
        assert await uow.tasks.count(user_id=user) == 1


# Many loops in one process


def test_many_event_loops_one_after_another_each_get_their_own_default_engine(
    persistence_engine: Engine, user: str
):
    engines: list[AsyncEngine] = []

    async def step(n: int) -> None:
        engines.append(await get_async_engine())
        async with AsyncUnitOfWork() as uow:
            await uow.tasks.create(user_id=user, title=f"step {n}")
            assert await uow.tasks.count(user_id=user) == n + 1

    for n in range(4):
        asyncio.run(step(n))
    assert len({id(engine) for engine in engines}) == 4  # never shared across loops
    # Each loop's engine was disposed as its loop shut down: nothing left connected.
    assert all(checked_in(e) == 0 for e in engines)
    assert persistence.async_database._defaults == {}
    assert committed_count(persistence_engine, user) == 4
    gc.collect()


def test_a_loop_closed_without_shutting_down_is_cleaned_up_by_the_next(
    persistence_engine: Engine, user: str
):
    async def step() -> AsyncEngine:
        async with AsyncUnitOfWork() as uow:
            await uow.tasks.create(user_id=user, title="t")
        return await get_async_engine()

    loop = asyncio.new_event_loop()
    first = loop.run_until_complete(step())
    loop.close()  # no shutdown_asyncgens: the engine is still there, its connection idle
    assert checked_in(first) == 1
    second = asyncio.run(step())
    assert second is not first
    assert checked_in(first) == 0
    assert committed_count(persistence_engine, user) == 2
    gc.collect()


def test_event_loops_in_several_threads_at_once(persistence_engine: Engine, user: str):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    async def step(n: int) -> None:
        await asyncio.to_thread(barrier.wait)
        async with AsyncUnitOfWork() as uow:
            await uow.tasks.create(user_id=user, title=f"thread {n}")

    def run(n: int) -> None:
        try:
            asyncio.run(step(n))
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert committed_count(persistence_engine, user) == 4


@pytest.mark.asyncio
async def test_an_async_unit_of_work_refuses_another_event_loop(
    small_async_engine: AsyncEngine, user: str
):
    async with AsyncUnitOfWork(small_async_engine) as uow:
        await uow.tasks.count(user_id=user)

        async def elsewhere() -> int:
            return await uow.tasks.count(user_id=user)

        with pytest.raises(Exception, match="event loop"):
            await asyncio.to_thread(asyncio.run, elsewhere())


@pytest.mark.asyncio
async def test_an_async_unit_of_work_left_from_another_event_loop_leaves_nothing_open(
    small_async_engine: AsyncEngine, persistence_engine: Engine, user: str
):
    uow = await AsyncUnitOfWork(small_async_engine).__aenter__()
    await uow.tasks.create(user_id=user, title="begun on this loop")

    async def leave_elsewhere() -> None:
        await uow.__aexit__(None, None, None)

    with pytest.raises(PersistenceError, match="event loop"):
        await asyncio.to_thread(asyncio.run, leave_elsewhere())
    # Its connection was closed (the server rolled its transaction back) and its place in
    # the pool freed; nothing was committed.
    assert checked_out(small_async_engine) == 0
    assert await asyncio.to_thread(committed_count, persistence_engine, user) == 0
    async with AsyncUnitOfWork(small_async_engine) as again:
        assert await again.tasks.count(user_id=user) == 0


@pytest.mark.asyncio
async def test_dispose_async_engine_closes_the_loops_default_and_the_next_use_builds_anew(
    persistence_engine: Engine,
):
    first = await get_async_engine()
    async with AsyncUnitOfWork() as uow:
        await uow.tasks.count(user_id="nobody")
    await dispose_async_engine()
    assert checked_in(first) == 0
    assert await get_async_engine() is not first


# Never blocking the loop


@pytest.mark.asyncio
async def test_the_default_engine_is_built_off_the_loop(
    monkeypatch: pytest.MonkeyPatch, persistence_engine: Engine
):
    # Reading `.env` and starting the embedded server are blocking: a worker thread does them.
    built_in: list[int] = []
    build = persistence.async_database._build_default

    def recording() -> AsyncEngine:
        built_in.append(threading.get_ident())
        return build()

    monkeypatch.setattr(persistence.async_database, "_build_default", recording)
    await dispose_async_engine()
    async with AsyncUnitOfWork() as uow:
        await uow.tasks.count(user_id="nobody")
    assert built_in
    assert threading.get_ident() not in built_in


@pytest.mark.asyncio
async def test_a_unit_going_on_after_a_cancelled_write_refuses_until_rolled_back(
    persistence_database: TestDatabase, persistence_engine: Engine, user: str
):
    # The first write is cancelled while it waits for the pool's only connection: its
    # BEGIN never left. Carrying on as if it had would let the next write autocommit.
    engine = create_async_engine(persistence_database.url, pool_size=1, max_overflow=0)
    try:
        holder = await AsyncUnitOfWork(engine).__aenter__()
        await holder.tasks.create(user_id=f"{user}-holder", title="holds the only connection")
        with pytest.raises(Boom):
            async with AsyncUnitOfWork(engine) as uow:
                write = asyncio.ensure_future(uow.tasks.create(user_id=user, title="cancelled"))
                while pool_stats(engine).waiting == 0:
                    await asyncio.sleep(0)
                write.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await write
                await holder.__aexit__(None, None, None)
                with pytest.raises(PersistenceError, match="interrupted"):
                    await uow.tasks.create(user_id=user, title="refused")
                with pytest.raises(PersistenceError, match="interrupted"):
                    await uow.commit()
                await uow.tasks.create(user_id=user, title="after the rollback")
                raise Boom
        assert committed_count(persistence_engine, user) == 0
        async with AsyncUnitOfWork(engine) as uow:  # and after a rollback, it goes on
            await uow.tasks.create(user_id=user, title="a new unit")
        assert committed_count(persistence_engine, user) == 1
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_a_write_cancelled_inside_a_savepoint_is_undone_with_it_and_the_unit_goes_on(
    persistence_database: TestDatabase,
    persistence_engine: Engine,
    hold_lock: Lock,
    user: str,
):
    engine = create_async_engine(persistence_database.url, pool_size=1, max_overflow=0)
    try:
        async with AsyncUnitOfWork(engine) as setup:
            task = await setup.tasks.create(user_id=user, title="locked")
        release = hold_lock(f"SELECT 1 FROM tasks WHERE id = {task.id} FOR UPDATE")
        async with AsyncUnitOfWork(engine) as uow:
            await uow.tasks.create(user_id=user, title="before the savepoint")
            with pytest.raises(asyncio.CancelledError):
                async with uow.savepoint():
                    toggle = asyncio.ensure_future(
                        uow.tasks.toggle_complete(user_id=user, task_id=task.id)
                    )
                    await asyncio.to_thread(wait_until_waiting_on_a_lock, persistence_engine)
                    toggle.cancel()
                    await toggle
            release.set()
            # Rolled back to the savepoint: what the cancelled toggle did is undone, and
            # the unit of work goes on.
            await uow.tasks.create(user_id=user, title="after it")
        assert committed_count(persistence_engine, user) == 3
        async with AsyncUnitOfWork(engine) as check:
            stored = await check.tasks.get(user_id=user, task_id=task.id)
        assert stored is not None
        assert stored.complete is False
    finally:
        await engine.dispose()
