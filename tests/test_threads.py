"""A unit of work moved between threads, as a web framework's threadpool moves a request.

The rule: a `UnitOfWork` may be entered, used and left on different threads, one operation
at a time. An operation started while another is running raises `PersistenceError`; the
end of the block waits for a running operation, then commits (or rolls back) and gives the
connection back, always.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import pytest
from sqlalchemy import Engine

from persistence import FakeDatabase, FakeUnitOfWork, PersistenceError, UnitOfWork
from persistence import create_engine as make_engine
from persistence.testing import TestDatabase
from tests.conftest import (
    Lock,
    checked_out,
    committed_count,
    open_transactions,
    wait_until_waiting_on_a_lock,
)

T = TypeVar("T")


class Boom(Exception):
    """The application's own failure."""


@pytest.fixture
def one_connection(persistence_database: TestDatabase, persistence_engine: Engine):
    """An engine whose pool holds a single connection: a leaked one would starve the next."""
    engine = make_engine(persistence_database.url, pool_size=1, max_overflow=0, pool_timeout=5)
    yield engine
    engine.dispose()


@pytest.fixture
def threads() -> Iterator[list[ThreadPoolExecutor]]:
    """Three threads alive for the whole test (so their idents differ from each other and
    from the test's): `threads[n].submit(work).result()` runs `work` on thread n."""
    pools = [ThreadPoolExecutor(1) for _ in range(3)]
    for pool in pools:
        pool.submit(lambda: None).result()  # start its thread now
    yield pools
    for pool in pools:
        pool.shutdown()


def on(pool: ThreadPoolExecutor, work: Callable[[], T]) -> T:
    """Run `work` on the pool's thread and return its result."""
    return pool.submit(work).result()


def test_a_unit_entered_used_and_left_on_three_threads_commits_and_gives_its_connection_back(
    one_connection: Engine, persistence_engine: Engine, user: str, threads
):
    uow = on(threads[0], lambda: UnitOfWork(one_connection).__enter__())
    on(threads[1], lambda: uow.tasks.create(user_id=user, title="made on the second thread"))
    on(threads[2], lambda: uow.__exit__(None, None, None))
    assert committed_count(persistence_engine, user) == 1
    assert checked_out(one_connection) == 0
    assert open_transactions(persistence_engine) == 0
    with UnitOfWork(one_connection) as again:  # the single connection is free again
        assert again.tasks.count(user_id=user) == 1


def test_an_exit_with_an_exception_from_another_thread_rolls_back_and_gives_it_back(
    one_connection: Engine, persistence_engine: Engine, user: str, threads
):
    uow = UnitOfWork(one_connection).__enter__()
    uow.tasks.create(user_id=user, title="rolled back")
    error = Boom("the request failed")
    on(threads[0], lambda: uow.__exit__(Boom, error, None))
    assert committed_count(persistence_engine, user) == 0
    assert checked_out(one_connection) == 0
    assert open_transactions(persistence_engine) == 0


def test_two_operations_at_once_from_two_threads_are_refused(
    one_connection: Engine, persistence_engine: Engine, hold_lock: Lock, user: str
):
    with UnitOfWork(persistence_engine) as setup:
        task = setup.tasks.create(user_id=user, title="contended")
    release = hold_lock(f"SELECT 1 FROM tasks WHERE id = {task.id} FOR UPDATE")
    with UnitOfWork(one_connection) as uow, ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(uow.tasks.toggle_complete, user_id=user, task_id=task.id)
        # The toggle waits on the row lock: it is in flight until the lock is released.
        wait_until_waiting_on_a_lock(persistence_engine, blocked)
        with pytest.raises(PersistenceError, match="another thread"):
            uow.tasks.count(user_id=user)
        release.set()
        assert blocked.result().complete is True
    assert checked_out(one_connection) == 0
    with UnitOfWork(persistence_engine) as uow:
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert stored.complete is True


def test_the_end_of_the_block_waits_for_an_operation_running_on_another_thread(
    one_connection: Engine, persistence_engine: Engine, hold_lock: Lock, user: str
):
    with UnitOfWork(persistence_engine) as setup:
        task = setup.tasks.create(user_id=user, title="contended")
    release = hold_lock(f"SELECT 1 FROM tasks WHERE id = {task.id} FOR UPDATE")
    uow = UnitOfWork(one_connection).__enter__()
    with ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(uow.tasks.toggle_complete, user_id=user, task_id=task.id)
        wait_until_waiting_on_a_lock(persistence_engine, blocked)
        ending = pool.submit(uow.__exit__, None, None, None)
        release.set()
        assert blocked.result().complete is True
        ending.result()  # no error: the exit waited, then committed the toggle
    assert checked_out(one_connection) == 0
    assert open_transactions(persistence_engine) == 0
    with UnitOfWork(persistence_engine) as uow:
        stored = uow.tasks.get(user_id=user, task_id=task.id)
    assert stored is not None
    assert stored.complete is True


def test_the_end_of_the_block_waits_for_a_read_running_on_another_thread(
    one_connection: Engine, persistence_engine: Engine, hold_lock: Lock, user: str
):
    # A read outside a transaction: nothing on the connection would make the end of the
    # block queue behind it, so only the unit's own rule does.
    release = hold_lock("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
    uow = UnitOfWork(one_connection).__enter__()
    with ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(uow.tasks.list, user_id=user)
        wait_until_waiting_on_a_lock(persistence_engine, blocked)
        ending = pool.submit(uow.__exit__, None, None, None)
        # Left unanswered a while, the exit must still be waiting, the connection lent.
        assert not wait([ending], timeout=0.5).done
        assert checked_out(one_connection) == 1
        release.set()
        assert blocked.result() == []
        ending.result()
    assert checked_out(one_connection) == 0
    assert open_transactions(persistence_engine) == 0


def test_an_operation_that_checked_just_before_an_exit_on_another_thread_is_refused(
    one_connection: Engine, persistence_engine: Engine, user: str, threads
):
    uow = UnitOfWork(one_connection).__enter__()
    uow.tasks.count(user_id=user)
    tasks = uow.tasks
    checked, go = threading.Event(), threading.Event()
    check = uow._check_active

    def check_then_pause() -> None:
        # The operation's thread is preempted right after seeing the unit active, and
        # the block ends meanwhile: the operation must not run on the ended unit.
        check()
        if threading.current_thread() is not threading.main_thread() and not checked.is_set():
            checked.set()
            go.wait()

    uow._check_active = check_then_pause  # type: ignore[method-assign]
    late = threads[0].submit(tasks.create, user_id=user, title="after the end")
    checked.wait()
    uow.__exit__(None, None, None)
    go.set()
    with pytest.raises(PersistenceError, match="not active"):
        late.result()
    assert checked_out(one_connection) == 0
    assert open_transactions(persistence_engine) == 0
    assert committed_count(persistence_engine, user) == 0


def test_an_exit_never_leaves_a_transaction_open_even_when_it_raises(
    one_connection: Engine, persistence_engine: Engine, user: str, threads
):
    uow = UnitOfWork(one_connection).__enter__()
    with uow.savepoint():
        uow.tasks.create(user_id=user, title="inside a savepoint still open at the exit")
        # Leaving the unit of work from inside its savepoint: refused, but nothing is left.
        with pytest.raises(PersistenceError, match="savepoint"):
            on(threads[0], lambda: uow.__exit__(None, None, None))
        assert checked_out(one_connection) == 0
        assert open_transactions(persistence_engine) == 0
        with pytest.raises(PersistenceError, match="not active"):
            uow.tasks.count(user_id=user)
    assert committed_count(persistence_engine, user) == 0


def test_the_fake_follows_the_same_rule(threads):
    database = FakeDatabase()
    uow = on(threads[0], lambda: FakeUnitOfWork(database).__enter__())
    on(threads[1], lambda: uow.tasks.create(user_id="alice", title="made elsewhere"))
    on(threads[2], lambda: uow.__exit__(None, None, None))
    assert [task.title for task in database.tasks()] == ["made elsewhere"]
